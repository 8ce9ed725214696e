"""Which faces a run restores (`--faces`, `RunOptions.faces`; docs/inference.md, "Restoring chosen faces").

    all           every face (the default: one pass, as always)
    0,2           the tracks with these ids (the ids of the summary and of --draw_box): one pass, filtered
    largest       the track whose median face is largest                    } a survey pass first
    person.jpg    the tracks whose median identity matches the photo's face  } (keep.pipeline.survey)

A choice is parsed once (`parse_faces`: a bad one is one KeepError line before anything is loaded); a photo's
face is found with the run's detector and described with dlib's recognition model (`Reference`, cached per
file). `choose` turns a survey's tracks into the chosen ids; `FacePlan` is what the faces stage of the
restoring pass gets: it splits every frame's faces into those to restore and those left alone, and in a
pass after a survey it replays the survey's records instead of detecting again.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import KeepError
from ..image import IMAGE_SUFFIXES, is_image
from .items import FaceFrame, FrameRef
from .survey import RecordReader

log = logging.getLogger(__name__)

FORMS = "all, largest, track ids such as 0,2, or the path of a photo of the person"


@dataclass(frozen=True)
class FaceChoice:
    text: str  # as given
    kind: str  # all | largest | ids | photo
    ids: frozenset[int] = frozenset()
    photo: Path | None = None

    @property
    def needs_survey(self) -> bool:
        """Whether the choice is known only once whole tracks have been seen."""
        return self.kind in ("largest", "photo")


def parse_faces(text: str) -> FaceChoice:
    """`--faces` -> FaceChoice; KeepError for a malformed id list, a negative id, a photo that is not there or
    not an image."""
    value = str(text).strip()
    if not value:
        raise KeepError(f"--faces is empty: expected {FORMS}")
    if value in ("all", "largest"):
        return FaceChoice(value, value)
    if set(value) <= set("0123456789,- "):
        return FaceChoice(value, "ids", ids=_track_ids(value))
    path = Path(value).expanduser()
    if path.is_dir():
        raise KeepError(f"--faces {value}: a folder, not a photo")
    if path.is_file():
        if not is_image(path):
            raise KeepError(f"--faces {value}: not an image ({' '.join(IMAGE_SUFFIXES)}); --faces takes {FORMS}")
        return FaceChoice(value, "photo", photo=path)
    if is_image(path):
        raise KeepError(f"--faces {value}: photo not found")
    raise KeepError(f"--faces {value!r}: expected {FORMS}")


def _track_ids(value: str) -> frozenset[int]:
    ids = []
    for part in (part.strip() for part in value.split(",")):
        if part.startswith("-") and part[1:].isdigit():
            raise KeepError(f"--faces {value}: track ids are 0 or more (those the summary lists), got {part}")
        if not part.isdigit():
            raise KeepError(f"--faces {value}: '{part}' is not a track id; write the ids as 0,2")
        ids.append(int(part))
    return frozenset(ids)


def face_choice(faces: str, options) -> tuple[FaceChoice, Reference | None]:
    """`faces` (`RunOptions.faces`) parsed, with the photo's face where it names one, found with the detector of
    `options` (`BuildOptions`; KeepError: no face in the photo, ...); the photo's is cached, so checking it before
    a run costs nothing in the run."""
    choice = parse_faces(faces)
    if choice.kind != "photo":
        return choice, None
    detector = dict(detector=options.detector, device=options.device, detect_size=options.detect_size)
    return choice, reference_face(choice.photo, **detector)


# ------------------------------------------------------------------------------------------ the photo
@dataclass(frozen=True)
class Reference:
    """The face of a photo `--faces` names: dlib's descriptor of its largest face."""

    photo: Path
    identity: np.ndarray  # (128,)
    faces: int  # faces found in the photo
    size: float  # the size of the one used (keep.pipeline.faces.face_size)

    def note(self) -> str | None:
        if self.faces == 1:
            return None
        return f"{self.photo.name} shows {self.faces} faces: the largest ({self.size:.0f} px) is the person"


def reference_face(photo: Path, *, detector: str, device: str, detect_size: int) -> Reference:
    """The photo's largest face, found with the run's detector (KeepError: unreadable, no face); cached."""
    try:
        stat = photo.stat()
    except OSError as exc:
        raise KeepError(f"--faces {photo}: cannot read the photo ({exc.strerror or exc})") from None
    return _reference(photo, str(photo.resolve()), stat.st_mtime_ns, stat.st_size, detector, device, detect_size)


@functools.lru_cache(maxsize=4)
def _reference(
    photo: Path, resolved: str, mtime_ns: int, size: int, detector: str, device: str, detect_size: int
) -> Reference:
    from ..face.detectors import build_detector
    from ..image import read_image
    from ..metrics.identity import DlibIdentity
    from .faces import face_size
    from .survey import face_identity

    try:
        rgb = read_image(resolved)
    except KeepError:
        raise KeepError(f"--faces {photo}: cannot read the photo (not an image, or a damaged one)") from None
    faces = build_detector(detector, device=device, detect_size=detect_size)(rgb)
    if not faces:
        raise KeepError(f"--faces {photo}: no face found in the photo; give a photo where the face is visible")
    face = max(faces, key=lambda found: face_size(found.landmarks))
    identity = face_identity(DlibIdentity(), rgb, face.landmarks)
    reference = Reference(photo, identity, len(faces), face_size(face.landmarks))
    if reference.note() is not None:
        log.warning("%s", reference.note())  # once: the reference is cached
    return reference


