"""What the browser app (`app.py`) does around the pipeline; Gradio stays in app.py.

The app is a thin layer over `keep.pipeline.Pipeline`, the pipeline `inference.py` runs, with one
output folder per job inside the app's own temporary folder:

- `Limits`: the largest video a request may bring (megabytes, refused by Gradio while it is uploaded;
  frames, pixels, seconds), checked on the header before any work and again while frames are restored
  (for headers without a frame count).
- `Jobs`: one pipeline kept between requests, built again only when a request changes what it is built from
  (`BuildOptions`: the model, Background enhancement, Face upsample); what a request chooses for its own run
  (`RunOptions`: fidelity, upscale, boxes, faces) goes with the run, nothing loaded again; one job at a time on
  the device; a job is cancelled through its session (the cancel button, or the
  session's end), from the pipeline's `on_restored` callback: the pipeline then stops its workers and
  removes the partial video, as after any failure (docs/inference.md, "Errors"). The upload of a job
  that fails, is refused or is cancelled is removed when the job ends, unless another job uses the same
  file (Gradio stores equal uploads once); a finished job's stays until its session ends. A copy of one of
  the page's example clips is never removed: Gradio serves the Examples box from it to every visitor.
  Before the first frame the progress says when the model is loaded or its workers started (`start_note`).
- `read_logins`: the optional login (Gradio's own), from a file or an environment variable.
- `previews`: the before/after frame and each track's face before and after, cropped from the input
  and output frames at the corners the pipeline logs (`save_faces`, `<stem>_faces.jsonl`), each captioned
  with its track id and whether it was restored (the page's "Faces" choice, `PipelineOptions.faces`).
- `summary_markdown`: the run summary for the page; `page_text`: a message escaped for the page (shown whole).
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import json
import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .background import resize
from .errors import KeepError
from .face.align import align_face
from .image import write_image
from .pipeline import STAGES, BuildOptions, Pipeline, PipelineOptions, outputs_of
from .pipeline.choice import parse_faces
from .pipeline.inputs import Input
from .video import open_input
from .weights import KEEP_MODEL_OPTION, REGISTRY, resolve_weights

log = logging.getLogger(__name__)

SESSION_TTL_S = 3600  # outputs of a session that never said goodbye (an API client) live this long after its last job
FACE_CROP = 192  # pixels of a face in the gallery


def keep_models() -> list[str]:
    """The registered KEEP releases (`keep.weights.REGISTRY` names that `--model` takes)."""
    return [name for name, entry in REGISTRY.items() if entry.path_option == KEEP_MODEL_OPTION]


# ------------------------------------------------------------------------------------------ limits
@dataclass(frozen=True)
class Limit:
    name: str  # the field of `Limits`
    flag: str
    env: str
    default: float
    what: str


LIMITS = (
    Limit("max_frames", "--max_frames", "KEEP_APP_MAX_FRAMES", 3000, "frames a video may have"),
    Limit("max_pixels", "--max_pixels", "KEEP_APP_MAX_PIXELS", 1920 * 1080, "pixels a frame may have (width x height)"),
    Limit("max_seconds", "--max_seconds", "KEEP_APP_MAX_SECONDS", 120.0, "seconds a video may last"),
    Limit("max_upload_mb", "--max_upload_mb", "KEEP_APP_MAX_UPLOAD_MB", 500.0, "megabytes an upload may have"),
)


@dataclass(frozen=True)
class Limits:
    max_frames: int
    max_pixels: int
    max_seconds: float
    max_upload_mb: float = 500.0

    @property
    def max_upload_bytes(self) -> int:
        """Gradio's `max_file_size`: it refuses a larger upload while it arrives, before it is stored."""
        return int(self.max_upload_mb * 2**20)

    def describe(self) -> str:
        """The limits in one line for the page."""
        return (
            f"up to {self.max_upload_mb:g} MB, {self.max_seconds:g} s, {self.max_frames:,} frames and "
            f"{self.max_pixels:,} pixels a frame (1920x1080 is 2,073,600)"
        )

    def __post_init__(self):
        for limit in LIMITS:
            if not getattr(self, limit.name) > 0:
                raise KeepError(f"{limit.flag} must be > 0, got {getattr(self, limit.name)}")

    def check_header(self, frames: int | None, fps: float, width: int, height: int) -> None:
        """KeepError naming the limit a video's header exceeds and how to raise it."""
        if width * height > self.max_pixels:
            self._refuse("max_pixels", f"its frames are {width}x{height} = {width * height} pixels")
        if frames is not None:
            self.check_restored(frames, fps)

    def check_restored(self, frames: int, fps: float) -> None:
        if frames > self.max_frames:
            self._refuse("max_frames", f"it has {frames} frames")
        if frames / fps > self.max_seconds:
            self._refuse("max_seconds", f"it lasts {frames / fps:.1f} s")

    def _refuse(self, name: str, found: str) -> None:
        limit = next(limit for limit in LIMITS if limit.name == name)
        value = getattr(self, name)
        raise KeepError(
            f"the video is too large for this app: {found}, and this app takes at most {value:g} {limit.what}; "
            f"whoever runs the app can raise it with `python app.py {limit.flag} N` or {limit.env}=N"
        )


