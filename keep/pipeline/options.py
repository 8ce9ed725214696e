"""The options of a restoration run (`inference.py`'s flags and `--set` keys, one field each; docs/inference.md),
in two kinds, and how the stages are grouped into workers on a device.

- `BuildOptions`: what the pipeline is built from, once (`Pipeline(options)`): the network, its device and
  precision, the flow estimator, the detector, the paste mask, the upsamplers, the workers and their queues.
  Changing one means loading a model or starting the workers again.
- `RunOptions`: what each run chooses (`Pipeline.run(source, outdir, settings)`): which faces, the fidelity, the
  upscale factor, the tracker's thresholds, the encoder's crf and preset, the files written. Each input's `Job`
  carries them to every stage worker, which applies them to that input; nothing is built again.
- `PipelineOptions`: both in one flat dataclass, the user's view (the flags and `--set` keys, the app's controls);
  `BuildOptions.of(options)` and `RunOptions.of(options)` are its two parts.

Every option is defaulted and checked in one place, its field: ranges in the annotation (`keep.config`), names of
choices (detector, flow, mask, ...) in `__post_init__` against the registries; both when an options object is
built, before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Any, TypeVar

from ..background import UPSAMPLERS
from ..config import Fidelity, NonNegativeFloat, NonNegativeInt, PositiveInt, Range, check_fields
from ..devices import PRECISION_CHOICES
from ..errors import KeepError
from ..face.detectors import DETECT_SIZE, DETECTORS
from ..flow import FLOW_ESTIMATORS
from ..metrics.identity import DLIB_SAME_PERSON
from ..streaming import WINDOW
from ..video.io import PRESETS
from .choice import parse_faces

# Seconds are accumulated per step of each stage under these names (the summary's and the benchmark's `timings`).
STAGE_TIMERS = {
    "decode": ("decode",),
    "faces": ("detect", "track", "survey"),
    "restore": ("align", "flow", "network"),
    "compose": ("background", "paste"),
    "encode": ("encode",),
}
STAGES = tuple(name for names in STAGE_TIMERS.values() for name in names)
OVERLAP_MODES = ("processes", "threads", "off")
CONTAINERS = ("auto", "mp4", "mkv")
MASKS = ("auto", "parsenet", "feather")
ENGINES = ("local", "ray")  # who restores a folder: this process (or torchrun's, fixed shares) | Ray workers

# Which worker runs which stages, in the order a frame passes them. The `main` group runs in the calling process,
# which owns the network's device; the others in worker processes (or threads). On the CPU the detector runs
# beside the decoder, so the main process keeps its cores for the network (the critical path: docs/inference.md);
# on a GPU it runs batched on the GPU beside the network, where the front worker's CPU cores would be the slowest
# stage (docs/speed.md: `detect` bound the 1080p pipeline).
STAGE_GROUPS = {
    "cpu": (("front", ("decode", "faces")), ("main", ("restore",)), ("back", ("compose", "encode"))),
    "gpu": (("front", ("decode",)), ("main", ("faces", "restore")), ("back", ("compose", "encode"))),
}

T = TypeVar("T", bound="_Part")


class _Part:
    """One kind of options (a dataclass): `of` takes its fields from any object that has them."""

    @classmethod
    def of(cls: type[T], options: Any) -> T:
        """This kind's fields of `options` (a `PipelineOptions`, or options of this kind: a copy)."""
        return cls(**{field.name: getattr(options, field.name) for field in fields(cls)})


