"""Restore videos of any length in bounded memory, window by window, many streams at once.

A stream is one sequence of aligned faces: a face track of a video (the pipeline), a clip of the
benchmark, a face of the speed benchmark. `StreamingRestorer` keeps what each stream's next window
needs and restores the windows of all streams given together: one batched flow call and one batched
network call per group of windows that can share one (same length, same kind of state). Batch
element i computes what stream i alone would (the network is per-sample exact).

The released inference cuts a video into independent 20-frame clips and resets the Kalman filter at
every cut, which shows as a jump every 20 frames. Modes:
- `carry` (default): the state (previous restored frame, CFA memory, the `gain_context` most recent
  observations for the gain) and the last input frame (for the next window's first flow) are carried
  from one window to the next, so every frame after a stream's first has a prediction.
- `reset`: the released behaviour: each window is an independent clip (state reset, gain on the
  window alone).
- `released`: the released test protocol (`vfhq_easy`, docs/benchmark.md): `reset`, and a window
  shorter than `window` frames (a clip's last) is padded to `window` frames with reflection-circle
  padding (`reflection_circle`) from the stream's previous window, so the gain network always attends
  over a full window; the outputs of the padding frames are dropped.
On a single full window every mode computes exactly what `KEEP.forward` computes. The precision and
the fidelity are the `Restorer`'s (`keep.restorer`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch

from .archs.keep_arch import KEEP, KEEPState
from .restorer import Restorer

WINDOW = 20  # frames restored per network call, state carried across calls (the pipeline's and the benchmark's default)
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


def _stack_states(states: Sequence[KEEPState]) -> KEEPState:
    """Per-stream states (batch 1 each) -> one state of batch `len(states)`, in that order."""
    first = states[0]
    cat = lambda xs: torch.cat(list(xs), dim=0)  # noqa: E731
    return KEEPState(
        prev_out=None if first.prev_out is None else cat(s.prev_out for s in states),
        cfa_memory={scale: cat(s.cfa_memory[scale] for s in states) for scale in first.cfa_memory},
        obs_history=None if first.obs_history is None else cat(s.obs_history for s in states),
    )


def _select_state(state: KEEPState, i: int) -> KEEPState:
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


@dataclass
class _Stream:
    """What a stream's next window needs."""

    state: KEEPState | None = None  # `carry`: the state after its last window (batch 1)
    previous: torch.Tensor | None = None  # `carry`: its last input frame (1, 3, S, S), for the next first flow
    history: torch.Tensor | None = None  # `released`: its last window's frames (T, 3, S, S), the padding source


