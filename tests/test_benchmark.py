"""Benchmark runner (docs/benchmark.md): methods, test-set synthesis, the CLI and the full table end to end."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
from keep.streaming import StreamingRestorer, reflection_circle

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


def test_reflection_circle_indices():
    """BasicSR's reflection_circle past the clip's end: frames before the window, nearest first."""
    assert reflection_circle(20, 3, 6) == [20, 21, 22, 19, 18, 17]
    assert reflection_circle(40, 20, 20) == list(range(40, 60))  # a full window is not padded
    assert reflection_circle(0, 3, 6) == [0, 1, 2, 2, 1, 0]  # a clip shorter than a window wraps around itself
    assert reflection_circle(0, 1, 4) == [0, 0, 0, 0]  # one frame: the released inference's duplicate
    for start, length in ((0, 1), (0, 7), (20, 1), (20, 19), (60, 5)):
        indices = reflection_circle(start, length, 20)
        assert len(indices) == 20 and indices[:length] == list(range(start, start + length))
        assert all(max(0, start - 19) <= i < start + length for i in indices)  # only this and the previous window
    with pytest.raises(ValueError):
        reflection_circle(0, 0, 20)


def _content_flow(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """A deterministic flow that depends on both frames (so padding frames change the flows)."""
    return (target - source)[:, :2] * 3


@pytest.mark.parametrize("frames", [7, 3])
def test_released_mode_equals_each_padded_window_alone(frames):
    """`released` streaming == every 4-frame window run alone as a fresh clip, the short last one
    padded with reflection_circle; padding outputs dropped; window boundaries at 0 and 4."""
    model = Restorer(tiny_model(), _content_flow)
    g = torch.Generator().manual_seed(3)
    lq = torch.rand(1, frames, 3, 64, 64, generator=g) * 2 - 1
    streamed = StreamingRestorer(model, window=4, mode="released")
    with torch.no_grad():
        out = torch.stack(list(streamed.restore(lq.unbind(dim=1))), dim=1)
        expected = []
        for start in range(0, frames, 4):
            length = min(4, frames - start)
            window = lq[:, reflection_circle(start, length, 4)]
            expected.append(model.run(window, state=None).out[:, :length])
        expected = torch.cat(expected, dim=1)
        last_start = (frames - 1) // 4 * 4
        unpadded_last = model.run(lq[:, last_start:], state=None).out
    assert out.shape == lq.shape  # one output per input frame: padding outputs are dropped
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    # the padding is not a no-op: the gain attends over the whole window, so the last frames change
    assert unpadded_last.shape[1] == frames - last_start < 4
    assert not torch.allclose(out[:, last_start + 1 :], unpadded_last[:, 1:], atol=1e-4)
    if frames > 4:  # filter reset at every window: frame 4 is a fresh clip's first frame
        torch.testing.assert_close(out[:, 4], model.run(lq[:, 4:8], state=None).out[:, 0], atol=0, rtol=0)


def test_released_mode_through_the_benchmark_method():
    """`model.stream_mode: released` reaches the streaming restorer through `run_keep`."""
    model = tiny_model()
    rng = np.random.default_rng(0)
    lq = rng.integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    flow = Restorer(model, _content_flow)
    released = run_keep(lq, 64, flow, ModelConfig(window=4, stream_mode="released"), _Bar())
    reset = run_keep(lq, 64, flow, ModelConfig(window=4, stream_mode="reset"), _Bar())
    assert released.shape == reset.shape == (6, 64, 64, 3)
    assert np.array_equal(released[:5], reset[:5])  # full windows, and a window's first frame (no prior)
    assert not np.array_equal(released[5], reset[5])  # the 2-frame last window is padded to 4: other gain


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
    assert make.main(["--root", str(tmp_path / "missing")]) == 2
    # the same recipe again keeps the clips; another one would mix two recipes under one record
    assert make.main(["--root", str(tmp_path / "b"), "--seed", "4"]) == 0
    assert make.main(["--root", str(tmp_path / "b"), "--seed", "4", "--set", "crf=[30,30]"]) == 2


def test_vfhq_easy_protocol_degradation(tmp_path):
    """`--protocol vfhq_easy`: the released test set's blur 5-10, noise 0-10, CRF 18-25, x4, recorded."""
    import yaml

    from keep.evaluation.protocols import PROTOCOLS

    make = load_script(REPO / "scripts" / "make_test_set.py", "make_test_set")
    write_gt_set(tmp_path / "easy", 64, 3)
    assert make.main(["--root", str(tmp_path / "easy"), "--protocol", "vfhq_easy"]) == 0
    recorded = yaml.safe_load((tmp_path / "easy" / "LQ" / "degradation.yml").read_text())
    assert recorded["blur_sigma"] == [5.0, 10.0] and recorded["noise_sigma"] == [0.0, 10.0]
    assert recorded["crf"] == [18, 25] and recorded["scale"] == 4 and recorded["codecs"] == ["libx264"]
    assert recorded["noise2_prob"] == 0.0 and recorded["poisson_prob"] == 0.0 and recorded["jpeg_prob"] == 0.0
    assert recorded["kernel_types"].count("iso") == 7 and recorded["kernel_types"].count("aniso") == 3
    assert json.loads((tmp_path / "easy" / "LQ" / "seed.json").read_text())["protocol"] == "vfhq_easy"
    easy = cv2.imread(str(tmp_path / "easy" / "LQ" / "clip_a" / "00001.png"))
    write_gt_set(tmp_path / "train", 64, 3)
    assert make.main(["--root", str(tmp_path / "train"), "--protocol", "training"]) == 0
    assert not np.array_equal(cv2.imread(str(tmp_path / "train" / "LQ" / "clip_a" / "00001.png")), easy)
    # heavier blur than the training defaults: the easy LQ is smoother (less high-frequency energy)
    gt_small = cv2.resize(cv2.imread(str(tmp_path / "easy" / "GT" / "clip_a" / "00001.png")), (16, 16))
    assert cv2.Laplacian(easy, cv2.CV_64F).var() < cv2.Laplacian(gt_small, cv2.CV_64F).var()
    # the benchmark config that restores it as published
    from keep.config import load_config
    from keep.evaluation import BenchmarkConfig

    cfg = load_config(BenchmarkConfig, REPO / PROTOCOLS["vfhq_easy"].config)
    assert (cfg.model.stream_mode, cfg.model.window, cfg.model.gain_context) == ("released", 20, 0)
    assert load_config(BenchmarkConfig, REPO / "configs" / "test_vfhq.yml").model.stream_mode == "carry"
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, status 2
        make.main(["--root", str(tmp_path / "easy"), "--protocol", "vfhq_hard"])
    assert exit_info.value.code == 2


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
    args = ["--model", "preset:tiny", "--name", "tiny", "--no_progress", "--save_images"]
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
    assert load_script(REPO / "scripts" / "make_test_set.py", "make_test_set").main(["--root", str(root)]) == 0
    full = ["--set", f"data.root={root}", "--set", f"results_dir={tmp_path}", "--no_progress", *args]
    assert cli.main(full) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_missing_lq_points_to_make_test_set(tmp_path, capsys):
    cli = load_script(REPO / "test.py", "keep_test_cli")
    write_gt_set(tmp_path / "set", 64, 1)
    args = ["--set", f"data.root={tmp_path / 'set'}", "--set", f"results_dir={tmp_path}", "--set", "methods=[bicubic]"]
    assert cli.main(args) == 2
    assert "make_test_set.py" in capsys.readouterr().err


