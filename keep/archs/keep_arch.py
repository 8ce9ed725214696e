"""KEEP: Kalman-inspired feature propagation around a CodeFormer-style VQGAN (paper section 3).

Per frame t of a clip (paper section 3):
    z_obs[t]  = LQ encoder(lq[t])                                  observation
    z_pred[t] = HQ encoder(warp(out[t-1], flow t -> t-1))          prediction       (t > 0)
    K[t]      = gain network(z_obs of the window)                  Kalman gain
    z_post[t] = (1 - K[t]) * z_obs[t] + K[t] * z_pred[t]           update           (t > 0)
    idx[t]    = argmax transformer(z_post[t]);  out[t] = decoder(codebook[idx[t]]) with CFT / CFA

`KEEP.forward` restores one clip exactly as the released network does. `KEEP.run` is the general
route: it also takes and returns a `KEEPState` (previous output, CFA memory, recent observations) so a
video of any length can be restored window by window without resets (see `keep.streaming`), and it
returns the intermediate tensors training needs (`KEEPOutput`).

The fidelity (CodeFormer's `w`: how much of the LQ encoder's features the CFT adds to the decoder, 0 .. 1)
is an argument of `run` and `step`, not part of the configuration: it changes no weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from .flow_warp import flow_warp
from .fusion import CFA, CFT
from .kalman import KalmanGain, kalman_update
from .transformer import CodeTransformer
from .vqgan import Decoder, Encoder, VectorQuantizer


@dataclass
class KEEPConfig:
    """The network's one definition: `KEEP(config)` builds from it, and every checkpoint carries it.
    Defaults are the released configuration (the v0.1.0 and v1.0.0 checkpoints). The fidelity is not here: it is an
    argument of `KEEP.run` (checkpoints that stored it as `cft_weight` still load, `keep.checkpoint`)."""

    img_size: int = 512
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    norm_groups: int = 32
    codebook_size: int = 1024
    emb_dim: int = 256
    beta: float = 0.25
    transformer_dim: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 9
    cft_scales: tuple[int, ...] = (16, 32, 64)
    cfa_scales: tuple[int, ...] = (16, 32)
    cfa_heads: int = 4
    cfa_head_dim: int = 256
    kalman_blocks: int = 3
    kalman_heads: int = 8
    kalman_head_dim: int = 48


PRESETS: dict[str, KEEPConfig] = {
    # The released network (v0.1.0 and v1.0.0 checkpoints).
    "released": KEEPConfig(),
    # A tiny network with every component, for tests and CPU smoke runs (runs in milliseconds).
    "tiny": KEEPConfig(
        img_size=64,
        nf=32,
        ch_mult=(1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(16,),
        codebook_size=64,
        emb_dim=32,
        transformer_dim=64,
        transformer_heads=4,
        transformer_layers=2,
        cft_scales=(16, 32),
        cfa_scales=(16, 32),
        cfa_heads=2,
        cfa_head_dim=16,
        kalman_blocks=1,
        kalman_heads=2,
        kalman_head_dim=16,
    ),
}


@dataclass
class KEEPState:
    """What one window hands to the next: everything else is recomputed. All tensors batch-first."""

    prev_out: torch.Tensor | None = None  # (B, 3, H, W) last restored frame (raw)
    cfa_memory: dict[int, torch.Tensor] = field(default_factory=dict)  # scale -> (B, C, r, r)
    obs_history: torch.Tensor | None = None  # (B, k, emb_dim, h, w) recent observations for the gain

    def detach(self) -> KEEPState:
        return KEEPState(
            prev_out=None if self.prev_out is None else self.prev_out.detach(),
            cfa_memory={s: f.detach() for s, f in self.cfa_memory.items()},
            obs_history=None if self.obs_history is None else self.obs_history.detach(),
        )


@dataclass
class KEEPOutput:
    """Everything `KEEP.run` computes for a window of T frames."""

    out: torch.Tensor  # (B, T, 3, H, W) restored frames, raw decoder output (clamp to [-1, 1] to view)
    logits: torch.Tensor  # (B, T, h*w, codebook_size) code logits
    idx: torch.Tensor  # (B, T, h*w) chosen code indices, tokens row-major
    z_obs: torch.Tensor  # (B, T, emb_dim, h, w) LQ encoder output (observation)
    z_post: torch.Tensor  # (B, T, emb_dim, h, w) transformer input (posterior; = z_obs without a prior)
    gain: torch.Tensor | None  # (B, T, 1, h, w) Kalman gain, None when no frame had a prediction
    features: dict[int, torch.Tensor]  # CFA scale -> (B, T, C, r, r) decoder features after CFT/CFA
    state: KEEPState  # state after the last frame

    @classmethod
    def stack(
        cls, frames: list[FrameOutput], *, z_obs: torch.Tensor, gain: torch.Tensor | None, state: KEEPState
    ) -> KEEPOutput:
        """The window's output from its frames' outputs (each `(B, ...)`, stacked to `(B, T, ...)`)."""
        stack = lambda xs: torch.stack(list(xs), dim=1)  # noqa: E731
        return cls(
            out=stack(f.out for f in frames),
            logits=stack(f.logits for f in frames),
            idx=stack(f.idx for f in frames),
            z_obs=z_obs,
            z_post=stack(f.z_post for f in frames),
            gain=gain,
            features={s: stack(f.fused[s] for f in frames) for s in frames[0].fused},
            state=state,
        )


class FrameOutput(NamedTuple):
    """What `KEEP.step` computes for one frame."""

    out: torch.Tensor  # (B, 3, H, W)
    logits: torch.Tensor  # (B, h*w, codebook_size)
    idx: torch.Tensor  # (B, h*w)
    z_post: torch.Tensor  # (B, emb_dim, h, w)
    fused: dict[int, torch.Tensor]  # CFA scale -> (B, C, r, r) decoder features after CFT / CFA (next CFA memory)


FrameStep = Callable[..., FrameOutput]  # KEEP.step's signature

# Inference encodes a window this many frames at a time: peak memory is then set by 4 frames of 512
# activations, not by the window length. Training encodes the window at once.
ENCODE_CHUNK = 4


class KEEP(nn.Module):
    """Video face super-resolution network. See the module docstring for the algorithm."""

    def __init__(self, config: KEEPConfig):
        super().__init__()
        self.config = c = replace(config)  # a copy: the caller's config (e.g. a preset) stays untouched
        vq_args = dict(
            img_size=c.img_size,
            nf=c.nf,
            ch_mult=tuple(c.ch_mult),
            num_res_blocks=c.num_res_blocks,
            attn_resolutions=tuple(c.attn_resolutions),
            emb_dim=c.emb_dim,
            norm_groups=c.norm_groups,
        )
        self.lq_encoder = Encoder(**vq_args)
        self.hq_encoder = Encoder(**vq_args)
        self.quantizer = VectorQuantizer(codebook_size=c.codebook_size, emb_dim=c.emb_dim, beta=c.beta)
        self.decoder = Decoder(**vq_args)
        self.latent_size = self.lq_encoder.latent_size
        self.transformer = CodeTransformer(
            emb_dim=c.emb_dim,
            dim=c.transformer_dim,
            heads=c.transformer_heads,
            layers=c.transformer_layers,
            num_tokens=self.latent_size**2,
            codebook_size=c.codebook_size,
        )
        for scale in tuple(c.cft_scales) + tuple(c.cfa_scales):
            if scale not in self.decoder.fuse_index:
                raise ValueError(f"fusion scale {scale} is not a decoder resolution {sorted(self.decoder.fuse_index)}")
        ch = self.decoder.channels
        self.cft = nn.ModuleDict({str(s): CFT(ch[s], norm_groups=c.norm_groups) for s in c.cft_scales})
        self.cfa = nn.ModuleDict({str(s): CFA(ch[s], heads=c.cfa_heads, head_dim=c.cfa_head_dim) for s in c.cfa_scales})
        self.kalman = KalmanGain(
            c.emb_dim,
            num_blocks=c.kalman_blocks,
            heads=c.kalman_heads,
            head_dim=c.kalman_head_dim,
            norm_groups=c.norm_groups,
        )
        # decoder block index -> scale whose fusion happens after that block
        self._fuse_after = {self.decoder.fuse_index[s]: s for s in set(c.cft_scales) | set(c.cfa_scales)}

    # ----------------------------------------------------------------------------------- steps
    def encode_observations(self, lq: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """lq `(B, T, 3, H, W)` -> z_obs `(B, T, emb_dim, h, w)`, CFT taps {scale: (B, T, C, r, r)}."""
        batch = lq.shape[0]
        frames = rearrange(lq, "b t c h w -> (b t) c h w")
        scales = tuple(int(s) for s in self.cft)
        chunk = len(frames) if torch.is_grad_enabled() else ENCODE_CHUNK
        parts = [self.lq_encoder(frames[i : i + chunk], taps=scales) for i in range(0, len(frames), chunk)]
        z = torch.cat([p[0] for p in parts])
        taps = {s: torch.cat([p[1][s] for p in parts]) for s in scales}
        split = lambda x: rearrange(x, "(b t) ... -> b t ...", b=batch)  # noqa: E731
        return split(z), {s: split(f).detach() for s, f in taps.items()}  # taps detached, as released

    def predict(self, prev_out: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Kalman prediction: previous restored frame `(B, 3, H, W)` warped by flow `(B, 2, H, W)`
        (frame t -> t-1) and re-encoded by the HQ encoder -> `(B, emb_dim, h, w)`."""
        z_pred, _ = self.hq_encoder(flow_warp(prev_out.detach(), flow))
        return z_pred

    def predict_codes(
        self, z: torch.Tensor, *, straight_through: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent `(B, emb_dim, h, w)` -> (logits `(B, h*w, K)`, idx `(B, h*w)`, z_q `(B, emb_dim, h, w)`).

        z_q is detached (as released); `straight_through` passes its gradient on to `z` instead
        (training stage II: the pixel loss then reaches the posterior, the LQ encoder and the gain)."""
        logits = self.transformer(z)
        idx = logits.argmax(dim=-1)
        z_q = self.quantizer.lookup(idx, self.latent_size)
        z_q = z + (z_q - z).detach() if straight_through else z_q.detach()
        return logits, idx, z_q

    def decode(
        self,
        z_q: torch.Tensor,
        taps: dict[int, torch.Tensor],
        cfa_memory: dict[int, torch.Tensor],
        fidelity: float = 1.0,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Decode one frame with CFT (encoder taps `(B, C, r, r)`, weighted by `fidelity`) and CFA (the
        previous frame's CFA outputs). Returns the image `(B, 3, H, W)` and this frame's features at the
        CFA scales (the next frame's CFA memory)."""
        x = z_q
        features: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.decoder.blocks):
            x = block(x)
            scale = self._fuse_after.get(i)
            if scale is None:
                continue
            if str(scale) in self.cft:
                x = self.cft[str(scale)](taps[scale], x, fidelity)
            if str(scale) in self.cfa:
                if scale in cfa_memory:
                    x = self.cfa[str(scale)](x, cfa_memory[scale])
                features[scale] = x
        return x, features

    def step(
        self,
        z_obs: torch.Tensor,
        taps: dict[int, torch.Tensor],
        cfa_memory: dict[int, torch.Tensor],
        prev_out: torch.Tensor | None = None,
        flow: torch.Tensor | None = None,
        gain: torch.Tensor | None = None,
        *,
        fidelity: float = 1.0,
        straight_through: bool = False,
    ) -> FrameOutput:
        """One frame of the recurrence: predict (when `prev_out` is given), update, look up, decode.

        z_obs `(B, emb_dim, h, w)` and taps `{scale: (B, C, r, r)}` of this frame; cfa_memory: the previous
        frame's CFA-scale features (empty for a clip's first frame); prev_out `(B, 3, H, W)`, flow `(B, 2, H, W)`
        (this frame -> the previous one) and gain `(B, 1, h, w)`, or None for a first frame (then the
        observation is the posterior). Returns (out, logits, idx, z_post, features at the CFA scales)."""
        if prev_out is None:
            z_post = z_obs
        else:  # prediction: the previous output warped and re-encoded; update: the paper's Kalman update (Sec. 3)
            z_post = kalman_update(z_obs, self.predict(prev_out, flow), gain)
        logits, idx, z_q = self.predict_codes(z_post, straight_through=straight_through)
        out, fused = self.decode(z_q, taps, cfa_memory, fidelity)
        return FrameOutput(out, logits, idx, z_post, fused)

    # ----------------------------------------------------------------------------------- clip
    def run(
        self,
        lq: torch.Tensor,
        flows: torch.Tensor | None = None,
        *,
        state: KEEPState | None = None,
        fidelity: float = 1.0,
        gain_context: int = 0,
        keep_features: bool = False,
        straight_through: bool = False,
        step: FrameStep | None = None,
    ) -> KEEPOutput:
        """Restore a window of frames `(B, T, 3, H, W)` in [-1, 1] (H = W = img_size, aligned faces),
        continuing from `state` (None: a fresh clip, as released).

        flows: `(B, T-1, 2, H, W)` frame t -> t-1 in pixels (x, y); after a state with a previous frame,
            `(B, T, 2, H, W)`, entry 0 being frame 0 -> that frame. Estimating them is the runtime's job.
        fidelity: CFT weight, 0 (quality) .. 1 (fidelity to the input, every release's value).
        gain_context: recent observations the returned state keeps for the next window's gain.
        keep_features: return the decoder features at the CFA scales (training's temporal loss).
        straight_through: gradients of the decoder input reach the posterior (training stage II).
        step: computes the predicted frames in place of `self.step` (a CUDA-graph replay of it).
        """
        state = state or KEEPState()
        flows = self._check_flows(lq, flows, state)
        frames, lag = lq.shape[1], 0 if state.prev_out is not None else 1  # flows[:, t - lag]: frame t -> t-1
        z_obs, taps = self.encode_observations(lq)  # observations of the whole window
        seen = z_obs if state.obs_history is None else torch.cat([state.obs_history, z_obs], dim=1)
        # gain (the paper's learned Kalman gain, Sec. 3): once per window, from observations only, the remembered
        # ones included
        gain = self.kalman(seen)[:, -frames:] if frames > 1 or not lag else None
        prev_out, memory, outputs = state.prev_out, dict(state.cfa_memory), []
        for t in range(frames):
            taps_t = {s: f[:, t] for s, f in taps.items()}
            if prev_out is None:  # a clip's first frame: no prediction, the observation is the posterior
                frame = self.step(z_obs[:, t], taps_t, memory, fidelity=fidelity, straight_through=straight_through)
            else:  # predict from the previous output, update with the gain, decode
                frame = (step or self.step)(
                    z_obs[:, t], taps_t, memory, prev_out, flows[:, t - lag], gain[:, t],
                    fidelity=fidelity, straight_through=straight_through,
                )  # fmt: skip
            prev_out, memory = frame.out, frame.fused
            outputs.append(frame if keep_features else frame._replace(fused={}))
        history = seen[:, -gain_context:].detach() if gain_context > 0 else None
        return KEEPOutput.stack(outputs, z_obs=z_obs, gain=gain, state=KEEPState(prev_out, memory, history))

    def forward(self, lq: torch.Tensor, flows: torch.Tensor | None = None, *, fidelity: float = 1.0) -> torch.Tensor:
        """Restore one clip: lq `(B, T, 3, H, W)` in [-1, 1], flows `(B, T-1, 2, H, W)` (None for T = 1)
        -> restored `(B, T, 3, H, W)`, raw (roughly [-1, 1]; clamp before display)."""
        return self.run(lq, flows, fidelity=fidelity).out

    # ----------------------------------------------------------------------------------- helpers
    @property
    def cfa_scales(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.cfa)

    def _check_flows(self, lq: torch.Tensor, flows: torch.Tensor | None, state: KEEPState) -> torch.Tensor | None:
        if lq.ndim != 5 or lq.shape[2] != 3:
            raise ValueError(f"lq must be (B, T, 3, H, W), got {tuple(lq.shape)}")
        batch, frames, _, height, width = lq.shape
        if height != self.config.img_size or width != self.config.img_size:
            raise ValueError(f"lq frames must be {self.config.img_size}x{self.config.img_size}, got {height}x{width}")
        pairs = frames if state.prev_out is not None else frames - 1
        if pairs == 0:
            return None
        if flows is None:
            raise ValueError(
                "no flows given: KEEP takes flows frame t -> t-1; keep.load_model(...) returns a Restorer that "
                "estimates them"
            )
        expected = (batch, pairs, 2, height, width)
        if tuple(flows.shape) != expected:
            raise ValueError(f"flows must be {expected} (frame t -> t-1, pixels, x then y), got {tuple(flows.shape)}")
        return flows
