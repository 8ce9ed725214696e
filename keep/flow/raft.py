"""torchvision's RAFT (large or small) as a KEEP flow estimator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..weights import resolve_weights


class RAFTFlow:
    """RAFT flow; see `keep.flow` for the call convention. Frames are padded to a multiple of 8."""

    def __init__(
        self,
        variant: str = "raft_large",
        *,
        device: str | torch.device = "cpu",
        weights: str | None = None,
        num_flow_updates: int = 12,
    ):
        from torchvision.models.optical_flow import raft_large, raft_small

        path = resolve_weights(weights or variant)
        self.model = {"raft_large": raft_large, "raft_small": raft_small}[variant](weights=None, progress=False)
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval().requires_grad_(False).to(device)
        self.num_flow_updates = num_flow_updates

    @torch.no_grad()
    def __call__(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        height, width = target.shape[-2:]
        pad = (0, (-width) % 8, 0, (-height) % 8)
        target = F.pad(target.float().to(device), pad, mode="replicate")
        source = F.pad(source.float().to(device), pad, mode="replicate")
        flow = self.model(target, source, num_flow_updates=self.num_flow_updates)[-1]
        return flow[..., :height, :width]
