"""Nothing the project reads back can execute code (keep/weights.py, `weights_only=True`).

A file whose unpickling would call code (a real pickle written by `torch.save`, holding an object
whose `__reduce__` opens a marker file) is put at every place a torch file is read back: a model
path, a registry name found in weights/ or the cache, the RAFT, LPIPS, ArcFace (and, with the
optional facexlib, ParseNet and RetinaFace) weights, test.py's `--model`; YAML files read back get
the same treatment. Each must fail with one clear `KeepError` line, and the marker must never appear.
The training state and `model.pretrained` are covered in tests/test_train.py.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import keep
from keep.errors import KeepError
from keep.weights import REGISTRY

REPO = Path(__file__).resolve().parent.parent


class OpensMarker:
    """Unpickling this calls `open(marker, "w")`: the file appears if any code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload(path: Path, marker: Path) -> Path:
    """A torch file that looks like a state dict but carries the code-running object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2), "payload": OpensMarker(marker)}, path)
    return path


def test_the_payload_runs_code_when_unpickled_unsafely(tmp_path):
    """Control: the file really would run code through an unrestricted unpickler."""
    marker = tmp_path / "marker"
    payload = write_payload(tmp_path / "evil.pth", marker)
    torch.load(payload, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with open(payload, "rb") as f:  # and it is a zip of a pickle with a global, as torch.save writes
        assert f.read(2) == b"PK"


def _load_network_path(path: Path) -> None:
    keep.load_network(path)


def _load_model_path(path: Path) -> None:
    keep.load_model(path, flow=None)


def _raft_path(path: Path) -> None:
    from keep.flow import build_flow

    build_flow("raft_large", weights=str(path))


def _gmflow_path(path: Path) -> None:
    from keep.flow import build_flow

    build_flow("gmflow", weights=str(path))


def _lpips_path(path: Path) -> None:
    from keep.metrics.lpips import build_lpips

    build_lpips("alex", backbone_weights=path)


def _arcface_path(path: Path) -> None:
    from keep.metrics.arcface import ArcFaceIdentity

    ArcFaceIdentity(weights=str(path))


LOADERS_BY_PATH: dict[str, Callable[[Path], None]] = {
    "load_network": _load_network_path,
    "load_model": _load_model_path,
    "raft_large weights=": _raft_path,
    "gmflow weights=": _gmflow_path,
    "lpips backbone": _lpips_path,
    "arcface weights=": _arcface_path,
}


def assert_refused(call: Callable[[], None], marker: Path) -> str:
    with pytest.raises(KeepError) as info:
        call()
    message = str(info.value)
    assert not marker.exists(), "unpickling ran code"
    assert "\n" not in message, message  # one line
    assert "Python objects other than tensors" in message and "io.open" in message, message  # names the global
    return message


@pytest.mark.parametrize("name", list(LOADERS_BY_PATH))
def test_a_path_to_a_malicious_file_runs_no_code(tmp_path, name):
    marker = tmp_path / "marker"
    payload = write_payload(tmp_path / "evil.pth", marker)
    message = assert_refused(lambda: LOADERS_BY_PATH[name](payload), marker)
    assert str(payload) in message


def _registry_loaders() -> dict[str, tuple[str, Callable[[], None]]]:
    """Registry name -> (name whose file is planted, a call that finds it by name)."""
    from keep.flow import build_flow
    from keep.metrics.arcface import ArcFaceIdentity
    from keep.metrics.identity import build_identity
    from keep.metrics.lpips import build_lpips

    def identity() -> None:
        embedder, name, skipped = build_identity(("arcface",))  # raises when none of the names can run

    return {
        "keep (load_network)": ("keep", lambda: keep.load_network("keep")),
        "keep_v0.1.0 (load_model)": ("keep_v0.1.0", lambda: keep.load_model("keep_v0.1.0", flow="auto")),
        "raft_large (build_flow)": ("raft_large", lambda: build_flow("raft_large")),
        "raft_small (build_flow)": ("raft_small", lambda: build_flow("raft_small")),
        "alexnet (LPIPS)": ("alexnet", lambda: build_lpips("alex")),
        "vgg16 (LPIPS)": ("vgg16", lambda: build_lpips("vgg")),
        "arcface (ArcFaceIdentity)": ("arcface", lambda: ArcFaceIdentity()),
        "arcface (build_identity)": ("arcface", identity),
    }


@pytest.mark.parametrize("where", ["weights_dir", "cache_dir", "torch_hub"])
@pytest.mark.parametrize("case", list(_registry_loaders()))
def test_a_malicious_registry_file_runs_no_code(tmp_path, monkeypatch, where, case):
    """The file found by name in weights/, the project's cache or torch's hub cache."""
    monkeypatch.setenv("KEEP_OFFLINE", "1")
    for variable, folder in (("KEEP_WEIGHTS_DIR", "w"), ("KEEP_CACHE_DIR", "c"), ("TORCH_HOME", "t")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    folder = {"weights_dir": tmp_path / "w", "cache_dir": tmp_path / "c", "torch_hub": tmp_path / "t/hub/checkpoints"}
    name, call = _registry_loaders()[case]
    marker = tmp_path / "marker"
    write_payload(folder[where] / REGISTRY[name].filename, marker)
    if case.endswith("(build_identity)"):  # reported through the identity builder's own wording
        with pytest.raises(KeepError) as info:
            call()
        assert not marker.exists() and "Python objects other than tensors" in str(info.value)
        return
    assert_refused(call, marker)


@pytest.mark.parametrize("name", ["parsenet", "retinaface_resnet50"])
def test_optional_face_networks_run_no_code(tmp_path, monkeypatch, name):
    if importlib.util.find_spec("facexlib") is None:
        pytest.skip("facexlib (optional) is not installed: ParseNet / RetinaFace cannot be built here")
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path / "w"))
    marker = tmp_path / "marker"
    write_payload(tmp_path / "w" / REGISTRY[name].filename, marker)
    if name == "parsenet":
        from keep.face.parsing import ParsingMask

        assert_refused(lambda: ParsingMask.from_facexlib(512), marker)
    else:
        from keep.face.detectors import RetinaFaceDetector

        assert_refused(lambda: RetinaFaceDetector(), marker)


def _tiny_test_set(root: Path) -> None:
    rng = np.random.default_rng(0)
    for kind, size in (("GT", 64), ("LQ", 16)):
        (root / kind / "clip").mkdir(parents=True)
        cv2.imwrite(str(root / kind / "clip" / "00000.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_py_model_option_runs_no_code(tmp_path, capsys):
    marker = tmp_path / "marker"
    payload = write_payload(tmp_path / "evil.pth", marker)
    _tiny_test_set(tmp_path / "set")
    cli = _load_script(REPO / "test.py", "keep_test_cli_safety")
    args = ["--model", str(payload), "--no_progress", "--set", f"data.root={tmp_path / 'set'}"]
    assert cli.main([*args, f"results_dir={tmp_path / 'results'}", "methods=[keep]"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]] and "Traceback" not in err
    assert "Python objects other than tensors" in lines[-1]


# ------------------------------------------------------------------------------- YAML read back
def yaml_payload(marker: Path) -> str:
    """YAML that would open the marker file under an unrestricted loader (yaml.unsafe_load)."""
    return f"name: !!python/object/apply:builtins.open ['{marker}', 'w']\n"


def test_the_yaml_payload_runs_code_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "marker"
    yaml.unsafe_load(yaml_payload(marker))
    assert marker.exists()


def test_a_malicious_yaml_config_runs_no_code(tmp_path, capsys):
    """`-opt` files (test.py here; every entry point reads configs through keep.config)."""
    marker = tmp_path / "marker"
    config = tmp_path / "evil.yml"
    config.write_text(yaml_payload(marker))
    cli = _load_script(REPO / "test.py", "keep_test_cli_safety")
    assert cli.main(["-opt", str(config), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and err.startswith("error: cannot parse") and "Traceback" not in err


def test_a_malicious_test_set_record_runs_no_code(tmp_path, capsys):
    """make_test_set.py reads back LQ/degradation.yml to check it is extending the same recipe."""
    marker = tmp_path / "marker"
    _tiny_test_set(tmp_path / "set")
    (tmp_path / "set" / "LQ" / "degradation.yml").write_text(yaml_payload(marker))
    make = _load_script(REPO / "scripts" / "make_test_set.py", "make_test_set_safety")
    assert make.main(["--root", str(tmp_path / "set")]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and "error: cannot read the record" in err and "Traceback" not in err


def test_no_unrestricted_unpickling_in_the_package():
    """Static guard: no `torch.load(..., weights_only=False)`, `pickle.load`, `allow_pickle=True`
    or `yaml.load`/`unsafe_load` in code that reads user files (the training state is read in
    keep/train/trainer.py, tested in tests/test_train.py)."""
    offenders = []
    patterns = ("weights_only=False", "pickle.load", "allow_pickle=True", "yaml.load(", "unsafe_load", "full_load")
    files = [*(REPO / "keep").rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    files += REPO.glob("*.py")
    for path in files:
        text = path.read_text()
        offenders += [f"{path.relative_to(REPO)}: {p}" for p in patterns if p in text]
    allowed = {"keep/train/trainer.py: weights_only=False"}  # its resume guard reads our own files
    assert sorted(set(offenders) - allowed) == []