class StreamingRestorer:
    """The Kalman / KEEP state of many streams, restored window by window (see the module docstring).

        streams = StreamingRestorer(model, window=WINDOW)    # a Restorer (or a bare KEEP: flows given)
        results = streams.step({track: lq})                  # lq (T, 3, S, S) in [-1, 1] -> {track: StreamOutput}
        streams.retain(live_tracks)                          # forget the streams that ended
        for out in streams.restore(frames):                  # or: frames (B, 3, S, S), one stream per face
            ...                                              # out (B, 3, S, S), in order

    timer: `timer(stage)` is a context manager around the flow and network calls ("flow", "network");
        on a GPU the device is synchronised inside it, so each stage's time is its own.
    Memory: one window per stream plus its state, whatever the video length.
    """

    def __init__(
        self,
        model: Restorer | KEEP,
        *,
        window: int = WINDOW,
        gain_context: int = 0,
        mode: str = "carry",
        timer: Callable[[str], AbstractContextManager] | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown streaming mode '{mode}'; choose one of {MODES}")
        if window < 1 or gain_context < 0:
            raise ValueError("window must be >= 1 and gain_context >= 0")
        self.model = model if isinstance(model, Restorer) else Restorer(model)  # a bare network: flows given
        self.window = window
        self.gain_context = gain_context
        self.mode = mode
        self.timer = timer
        self.streams: dict[Hashable, _Stream] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self.streams

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Keep the streams of `keys` only."""
        keep = set(keys)
        for key in [k for k in self.streams if k not in keep]:
            del self.streams[key]

    def reset(self) -> None:
        """Forget every stream."""
        self.streams.clear()

    @torch.no_grad()
    def step(
        self, windows: Mapping[Hashable, torch.Tensor], flows: Mapping[Hashable, torch.Tensor] | None = None
    ) -> dict[Hashable, StreamOutput]:
        """Restore the next window `(T_i, 3, S, S)` of each stream given (a new key starts a stream).

        flows: None (estimated by the restorer's flow estimator) or per stream `(T_i', 2, S, S)`, frame
        t -> t-1, with T_i' = T_i when the stream continues from a state (`carry` mode, the first flow
        goes to its previous window's last frame), else T_i - 1.
        """
        padded = {key: self._pad(key, lq) for key, lq in windows.items()}
        if flows is not None and any(len(padded[k]) != len(lq) for k, lq in windows.items()):
            raise ValueError("`released` pads short windows with other frames: their flows must be estimated")
        groups: dict[tuple, list[Hashable]] = {}
        for key, lq in padded.items():
            groups.setdefault(self._group(key, len(lq)), []).append(key)
        results: dict[Hashable, StreamOutput] = {}
        for keys in groups.values():
            results |= self._restore(keys, padded, flows)
        for key, lq in windows.items():
            if self.mode == "released":
                self.streams[key].history = lq
            results[key] = StreamOutput(results[key].out[: len(lq)], results[key].idx[: len(lq)])
        return results

    def restore(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Frames `(B, 3, S, S)` in [-1, 1], one stream per batch element (keys 0 .. B-1): yields the
        restored `(B, 3, S, S)` of every frame in order, restoring `window` frames at a time."""
        buffer: list[torch.Tensor] = []
        for frame in frames:
            buffer.append(frame)
            if len(buffer) == self.window:
                yield from self._restore_frames(buffer)
                buffer = []
        if buffer:
            yield from self._restore_frames(buffer)

    # ------------------------------------------------------------------------------------------ helpers
    def _restore_frames(self, buffer: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        clip = torch.stack(buffer, dim=1)  # (B, T, 3, S, S)
        results = self.step(dict(enumerate(clip)))
        yield from torch.stack([results[i].out for i in range(len(clip))]).unbind(dim=1)

    def _pad(self, key: Hashable, lq: torch.Tensor) -> torch.Tensor:
        """`released`: a window shorter than `window` padded from the stream's previous window and itself."""
        if self.mode != "released" or len(lq) >= self.window:
            return lq
        stream = self.streams.get(key)
        history = stream.history if stream is not None and stream.history is not None else lq[:0]
        seen = torch.cat([history.to(lq.device), lq])  # frames start - len(history) .. start + len(lq) - 1
        return seen[reflection_circle(len(history), len(lq), self.window)]

    def _carries(self, key: Hashable) -> bool:
        stream = self.streams.get(key)
        return self.mode == "carry" and stream is not None and stream.state is not None

    def _group(self, key: Hashable, frames: int) -> tuple:
        """Windows with the same key share one call: same length, state or not, same history length."""
        if not self._carries(key):
            return (frames, False, 0)
        history = self.streams[key].state.obs_history
        return (frames, True, 0 if history is None else history.shape[1])

    def _restore(
        self, keys: list[Hashable], windows: Mapping[Hashable, torch.Tensor], flows: Mapping | None
    ) -> dict[Hashable, StreamOutput]:
        """One batched call for the windows of `keys` (one group); updates their streams."""
        device = self.model.device
        carry = self._carries(keys[0])
        lq = torch.stack([windows[k] for k in keys]).to(device)  # (B, T, 3, S, S)
        state = _stack_states([self.streams[k].state for k in keys]) if carry else None
        previous = torch.cat([self.streams[k].previous for k in keys]) if carry else None  # (B, 3, S, S)
        with self._timed("flow", device):
            if flows is not None:
                window_flows = torch.stack([flows[k] for k in keys]).to(device)
            else:
                window_flows = self.model.flows(lq, previous)
        with self._timed("network", device):
            result = self.model.run(lq, window_flows, state=state, gain_context=self.gain_context)
        new_state = result.state.detach()
        outputs = {}
        for i, key in enumerate(keys):
            stream = self.streams.setdefault(key, _Stream())
            if self.mode == "carry":
                stream.state, stream.previous = _select_state(new_state, i), lq[i : i + 1, -1]
            outputs[key] = StreamOutput(out=result.out[i], idx=result.idx[i])
        return outputs

    @contextmanager
    def _timed(self, stage: str, device: torch.device) -> Iterator[None]:
        if self.timer is None:
            yield
            return
        with self.timer(stage):
            yield
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the time is this stage's, not the next one's
