"""Multi-face tracking with a Kalman filter per track, gap interpolation and landmark smoothing.

`FaceTracker.update(detections)` associates the frame's detections with the live tracks (Hungarian
matching on the IoU between each track's Kalman-predicted box and the detections) and returns the
track id of every detection. Detectors miss faces on degraded footage (compression, blur, a hand in
front), so a track that misses frames is kept, with its Kalman state, for `max_lost` frames
(default 25, one second at 25 fps; never less than `max_gap`): a face seen again within that time
keeps its id, so the pipeline can carry the restorer's state over the gap. While lost,
the track's velocity decays (`lost_velocity_decay` per frame) so its predicted box stays where the
face was last seen instead of drifting away, and a detection that overlaps no predicted box is
still given to a lost track whose box centre lies within `reattach_distance` face widths of it.

`TrackSmoother` sits behind the tracker as a bounded look-ahead buffer: a frame leaves it once
`lookahead` newer frames have arrived, with, for every track covering it, landmarks that are
(1) linearly interpolated across a gap of at most `max_gap` frames and (2) Gaussian-smoothed over
time (`sigma` frames, truncated at 3 sigma). Memory: `lookahead` frames, whatever the video length.

Very short tracks are left out (`min_track`): a track is given out in a frame only once it has been
detected in `min_track` frames, counting every frame seen so far, the look-ahead included (in a video
of fewer frames, in all of them). The look-ahead is at least `min_track - 1` frames, so a track
detected in `min_track` consecutive frames is confirmed before its first frame leaves: it is given
out in all its frames. A detector's one- to three-frame false positive never is; a track whose first
detections are sparse (fewer than `min_track` within the look-ahead) is given out from the frame its
count is reached. Track ids are the tracker's, unchanged: ids of tracks left out are simply absent.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .detectors import Detection


def iou(a: np.ndarray, b: np.ndarray) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(right - left, 0) * max(bottom - top, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class KalmanTrack:
    """Constant-velocity Kalman filter on the box `(4,)` and 5 landmarks `(10,)` of one face."""

    def __init__(
        self, track_id: int, detection: Detection, *, process_noise: float = 1e-2, measure_noise: float = 1e-1
    ):
        self.track_id = track_id
        dim = 14
        self.x = np.concatenate([detection.box, detection.landmarks.ravel(), np.zeros(dim)])  # (28,) value, velocity
        self.P = np.eye(2 * dim) * 10.0
        self.F = np.eye(2 * dim)
        self.F[:dim, dim:] = np.eye(dim)
        self.H = np.eye(dim, 2 * dim)
        scale = max(detection.box[2] - detection.box[0], 1.0)  # noise in units of the face size
        self.Q = np.eye(2 * dim) * (process_noise * scale) ** 2
        self.R = np.eye(dim) * (measure_noise * scale) ** 2
        self.missed = 0

    @property
    def box(self) -> np.ndarray:
        return self.x[:4]

    def predict(self) -> None:
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q

    def damp_velocity(self, factor: float) -> None:
        self.x[self.x.shape[0] // 2 :] *= factor

    def update(self, detection: Detection) -> None:
        z = np.concatenate([detection.box, detection.landmarks.ravel()])
        innovation = z - self.H @ self.x
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)  # Kalman gain
        self.x = self.x + K @ innovation
        self.P = (np.eye(len(self.x)) - K @ self.H) @ self.P
        self.missed = 0


class FaceTracker:
    """Every face across frames; a face keeps its id while it is seen at least once every `max_lost`
    frames (short gaps are also interpolated downstream, see `TrackSmoother`'s `max_gap`).

    max_gap: the pipeline's interpolation gap; a track is never dropped before it.
    max_lost: frames a track survives without a detection, Kalman state kept (25: one second).
    min_iou: least IoU between a predicted box and a detection for them to match.
    lost_velocity_decay: factor on a missed track's velocity per missed frame (0.5: it stops within
        a few frames; detectors miss faces that move fast, and extrapolating them loses the face).
    reattach_distance: a detection matching no box by IoU joins the nearest lost track whose box
        centre is within this many face widths of its own (a face back after a fast move).
    """

    def __init__(
        self,
        *,
        max_gap: int = 5,
        max_lost: int = 25,
        min_iou: float = 0.2,
        lost_velocity_decay: float = 0.5,
        reattach_distance: float = 0.5,
    ):
        self.max_gap = max_gap
        self.max_lost = max(max_lost, max_gap)
        self.min_iou = min_iou
        self.lost_velocity_decay = lost_velocity_decay
        self.reattach_distance = reattach_distance
        self.tracks: dict[int, KalmanTrack] = {}
        self._next_id = 0

    def update(self, detections: list[Detection]) -> list[int]:
        """Track ids, one per detection (new ids for unmatched detections)."""
        for track in self.tracks.values():
            if track.missed:
                track.damp_velocity(self.lost_velocity_decay)
            track.predict()
        ids = list(self.tracks)
        assigned: list[int | None] = [None] * len(detections)
        if ids and detections:
            cost = np.array([[1.0 - iou(self.tracks[t].box, d.box) for d in detections] for t in ids])
            for row, col in zip(*linear_sum_assignment(cost), strict=True):
                if 1.0 - cost[row, col] >= self.min_iou:
                    assigned[col] = ids[row]
        self._reattach(detections, assigned)
        for col, detection in enumerate(detections):
            if assigned[col] is None:
                assigned[col] = self._next_id
                self.tracks[self._next_id] = KalmanTrack(self._next_id, detection)
                self._next_id += 1
            else:
                self.tracks[assigned[col]].update(detection)
        matched = set(assigned)
        for track_id in ids:
            if track_id not in matched:
                self.tracks[track_id].missed += 1
                if self.tracks[track_id].missed > self.max_lost:
                    del self.tracks[track_id]
        return [int(a) for a in assigned]

    def _reattach(self, detections: list[Detection], assigned: list[int | None]) -> None:
        """Give each detection left unmatched to the nearest unmatched lost track, if close enough."""
        lost = [t for t, track in self.tracks.items() if track.missed and t not in assigned]
        for col, detection in enumerate(detections):
            if assigned[col] is not None or not lost:
                continue
            centre = (detection.box[:2] + detection.box[2:]) / 2
            width = max(detection.box[2] - detection.box[0], 1.0)
            distances = [np.linalg.norm((self.tracks[t].box[:2] + self.tracks[t].box[2:]) / 2 - centre) for t in lost]
            nearest = int(np.argmin(distances))
            if distances[nearest] <= self.reattach_distance * width:
                assigned[col] = lost.pop(nearest)


class TrackSmoother:
    """Bounded look-ahead buffer: push `(frame_index, payload, {track_id: landmarks (5, 2)})`, pop frames
    with interpolated, temporally smoothed landmarks for every track that covers them and has been detected
    in at least `min_track` frames (0 or 1: every track)."""

    def __init__(self, *, max_gap: int = 5, sigma: float = 1.5, min_track: int = 1):
        self.max_gap = max_gap
        self.sigma = sigma
        self.min_track = min_track
        self.radius = int(math.ceil(3 * sigma)) if sigma > 0 else 0
        self.lookahead = max(self.radius + max_gap + 1, min_track - 1)  # min_track - 1: see the module docstring
        self._frames: deque[tuple[int, Any]] = deque()
        self._observed: dict[int, dict[int, np.ndarray]] = {}  # track -> frame -> (5, 2)
        self._latest = -1
        self._pushed = 0
        self.detections: dict[int, int] = {}  # track -> frames it was detected in, while not yet confirmed
        self.confirmed: set[int] = set()

    def short_tracks(self) -> dict[int, int]:
        """The tracks left out so far (too short to be given out in any frame), with the frames each was detected in."""
        return dict(self.detections)

    def push(self, index: int, payload: Any, observations: dict[int, np.ndarray]) -> Iterator[tuple[int, Any, dict]]:
        self._frames.append((index, payload))
        self._latest = index
        self._pushed += 1
        for track_id, landmarks in observations.items():
            self._observed.setdefault(track_id, {})[index] = landmarks
            if track_id not in self.confirmed:
                self.detections[track_id] = self.detections.get(track_id, 0) + 1
        while self._frames and self._frames[0][0] <= self._latest - self.lookahead:
            yield self._pop()

    def flush(self) -> Iterator[tuple[int, Any, dict]]:
        while self._frames:
            yield self._pop()

    def _confirm(self) -> None:
        """Tracks detected in `min_track` frames (or in every frame of a shorter video) are given out from now on."""
        need = min(self.min_track, self._pushed)
        for track_id in [t for t, count in self.detections.items() if count >= need]:
            del self.detections[track_id]
            self.confirmed.add(track_id)

    def _pop(self) -> tuple[int, Any, dict[int, np.ndarray]]:
        index, payload = self._frames.popleft()
        self._confirm()
        faces = {}
        for track_id, observed in list(self._observed.items()):
            if track_id not in self.confirmed:
                continue
            values = [(t, self._interpolate(observed, t)) for t in range(index - self.radius, index + self.radius + 1)]
            if self._interpolate(observed, index) is None:
                continue
            weights, points = [], []
            for t, value in values:
                if value is not None:
                    weights.append(
                        math.exp(-0.5 * ((t - index) / self.sigma) ** 2) if self.sigma > 0 else float(t == index)
                    )
                    points.append(value)
            weights_array = np.array(weights)[:, None, None]
            faces[track_id] = (weights_array * np.stack(points)).sum(0) / weights_array.sum()
        # forget observations no later frame can need
        horizon = index + 1 - self.radius - self.max_gap - 1
        for track_id in list(self._observed):
            observed = self._observed[track_id]
            for t in [t for t in observed if t < horizon]:
                del observed[t]
            if not observed:
                del self._observed[track_id]
        return index, payload, faces

    def _interpolate(self, observed: dict[int, np.ndarray], t: int) -> np.ndarray | None:
        """Landmarks at frame t: observed, or linear between observations at most `max_gap` apart."""
        if t in observed:
            return observed[t]
        before = [s for s in observed if s < t]
        after = [s for s in observed if s > t]
        if not before or not after:
            return None
        a, b = max(before), min(after)
        if b - a - 1 > self.max_gap:
            return None
        w = (t - a) / (b - a)
        return (1 - w) * observed[a] + w * observed[b]
