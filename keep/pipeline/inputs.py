"""What a run reads and writes: one input or a folder of them, their output paths, and the checks made
before any model is loaded (a missing input is reported at once; no output may land in an input).

`-i` may be a video file, one image, a folder of frames (images directly inside), or a folder of
videos and/or frame folders (one output each). Outputs: `OUTDIR/<stem>.mp4` (`.png` for one image),
`OUTDIR/<stem>_summary.json`, optionally `OUTDIR/<stem>_faces.jsonl` and `OUTDIR/<stem>/frames/`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import KeepError
from ..image import IMAGE_SUFFIXES, is_image, list_images
from ..paths import check_output_outside_inputs
from ..video.io import VIDEO_SUFFIXES, is_video


@dataclass(frozen=True)
class Input:
    source: Path
    kind: str  # video | frames | image

    @property
    def stem(self) -> str:
        return self.source.name if self.kind == "frames" else self.source.stem


@dataclass(frozen=True)
class Outputs:
    main: Path  # the restored video (or image)
    summary: Path
    faces_log: Path
    frames_dir: Path

    @property
    def stem(self) -> str:
        return self.main.stem

    @property
    def lock(self) -> Path:
        """The lock file of `main` (`OutputLock`): one run at a time writes it."""
        return self.main.with_name(f".{self.stem}.lock")

    def partial(self, run: str) -> Path:
        """Where run `run` (`new_run_token`) writes `main` until it is complete (hidden; moved into place at
        the end). One name per run, so that two runs never write into the same file (issue 19)."""
        return self.main.with_name(f".{self.stem}.{run}.partial{self.main.suffix}")

    def stale_partials(self) -> list[Path]:
        """Partial files of `main` left by runs that were killed (or by versions before run tokens)."""
        name = re.compile(rf"\.{re.escape(self.stem)}(\.\d+-[0-9a-f]{{8}})?\.partial{re.escape(self.main.suffix)}")
        return [p for p in self.main.parent.glob(f".{glob.escape(self.stem)}.*") if name.fullmatch(p.name)]

    def finished(self) -> bool:
        """Whether `main` is a complete output: it is there and (videos and frame folders) its summary, which
        is written only after the output is moved into place, names it. An output without its summary (a run
        killed in between, or a file put there by hand) is not finished."""
        if not self.main.is_file():
            return False
        if self.main.suffix == ".png":  # one image: written whole, then moved into place
            return True
        try:
            summary = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(summary, dict) and Path(str(summary.get("output", ""))).name == self.main.name


def new_run_token() -> str:
    """A name for one run's files, unique among concurrent runs (the process id and 32 random bits)."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def output_suffix(item: Input, container: str = "auto") -> str:
    """`.png` for one image; else the video container: `container` (mp4 | mkv), or with `auto` Matroska for a
    Matroska or WebM input (.mkv, .webm: it holds every stream such files carry) and MP4 for any other."""
    if item.kind == "image":
        return ".png"
    if container == "auto":
        return ".mkv" if item.source.suffix.lower() in (".mkv", ".webm") else ".mp4"
    return f".{container}"


def outputs_of(item: Input, outdir: Path, container: str = "auto") -> Outputs:
    return Outputs(
        main=outdir / f"{item.stem}{output_suffix(item, container)}",
        summary=outdir / f"{item.stem}_summary.json",
        faces_log=outdir / f"{item.stem}_faces.jsonl",
        frames_dir=outdir / item.stem / "frames",
    )


@dataclass(frozen=True)
class Collected:
    """What `-i` names: the inputs (sorted by name), the folder that holds them when it is a folder of inputs,
    and what in that folder is not an input (files that are neither images nor videos, folders without images)."""

    items: list[Input]
    folder: Path | None = None
    skipped: tuple[Path, ...] = ()

    def skipped_line(self, shown: int = 10) -> str | None:
        """The one line that lists the skipped entries (the first `shown` of them), or None."""
        if not self.skipped:
            return None
        names = [p.name + ("/" if p.is_dir() else "") for p in self.skipped]
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        what = "entry that is" if len(names) == 1 else "entries that are"
        where = self.skipped[0].parent
        return f"skipped {len(names)} {what} neither an image, a video nor a folder of frames in {where}: " + (
            ", ".join(names[:shown]) + more
        )


