"""What a run reads and writes: one input or a folder of them, their output paths, and the checks made
before any model is loaded (a missing input is reported at once; no output may land in an input, nor
replace a file this program did not write: `Outputs.check_replaceable`).

`-i` may be a video file, one image, a folder of frames (images directly inside), or a folder of
videos and/or frame folders (one output each). Outputs: `OUTDIR/<stem>.mp4` (`.png` for one image),
`OUTDIR/<stem>_summary.json`, optionally `OUTDIR/<stem>_faces.jsonl` and `OUTDIR/<stem>/frames/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import KeepError
from ..image import IMAGE_SUFFIXES, is_image, list_images
from ..paths import check_output_outside_inputs, new_run_token, partial_path, stale_partials
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
    """The files a run writes for one input. The summary is the run's record: written once the other files
    are complete and just before they are moved into place, it names each of them (`output`, `faces_log`,
    `frames_dir`). A file there that no record names was not written by this program, and is replaced only
    with `--overwrite` (`in_the_way`)."""

    main: Path  # the restored video (or image)
    summary: Path
    faces_log: Path
    frames_dir: Path

    @property
    def stem(self) -> str:
        return self.main.stem

    @property
    def lock(self) -> Path:
        """The lock file of `main` (`keep.paths.FileLock`): one run at a time writes these outputs."""
        return self.main.with_name(f".{self.stem}.lock")

    def partial(self, run: str) -> Path:
        """Where run `run` (`new_run_token`) writes `main` until it is complete (hidden; moved into place at
        the end). One name per run, so that two runs never write into the same file."""
        return partial_path(self.main, run)

    def written(self, *, save_faces: bool, save_frames: bool) -> list[Path]:
        """What a run with these options writes besides its summary: the output, the face log, the frames."""
        return [self.main] + [self.faces_log] * save_faces + [self.frames_dir] * save_frames

    def stale_partials(self) -> list[Path]:
        """Partial files (and frame folders) of these outputs left by runs that were killed (or by versions
        before run tokens). Removed by the next run that holds the lock."""
        return [p for path in (self.main, self.summary, self.faces_log, self.frames_dir) for p in stale_partials(path)]

    def _summary(self) -> dict | None:
        """The summary file's contents if this program wrote it (a JSON object with `input` and `output`)."""
        try:
            summary = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) and {"input", "output"} <= summary.keys() else None

    def record(self) -> dict | None:
        """The summary, if it is this program's record of `main` (its `output` names it)."""
        summary = self._summary()
        return summary if summary is not None and _names(summary, "output", self.main) else None

    def finished(self) -> bool:
        """Whether `main` is a complete output: it is there and its record names it (a run writes the record
        just before it moves the finished output into place). A file there without one was put there by hand."""
        return self.main.is_file() and self.record() is not None

    def in_the_way(self, *, save_faces: bool, save_frames: bool) -> Path | None:
        """The first file (or folder) a run would replace that this program did not write: there and not named
        by the record, or the summary file itself when this program did not write it; None when nothing is."""
        if self.summary.exists() and self._summary() is None:
            return self.summary
        record = self.record()
        for path in self.written(save_faces=save_faces, save_frames=save_frames):
            key = {self.main: "output", self.faces_log: "faces_log", self.frames_dir: "frames_dir"}[path]
            if (path.exists() or path.is_symlink()) and not _names(record, key, path):
                return path
        return None

    def check_replaceable(self, *, overwrite: bool, save_faces: bool, save_frames: bool) -> None:
        """KeepError when a run would replace a file this program did not write (unless `overwrite`)."""
        path = None if overwrite else self.in_the_way(save_faces=save_faces, save_frames=save_frames)
        if path is None:
            return
        why = "is not a summary of this program" if path == self.summary else f"no {self.summary.name} names it"
        raise KeepError(
            f"{path} exists and was not written by KEEP ({why}): not replaced; pass --overwrite to replace it, "
            "or choose another output folder"
        )


def _names(record: dict | None, key: str, path: Path) -> bool:
    """Whether the record's entry `key` names `path` (its last parts: the folder may have moved since)."""
    value = (record or {}).get(key)
    parts = path.parts[-2:] if key == "frames_dir" else path.parts[-1:]
    return bool(value) and Path(str(value)).parts[-len(parts) :] == parts


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
