"""Synthetic degradations for training and benchmark test sets (docs/training.md, "Data and degradations").

Every function here is a pure function of its inputs and an explicit `np.random.Generator`; nothing
touches a global random state. The parameters of a clip (kernel, noise levels, resize mode, JPEG
quality, codec and CRF) are drawn ONCE per clip (`sample_params`); only the noise itself is drawn
per frame, as in the paper's recipe:

    gt (T, H, W, 3) uint8 -> blur (mixed Gaussian kernels) -> random resize (up / down / keep)
        -> noise -> downsample to H/s x W/s (area / bilinear / bicubic) -> noise -> JPEG (optional)
        -> encode + decode the whole clip with a real video codec (PyAV, H.264 / H.265, random CRF)
        -> lq (T, H/s, W/s, 3) uint8

    lq = degrade_clip(gt, np.random.default_rng(seed), DegradationConfig())

Same generator state, same clip: the output is bit-identical with H.264 (libx264 runs
single-threaded). libx265 in PyAV's FFmpeg build is not bit-reproducible run to run (measured: same
input, different bytes, whatever the x265 threading options), so it is opt-in (`codecs`).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Annotated

import av
import cv2
import numpy as np

from ..config import ConfigValueError, NonNegativeFloat, PositiveFloat, PositiveInt, Probability, Range, check_fields
from ..errors import KeepError

RESIZE_MODES: dict[str, int] = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso")
CODECS = ("libx264", "libx265")
Crf = Annotated[int, Range(0, 51)]  # libx264 / libx265, 8-bit
JpegQuality = Annotated[int, Range(0, 100)]  # OpenCV's IMWRITE_JPEG_QUALITY


@dataclass
class DegradationConfig:
    """Ranges the per-clip parameters are drawn from (uniformly unless said otherwise).

    Noise sigmas are on the 0-255 scale. A probability of 0 switches a step off; `(a, a)` fixes it.
    """

    scale: PositiveInt = 4  # downsampling factor; lq is (H // scale, W // scale)
    blur_prob: Probability = 1.0
    kernel_size: PositiveInt = 21  # odd
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[NonNegativeFloat, ...] = ()  # probability of each kernel_types entry; () = uniform
    blur_sigma: tuple[NonNegativeFloat, NonNegativeFloat] = (0.2, 3.0)  # per axis, in GT pixels
    generalized_beta: tuple[PositiveFloat, PositiveFloat] = (0.5, 4.0)  # shape of generalized Gaussians
    noise_prob: Probability = 1.0  # before downsampling
    noise_sigma: tuple[NonNegativeFloat, NonNegativeFloat] = (0.0, 10.0)
    poisson_prob: Probability = 0.2  # chance that a noise step is Poisson (shot) noise instead of Gaussian
    poisson_scale: tuple[NonNegativeFloat, NonNegativeFloat] = (0.05, 1.0)
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    # Random resize after the blur (Real-ESRGAN's first-order resize), before the x scale downsampling:
    # probabilities of (up, down, keep); the factor is drawn from (1, high] (up) or [low, 1) (down).
    resize_probs: tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] = (0.0, 0.0, 1.0)
    resize_range: tuple[PositiveFloat, PositiveFloat] = (0.5, 1.5)
    noise2_prob: Probability = 0.5  # after downsampling
    noise2_sigma: tuple[NonNegativeFloat, NonNegativeFloat] = (0.0, 5.0)
    jpeg_prob: Probability = 0.0  # per-frame JPEG with one quality for the clip
    jpeg_quality: tuple[JpegQuality, JpegQuality] = (40, 95)
    codec_prob: Probability = 1.0  # whole-clip video compression
    codecs: tuple[str, ...] = ("libx264",)  # any of CODECS
    crf: tuple[Crf, Crf] = (18, 35)

    def __post_init__(self) -> None:
        check_fields(self)  # the ranges in the annotations
        if self.kernel_size % 2 != 1:
            raise ConfigValueError("kernel_size", "odd", self.kernel_size)
        for name, valid in (("kernel_types", KERNEL_TYPES), ("resize_modes", RESIZE_MODES), ("codecs", CODECS)):
            values = getattr(self, name)
            if not values:
                raise ConfigValueError(name, f"a non-empty list of {list(valid)}", values)
            for v in values:
                if v not in valid:
                    raise KeepError(f"unknown degradation {name} entry '{v}'; choose from {list(valid)}")
        ranges = ("blur_sigma", "generalized_beta", "noise_sigma", "poisson_scale", "noise2_sigma")
        for name in (*ranges, "jpeg_quality", "crf"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigValueError(name, "a [low, high] pair with low <= high", (low, high))
        if self.kernel_probs and len(self.kernel_probs) != len(self.kernel_types):
            raise KeepError(
                f"degradation kernel_probs {self.kernel_probs} needs one probability per kernel_types entry "
                f"{self.kernel_types}"
            )
        for name in ("kernel_probs", "resize_probs"):
            probs = getattr(self, name)
            if probs and sum(probs) <= 0:
                raise ConfigValueError(name, "probabilities >= 0 with a positive sum", probs)
        low, high = self.resize_range
        if not low <= 1 <= high:
            raise ConfigValueError("resize_range", "a [low, high] pair with 0 < low <= 1 <= high", self.resize_range)


@dataclass(frozen=True)
class ClipParams:
    """One draw of every per-clip parameter (see `sample_params`)."""

    kernel: np.ndarray | None  # (k, k) float32 summing to 1, or None (no blur)
    noise: tuple[str, float] | None  # ("gaussian", sigma) | ("poisson", scale) | None
    resize_mode: str
    noise2: tuple[str, float] | None
    jpeg_quality: int | None
    codec: str | None
    crf: int
    resize_factor: float = 1.0  # random resize after the blur (1 = keep)
    resize_factor_mode: str = "bilinear"


# --------------------------------------------------------------------------------------- kernels
def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 2.0) -> np.ndarray:
    """Anisotropic (generalized) Gaussian kernel `(size, size)` summing to 1; beta = 2 is Gaussian."""
    half = size // 2
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    cos, sin = math.cos(theta), math.sin(theta)
    u = cos * xs + sin * ys  # coordinates along the kernel's principal axes
    v = -sin * xs + cos * ys
    quad = (u / max(sigma_x, 1e-3)) ** 2 + (v / max(sigma_y, 1e-3)) ** 2
    kernel = np.exp(-0.5 * quad ** (beta / 2))
    return (kernel / kernel.sum()).astype(np.float32)


def random_kernel(rng: np.random.Generator, cfg: DegradationConfig) -> np.ndarray:
    if cfg.kernel_probs:
        probs = np.asarray(cfg.kernel_probs, dtype=np.float64)
        kind = cfg.kernel_types[rng.choice(len(cfg.kernel_types), p=probs / probs.sum())]
    else:
        kind = cfg.kernel_types[rng.integers(len(cfg.kernel_types))]
    sigma_x = rng.uniform(*cfg.blur_sigma)
    sigma_y = rng.uniform(*cfg.blur_sigma) if "aniso" in kind else sigma_x
    theta = rng.uniform(0, math.pi) if "aniso" in kind else 0.0
    beta = rng.uniform(*cfg.generalized_beta) if kind.startswith("generalized") else 2.0
    return gaussian_kernel(cfg.kernel_size, sigma_x, sigma_y, theta, beta)


def _draw_noise(rng: np.random.Generator, prob: float, sigma: tuple[float, float], cfg: DegradationConfig):
    if rng.uniform() >= prob:
        return None
    if rng.uniform() < cfg.poisson_prob:
        return ("poisson", float(rng.uniform(*cfg.poisson_scale)))
    return ("gaussian", float(rng.uniform(*sigma)))


def sample_params(rng: np.random.Generator, cfg: DegradationConfig) -> ClipParams:
    """Draw every per-clip parameter once, in a fixed order (so a seed always means the same clip)."""
    kernel = random_kernel(rng, cfg) if rng.uniform() < cfg.blur_prob else None
    noise = _draw_noise(rng, cfg.noise_prob, cfg.noise_sigma, cfg)
    resize_mode = cfg.resize_modes[rng.integers(len(cfg.resize_modes))]
    noise2 = _draw_noise(rng, cfg.noise2_prob, cfg.noise2_sigma, cfg)
    jpeg = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.uniform() < cfg.jpeg_prob else None
    codec = cfg.codecs[rng.integers(len(cfg.codecs))] if rng.uniform() < cfg.codec_prob else None
    crf = int(rng.integers(cfg.crf[0], cfg.crf[1] + 1))
    factor, factor_mode = 1.0, "bilinear"
    if cfg.resize_probs[2] < sum(cfg.resize_probs):  # drawn only when it can happen: older configs keep their clips
        probs = np.asarray(cfg.resize_probs, dtype=np.float64)
        direction = rng.choice(3, p=probs / probs.sum())  # 0 up, 1 down, 2 keep
        low, high = cfg.resize_range
        factor = float(rng.uniform(1.0, high) if direction == 0 else rng.uniform(low, 1.0) if direction == 1 else 1.0)
        factor_mode = cfg.resize_modes[rng.integers(len(cfg.resize_modes))]
    return ClipParams(kernel, noise, resize_mode, noise2, jpeg, codec, crf, factor, factor_mode)


# --------------------------------------------------------------------------------------- steps
def add_noise(img: np.ndarray, noise: tuple[str, float] | None, rng: np.random.Generator) -> np.ndarray:
    """img float32 (H, W, 3) on the 0-255 scale -> noisy copy (noise drawn fresh from `rng`)."""
    if noise is None:
        return img
    kind, level = noise
    if kind == "gaussian":
        return img + rng.normal(0.0, level, img.shape).astype(np.float32)
    # Poisson (shot) noise: counts proportional to intensity; `level` scales the noise strength.
    peak = 255.0 / max(level, 1e-3) ** 2
    clean = np.clip(img, 0, 255) / 255.0
    return (rng.poisson(clean * peak) / peak * 255.0).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> JPEG-compressed and decoded at `quality`."""
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise KeepError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


