"""Benchmark configuration: defaults here -> `-opt configs/test_vfhq.yml` -> `--set a.b=c`.

Every number's allowed range is its annotation (`keep.config.Range`), checked when a section is built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from ..config import Fidelity, FolderName, NonNegativeInt, PositiveInt, Range, check_fields
from ..errors import KeepError
from ..streaming import WINDOW

TABLE_NAMES = ("keep", "dvface")  # keep.evaluation.report.TABLES


@dataclass
class DataConfig:
    """A test set of aligned clips: `root/GT/<clip>/*.png` (aligned, model size) and
    `root/LQ/<clip>/*.png` (GT / 4); `scripts/make_test_set.py` writes LQ from GT under a fixed seed."""

    root: str = "datasets/vfhq_test"
    clips: tuple[str, ...] = ()  # restrict to these clip names; empty: every clip under GT/
    max_frames: NonNegativeInt = 0  # first N frames of each clip; 0: all
    gt: bool = True  # false: real footage without ground truth, root/LQ/<clip>/*.png only (aligned faces of
    # any size): no-reference metrics, E*warp and VIDD on the restored clips (docs/benchmark.md)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class ModelConfig:
    source: str = "keep"  # checkpoint path, registry name, or preset:<name> (keep.load_model)
    flow: str = "auto"  # flow for the Kalman prediction (keep.flow.build_flow); auto: the checkpoint's GMFlow
    fidelity: Fidelity = 1.0  # CFT weight (CodeFormer's -w); 1 in every release
    window: PositiveInt = WINDOW  # streaming window (keep.streaming.StreamingRestorer)
    gain_context: NonNegativeInt = 0
    stream_mode: str = "carry"  # carry: state across windows; reset: independent windows; released: the
    # released test (independent windows, the short last one reflection-circle padded to `window`)
    precision: str = "fp32"  # fp32 | tf32 | bf16 | fp16

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class MetricsConfig:
    lpips_net: str = "alex"
    lpips_backbone: str | None = None  # local torchvision backbone file; None: keep.weights lookup
    identity: tuple[str, ...] = ("arcface", "dlib")  # first that can run is used
    twe_flow: str = "dis"  # flow estimator on GT for the temporal warping error
    table: str = "keep"  # keep: KEEP's paper's columns + TWE; dvface: today's papers' columns (DVFace Table 1)
    published: str = ""  # published rows shown beside the run (dvface table): vfhq_test | hdtf | rfv_lq | voxceleb2
    ewarp_flow: tuple[str, ...] = ("raft_things", "dis")  # E*warp's flow estimator: the first that can run
    ewarp_flow_on: str = "gt"  # gt: the ground truth's flow (sets without GT: always the output's) | output
    ewarp_scale: Annotated[float, Range(0.05, 1)] = 0.5  # frames resized before flow and error (STAR/DOVE: 0.5)
    fvd_frames: PositiveInt = 16  # frames per FVD window (non-overlapping windows of each clip)
    fvd_weights: str = "i3d_rgb_imagenet"  # I3D state dict: registry name or path
    fvd_bn_eps: Annotated[float, Range(0, 1)] = 1e-3  # 1e-3: pytorch-i3d's rgb_imagenet.pt; 1e-5: TATS's copy
    dover_weights: str = "dover"  # DOVER state dict: registry name (dover | dover_plus_plus) or path
    dover_seed: NonNegativeInt = 0  # DOVER's frame and patch draws, the same for every method of a clip

    def __post_init__(self) -> None:
        check_fields(self)
        if self.table not in TABLE_NAMES:
            raise KeepError(f"unknown metrics.table '{self.table}'; choose one of {list(TABLE_NAMES)}")
        if self.ewarp_flow_on not in ("gt", "output"):
            raise KeepError(f"metrics.ewarp_flow_on must be gt or output, not '{self.ewarp_flow_on}'")


@dataclass
class BenchmarkConfig:
    name: FolderName = "vfhq_test"  # outputs go to <results_dir>/<name>/
    results_dir: str = "results"
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    methods: tuple[str, ...] = ("bicubic", "keep_per_frame", "keep")
    save_images: bool = False  # restored frames as PNG under <name>/images/<method>/<clip>/
    progress: bool = True  # a progress bar per clip and method
    overwrite: bool = False  # replace a previous run under the same name (otherwise refused)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def __post_init__(self) -> None:
        check_fields(self)
