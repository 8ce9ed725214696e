"""The survey pass: decode -> faces (detect, track) -> survey, when the choice of faces to restore needs whole
tracks (`--faces largest`, `--faces person.jpg`; docs/inference.md, "Restoring chosen faces").

The survey stage takes the faces stage's frames (the landmarks and track ids a restoration would get) and
keeps, per track, its frame count, first and last frame, the frames the tracker kept it alive, and up to
`2 * SAMPLES` samples spread evenly over it: the face's size and, where a photo is matched, dlib's identity
descriptor of the face (the slowest step: ~0.3 s per face on a loaded 2-core CPU). Every face's landmarks go
to a records file (96 bytes per face), which the restoring pass replays instead of detecting again
(`RecordReader`). Memory stays flat over the video's length: the records are on disk, the samples bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..face.align import align_face, estimate_affine
from .faces import face_size
from .items import FaceFrame, Job, StageError
from .stage import Slots, Stage

SAMPLES = 16  # a track keeps between SAMPLES and 2 * SAMPLES samples once it is long enough
SAMPLE_EVERY = 4  # a track's faces sampled at first: its 1st, 5th, 9th, ...; the spacing doubles as it grows
IDENTITY_CROP = 256  # the aligned crop the descriptor is computed on (dlib cuts its own 150 px chip from it)

# one tracked face of one frame, as the faces stage gave it (landmarks in float64, as the tracker's)
RECORD = np.dtype([("frame", "<i8"), ("track", "<i8"), ("landmarks", "<f8", (5, 2))])


def face_identity(embedder, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib's descriptor `(128,)` of the face at `landmarks` `(5, 2)` in `rgb` (aligned to the FFHQ template first)."""
    crop = align_face(rgb, estimate_affine(landmarks, IDENTITY_CROP), IDENTITY_CROP)
    return embedder.descriptor(crop)


class RecordWriter:
    """Appends every frame's faces to the records file."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")  # noqa: SIM115 - closed by `close`, also after a failure

    def write(self, index: int, faces: dict[int, np.ndarray]) -> None:
        if faces:
            rows = np.zeros(len(faces), RECORD)
            rows["frame"] = index
            rows["track"] = list(faces)
            rows["landmarks"] = np.stack(list(faces.values()))
            self.file.write(rows.tobytes())

    def close(self) -> None:
        self.file.close()


class RecordReader:
    """The records file read back in frame order, a chunk at a time: `faces(index)` -> {track: landmarks}."""

    CHUNK = 4096  # records per read

    def __init__(self, path: Path):
        self.file = open(path, "rb")  # noqa: SIM115 - closed by `close`, also after a failure
        self.rows = np.zeros(0, RECORD)
        self.at = 0

    def faces(self, index: int) -> dict[int, np.ndarray]:
        """The faces recorded for frame `index` (frames are asked for in increasing order)."""
        faces = {}
        while self._fill():
            row = self.rows[self.at]
            if row["frame"] > index:
                break
            if row["frame"] == index:
                faces[int(row["track"])] = row["landmarks"].copy()
            self.at += 1
        return faces

    def _fill(self) -> bool:
        if self.at < len(self.rows):
            return True
        data = self.file.read(self.CHUNK * RECORD.itemsize)
        if len(data) % RECORD.itemsize:
            raise StageError(f"the face records {self.file.name} end in the middle of a record")
        self.rows, self.at = np.frombuffer(data, RECORD), 0
        return len(self.rows) > 0

    def close(self) -> None:
        self.file.close()


@dataclass
class TrackSurvey:
    """What the survey keeps of one track."""

    frames: int = 0
    first: int = -1
    last: int = -1
    live: tuple[int, int] = (-1, -1)  # the first and last frame after which the tracker still kept it
    every: int = SAMPLE_EVERY  # the spacing of the samples, in the track's faces
    samples: list[tuple[float, np.ndarray | None]] = field(default_factory=list)  # (face size, descriptor)

    def wants_sample(self) -> bool:
        return self.frames % self.every == 0

    def add(self, index: int, sample: tuple[float, np.ndarray | None] | None) -> None:
        """One more face of the track (frame `index`), with its sample when `wants_sample()` said so."""
        if sample is not None:
            self.samples.append(sample)
            if len(self.samples) == 2 * SAMPLES:  # thin out: every other sample, twice the spacing from now on
                self.samples = self.samples[::2]
                self.every *= 2
        self.frames += 1
        self.first = index if self.first < 0 else self.first
        self.last = index

    def alive(self, index: int) -> None:
        self.live = (index if self.live[0] < 0 else self.live[0], index)

    def summary(self) -> dict:
        """frames, first, last, live span, median face size and median descriptor (None without a photo)."""
        identities = [identity for _, identity in self.samples if identity is not None]
        return {
            "frames": self.frames, "first": self.first, "last": self.last, "live": self.live,
            "size": float(np.median([size for size, _ in self.samples])),
            "identity": np.median(np.stack(identities), axis=0) if identities else None,
        }  # fmt: skip


@dataclass(frozen=True)
class SurveyJob:
    records: Path  # where every face's landmarks go (the restoring pass reads them back)
    identity: bool  # compute identity descriptors (a photo is matched)


@dataclass(frozen=True)
class SurveySpec:
    """The survey stage runs in the main group; dlib's recognition model is loaded on the first survey that
    matches a photo."""

    def build(self) -> SurveyStage:
        return SurveyStage()


class SurveyStage(Stage):
    """`FaceFrame`s in; their frame numbers out (the progress counts them); every slot given back at once."""

    def __init__(self):
        super().__init__()
        self.embedder = None

    def start(self, job: Job, slots: Slots) -> None:
        if job.survey is None:
            raise StageError("the survey stage got a job without a survey")
        self.pool, self.release = job.pool, slots.release
        if job.survey.identity and self.embedder is None:
            from ..metrics.identity import DlibIdentity

            self.embedder = DlibIdentity()
        self.identity = job.survey.identity
        self.tracks: dict[int, TrackSurvey] = {}
        self.records = RecordWriter(job.survey.records)

    def push(self, frame: FaceFrame) -> list[int]:
        with self.timer("survey"):
            for track in frame.live:
                self.tracks.setdefault(track, TrackSurvey()).alive(frame.index)
            for track, landmarks in frame.faces.items():
                survey = self.tracks.setdefault(track, TrackSurvey())
                sample = None
                if survey.wants_sample():
                    rgb = self.pool[frame.slot]
                    identity = face_identity(self.embedder, rgb, landmarks) if self.identity else None
                    sample = (face_size(landmarks), identity)
                survey.add(frame.index, sample)
            self.records.write(frame.index, frame.faces)
        self.release(frame.slot)
        return [frame.index]

    def finish(self) -> list:
        self.records.close()
        return []

    def abort(self) -> None:
        records = getattr(self, "records", None)
        if records is not None:
            records.close()

    def stats(self) -> dict:
        return {"survey": {track: survey.summary() for track, survey in sorted(self.tracks.items()) if survey.frames}}
