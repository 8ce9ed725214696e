"""Restore videos of any length in bounded memory, window by window (issue #2, KEEP_SPEC section 5).

The released inference cuts a video into independent 20-frame clips and resets the Kalman filter at
every cut, which shows as a jump every 20 frames. Here the state (previous restored frame, CFA
memory) and the last input frame (for the next window's first flow) are carried from one window to
the next, so every frame after the first has a prediction. The gain network sees the current window
plus the `gain_context` most recent observations before it, so its attention window is bounded and
configurable.

Modes:
- `carry` (default): state carried across windows, as described above.
- `reset`: the released behaviour: each window is an independent clip (state reset, gain on the
  window alone).
- `released`: the released test protocol (`vfhq_easy`, KEEP_SPEC section 9): `reset`, and a last
  window shorter than `window` is padded to `window` frames with reflection-circle padding
  (`reflection_circle`), so the gain network always attends over a full window; the outputs of the
  padding frames are dropped. It holds the previous window's input frames too (the padding source).
On a single full window every mode computes exactly what `KEEP.forward` computes.

`TrackStreams` carries many such streams at once (the faces of a video, one state per track) and
restores their windows in one batched call.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from .archs.keep_arch import KEEP, KEEPState
from .precision import autocast
from .restorer import Restorer

MODES = ("carry", "reset", "released")


def reflection_circle(start: int, length: int, window: int) -> list[int]:
    """Clip frame indices of the released test's window that starts at frame `start` and holds the
    `length` frames `start .. start + length - 1`, padded to `window` frames.

    BasicSR's `reflection_circle` padding (the released test option `padding: reflection_circle`):
    a position k frames past the clip's last frame takes frame `start - k`, the frames before the
    window, nearest first. When the clip is shorter than one window (`start` is 0) the indices wrap
    around the clip (`(start - k) mod (start + length)`, Python's negative indexing, as BasicSR's
    list lookup does): the clip's own frames from the last one backwards.

        reflection_circle(20, 3, 6) -> [20, 21, 22, 19, 18, 17]
        reflection_circle(0, 3, 6)  -> [0, 1, 2, 2, 1, 0]
    """
    if not 1 <= length <= window or start < 0:
        raise ValueError(f"need 1 <= length <= window and start >= 0, got start {start}, length {length}")
    total = start + length
    return list(range(start, total)) + [(start - k) % total for k in range(1, window - length + 1)]


class StreamingRestorer:
    """Feed aligned LQ frames `(B, 3, S, S)` in [-1, 1]; get restored frames back in order.

        restorer = StreamingRestorer(model, window=20)
        for out in restorer.restore(frames):   # frames: any iterable of (B, 3, S, S) tensors
            ...                                # out: (B, 3, S, S), raw network output

    Memory is bounded by one window of frames plus the carried state, whatever the video length.
    """

    def __init__(self, model: Restorer | KEEP, *, window: int = 20, gain_context: int = 0, mode: str = "carry"):
        if mode not in MODES:
            raise ValueError(f"unknown streaming mode '{mode}'; choose one of {MODES}")
        if window < 1 or gain_context < 0:
            raise ValueError("window must be >= 1 and gain_context >= 0")
        self.model = model if isinstance(model, Restorer) else Restorer(model)  # a bare network: flows given
        self.window = window
        self.gain_context = gain_context
        self.mode = mode
        self.state: KEEPState | None = None
        self.previous: torch.Tensor | None = None  # (B, 3, S, S) last input frame, for the next flow
        self.history: list[torch.Tensor] = []  # `released`: the previous window's frames (padding source)

    def reset(self) -> None:
        self.state = None
        self.previous = None
        self.history = []

    @torch.no_grad()
    def step(self, lq: torch.Tensor, flows: torch.Tensor | None = None) -> torch.Tensor:
        """Restore one window `(B, T, 3, S, S)` -> `(B, T, 3, S, S)`, continuing from the state.

        flows: None (estimated by the restorer's flow estimator) or `(B, T', 2, S, S)` with T' = T when
        a previous window exists in `carry` mode (the first flow goes to the previous window's last
        frame), else T - 1.
        """
        carry = self.mode == "carry" and self.state is not None
        result = self.model.run(
            lq,
            flows,
            state=self.state if carry else None,
            previous=self.previous if carry else None,
            gain_context=self.gain_context,
        )
        self.state = result.state.detach()
        self.previous = lq[:, -1].detach()
        return result.out

    def restore(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Yield the restored frame for every input frame, processing `window` frames at a time."""
        buffer: list[torch.Tensor] = []
        for frame in frames:
            buffer.append(frame)
            if len(buffer) == self.window:
                yield from self.step(torch.stack(buffer, dim=1)).unbind(dim=1)
                if self.mode == "released":
                    self.history = buffer
                buffer = []
        if buffer and self.mode == "released":
            yield from self._last_window_padded(buffer)
        elif buffer:
            yield from self.step(torch.stack(buffer, dim=1)).unbind(dim=1)

    def _last_window_padded(self, buffer: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """`released`: pad the clip's short last window (`reflection_circle`), restore it, drop the padding."""
        start = len(self.history)  # only the previous window's frames are needed: `start - k` > start - window
        seen = self.history + buffer  # frames start - len(history) .. start + len(buffer) - 1
        indices = reflection_circle(start, len(buffer), self.window)
        padded = torch.stack([seen[i] for i in indices], dim=1)  # (B, window, 3, S, S)
        yield from self.step(padded)[:, : len(buffer)].unbind(dim=1)


# ------------------------------------------------------------------------------------------ many tracks
def stack_states(states: Sequence[KEEPState]) -> KEEPState:
    """Per-stream states (batch 1 each) -> one state of batch `len(states)`, in that order."""
    first = states[0]
    cat = lambda xs: torch.cat(list(xs), dim=0)  # noqa: E731
    return KEEPState(
        prev_out=None if first.prev_out is None else cat(s.prev_out for s in states),
        cfa_memory={scale: cat(s.cfa_memory[scale] for s in states) for scale in first.cfa_memory},
        obs_history=None if first.obs_history is None else cat(s.obs_history for s in states),
    )


def select_state(state: KEEPState, i: int) -> KEEPState:
    """Sample `i` of a batched state, as a state of batch 1."""
    pick = lambda x: None if x is None else x[i : i + 1]  # noqa: E731
    return KEEPState(
        prev_out=pick(state.prev_out),
        cfa_memory={scale: f[i : i + 1] for scale, f in state.cfa_memory.items()},
        obs_history=pick(state.obs_history),
    )


@dataclass
class StreamOutput:
    """One stream's share of a batched window."""

    out: torch.Tensor  # (T, 3, S, S) raw restored frames
    idx: torch.Tensor  # (T, h*w) code indices


class TrackStreams:
    """Many independent streams (the face tracks of a video), each with its own Kalman / KEEP state, whose
    windows are restored together: one batched flow call and one batched network call per window
    (issue #11). Batch element i computes what stream i alone would (the network is per-sample exact).

        streams = TrackStreams(model)
        results = streams.step({track_id: lq})   # lq (T, 3, S, S) in [-1, 1] -> {track_id: StreamOutput}
        streams.retain(live_ids)                 # forget the states of ended tracks

    Streams whose windows cannot share a call (different lengths, a first window beside continuing ones,
    different observation-history lengths) go in separate calls, one per such group.
    """

    def __init__(
        self,
        model: Restorer | KEEP,
        *,
        gain_context: int = 0,
        precision: str = "fp32",
        timer: Callable[[str], AbstractContextManager] | None = None,
    ):
        self.model = model if isinstance(model, Restorer) else Restorer(model)
        self.gain_context = gain_context
        self.precision = precision
        self.timer = timer or (lambda stage: nullcontext())
        self.states: dict[Hashable, tuple[KEEPState, torch.Tensor]] = {}  # id -> (state, last LQ frame (1, 3, S, S))

    def __contains__(self, key: Hashable) -> bool:
        return key in self.states

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Keep the states of `keys` only."""
        keep = set(keys)
        for key in [k for k in self.states if k not in keep]:
            del self.states[key]

    def _group(self, key: Hashable, frames: int) -> tuple:
        if key not in self.states:
            return (frames, False, 0)
        history = self.states[key][0].obs_history
        return (frames, True, 0 if history is None else history.shape[1])

    @torch.no_grad()
    def step(self, windows: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, StreamOutput]:
        """Restore the next window `(T_i, 3, S, S)` of each stream given; returns each stream's output."""
        groups: dict[tuple, list[Hashable]] = {}
        for key, lq in windows.items():
            groups.setdefault(self._group(key, lq.shape[0]), []).append(key)
        device = self.model.device
        results: dict[Hashable, StreamOutput] = {}
        for (_, carry, _), keys in groups.items():
            lq = torch.stack([windows[k] for k in keys]).to(device)  # (B, T, 3, S, S)
            state = stack_states([self.states[k][0] for k in keys]) if carry else None
            previous = torch.cat([self.states[k][1] for k in keys]) if carry else None
            with self.timer("flow"):
                flows = self.model.flows(lq, previous)
            with self.timer("network"), autocast(device, self.precision):
                result = self.model.run(lq, flows, state=state, gain_context=self.gain_context)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # the time is the network's, not the next stage's
            new_state = result.state.detach()
            for i, key in enumerate(keys):
                self.states[key] = (select_state(new_state, i), lq[i : i + 1, -1])
                results[key] = StreamOutput(out=result.out[i], idx=result.idx[i])
        return results
