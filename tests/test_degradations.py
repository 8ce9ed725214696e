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