# ------------------------------------------------------------------------------------------ login
AUTH_ENV = "KEEP_APP_AUTH"  # one login, `user:password`
AUTH_FILE_ENV = "KEEP_APP_AUTH_FILE"  # a file of logins, one `user:password` a line


def read_logins(path: str | Path | None = None) -> list[tuple[str, str]]:
    """The logins the app asks for (Gradio's `auth`): the `user:password` lines of `path` (`--auth_file`, else
    $KEEP_APP_AUTH_FILE; blank lines and `#` comments skipped), else $KEEP_APP_AUTH; [] when none is set.
    Never a password on the command line: every user of the machine sees the command lines (`ps`)."""
    path = path or os.environ.get(AUTH_FILE_ENV)
    if path:
        try:
            lines = Path(path).expanduser().read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeepError(f"cannot read the login file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        where = [(f"{path} line {n}", line.strip()) for n, line in enumerate(lines, 1)]
        where = [(place, line) for place, line in where if line and not line.startswith("#")]
        if not where:
            raise KeepError(f"the login file {path} holds no user:password line")
    elif os.environ.get(AUTH_ENV):
        where = [(AUTH_ENV, os.environ[AUTH_ENV])]
    else:
        return []
    logins = []
    for place, line in where:
        user, colon, password = line.partition(":")
        if not (user and colon and password):
            raise KeepError(f"{place}: expected user:password")
        logins.append((user, password))
    return logins


def is_local(host: str) -> bool:
    """Whether `host` is this machine only (a loopback address or localhost): no one else can reach the app."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may stand for any interface


# ------------------------------------------------------------------------------------------ jobs
class Cancelled(KeepError):
    """The job was stopped by its session (the cancel button, or the session's end)."""


@dataclass
class Session:
    jobs: set[threading.Event] = field(default_factory=set)  # the cancel flag of each running job
    inputs: set[Path] = field(default_factory=set)  # uploads this session restored (its finished jobs')
    count: int = 0  # jobs started: the next job's folder name
    closed: bool = False
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Result:
    video: Path
    summary: dict
    before: Path  # the input frame shown, upsampled to the output's size
    after: Path  # the same output frame
    faces: list[tuple[Path, str]]  # each track's face before and after, with captions
    notes: list[str]


class Jobs:
    """The pipeline of the app and the jobs run on it, one at a time, each in its session's folder."""

    def __init__(self, root: Path, limits: Limits, examples: Sequence[Path] = ()):
        self.root = Path(root)
        self.limits = limits
        self.examples = {(path.stat().st_size, _digest(path)) for path in map(Path, examples)}  # never removed
        self.device = threading.Lock()  # one job at a time (also a cancelled one still stopping its workers)
        self.guard = threading.Lock()  # the sessions table
        self.sessions: dict[str, Session] = {}
        self.running: Counter[Path] = Counter()  # the uploads of the jobs running now
        self.pipeline: Pipeline | None = None
        self.builds = 0  # pipelines built so far (a request that changes only what its run chooses builds none)

    def folder(self, session: str) -> Path:
        return self.root / "sessions" / session

    def run(
        self, session: str, video: Path, options: PipelineOptions, progress: Callable[[int, int | None, str], None]
    ) -> Result:
        """Restore `video` (an upload inside the app's folder) with `options` (`faces`: a photo uploaded beside
        it, or all, largest, track ids); `progress(done, total, what)`. If the job does not finish (refused,
        failed, cancelled), its uploads are removed when it ends."""
        video = Path(video).resolve()
        if not video.is_relative_to(self.root.resolve()):  # only what was uploaded to this app is read
            raise KeepError("the video must be uploaded to this app")
        photo = self._uploaded_photo(options)
        uploads = [video] if photo is None else [video, photo]
        cancel = threading.Event()
        with self.guard:
            state = self.sessions.setdefault(session, Session())
            state.jobs.add(cancel)
            self.running.update(uploads)
            state.count += 1
            outdir = self.folder(session) / f"job{state.count}"
            self._sweep()  # after this job's uploads are counted as in use
        finished = False
        try:
            result = self._run(video, options, progress, cancel, outdir)
            finished = True
            return result
        except BaseException:
            shutil.rmtree(outdir, ignore_errors=True)
            raise
        finally:
            with self.guard:
                state.jobs.discard(cancel)
                state.last_used = time.monotonic()
                self.running.subtract(uploads)
                self.running += Counter()  # drops the uploads no job uses any more
                if finished:
                    state.inputs.update(uploads)
                else:
                    for upload in uploads:
                        self._discard(upload)
                if state.closed and not state.jobs:
                    self._remove(session)

    def _run(
        self, video: Path, options: PipelineOptions, progress: Callable, cancel: threading.Event, outdir: Path
    ) -> Result:
        if not video.is_file():
            raise KeepError(f"{video.name} is no longer on the server (a request that fails removes its upload): "
                            "upload it again")  # fmt: skip
        options = replace(options, save_faces=True)  # the face log the previews are cropped with
        # The header, checked against the limits before the job waits for the device; the pipeline opens the
        # file again when the job runs, which may be minutes later.
        reader = open_input(video)
        reader.close()
        if reader.kind != "video":
            raise KeepError(f"{video.name} is an image, not a video (inference.py restores images)")
        fps = float(reader.fps)
        self.limits.check_header(reader.num_frames, fps, reader.width, reader.height)
        progress(0, reader.num_frames, "waiting for the device")
        with self.device:

            def on_frame(what: str) -> Callable[[int], None]:
                def done(count: int) -> None:
                    if cancel.is_set():
                        raise Cancelled("cancelled")
                    self.limits.check_restored(count, fps)
                    progress(count, reader.num_frames, what)

                return done

            if cancel.is_set():
                raise Cancelled("cancelled")
            progress(0, reader.num_frames, self.start_note(options))
            pipeline = self._pipeline(options)
            progress(0, reader.num_frames, "restoring")
            summary = pipeline.run(
                Input(video, "video"), outdir, options, progress=False, on_restored=on_frame("restoring"),
                on_surveyed=on_frame("finding the chosen faces"),
            )  # fmt: skip
        if summary["tracks"] == 0:
            raise KeepError(f"no face found in {video.name}: nothing to restore")
        out = outputs_of(Input(video, "video"), outdir)
        before, after, faces = previews(video, out.main, out.faces_log, options.upscale, outdir)
        return Result(out.main, summary, before, after, faces, run_notes(options, summary))

    def discard(self, video: Path) -> None:
        """Remove an upload whose request was refused before it became a job, unless a job uses it."""
        with self.guard:
            self._discard(Path(video).resolve())

    def _discard(self, upload: Path) -> None:
        """Remove `upload` (and its folder, if empty) unless a running job or a session's finished job uses it
        (Gradio stores equal uploads once, so two sessions may share one); never a file outside the app's folder."""
        root = self.root.resolve()
        if not upload.is_relative_to(root) or upload == root or self.running[upload] > 0:
            return
        if any(upload in state.inputs for state in self.sessions.values()) or self._is_example(upload):
            return
        upload.unlink(missing_ok=True)
        if upload.parent != root and upload.parent.is_dir() and not any(upload.parent.iterdir()):
            upload.parent.rmdir()

    def _is_example(self, path: Path) -> bool:
        """Whether `path` holds one of the page's example clips: Gradio's copy of it (which the Examples box shows
        every visitor), or an upload of the same file (Gradio stores both at one path: the content's hash)."""
        try:
            size = path.stat().st_size
        except OSError:
            return False
        return any(size == known for known, _ in self.examples) and (size, _digest(path)) in self.examples

    def start_note(self, options: PipelineOptions) -> str:
        """What the progress says while a job waits for the pipeline: loading the model (the first job, or
        another model's), starting its workers again (a cancelled job stops them mid-video), or nothing to wait
        for (the kept pipeline)."""
        kept = self._kept(options)
        if kept is None:  # the first job, or one that asks for another model, background or face upsampler
            return "loading the model (once: later jobs with it start at once)"
        if kept.runner is None:
            return "starting the model's workers again (a cancel stops them)"
        return "starting"

    def _uploaded_photo(self, options: PipelineOptions) -> Path | None:
        """The photo `options.faces` names (None: no photo), which must be an upload inside the app's folder."""
        photo = parse_faces(options.faces).photo
        if photo is not None and not photo.resolve().is_relative_to(self.root.resolve()):
            raise KeepError("the photo must be uploaded to this app")
        return None if photo is None else photo.resolve()

    def _kept(self, options: PipelineOptions) -> Pipeline | None:
        """The kept pipeline if it is built from what `options` asks to be built (`BuildOptions`), else None."""
        if self.pipeline is not None and self.pipeline.options == BuildOptions.of(options):
            return self.pipeline
        return None

    def _pipeline(self, options: PipelineOptions) -> Pipeline:
        """The pipeline for `options`: the one kept when it is built from the same `BuildOptions` (the run's own
        settings, `RunOptions`, go with each run), or a new one in its place."""
        kept = self._kept(options)
        if kept is not None:
            kept.build()  # its workers again where a cancelled job stopped them (the page says so meanwhile)
            return kept
        build = BuildOptions.of(options)
        if not build.model.startswith("preset:"):
            resolve_weights(build.model)  # weights that cannot be had fail here, before the kept pipeline goes
        self._close_pipeline()
        started = time.perf_counter()
        pipeline = Pipeline(build)
        pipeline.build()  # the network and the stage workers, while the page says "loading the model"
        self.pipeline = pipeline
        self.builds += 1
        log.info("pipeline built in %.1f s: %s on %s", time.perf_counter() - started, build.model, build.device)
        return pipeline

    def cancel(self, session: str) -> int:
        """Stop the session's running jobs (at their next restored frame); returns how many there were."""
        with self.guard:
            state = self.sessions.get(session)
            running = list(state.jobs) if state else []
        for flag in running:
            flag.set()
        return len(running)

    def end_session(self, session: str) -> None:
        """The session is gone (its browser tab closed): stop its jobs, then remove its outputs and uploads."""
        with self.guard:
            state = self.sessions.get(session)
            if state is None:
                return
            state.closed = True
            for flag in state.jobs:
                flag.set()
            if not state.jobs:  # else the last job removes them when it ends
                self._remove(session)

    def _remove(self, session: str) -> None:
        state = self.sessions.pop(session)
        shutil.rmtree(self.folder(session), ignore_errors=True)
        for upload in state.inputs:  # each in a folder of its own
            self._discard(upload)

    def _sweep(self) -> None:
        """Remove the sessions idle for longer than SESSION_TTL_S (API clients never close theirs)."""
        now = time.monotonic()
        for session, state in list(self.sessions.items()):
            if not state.jobs and now - state.last_used > SESSION_TTL_S:
                self._remove(session)

    def _close_pipeline(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def close(self, timeout: float = 30) -> None:
        """Stop every job, then the pipeline's workers (the app is stopping)."""
        with self.guard:
            for state in self.sessions.values():
                for flag in state.jobs:
                    flag.set()
        if self.device.acquire(timeout=timeout):  # the running job, if any, has stopped
            try:
                self._close_pipeline()
            finally:
                self.device.release()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ previews
def frames_at(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """The frames `indices` of a video, decoded up to the last of them."""
    frames = {}
    for frame in open_input(path):
        if frame.index in indices:
            frames[frame.index] = frame.rgb
            if len(frames) == len(indices):
                break
    return frames


def crop_face(rgb: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """The aligned face whose crop corners `(4, 2)` (clockwise from top-left, in `rgb`'s pixels) are given."""
    target = np.float32([[0, 0], [size, 0], [size, size]])
    return align_face(rgb, cv2.getAffineTransform(np.float32(corners[:3]), target), size)


def previews(
    video: Path, output: Path, faces_log: Path, upscale: int, outdir: Path
) -> tuple[Path, Path, list[tuple[Path, str]]]:
    """Before/after images of the frame with the most faces (nearest the middle), and of each track's face
    in the middle of its frames, captioned with the track's id and whether it was restored; written into
    `outdir`."""
    records = [json.loads(line) for line in faces_log.read_text().splitlines() if line]
    track_frames: dict[int, list[int]] = {}
    corners: dict[tuple[int, int], np.ndarray] = {}
    restored: dict[int, bool] = {}
    for record in records:
        for face in record["faces"]:
            track_frames.setdefault(face["track"], []).append(record["frame"])
            corners[face["track"], record["frame"]] = np.array(face["corners"])
            restored[face["track"]] = face.get("restored", True)  # faces not chosen are logged `false`
    middle = len(records) / 2
    shown = max(records, key=lambda r: (len(r["faces"]), -abs(r["frame"] - middle)))["frame"]
    picks = {track: frames[len(frames) // 2] for track, frames in sorted(track_frames.items())}
    wanted = {shown, *picks.values()}
    inputs, outputs = frames_at(video, wanted), frames_at(output, wanted)
    before, after = outdir / "before.jpg", outdir / "after.jpg"
    write_image(before, resize(inputs[shown], upscale) if upscale > 1 else inputs[shown])
    write_image(after, outputs[shown])
    faces = []
    for track, frame in picks.items():
        for name, rgb, scale in (("before", inputs[frame], 1), ("after", outputs[frame], upscale)):
            path = outdir / f"track{track}_{name}.png"
            write_image(path, crop_face(rgb, corners[track, frame] * scale, FACE_CROP))
            status = "restored" if restored[track] else "left as it is"
            faces.append((path, f"track {track} {name} ({status}, frame {frame})"))
    return before, after, faces


# ------------------------------------------------------------------------------------------ summary
def run_notes(options: PipelineOptions, summary: dict) -> list[str]:
    """What the page should say beyond the numbers: fallbacks taken, decoding that stopped early."""
    lines = []
    if options.bg_upsampler == "realesrgan" and not str(summary["background"]).startswith("realesrgan"):
        entry = REGISTRY["realesrgan_x2plus"]
        lines.append(
            f"Background enhancement: Real-ESRGAN's weights ({entry.filename}) are not available here, so the "
            f"background was upsampled with bicubic instead; download them from {entry.url} into weights/."
        )
    if summary["stopped"]:
        lines.append(f"The video could not be decoded to its end: {summary['stopped']}.")
    if summary["short_tracks"]:
        lines.append(
            f"{len(summary['short_tracks'])} face track(s) seen in fewer than {summary['min_track']} frames were left "
            "as they were (most such tracks are the detector's false positives)."
        )
    choice = summary["choice"]
    if choice.get("photo_faces", 1) > 1:
        lines.append(f"The photo shows {choice['photo_faces']} faces: the largest was taken as the person.")
    if choice["note"]:
        lines.append(f"{choice['note']}.")
    return lines


def summary_markdown(summary: dict, notes: list[str]) -> str:
    """The run summary as Markdown: tracks (restored or not, their identity distance to the photo), frames, what
    `auto` chose, seconds per stage."""
    tracks = ", ".join(_track_text(entry, summary["choice"]["faces"]) for entry in summary["track_list"])
    stages = [f"| {stage} | {summary['timings'][stage]:.2f} |" for stage in STAGES if summary["timings"][stage] > 0]
    return "\n".join(
        [
            f"**{summary['tracks']} face track(s)** ({tracks}); {summary['frames_with_face']} of {summary['frames']} "
            f"frames have a face; {summary['seconds']:.1f} s ({summary['frames_per_second']:.1f} frames/s).",
            "",
            f"Detector `{summary['detector']}`, flow `{summary['flow']}`, paste mask `{summary['mask']}`, "
            f"background `{summary['background']}`.",
            "",
            *(f"> {page_text(note)}\n" for note in notes),
            "| stage | seconds |",
            "| --- | ---: |",
            *stages,
        ]
    )


def _track_text(entry: dict, faces: str) -> str:
    text = f"track {entry['track']}: {entry['frames']} frames"
    if "distance" in entry:
        text += f", identity distance {entry['distance']:.2f}"
    if faces != "all":
        text += ", restored" if entry["restored"] else ", left as it is"
    return text


def page_text(text: str) -> str:
    """`text` as the page shows it, whole: `<`, `>` and `&` as HTML entities (a toast and Markdown read HTML, so
    an error's `<urlopen error ...>` would be taken for a tag and hide the rest of the message)."""
    return html.escape(text, quote=False)
