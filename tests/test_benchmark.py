"""Benchmark runner (issue #5): methods, test-set synthesis, the CLI and the full table end to end."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torchvision

from keep.archs.keep_arch import KEEP, PRESETS
from keep.evaluation.config import ModelConfig
from keep.evaluation.methods import run_keep, run_keep_per_frame
from keep.restorer import Restorer

REPO = Path(__file__).resolve().parent.parent


def load_script(path: Path, name: str):
    """Import test.py / scripts/*.py by path (`test` would clash with the standard library's package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Bar:
    def update(self, n: int) -> None:
        pass


def tiny_model(seed: int = 0) -> KEEP:
    torch.manual_seed(seed)
    model = KEEP(PRESETS["tiny"]).eval()
    with torch.no_grad():  # CFA starts as an identity; make it act so that removing it shows
        for cfa in model.cfa.values():
            cfa.norm1.weight.fill_(1.0)
            cfa.norm2.weight.fill_(1.0)
    return model


class ZeroGain(torch.nn.Module):
    def forward(self, z_obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(z_obs[:, :, :1])


def test_per_frame_method_is_gain_zero_without_cfa():
    """`keep_per_frame` (each frame a fresh clip) == the clip run with gain forced to 0 and no CFA."""
    model = tiny_model()
    rng = np.random.default_rng(0)
    lq = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    per_frame = run_keep_per_frame(lq, 64, Restorer(model), ModelConfig(), _Bar())

    frames = torch.from_numpy(np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_CUBIC) for f in lq]))
    clip = frames.permute(0, 3, 1, 2)[None].float() / 127.5 - 1
    flows = torch.randn(1, 2, 2, 64, 64, generator=torch.Generator().manual_seed(0)) * 2
    ablated = dataclasses.replace(PRESETS["tiny"])
    reference = KEEP(ablated).eval()
    reference.load_state_dict(model.state_dict())
    reference.kalman = ZeroGain()
    reference.cfa = torch.nn.ModuleDict()
    with torch.no_grad():
        out = reference(clip, flows)
    expected = ((out[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(per_frame.astype(int) - expected.astype(int)).max() <= 1  # rounding of ~1e-6 differences
    assert (per_frame == expected).mean() > 0.999

    zero_flow = lambda target, source: torch.zeros_like(target[:, :2])  # noqa: E731
    temporal = run_keep(lq, 64, Restorer(model, zero_flow), ModelConfig(), _Bar())
    assert np.abs(temporal[1:].astype(int) - per_frame[1:].astype(int)).max() > 2  # propagation matters
    assert np.array_equal(temporal[0], per_frame[0])  # frame 0 has no prior in either


def aligned_astronaut(size: int) -> np.ndarray:
    """Eileen Collins' face (scikit-image) aligned roughly to the FFHQ template, at `size`."""
    face = skimage.data.astronaut()[20:260, 80:320]  # the face region of the 512 photo
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)


def write_gt_set(root: Path, size: int, frames: int) -> None:
    base = aligned_astronaut(size + 8)
    for clip, direction in (("clip_a", 1), ("clip_b", -1)):
        folder = root / "GT" / clip
        folder.mkdir(parents=True)
        for t in range(frames):  # a slowly panning face
            crop = base[4 : 4 + size, 4 + direction * t : 4 + direction * t + size]
            cv2.imwrite(str(folder / f"{t:05d}.png"), np.ascontiguousarray(crop[..., ::-1]))


def test_make_test_set_is_seeded_per_clip_name(tmp_path):
    make = load_script(REPO / "scripts" / "make_test_set.py", "make_test_set")
    write_gt_set(tmp_path / "a", 64, 3)
    assert make.main(["--root", str(tmp_path / "a"), "--seed", "3"]) == 0
    first = cv2.imread(str(tmp_path / "a" / "LQ" / "clip_b" / "00001.png"))
    assert first.shape == (16, 16, 3)
    # the same clip alone in another test set (listing order changes) gets the same LQ
    write_gt_set(tmp_path / "b", 64, 3)
    for path in (tmp_path / "b" / "GT" / "clip_a").iterdir():
        path.unlink()
    (tmp_path / "b" / "GT" / "clip_a").rmdir()
    assert make.main(["--root", str(tmp_path / "b"), "--seed", "3"]) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / "b" / "LQ" / "clip_b" / "00001.png")), first)
    assert make.main(["--root", str(tmp_path / "b"), "--seed", "4", "--overwrite"]) == 0
    assert not np.array_equal(cv2.imread(str(tmp_path / "b" / "LQ" / "clip_b" / "00001.png")), first)
    assert make.main(["--root", str(tmp_path / "missing")]) == 1


def test_end_to_end_tiny_test_set_full_table(tmp_path, capsys):
    """Synthetic test set -> LQ -> test.py with a tiny network -> every output, every column."""
    make = load_script(REPO / "scripts" / "make_test_set.py", "make_test_set")
    cli = load_script(REPO / "test.py", "keep_test_cli")
    root = tmp_path / "set"
    write_gt_set(root, 64, 3)
    assert make.main(["--root", str(root)]) == 0
    torch.manual_seed(0)
    backbone = tmp_path / "alexnet.pth"  # LPIPS backbone from a local file (random weights: offline)
    torch.save(torchvision.models.alexnet().state_dict(), backbone)
    args = ["--model", "preset:tiny", "--name", "tiny", "--no-progress", "--save-images"]
    args += ["--set", f"data.root={root}", "--set", f"results_dir={tmp_path / 'results'}"]
    args += ["--set", f"metrics.lpips_backbone={backbone}", "--set", "model.window=2"]  # state carried across windows
    assert cli.main(args) == 0
    out = tmp_path / "results" / "tiny"
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    header = "| method | PSNR | SSIM | LPIPS | IDS | AKD | std IDS x1e-2 | std AKD | TWE x1e-3 |"
    assert header in table and "dlib ResNet" in table and "dlib 68-point" in table
    rows = [line for line in table.splitlines() if line.startswith(("| bicubic", "| keep"))]
    assert [r.split("|")[1].strip() for r in rows] == ["bicubic", "keep_per_frame", "keep"]
    for row in rows:
        assert "n/a" not in row and "inf" not in row, row
    assert len((out / "per_frame.csv").read_text().splitlines()) == 1 + 3 * 2 * 3
    results = json.loads((out / "results.json").read_text())
    assert len(results["clips"]) == 6 and set(results["summary"]) == {"bicubic", "keep_per_frame", "keep"}
    summary = results["summary"]
    assert summary["bicubic"]["psnr"] > 15 > summary["keep"]["psnr"]  # an untrained network is far off
    assert (out / "plots" / "clip_a.png").stat().st_size > 1000
    assert len(list((out / "images" / "keep" / "clip_b").glob("*.png"))) == 3
    assert (out / "config.yml").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "data.root=/nonexistent"], "no GT/ folder"),
        (["--set", "methods=[bicubic,codeformer]"], "unknown method 'codeformer'"),
        (["--set", "metrics.colour=1"], "unknown config key 'metrics.colour'"),
        (["--model", "preset:huge"], "unknown preset"),
    ],
)
def test_cli_errors_are_messages(tmp_path, capsys, args, message):
    cli = load_script(REPO / "test.py", "keep_test_cli")
    root = tmp_path / "set"
    write_gt_set(root, 64, 1)
    (root / "LQ" / "clip_a").mkdir(parents=True)
    full = ["--set", f"data.root={root}", "--set", f"results_dir={tmp_path}", "--no-progress", *args]
    assert cli.main(full) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_missing_lq_points_to_make_test_set(tmp_path, capsys):
    cli = load_script(REPO / "test.py", "keep_test_cli")
    write_gt_set(tmp_path / "set", 64, 1)
    args = ["--set", f"data.root={tmp_path / 'set'}", "--set", f"results_dir={tmp_path}", "--set", "methods=[bicubic]"]
    assert cli.main(args) == 1
    assert "make_test_set.py" in capsys.readouterr().err


def test_cli_help_explains_options(capsys):
    cli = load_script(REPO / "test.py", "keep_test_cli")
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(word in text for word in ("-opt", "--set", "--model", "keep_per_frame", "configs/test_vfhq.yml"))


@pytest.mark.slow
def test_golden_stand_in_weights_two_frames(shared_dir, tmp_path):
    """The released configuration (512) with the golden stand-in weights, 2 frames, on CPU."""
    weights = load_script(shared_dir / "golden" / "make_weights.py", "make_weights")
    state = weights.official_state_dict(shared_dir / "golden" / "keep_v010_manifest.json")
    checkpoint = tmp_path / "golden.pth"
    torch.save(state, checkpoint)
    make = load_script(REPO / "scripts" / "make_test_set.py", "make_test_set")
    cli = load_script(REPO / "test.py", "keep_test_cli")
    root = tmp_path / "set"
    write_gt_set(root, 512, 2)
    assert make.main(["--root", str(root)]) == 0
    args = ["--model", str(checkpoint), "--name", "golden", "--no-progress", "--set", "methods=[bicubic,keep]"]
    args += [
        "--set",
        f"data.root={root}",
        "--set",
        f"results_dir={tmp_path / 'results'}",
        "--set",
        "data.clips=[clip_a]",
    ]
    assert cli.main(args) == 0
    table = (tmp_path / "results" / "golden" / "table.md").read_text()
    keep_row = next(line for line in table.splitlines() if line.startswith("| keep "))
    assert keep_row.count("|") == 10
