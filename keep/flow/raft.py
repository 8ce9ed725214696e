"""torchvision's RAFT (large or small) as a KEEP flow estimator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import KeepError
from ..weights import read_tensors, resolve_weights


class RAFTFlow:
    """RAFT flow; see `keep.flow` for the call convention.

    Frames are padded to a multiple of 8; frames smaller than RAFT's minimum (128 px) are upsampled
    first and the flow scaled back."""

    MIN_SIZE = 128

    def __init__(
        self,
        variant: str = "raft_large",
        *,
        device: str | torch.device = "cpu",
        weights: str | None = None,
        num_flow_updates: int = 12,
    ):
        from torchvision.models import optical_flow  # here: torchvision's import costs every process ~3 s

        path = resolve_weights(weights or variant)
        self.model = getattr(optical_flow, variant)(weights=None, progress=False)
        state = read_tensors(path, f"{variant} weights")
        try:
            self.model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise KeepError(f"{path} does not fit torchvision's {variant}: {str(exc).splitlines()[0]}") from None
        self.model.eval().requires_grad_(False).to(device)
        self.num_flow_updates = num_flow_updates
        self.name = variant

    @torch.no_grad()
    def __call__(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        height, width = target.shape[-2:]
        factor = max(1.0, self.MIN_SIZE / min(height, width))
        target, source = target.float().to(device), source.float().to(device)
        if factor > 1:
            size = (round(height * factor), round(width * factor))
            target, source = (
                F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (target, source)
            )
        h, w = target.shape[-2:]
        pad = (0, (-w) % 8, 0, (-h) % 8)
        target = F.pad(target, pad, mode="replicate")
        source = F.pad(source, pad, mode="replicate")
        flow = self.model(target, source, num_flow_updates=self.num_flow_updates)[-1][..., :h, :w]
        if factor > 1:
            flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([width / w, height / h], device=device).view(1, 2, 1, 1)
        return flow
