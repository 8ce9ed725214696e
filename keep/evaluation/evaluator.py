"""Per-frame and per-clip metrics of a restored clip against its GT (all metrics of the table).

Each metric that cannot run (missing weights or package) is reported as unavailable with its reason
in `Evaluator.notes`, and its column holds NaN; the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import KeepError
from ..metrics.identity import build_identity, identity_similarity
from ..metrics.landmarks import DlibLandmarks68, akd
from ..metrics.psnr_ssim import psnr, ssim
from ..metrics.temporal import consistent_flows, fluctuation, to_tensor, warping_error
from .config import MetricsConfig

FRAME_METRICS = ("psnr", "ssim", "lpips", "ids", "akd")


@dataclass
class Reference:
    """What every method of a clip is compared with, computed once from GT."""

    embeddings: list[np.ndarray] | None
    landmarks: list[np.ndarray] | None
    flows: torch.Tensor | None
    valid: torch.Tensor | None


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

    def _try(self, metric: str, build):
        try:
            return build()
        except KeepError as exc:
            self.notes[metric] = f"unavailable: {exc}"
            return None

    def _build_lpips(self, cfg: MetricsConfig):
        from ..metrics.lpips import build_lpips

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
        from ..flow import build_flow

        flow = build_flow(cfg.twe_flow, device=self.device)
        self.notes["twe"] = f"flow {cfg.twe_flow} on GT (t -> t-1), forward-backward occlusion mask, MSE in [0, 1]"
        return flow

    def reference(self, gt: np.ndarray) -> Reference:
        """GT clip `(T, H, W, 3)` uint8 -> embeddings, landmarks and flows reused by every method."""
        flows = valid = None
        if self.flow_fn is not None and len(gt) > 1:
            flows, valid = consistent_flows(gt, self._flow_cpu)
        return Reference(
            embeddings=[self.identity(f) for f in gt] if self.identity else None,
            landmarks=[self.landmarks(f) for f in gt] if self.landmarks else None,
            flows=flows,
            valid=valid,
        )

    def _flow_cpu(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return self.flow_fn(target.to(self.device), source.to(self.device)).float().cpu()

    @torch.no_grad()
    def frames(self, out: np.ndarray, gt: np.ndarray, ref: Reference) -> dict[str, np.ndarray]:
        """Per-frame metrics `{name: (T,)}` of a restored clip against GT (NaN when unavailable)."""
        nan = np.full(len(out), np.nan)
        result = {
            "psnr": np.array([psnr(o, g) for o, g in zip(out, gt, strict=True)]),
            "ssim": np.array([ssim(o, g) for o, g in zip(out, gt, strict=True)]),
            "lpips": nan.copy(),
            "ids": nan.copy(),
            "akd": nan.copy(),
        }
        if self.lpips is not None:
            for t in range(len(out)):
                pair = to_tensor(np.stack([out[t], gt[t]])).to(self.device)
                result["lpips"][t] = float(self.lpips(pair[:1], pair[1:]).flatten()[0])
        if ref.embeddings is not None:
            result["ids"] = np.array(
                [identity_similarity(self.identity(o), e) for o, e in zip(out, ref.embeddings, strict=True)]
            )
        if ref.landmarks is not None:
            result["akd"] = np.array([akd(self.landmarks(o), p) for o, p in zip(out, ref.landmarks, strict=True)])
        return result

    def clip(self, out: np.ndarray, per_frame: dict[str, np.ndarray], ref: Reference) -> dict[str, float]:
        """Per-clip summary: frame means, std of IDS / AKD over frames, TWE."""
        summary = {name: float(np.mean(values)) for name, values in per_frame.items()}
        summary["std_ids"] = fluctuation(per_frame["ids"])
        summary["std_akd"] = fluctuation(per_frame["akd"])
        summary["twe"] = warping_error(out, ref.flows, ref.valid) if ref.flows is not None else float("nan")
        return summary