# ------------------------------------------------------------------------------------------ choosing
@dataclass(frozen=True)
class Selection:
    chosen: frozenset[int]
    distances: dict[int, float] = field(default_factory=dict)  # a photo's: identity distance of each track


def choose(choice: FaceChoice, tracks: dict[int, dict], reference: Reference | None, threshold: float) -> Selection:
    """The tracks to restore, from a survey's tracks (`keep.pipeline.survey.TrackSurvey.summary`)."""
    if choice.kind == "largest":
        ranked = sorted(tracks, key=lambda t: (tracks[t]["size"], tracks[t]["frames"], -t))
        return Selection(frozenset(ranked[-1:]))
    if choice.kind == "photo":
        distances = {t: float(np.linalg.norm(info["identity"] - reference.identity)) for t, info in tracks.items()}
        return Selection(frozenset(t for t, d in distances.items() if d < threshold), distances)
    raise KeepError(f"--faces {choice.text}: known without a survey")


@dataclass(frozen=True)
class FacePlan:
    """What the faces stage of a restoring pass passes on: the chosen tracks' faces to restore, the others as
    faces left alone (`FaceFrame.left`). `records`: replay a survey's records instead of detecting, with each
    chosen track's live span (`TrackSurvey.live`: where the restorer keeps its state)."""

    chosen: frozenset[int]
    records: Path | None = None
    live: dict[int, tuple[int, int]] = field(default_factory=dict)

    def split(self, frame: FaceFrame) -> FaceFrame:
        chosen = {t: landmarks for t, landmarks in frame.faces.items() if t in self.chosen}
        left = {t: landmarks for t, landmarks in frame.faces.items() if t not in self.chosen}
        return FaceFrame(frame.index, frame.slot, frame.pts, chosen, frame.live & self.chosen, left)

    def replay(self) -> Replay:
        return Replay(RecordReader(self.records), self.live)


class Replay:
    """Frames of the restoring pass -> `FaceFrame`s with the faces the survey recorded for them."""

    def __init__(self, reader: RecordReader, live: dict[int, tuple[int, int]]):
        self.reader, self.live = reader, live

    def frame(self, ref: FrameRef) -> FaceFrame:
        live = frozenset(t for t, (first, last) in self.live.items() if first <= ref.index <= last)
        return FaceFrame(ref.index, ref.slot, ref.pts, self.reader.faces(ref.index), live)

    def close(self) -> None:
        self.reader.close()


# ------------------------------------------------------------------------------------------ the summary
def describe(
    choice: FaceChoice,
    stats: dict,
    survey: dict | None,
    selection: Selection | None,
    reference: Reference | None,
    threshold: float,
) -> dict:
    """The run summary's `choice` (what `--faces` restored, and a note when it restored nothing) and `track_list`
    (every track: frames, first, last, median size and identity distance where surveyed, restored or not), and
    under `lines` what the log says about each track."""
    found, restored = stats["found_tracks"], stats["restored_frames"]
    surveyed = survey["survey"] if survey is not None else {}
    distances = selection.distances if selection is not None else {}
    tracks, lines = [], []
    for track, (count, first, last) in sorted(found.items()):
        entry = {"track": track, "frames": count, "first": first, "last": last, "restored": track in restored}
        line = f"track {track}: a face in {count} of {stats['frames']} frames ({first}-{last})"
        if track in surveyed:
            entry["size"] = round(surveyed[track]["size"], 1)
        if track in distances:
            entry["distance"] = round(distances[track], 4)
            line += f", identity distance {distances[track]:.3f}"
        if choice.kind != "all":
            line += ": restored" if entry["restored"] else ": left as it is"
        tracks.append(entry)
        lines.append(line)
    note = _note(choice, found, restored, distances, threshold)
    chosen = {"faces": choice.text, "restored_tracks": sorted(restored), "note": note}
    if reference is not None:
        chosen |= {"photo": str(reference.photo), "photo_faces": reference.faces, "identity_threshold": threshold}
    return {"choice": chosen, "track_list": tracks, "lines": lines}


def _note(choice: FaceChoice, found: dict, restored: dict, distances: dict[int, float], threshold: float) -> str | None:
    """What a user must be told when `--faces` restored nothing of what the video has, or named a missing track."""
    nothing = "nothing was restored (the network did not run): the output is the input re-encoded"
    if choice.kind == "photo" and found and not restored:
        closest = min(distances, key=distances.get)
        return (
            f"no track matched {choice.photo.name}: the closest, track {closest}, is at identity distance "
            f"{distances[closest]:.3f}, not under the threshold {threshold:g} (--set identity_threshold=...); {nothing}"
        )
    missing = sorted(choice.ids - found.keys())
    if choice.kind == "ids" and missing:
        tracks = ", ".join(map(str, sorted(found))) or "none"
        ids = ", ".join(map(str, missing))
        told = f"--faces {choice.text}: no track {ids} in this video (its tracks: {tracks})"
        return told if restored else f"{told}; {nothing}"
    return None
