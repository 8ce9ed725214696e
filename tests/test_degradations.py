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


@pytest.mark.parametrize(
    "name, values",
    [
        ("kernel_probs", [(1.0, 0.0), (0.0, 1.0)]),  # isotropic only / anisotropic only
        ("resize_probs", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]),  # up / down / keep
        ("resize_range", [(0.3, 1.0), (0.8, 1.0)]),  # how far down (with down forced)
        ("crf", [(25, 25), (45, 45)]),
        ("blur_sigma", [(2.0, 2.0), (10.0, 10.0)]),
    ],
)
def test_each_released_recipe_parameter_changes_the_output(name, values):
    """Same seed, one parameter varied: every value gives another clip (the recipe's parameters, docs/training.md)."""
    base = dict(kernel_types=("iso", "aniso"), noise_prob=0.0, noise2_prob=0.0, resize_probs=(0.0, 1.0, 0.0))
    gt = _clip(3, 64)
    outs = [degrade_clip(gt, np.random.default_rng(1), DegradationConfig(**{**base, name: v})) for v in values]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not np.array_equal(outs[i], outs[j]), (name, values[i], values[j])


def test_kernel_probabilities_and_resize_directions_are_drawn_as_asked():
    cfg = DegradationConfig(kernel_types=("iso", "aniso"), kernel_probs=(0.7, 0.3), resize_probs=(0.3, 0.3, 0.4))
    draws = [sample_params(np.random.default_rng(seed), cfg) for seed in range(400)]
    isotropic = np.mean([np.allclose(d.kernel, d.kernel.T) for d in draws])  # aniso kernels are rotated ellipses
    assert 0.6 < isotropic < 0.85
    factors = np.array([d.resize_factor for d in draws])
    assert 0.2 < np.mean(factors > 1) < 0.4 and 0.2 < np.mean(factors < 1) < 0.4 and 0.3 < np.mean(factors == 1) < 0.5
    assert factors.min() >= cfg.resize_range[0] and factors.max() <= cfg.resize_range[1]


def test_default_configuration_draws_no_resize():
    """Configs without a random resize keep drawing exactly what they drew before it existed."""
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    sample_params(rng_a, DegradationConfig())
    sample_params(rng_b, DegradationConfig(resize_range=(0.2, 3.0)))
    assert rng_a.uniform() == rng_b.uniform()
    assert sample_params(np.random.default_rng(1), DegradationConfig()).resize_factor == 1.0


def test_kernel_sums_to_one():
    k = gaussian_kernel(21, 2.0, 0.5, 0.3, beta=1.0)
    assert k.shape == (21, 21) and abs(k.sum() - 1) < 1e-5
    assert np.allclose(k, k[::-1, ::-1])  # point-symmetric


def test_bad_input_is_a_clear_error():
    with pytest.raises(KeepError, match="uint8"):
        degrade_clip(np.zeros((4, 4, 3)), np.random.default_rng(0), DegradationConfig())
    with pytest.raises(KeepError, match="kernel_types"):
        DegradationConfig(kernel_types=("box",))
    with pytest.raises(KeepError, match="kernel_probs"):
        DegradationConfig(kernel_types=("iso", "aniso"), kernel_probs=(1.0,))
    with pytest.raises(KeepError, match="resize_probs"):
        DegradationConfig(resize_probs=(-1.0, 1.0, 1.0))
    with pytest.raises(KeepError, match="resize_range"):
        DegradationConfig(resize_range=(1.2, 1.5))


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
    compare = tmp_path / "compare.png"
    prev = run(
        "scripts/preview_degradations.py",
        *("--input", str(clip), "--out", str(compare), "--size", "64", "--compare"),
        *("resize_probs=[1,0,0]", "resize_probs=[0,1,0]", "resize_probs=[0,0,1]"),
    )
    assert prev.returncode == 0, prev.stderr
    rows = cv2.imread(str(compare)).reshape(3, 64, 128, 3)
    assert not np.array_equal(rows[0, 20:, 64:], rows[1, 20:, 64:])  # below the label: the LQ differs
    assert np.array_equal(rows[0, :, :64], rows[2, :, :64])  # the GT is the same
    bad = run("scripts/preview_degradations.py", "--input", str(clip), "--set", "codecs=[mpeg2]")
    assert bad.returncode == 2 and "mpeg2" in bad.stderr and "Traceback" not in bad.stderr
    inside = run("scripts/preview_degradations.py", "--input", str(clip), "--out", str(clip / "x.png"))
    assert inside.returncode == 2 and "would write into the input" in inside.stderr