def test_cli_checks_data_before_building_a_model(tmp_path, capsys, monkeypatch):
    """A missing clip or LQ frame is reported before any network (or metric network) is built."""
    import keep.evaluation.runner as runner
    import keep.model

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the data was checked")

    monkeypatch.setattr(keep.model, "load_model", no_model)
    monkeypatch.setattr(runner, "Evaluator", no_model)
    cli = load_script(REPO / "test.py", "keep_test_cli")
    root = tmp_path / "set"
    write_gt_set(root, 64, 2)
    make = load_script(REPO / "scripts" / "make_test_set.py", "make_test_set")
    assert make.main(["--root", str(root)]) == 0
    (root / "LQ" / "clip_b" / "00001.png").unlink()  # the second clip lacks a frame
    base = ["--model", "preset:tiny", "--no_progress", "--set", f"data.root={root}", f"results_dir={tmp_path / 'r'}"]
    assert cli.main(base) == 2
    assert "clip_b: LQ frame" in capsys.readouterr().err
    assert cli.main([*base, "--set", "data.clips=[clip_c]"]) == 2
    assert "no clip 'clip_c'" in capsys.readouterr().err
    assert cli.main([*base, "--device", "tpu", "--set", "data.clips=[clip_a]"]) == 2  # before any model
    err = capsys.readouterr().err
    assert err.startswith("error:") and "tpu" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written


