"""What a run reads and writes: one input or a folder of them, their output paths, and the checks made
before any model is loaded (a missing input is reported at once; no output may land in an input).

`-i` may be a video file, one image, a folder of frames (images directly inside), or a folder of
videos and/or frame folders (one output each). Outputs: `OUTDIR/<stem>.mp4` (`.png` for one image),
`OUTDIR/<stem>_summary.json`, optionally `OUTDIR/<stem>_faces.jsonl` and `OUTDIR/<stem>/frames/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cli import check_output_outside_inputs
from ..errors import KeepError
from ..image import IMAGE_SUFFIXES, is_image, list_images
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
    def partial(self) -> Path:
        """Where `main` is written until complete (hidden, renamed at the end)."""
        return self.main.with_name(f".{self.main.stem}.partial{self.main.suffix}")


def outputs_of(item: Input, outdir: Path) -> Outputs:
    suffix = ".png" if item.kind == "image" else ".mp4"
    return Outputs(
        main=outdir / f"{item.stem}{suffix}",
        summary=outdir / f"{item.stem}_summary.json",
        faces_log=outdir / f"{item.stem}_faces.jsonl",
        frames_dir=outdir / item.stem / "frames",
    )


def collect_inputs(path: str | Path) -> tuple[list[Input], Path | None]:
    """The inputs `-i path` names, sorted, and the folder that holds them when it is a folder of inputs."""
    path = Path(path).expanduser()
    if not path.exists():
        raise KeepError(f"input {path} does not exist")
    if path.is_file():
        return [Input(path, "image" if is_image(path) else "video")], None
    if list_images(path):
        return [Input(path, "frames")], None
    items = []
    for child in sorted(path.iterdir()):
        if child.is_file() and is_video(child):
            items.append(Input(child, "video"))
        elif child.is_dir() and list_images(child):
            items.append(Input(child, "frames"))
    if not items:
        raise KeepError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}), videos ({', '.join(VIDEO_SUFFIXES)}) or folders of "
            f"frames in {path}"
        )
    stems: dict[str, Path] = {}
    for item in items:
        if item.stem in stems:
            raise KeepError(f"{stems[item.stem].name} and {item.source.name} would write the same output {item.stem}")
        stems[item.stem] = item.source
    return items, path


def check_outputs(items: list[Input], container: Path | None, outdir: Path, *, save_frames: bool, save_faces: bool):
    """KeepError if any output would land on an input file or inside an input folder."""
    inputs = [item.source for item in items] + [container]
    for item in items:
        out = outputs_of(item, outdir)
        written = [out.main, out.partial, out.summary]
        written += [out.faces_log] if save_faces else []
        written += [out.frames_dir] if save_frames else []
        for path in written:
            check_output_outside_inputs(path, inputs)


def make_output_folder(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeepError(f"cannot create output folder {outdir}: {exc.strerror}") from None
    probe = outdir / ".keep-write-test"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise KeepError(f"cannot write to output folder {outdir}: {exc.strerror}") from None
