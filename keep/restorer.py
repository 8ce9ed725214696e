"""The runtime around the KEEP network: flow estimation, the previous frame, devices (STYLE habit 13).

`KEEP` is a function of tensors and always takes its flows. `Restorer` pairs it with a flow
estimator, so that what `keep.load_model` returns restores a clip from its frames alone:

    model = keep.load_model("keep")          # a Restorer
    out = model(lq)                          # flows estimated here, frame t -> t-1
    out = model(lq, flows)                   # or given (precomputed, cached, injected in tests)
    model.network                            # the bare nn.Module (state dict, training, hooks)

On a GPU the frames of a window are replayed from CUDA graphs (`keep.cuda_graphs`; same kernels, same
values; `Restorer(..., cuda_graphs=False)` or `model.cuda_graphs = False` runs them eagerly).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from einops import rearrange

from .archs.keep_arch import KEEP, KEEPConfig, KEEPOutput, KEEPState
from .cuda_graphs import GraphedStep
from .precision import autocast, tf32

FlowEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Restorer:
    """A KEEP network and the flow estimator that feeds it (None: flows must always be given)."""

    def __init__(self, network: KEEP, flow: FlowEstimator | None = None, *, cuda_graphs: bool = True):
        self.network = network
        self.flow = flow
        self.cuda_graphs = cuda_graphs  # on a GPU, replay the per-frame recurrence from CUDA graphs
        self._graphed: GraphedStep | None = None

    def frame_step(self) -> GraphedStep | None:
        """What `KEEP.run` computes its frames with: a `GraphedStep` on CUDA (None: `KEEP.step`)."""
        if not self.cuda_graphs or self.device.type != "cuda":
            return None
        if self._graphed is None or self._graphed.network is not self.network:
            self._graphed = GraphedStep(self.network)
        return self._graphed

    @property
    def config(self) -> KEEPConfig:
        return self.network.config

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> Restorer:
        self.network.to(device)
        return self

    def eval(self) -> Restorer:
        self.network.eval()
        return self

    @torch.no_grad()
    def flows(self, lq: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor | None:
        """Flows frame t -> t-1 of a window, all pairs in one estimator call.

        lq: `(B, T, 3, H, W)` in [-1, 1]; previous: `(B, 3, H, W)` the frame before the window, or None.
        Returns `(B, T', 2, H, W)` with T' = T when `previous` is given (entry 0: frame 0 -> previous),
        else T - 1; None when there is no pair.
        """
        targets = lq if previous is not None else lq[:, 1:]
        sources = lq[:, :-1] if previous is None else torch.cat([previous[:, None], lq[:, :-1]], dim=1)
        if targets.shape[1] == 0:
            return None
        if self.flow is None:
            raise ValueError("no flows given and no flow estimator set (keep.load_model(..., flow='dis'))")
        flat = lambda x: rearrange(x, "b t c h w -> (b t) c h w")  # noqa: E731
        # flows in exact float32 whatever precision the network runs at: no autocast, no TF32 (with bf16
        # autocast the released GMFlow's flows moved enough to change a quarter of the golden codes)
        exact = tf32(False) if lq.device.type == "cuda" else nullcontext()
        with exact, torch.autocast(lq.device.type, enabled=False):
            flows = self.flow(flat(targets), flat(sources)).float()
        return rearrange(flows, "(b t) c h w -> b t c h w", b=lq.shape[0])

    def run(
        self,
        lq: torch.Tensor,
        flows: torch.Tensor | None = None,
        *,
        state: KEEPState | None = None,
        previous: torch.Tensor | None = None,
        **kwargs,
    ) -> KEEPOutput:
        """`KEEP.run` with flows estimated when not given; `previous` is the LQ frame `(B, 3, H, W)`
        before this window (needed with a `state` that has a previous output)."""
        if flows is None:
            if state is not None and state.prev_out is not None and previous is None:
                raise ValueError("continuing from a state needs the previous LQ frame to estimate the first flow")
            flows = self.flows(lq, previous if state is not None and state.prev_out is not None else None)
        kwargs.setdefault("step", self.frame_step())
        return self.network.run(lq, flows, state=state, **kwargs)

    def __call__(self, lq: torch.Tensor, flows: torch.Tensor | None = None) -> torch.Tensor:
        """Restore one clip: lq `(B, T, 3, H, W)` in [-1, 1] -> `(B, T, 3, H, W)` raw output, in exact
        float32 (wrap a call of `run` in `keep.precision.autocast(device, "bf16")` for another precision)."""
        with autocast(lq.device, "fp32"):
            return self.run(lq, flows).out
