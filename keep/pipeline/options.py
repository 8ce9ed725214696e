"""The options of a restoration run: `inference.py`'s command line, one field per option."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import KeepError
from ..face.detectors import DETECT_SIZE

# Seconds are accumulated per stage under these names (the summary's and the benchmark's `timings`).
STAGES = ("decode", "detect", "track", "align", "flow", "network", "background", "paste", "encode")
OVERLAP_MODES = ("processes", "threads", "off")
CONTAINERS = ("auto", "mp4", "mkv")


@dataclass
class PipelineOptions:
    """Command-line options of `inference.py`, one to one (see docs/inference.md)."""

    model: str = "keep"
    detector: str = "auto"
    detect_size: int = DETECT_SIZE  # retinaface_mobilenet: frames larger than this detected shrunk (0: never)
    mask: str = "auto"  # paste-back mask: auto (face parsing if available, else feather) | parsenet | feather
    flow: str = "auto"
    fidelity: float = 1.0  # CFT weight: 0 .. 1 (CodeFormer's -w); 1 as every release
    upscale: int = 1
    bg_upsampler: str = "bicubic"  # background at --upscale: bicubic | realesrgan (Real-ESRGAN x2plus)
    bg_tile: int = 400  # Real-ESRGAN tile size in input pixels (0: whole frames)
    face_upsample: bool = False  # upsample restored faces with Real-ESRGAN before pasting (at --upscale > 1)
    draw_box: bool = False  # outline every restored face (its aligned crop) with its track id
    has_aligned: bool = False
    save_frames: bool = False
    save_faces: bool = False  # write <stem>_faces.jsonl: per frame, each face's track, landmarks, crop corners
    overwrite: bool = False  # redo inputs whose output already exists (default: skip them)
    device: str = "cpu"
    precision: str = "fp32"  # fp32 (exact) | tf32 | bf16 | fp16: keep.precision
    cuda_graphs: bool = True  # GPU: replay each frame's kernels from a CUDA graph (keep.cuda_graphs)
    window: int = 20  # frames restored per network call (state carried across calls)
    gain_context: int = 0
    crf: int = 18
    preset: str = "medium"  # libx264 preset, ultrafast .. veryslow: faster ones write larger files at the same crf
    min_face: float = 16.0  # faces whose eye-to-mouth distance x 3 is below this many pixels are left alone
    max_gap: int = 5  # frames a track may miss and still be interpolated
    smooth_sigma: float = 1.5  # Gaussian landmark smoothing over time, in frames (0: off)
    fps: float = 25.0  # frame rate for folders of frames
    container: str = "auto"  # output video container: auto (Matroska for .mkv/.webm inputs, else MP4) | mp4 | mkv
    overlap: str = "processes"  # stages run in: processes (GIL-free) | threads | off (one after another)
    threads: int | None = None  # torch threads per process (None: cores not busy)
    restore: bool = True  # False: detect, align and paste the unrestored crops (checks the geometry)

    def check(self) -> None:
        """KeepError naming the first option out of range (before anything is loaded)."""
        if not 0 <= self.crf <= 51:
            raise KeepError(f"--crf must be in 0..51, got {self.crf}")
        if self.window < 1:
            raise KeepError(f"--window must be >= 1, got {self.window}")
        if self.upscale < 1:
            raise KeepError(f"--upscale must be >= 1, got {self.upscale}")
        if self.detect_size < 0:
            raise KeepError(f"--detect_size must be >= 0 (0: full resolution), got {self.detect_size}")
        if self.bg_tile < 0:
            raise KeepError(f"--bg_tile must be >= 0 (0: whole frames), got {self.bg_tile}")
        if self.gain_context < 0 or self.max_gap < 0 or self.smooth_sigma < 0 or self.min_face < 0:
            raise KeepError("--gain_context, --max_gap, --smooth_sigma and --min_face must be >= 0")
        if self.overlap not in OVERLAP_MODES:
            raise KeepError(f"--overlap must be one of {', '.join(OVERLAP_MODES)}, got '{self.overlap}'")
        if self.fps <= 0:
            raise KeepError(f"--fps must be > 0, got {self.fps}")
        from ..restorer import check_fidelity

        check_fidelity(self.fidelity)
        from ..background import UPSAMPLERS
        from ..face.detectors import DETECTORS
        from ..flow import FLOW_ESTIMATORS
        from ..precision import PRECISIONS
        from ..video.io import PRESETS

        choices = {
            "detector": ("auto", *DETECTORS),
            "mask": ("auto", "parsenet", "feather"),
            "flow": ("auto", *FLOW_ESTIMATORS),
            "bg_upsampler": UPSAMPLERS,
            "precision": tuple(PRECISIONS),
            "preset": PRESETS,
            "container": CONTAINERS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise KeepError(f"unknown {name} '{getattr(self, name)}'; choose one of {', '.join(valid)}")