def check_choices(options: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """KeepError naming the first option whose value is not one of its choices."""
    for name, valid in choices.items():
        if getattr(options, name) not in valid:
            raise KeepError(f"unknown {name} '{getattr(options, name)}'; choose one of {', '.join(valid)}")


@dataclass
class BuildOptions(_Part):
    """What the pipeline is built from once: a change loads a model or starts the stage workers again."""

    model: str = "keep"
    device: str = "cpu"
    precision: str = "auto"  # auto (fp16 on CUDA, else fp32) | fp32 (exact) | tf32 | bf16 | fp16: keep.devices
    cuda_graphs: bool = True  # GPU: replay each frame's kernels from a CUDA graph (keep.cuda_graphs)
    flow: str = "auto"
    window: PositiveInt = WINDOW  # frames restored per network call (state carried; sizes the stages' queues)
    detector: str = "auto"
    detect_size: NonNegativeInt = DETECT_SIZE  # retinaface_mobilenet: larger frames detected shrunk (0: never)
    mask: str = "auto"  # paste-back mask: auto (face parsing if available, else feather) | parsenet | feather
    bg_upsampler: str = "bicubic"  # background at --upscale: bicubic | realesrgan (Real-ESRGAN x2plus)
    bg_tile: NonNegativeInt = 400  # Real-ESRGAN tile size in input pixels (0: whole frames)
    face_upsample: bool = False  # upsample restored faces with Real-ESRGAN before pasting (at --upscale > 1)
    overlap: str = "processes"  # stages run in: processes (GIL-free) | threads | off (one after another)
    stage_groups: str = "auto"  # which worker runs detection: auto (by the device) | cpu | gpu (STAGE_GROUPS)
    # A folder on Ray (keep/pipeline/ray_engine.py, docs/inference.md): workers take whole videos, the next one
    # going to whichever is free; a video whose worker died is tried again on another, up to `ray_retries` times.
    engine: str = "local"  # local (this process, or torchrun's processes, fixed shares) | ray
    ray_address: str = ""  # the cluster to join ("": $RAY_ADDRESS, else a local Ray started for the run)
    ray_workers: NonNegativeInt = 0  # workers (0: one per ray_gpus GPUs with a CUDA device, else per ray_cpus cores)
    ray_cpus: PositiveInt = 2  # CPU cores per worker on the CPU (its torch threads unless --threads); GPU: 1
    ray_gpus: Annotated[float, Range(0, 1, low_open=True)] = 1.0  # GPUs per worker (0.5: two workers share one)
    ray_retries: NonNegativeInt = 2  # times a video whose worker died (killed, node lost) is restored again

    def __post_init__(self) -> None:
        check_fields(self, BuildOptions)
        check_choices(self, {
            "precision": PRECISION_CHOICES, "flow": ("auto", *FLOW_ESTIMATORS), "detector": ("auto", *DETECTORS),
            "mask": MASKS, "bg_upsampler": UPSAMPLERS, "overlap": OVERLAP_MODES,
            "stage_groups": ("auto", *STAGE_GROUPS), "engine": ENGINES,
        })  # fmt: skip


@dataclass
class RunOptions(_Part):
    """What each run chooses: every stage applies it to the input it is given (`Job.settings`), nothing is built."""

    faces: str = "all"  # which faces to restore: all | largest | track ids "0,2" | a photo of the person (choice.py)
    identity_threshold: NonNegativeFloat = DLIB_SAME_PERSON  # --faces PHOTO: tracks closer than this are the person
    has_aligned: bool = False  # every frame is an aligned face crop: no detection, the frame restored whole
    min_face: NonNegativeFloat = 16.0  # faces whose eye-to-mouth distance x 3 is below this many pixels are left alone
    min_track: NonNegativeInt = 4  # tracks detected in fewer frames are left alone (0 or 1: every track)
    max_gap: NonNegativeInt = 5  # frames a track may miss and still be interpolated
    smooth_sigma: NonNegativeFloat = 1.5  # Gaussian landmark smoothing over time, in frames (0: off)
    fidelity: Fidelity = 1.0  # CFT weight: 0 .. 1 (CodeFormer's -w); 1 as every release
    gain_context: NonNegativeInt = 0  # earlier observations the Kalman gain sees (keep.streaming)
    upscale: PositiveInt = 1
    draw_box: bool = False  # outline every restored face (its aligned crop) with its track id
    crf: Annotated[int, Range(0, 51)] = 18
    preset: str = "medium"  # libx264 preset, ultrafast .. veryslow: faster ones write larger files at the same crf
    fps: Annotated[float, Range(0, low_open=True)] = 25.0  # frame rate for folders of frames
    container: str = "auto"  # output video container: auto (Matroska for .mkv/.webm inputs, else MP4) | mp4 | mkv
    save_frames: bool = False
    save_faces: bool = False  # write <stem>_faces.jsonl: per frame, each face's track, landmarks, crop corners
    overwrite: bool = False  # redo inputs whose output already exists (default: skip them)

    def __post_init__(self) -> None:
        check_fields(self, RunOptions)
        check_choices(self, {"preset": PRESETS, "container": CONTAINERS})
        if parse_faces(self.faces).kind != "all" and self.has_aligned:
            raise KeepError(f"--faces {self.faces} chooses among detected faces; --has_aligned restores whole frames")


@dataclass
class PipelineOptions(RunOptions, BuildOptions):
    """What a restoration run does, one field per option (docs/inference.md has the table of `--set` keys): the
    built-once options, then the per-run ones."""

    def __post_init__(self) -> None:
        BuildOptions.__post_init__(self)
        RunOptions.__post_init__(self)


def stage_groups(options: BuildOptions) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The grouping of the stages into workers for this run: `options.stage_groups`, or by the device (the one
    place the device decides it)."""
    name = options.stage_groups
    if name == "auto":
        name = "gpu" if str(options.device).startswith("cuda") else "cpu"
    return STAGE_GROUPS[name]


def survey_groups(options: BuildOptions) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The survey pass's grouping (`--faces largest | PHOTO`): this run's groups cut after the faces stage, the
    survey stage in the main group (where the identity model runs); detection runs where it runs when restoring."""
    groups = []
    for name, stages in stage_groups(options):
        kept = tuple(stage for stage in stages if stage in ("decode", "faces"))
        kept += ("survey",) if name == "main" else ()
        if kept:
            groups.append((name, kept))
    return tuple(groups)