def test_cli_rerun_under_a_name_refused_then_replaced(tmp_path, capsys, caplog):
    """A second run under an existing name is refused (the first run's files untouched); with
    --overwrite the previous run's files are replaced, never mixed with the new ones."""
    cli = load_script(REPO / "test.py", "keep_test_cli")
    make = load_script(REPO / "scripts" / "make_test_set.py", "make_test_set")
    root = tmp_path / "set"
    write_gt_set(root, 64, 2)
    assert make.main(["--root", str(root)]) == 0
    (root / "LQ" / "extra").mkdir()  # an LQ clip with no ground truth: said, and noted in the table
    results = tmp_path / "results"
    base = ["--name", "run", "--no_progress", "--set", f"data.root={root}", f"results_dir={results}"]
    assert cli.main([*base, "--save_images", "--set", "methods=[bicubic]"]) == 0
    out = results / "run"
    first_table = (out / "table.md").read_text()
    said = "1 LQ clip(s) without ground truth (GT/<clip>), not scored: extra"
    assert f"warning: {said}" in caplog.text and f"- skipped: {said}" in first_table
    assert (out / "images" / "bicubic" / "clip_a" / "00000.png").is_file()
    (out / "notes.txt").write_text("mine")  # a user's own file in the folder

    assert cli.main([*base, "--set", "methods=[bicubic]", "data.clips=[clip_a]"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "table.md").read_text() == first_table  # untouched

    assert cli.main([*base, "--overwrite", "--set", "methods=[bicubic]", "data.clips=[clip_a]"]) == 0
    assert not (out / "images").exists()  # the first run's images do not sit beside the new tables
    assert "1 clips" in (out / "table.md").read_text() and (out / "table.md").read_text() != first_table
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert sorted(p.name for p in results.iterdir()) == ["run"]  # no staging folder left

    # a run that fails half way (clip_b's second LQ frame is corrupt) leaves the previous run in place
    (root / "LQ" / "clip_b" / "00001.png").write_bytes(b"not a png")
    assert cli.main([*base, "--overwrite", "--set", "methods=[bicubic]"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert "1 clips" in (out / "table.md").read_text()
    assert (out / "table.md").is_file() and sorted(p.name for p in results.iterdir()) == ["run"]


def test_sigterm_mid_run_leaves_no_staging_lock_or_results(tmp_path):
    """test.py stopped as a job is stopped (SIGTERM) while it scores: one line, exit 130, and nothing in the
    results folder (the run's staging folder and its lock removed)."""
    make = load_script(REPO / "scripts" / "make_test_set.py", "make_test_set")
    root, results = tmp_path / "set", tmp_path / "results"
    write_gt_set(root, 64, 4)
    for copy in ("clip_c", "clip_d"):
        shutil.copytree(root / "GT" / "clip_a", root / "GT" / copy)
    assert make.main(["--root", str(root)]) == 0
    command = [sys.executable, str(REPO / "test.py"), "--name", "run", "--no_progress", "--set", "methods=[bicubic]"]
    command += ["--set", f"data.root={root}", f"results_dir={results}"]
    env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_DEBUG": ""}
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list(results.glob(".run.*.partial/config.yml")):  # scoring has begun
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-2000:]
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)
    try:
        _, stderr = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail("test.py did not stop within 120 s of SIGTERM")
    assert run.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted by SIGTERM", stderr[-2000:]
    assert "Traceback" not in stderr and list(results.iterdir()) == []


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
    args = ["--model", str(checkpoint), "--name", "golden", "--no_progress", "--set", "methods=[bicubic,keep]"]
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