def video_codec(frames: np.ndarray, codec: str, crf: int) -> np.ndarray:
    """Encode uint8 RGB `(T, H, W, 3)` as one video with `codec` at `crf`, decode it back.

    Odd sizes are edge-padded to even (yuv420p) and cropped back. One encoder thread: the same input gives the
    same output on any machine load.
    """
    frames_count, height, width = frames.shape[:3]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    # One encoder thread, asked for through the `threads` option: `codec_context.thread_count = 1` alone does
    # not reach libx264, which then picks its own thread count and, on a loaded machine, encodes the same clip
    # differently now and then (2 of 2870 runs of a 4-frame clip; 0 of 12304 with this option, which is also
    # 4x faster on such small clips: no threads to start).
    options = {"crf": str(crf), "preset": "medium", "threads": "1"}
    if codec == "libx265":
        options["x265-params"] = "log-level=none:pools=none:frame-threads=1:lookahead-threads=1"
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if len(decoded) != frames_count:
        raise KeepError(f"video codec {codec} returned {len(decoded)} frames for {frames_count}")
    return np.stack(decoded)[:, :height, :width]


# --------------------------------------------------------------------------------------- clip
def degrade_frames(gt: np.ndarray, rng: np.random.Generator, params: ClipParams, scale: int) -> np.ndarray:
    """Apply drawn `params` to a clip: gt uint8 RGB `(T, H, W, 3)` -> lq uint8 `(T, H//s, W//s, 3)`."""
    frames, height, width = gt.shape[:3]
    size = (width // scale, height // scale)
    out = []
    for t in range(frames):
        img = gt[t].astype(np.float32)
        if params.kernel is not None:
            img = cv2.filter2D(img, -1, params.kernel, borderType=cv2.BORDER_REFLECT101)
        if params.resize_factor != 1.0:
            resized = (max(1, round(width * params.resize_factor)), max(1, round(height * params.resize_factor)))
            img = cv2.resize(img, resized, interpolation=RESIZE_MODES[params.resize_factor_mode])
        img = add_noise(img, params.noise, rng)
        img = cv2.resize(np.clip(img, 0, 255), size, interpolation=RESIZE_MODES[params.resize_mode])
        img = add_noise(img, params.noise2, rng)
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if params.jpeg_quality is not None:
            img = jpeg(img, params.jpeg_quality)
        out.append(img)
    lq = np.stack(out)
    if params.codec is not None:
        lq = video_codec(lq, params.codec, params.crf)
    return lq


def degrade_clip(gt: np.ndarray, rng: np.random.Generator, params: DegradationConfig) -> np.ndarray:
    """Degrade a clip: gt uint8 RGB `(T, H, W, 3)` -> lq uint8 RGB `(T, H // scale, W // scale, 3)`.

    Per-clip parameters are drawn once from `rng` (then noise per frame); a pure function of
    (gt, generator state, params). Pass a single image as `gt[None]`.
    """
    gt = np.asarray(gt)
    if gt.ndim != 4 or gt.shape[-1] != 3 or gt.dtype != np.uint8:
        raise KeepError(f"degrade_clip expects uint8 RGB frames (T, H, W, 3), got {gt.dtype} {gt.shape}")
    if gt.shape[1] < params.scale or gt.shape[2] < params.scale:
        raise KeepError(f"frames {gt.shape[1]}x{gt.shape[2]} are smaller than the scale {params.scale}")
    return degrade_frames(gt, rng, sample_params(rng, params), params.scale)
