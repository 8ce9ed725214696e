"""PSNR and SSIM, the field's convention (BasicSR / the face restoration papers), stated explicitly:

- inputs: `(H, W, 3)` uint8 RGB images (or float arrays on the same 0-255 scale), same shape;
- computed on the RGB channels (not Y) in [0, 255], no border crop (`crop_border=0`) by default;
  `y_channel=True` switches to the ITU-R BT.601 luma (16-235) that SR papers on natural images use;
- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels; identical images give `inf`;
- SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population
  statistics, mean over the *valid* region of the SSIM map (5 px lost at each border) and then over
  the channels. Equal to `skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2)` (tests check this).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import KeepError


def _prepare(img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if img.shape != ref.shape or img.ndim != 3 or img.shape[2] != 3:
        raise KeepError(f"PSNR/SSIM need two (H, W, 3) images of the same shape, got {img.shape} and {ref.shape}")
    img, ref = img.astype(np.float64), ref.astype(np.float64)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        img, ref = rgb_to_y(img), rgb_to_y(ref)
    return img, ref


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """RGB `(H, W, 3)` in [0, 255] -> BT.601 luma `(H, W, 1)` in [16, 235]."""
    return (img @ np.array([65.481, 128.553, 24.966]) / 255.0 + 16.0)[..., None]


def psnr(img: np.ndarray, ref: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB of `img` against `ref` (module docstring: convention)."""
    img, ref = _prepare(img, ref, crop_border, y_channel)
    mse = np.mean((img - ref) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _ssim_channel(img: np.ndarray, ref: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = kernel @ kernel.T
    blur = lambda x: cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # noqa: E731  valid region only
    mu_x, mu_y = blur(img), blur(ref)
    var_x = blur(img * img) - mu_x**2
    var_y = blur(ref * ref) - mu_y**2
    cov = blur(img * ref) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim(img: np.ndarray, ref: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity of `img` against `ref`, mean over channels (module docstring)."""
    img, ref = _prepare(img, ref, crop_border, y_channel)
    if min(img.shape[:2]) < 11:
        raise KeepError(f"SSIM needs images of at least 11x11 pixels, got {img.shape[:2]}")
    return float(np.mean([_ssim_channel(img[..., c], ref[..., c]) for c in range(img.shape[2])]))
