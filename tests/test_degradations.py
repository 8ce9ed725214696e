import numpy as np
import pytest

from keep.data.degradations import DegradationConfig, degrade_clip, gaussian_kernel, sample_params
from keep.errors import KeepError


def _clip(frames: int = 4, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1) % 256
    return np.stack([np.roll(base, t, axis=1) for t in range(frames)]).astype(np.uint8)


def test_same_seed_same_degradation():
    gt = _clip()
    a = degrade_clip(gt, np.random.default_rng(7), DegradationConfig())
    b = degrade_clip(gt, np.random.default_rng(7), DegradationConfig())
    c = degrade_clip(gt, np.random.default_rng(8), DegradationConfig())
    assert a.shape == (4, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_parameters_drawn_once_per_clip():
    cfg = DegradationConfig()
    p1 = sample_params(np.random.default_rng(3), cfg)
    p2 = sample_params(np.random.default_rng(3), cfg)
    assert np.array_equal(p1.kernel, p2.kernel) and p1.crf == p2.crf and p1.resize_mode == p2.resize_mode
    assert cfg.crf[0] <= p1.crf <= cfg.crf[1]


def test_identity_when_everything_off():
    cfg = DegradationConfig(scale=1, blur_prob=0, noise_prob=0, noise2_prob=0, codec_prob=0)
    gt = _clip()
    assert np.array_equal(degrade_clip(gt, np.random.default_rng(0), cfg), gt)


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_codec_and_odd_sizes(codec):
    cfg = DegradationConfig(scale=2, codecs=(codec,), jpeg_prob=1.0)
    out = degrade_clip(_clip(3, 62), np.random.default_rng(1), cfg)
    assert out.shape == (3, 31, 31, 3)


def test_kernel_sums_to_one():
    k = gaussian_kernel(21, 2.0, 0.5, 0.3, beta=1.0)
    assert k.shape == (21, 21) and abs(k.sum() - 1) < 1e-5
    assert np.allclose(k, k[::-1, ::-1])  # point-symmetric


def test_bad_input_is_a_clear_error():
    with pytest.raises(KeepError, match="uint8"):
        degrade_clip(np.zeros((4, 4, 3)), np.random.default_rng(0), DegradationConfig())
    with pytest.raises(KeepError, match="kernel_types"):
        DegradationConfig(kernel_types=("box",))


def test_preview_and_prepare_scripts(tmp_path):
    """The data tools run end to end: a preview grid, and alignment from VFHQ-style annotations."""
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    repo = Path(__file__).resolve().parent.parent
    clip = tmp_path / "raw" / "clip0"
    clip.mkdir(parents=True)
    for t, frame in enumerate(_clip(3, 96)):
        cv2.imwrite(str(clip / f"{t:03d}.png"), frame[..., ::-1])
    notes = tmp_path / "notes"
    notes.mkdir()
    marks = "36 38 60 38 48 52 38 66 58 66"
    (notes / "clip0.txt").write_text(
        "FRAME INDEX X0 Y0 W H [Landmarks (5 Points)]\n" + "".join(f"{t} 10 10 80 80 {marks}\n" for t in range(3))
    )
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=repo, capture_output=True, text=True, timeout=120)  # noqa: E731
    prep = run(
        "scripts/prepare_vfhq.py",
        "--input",
        str(tmp_path / "raw"),
        "--annotations",
        str(notes),
        "--out",
        str(tmp_path / "aligned"),
        "--size",
        "64",
    )
    assert prep.returncode == 0, prep.stderr
    assert len(list((tmp_path / "aligned" / "clip0").glob("*.png"))) == 3
    out = tmp_path / "grid.png"
    prev = run(
        "scripts/preview_degradations.py",
        "--input",
        str(clip),
        "--out",
        str(out),
        "--size",
        "64",
        "--samples",
        "2",
        "--set",
        "crf=[30,30]",
    )
    assert prev.returncode == 0, prev.stderr
    assert cv2.imread(str(out)).shape == (128, 128, 3)
    bad = run("scripts/preview_degradations.py", "--input", str(clip), "--set", "codecs=[mpeg2]")
    assert bad.returncode == 1 and "mpeg2" in bad.stderr and "Traceback" not in bad.stderr
