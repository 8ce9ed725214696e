"""Per-frame and per-clip metrics of a restored clip against its GT (all metrics of the table).

Each metric that cannot run (missing weights or package) is reported as unavailable with its reason
in `Evaluator.notes`, and its column holds NaN; the others still run. The columns of today's papers
(`metrics.table: dvface`: DISTS, the no-reference image metrics, E*warp, VIDD, FVD, DOVER) are built
only for that table; a clip without ground truth gets the no-reference ones, DOVER, E*warp and VIDD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import KeepError
from ..flow import RAFTFlow, build_flow
from ..metrics.dover import dover_score, load_dover
from ..metrics.ewarp import ewarp_error, ewarp_flows
from ..metrics.fvd import clip_windows, i3d_features, load_i3d
from ..metrics.identity import build_identity, identity_similarity, vidd
from ..metrics.iqa import build_iqa
from ..metrics.landmarks import DlibLandmarks68, akd
from ..metrics.lpips import build_lpips
from ..metrics.psnr_ssim import psnr, ssim
from ..metrics.temporal import consistent_flows, fluctuation, to_tensor, warping_error
from ..weights import resolve_weights
from .config import MetricsConfig

FRAME_METRICS = ("psnr", "ssim", "lpips", "ids", "akd")
TODAY_FRAME_METRICS = ("dists", "clipiqa", "musiq", "niqe", "maniqa", "liqe")  # the dvface table's image metrics
NO_REFERENCE = ("clipiqa", "musiq", "niqe", "maniqa", "liqe")


@dataclass
class Reference:
    """What every method of a clip is compared with, computed once from GT."""

    embeddings: list[np.ndarray] | None
    landmarks: list[np.ndarray] | None
    flows: torch.Tensor | None
    valid: torch.Tensor | None
    ewarp: tuple[torch.Tensor, torch.Tensor] | None = None  # E*warp's GT flows t -> t+1 and masks


class Evaluator:
    def __init__(self, cfg: MetricsConfig, *, device: str | torch.device = "cpu"):
        self.device = device
        self.notes: dict[str, str] = {}  # metric -> what was used, or why it is unavailable
        self.lpips = self._try("lpips", lambda: self._build_lpips(cfg))
        self.identity = self._try("ids", lambda: self._build_identity(cfg))
        self.landmarks = self._try("akd", DlibLandmarks68)
        if self.landmarks is not None:
            self.notes["akd"] = f"{DlibLandmarks68.name}; mean L2 over 68 points, pixels at 512"
        self.flow_fn = self._try("twe", lambda: self._build_flow(cfg))
        self.cfg = cfg
        self.iqa: dict[str, torch.nn.Module] = {}
        self.ewarp_fn = self.fvd_net = self.dover_net = None
        self.failed: set[str] = set()  # metrics that failed on some clip: their column is n/a for the whole run
        self.out_embeddings: list[np.ndarray] | None = None  # the last clip's, for VIDD
        if cfg.table == "dvface":
            self._build_today(cfg)

    def _build_today(self, cfg: MetricsConfig) -> None:
        """The dvface table's models; each one missing leaves its column empty with a note."""
        for name in TODAY_FRAME_METRICS:
            built = self._try(name, lambda name=name: build_iqa(name, device=self.device))
            if built is not None:
                self.iqa[name], self.notes[name] = built
        self.ewarp_fn = self._try("ewarp", lambda: self._build_ewarp_flow(cfg))
        self.fvd_net = self._try("fvd", lambda: self._build_fvd(cfg))
        self.dover_net = self._try("dover", lambda: self._build_dover(cfg))
        if self.identity is not None:
            self.notes["vidd"] = (
                "mean |e_t - e_t+1| of unit identity embeddings, adjacent frames (same embedder as IDS)"
            )

    def _build_ewarp_flow(self, cfg: MetricsConfig):
        reasons = []
        for name in cfg.ewarp_flow:
            try:
                flow = (
                    RAFTFlow("raft_large", weights="raft_things", device=self.device, num_flow_updates=20)
                    if (name == "raft_things")
                    else build_flow(name, device=self.device)
                )
            except KeepError as exc:
                reasons.append(f"{name}: {exc}")
                continue
            on = "the ground truth" if cfg.ewarp_flow_on == "gt" else "the restored clip"
            self.notes["ewarp"] = (
                f"flow {name} on {on} (sets without GT: the restored clip), x{cfg.ewarp_scale} size, Ruder et al. "
                "occlusions, squared RGB error in [0, 1] per non-occluded pixel" + "".join(f"; {r}" for r in reasons)
            )
            return flow
        raise KeepError("no E*warp flow can run: " + "; ".join(reasons))

    def _build_fvd(self, cfg: MetricsConfig):
        net = load_i3d(resolve_weights(cfg.fvd_weights), bn_eps=cfg.fvd_bn_eps, device=self.device)
        self.notes["fvd"] = (
            f"I3D logits ({cfg.fvd_weights}), 224 px, [-1, 1], non-overlapping {cfg.fvd_frames}-frame windows, "
            "restored set vs GT set (VideoGPT/TATS/cd-fvd convention)"
        )
        return net

    def _build_dover(self, cfg: MetricsConfig):
        net = load_dover(resolve_weights(cfg.dover_weights), device=self.device)
        self.notes["dover"] = (
            f"DOVER overall score in [0, 1] ({cfg.dover_weights}): technical view 3 x 32 frames of 7x7 32-px "
            f"fragments, aesthetic view 32 frames at 224, fused as the reference code; draws seeded ({cfg.dover_seed})"
        )
        return net

    def _try(self, metric: str, build):
        try:
            return build()
        except KeepError as exc:
            self.notes[metric] = f"unavailable: {exc}"
            return None

    def _build_lpips(self, cfg: MetricsConfig):
        net = build_lpips(cfg.lpips_net, self.device, backbone_weights=cfg.lpips_backbone)
        self.notes["lpips"] = f"lpips v0.1, {cfg.lpips_net} backbone, RGB in [-1, 1]"
        return net

    def _build_identity(self, cfg: MetricsConfig):
        embedder, name, skipped = build_identity(cfg.identity, device=self.device)
        self.notes["ids"] = f"cosine similarity of {name} embeddings" + "".join(
            f"; {k} not used: {v}" for k, v in skipped.items()
        )
        return embedder

    def _build_flow(self, cfg: MetricsConfig):
        flow = build_flow(cfg.twe_flow, device=self.device)
        self.notes["twe"] = f"flow {cfg.twe_flow} on GT (t -> t-1), forward-backward occlusion mask, MSE in [0, 1]"
        return flow

    def reference(self, gt: np.ndarray | None) -> Reference:
        """GT clip `(T, H, W, 3)` uint8 -> embeddings, landmarks and flows reused by every method
        (None for a clip without ground truth: nothing to reuse)."""
        if gt is None:
            return Reference(embeddings=None, landmarks=None, flows=None, valid=None)
        flows = valid = ewarp = None
        if self.flow_fn is not None and len(gt) > 1:
            flows, valid = consistent_flows(gt, self._flow_cpu)
        if self.ewarp_fn is not None and self.cfg.ewarp_flow_on == "gt" and len(gt) > 1:
            ewarp = ewarp_flows(gt, self._ewarp_flow_cpu, scale=self.cfg.ewarp_scale)
        return Reference(
            embeddings=[self.identity(f) for f in gt] if self.identity else None,
            landmarks=[self.landmarks(f) for f in gt] if self.landmarks else None,
            flows=flows,
            valid=valid,
            ewarp=ewarp,
        )

    def _flow_cpu(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.flow_fn(target.to(self.device), source.to(self.device)).float().cpu()

    def _ewarp_flow_cpu(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.ewarp_fn(target.to(self.device), source.to(self.device)).float().cpu()

    @torch.no_grad()
    def frames(self, out: np.ndarray, gt: np.ndarray | None, ref: Reference) -> dict[str, np.ndarray]:
        """Per-frame metrics `{name: (T,)}` of a restored clip against GT (NaN when unavailable or, for
        the full-reference ones, when the clip has no GT)."""
        nan = np.full(len(out), np.nan)
        result = {name: nan.copy() for name in FRAME_METRICS}
        self.out_embeddings = [self.identity(o) for o in out] if self.identity is not None else None
        if gt is not None:
            result["psnr"] = np.array([psnr(o, g) for o, g in zip(out, gt, strict=True)])
            result["ssim"] = np.array([ssim(o, g) for o, g in zip(out, gt, strict=True)])
            if self.lpips is not None:
                for t in range(len(out)):
                    pair = to_tensor(np.stack([out[t], gt[t]])).to(self.device)
                    result["lpips"][t] = float(self.lpips(pair[:1], pair[1:]).flatten()[0])
            if ref.embeddings is not None:
                pairs = zip(self.out_embeddings, ref.embeddings, strict=True)
                result["ids"] = np.array([identity_similarity(o, e) for o, e in pairs])
            if ref.landmarks is not None:
                result["akd"] = np.array([akd(self.landmarks(o), p) for o, p in zip(out, ref.landmarks, strict=True)])
        if self.cfg.table == "dvface":
            result |= self._today_frames(out, gt)
        return result

    def _today_frames(self, out: np.ndarray, gt: np.ndarray | None) -> dict[str, np.ndarray]:
        """The image metrics of the dvface table per frame. A metric that cannot score these frames (pyiqa's
        NIQE below 96 px, ...) leaves its column n/a with the reason in its note, and is not tried again."""
        result = {name: np.full(len(out), np.nan) for name in TODAY_FRAME_METRICS}
        for name, net in list(self.iqa.items()):
            if name not in NO_REFERENCE and gt is None:
                continue
            try:
                for t in range(len(out)):
                    x = (to_tensor(out[t : t + 1]).to(self.device) + 1) / 2
                    value = net(x, (to_tensor(gt[t : t + 1]).to(self.device) + 1) / 2) if name == "dists" else net(x)
                    result[name][t] = float(torch.as_tensor(value).flatten()[0])
            except Exception as exc:  # any failure inside a metric's network ends in its note
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                size = f"{out.shape[2]}x{out.shape[1]}"
                self.notes[name] = f"not computed: it failed on {size} frames ({type(exc).__name__}: {reason:.200})"
                result[name][:] = np.nan
                del self.iqa[name]
                self.failed.add(name)
        return result

    def clip(self, out: np.ndarray, per_frame: dict[str, np.ndarray], ref: Reference) -> dict[str, float]:
        """Per-clip summary: frame means, std of IDS / AKD over frames, TWE (and for the dvface table
        E*warp and VIDD)."""
        summary = {name: float(np.mean(values)) for name, values in per_frame.items()}
        summary["std_ids"] = fluctuation(per_frame["ids"])
        summary["std_akd"] = fluctuation(per_frame["akd"])
        summary["twe"] = warping_error(out, ref.flows, ref.valid) if ref.flows is not None else float("nan")
        if self.cfg.table == "dvface":
            summary["ewarp"] = self._ewarp(out, ref)
            summary["vidd"] = vidd(self.out_embeddings) if self.out_embeddings is not None else float("nan")
            summary["dover"] = self._dover(out)
        return summary

    def _ewarp(self, out: np.ndarray, ref: Reference) -> float:
        if self.ewarp_fn is None or len(out) < 2:
            return float("nan")
        forward, valid = ref.ewarp or ewarp_flows(out, self._ewarp_flow_cpu, scale=self.cfg.ewarp_scale)
        return ewarp_error(out, forward, valid, scale=self.cfg.ewarp_scale)

    def _dover(self, out: np.ndarray) -> float:
        if self.dover_net is None:
            return float("nan")

        return dover_score(out, self.dover_net, np.random.default_rng(self.cfg.dover_seed), device=self.device)

    def fvd_features(self, clip: np.ndarray) -> np.ndarray | None:
        """I3D features `(windows, 400)` of a clip's non-overlapping FVD windows (None: no FVD model)."""
        if self.fvd_net is None:
            return None

        return i3d_features(clip_windows(clip, self.cfg.fvd_frames), self.fvd_net, device=self.device)