def collect_inputs(path: str | Path) -> Collected:
    """The inputs `-i path` names. A folder is a folder of frames (one clip) when the media it holds are images
    only; a folder that also holds videos or folders of frames is a folder of inputs: each video, folder of
    frames and image in it is an input of its own (an image gives an image). Hidden files are ignored."""
    path = Path(path).expanduser()
    if not path.exists():
        raise KeepError(f"input {path} does not exist")
    if path.is_file():
        return Collected([Input(path, "image" if is_image(path) else "video")])
    items, images, skipped = [], [], []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and is_image(child):
            images.append(Input(child, "image"))
        elif child.is_file() and is_video(child):
            items.append(Input(child, "video"))
        elif child.is_dir() and list_images(child):
            items.append(Input(child, "frames"))
        else:
            skipped.append(child)
    if images and not items:
        return Collected([Input(path, "frames")], None, tuple(skipped))
    items = sorted(items + images, key=lambda item: item.source.name)
    if not items:
        raise KeepError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}), videos ({', '.join(VIDEO_SUFFIXES)}) or folders of "
            f"frames in {path}"
        )
    stems: dict[str, Path] = {}
    for item in items:
        if item.stem in stems:
            raise KeepError(
                f"{stems[item.stem].name} and {item.source.name} in {path} would write the same outputs "
                f"({item.stem}.*): rename one of them"
            )
        stems[item.stem] = item.source
    return Collected(items, path, tuple(skipped))


def check_outputs(
    items: list[Input], folder: Path | None, outdir: Path, *, save_frames: bool, save_faces: bool, container: str
):
    """KeepError if any output would land on an input file or inside an input folder (the partial files and
    the lock lie beside the output: they are checked with it)."""
    inputs = [item.source for item in items] + [folder]
    for item in items:
        out = outputs_of(item, outdir, container)
        written = [out.main, out.summary]
        written += [out.faces_log] if save_faces else []
        written += [out.frames_dir] if save_frames else []
        for path in written:
            check_output_outside_inputs(path, inputs)


def make_output_folder(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeepError(f"cannot create output folder {outdir}: {exc.strerror}") from None
    probe = outdir / f".keep-write-test.{new_run_token()}"  # its own name: runs may share the folder
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise KeepError(f"cannot write to output folder {outdir}: {exc.strerror}") from None


def write_error(path: Path, exc: OSError) -> KeepError:
    """A write that failed for a reason outside the program (a full disk, a quota, a folder gone), as the one
    line a user reads: the output it concerns and the system's reason (issue 19)."""
    return KeepError(f"cannot write {path}: {exc.strerror or exc}")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a hidden file of its own, moved into place when complete: a reader
    sees the old file or the whole new one, never a part (KeepError if it cannot be written)."""
    partial = path.with_name(f".{path.name}.{new_run_token()}.partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise write_error(path, exc) from None


class OutputLock:
    """An exclusive lock on one output, so that two runs writing into the same folder (a script started twice,
    two users) never write the same output at once (issue 19): a file `.<stem>.lock` beside the output, held
    with `flock` while the output is written and removed on release. Where `fcntl` is missing (Windows) it
    locks nothing.

        lock = OutputLock(out.lock)
        if lock.acquire(wait=False) or lock.acquire(wait=True): ...; lock.release()
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, wait: bool) -> bool:
        """Take the lock (waiting for its holder when `wait`); False if another run holds it and not `wait`."""
        try:
            import fcntl
        except ImportError:
            return True
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise write_error(self.path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            # The holder before us removes the file before unlocking it: if we locked a removed file, a third
            # run may hold the new one, so try again on the file that is there now.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            opened = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
                self.fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing the file releases the lock
        self.fd = None
