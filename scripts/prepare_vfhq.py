"""Turn raw VFHQ clips (or any face videos) into aligned 512 x 512 training crops (docs/training.md).

    python scripts/prepare_vfhq.py --input datasets/VFHQ/train_frames --annotations datasets/VFHQ/annotations \
        --out datasets/VFHQ/train_aligned

Input: a folder whose entries are clips, each a folder of frames or a video file, read as inference reads
them (`keep.video.open_input`: a phone's portrait video upright, every frame at the first frame's size). Landmarks: from
`--annotations/<clip>.txt` when given (VFHQ annotation layout: every line made only of numbers is
`frame_index [x0 y0 w h] lx1 ly1 ... lx5 ly5`, the last ten numbers being the 5 landmarks: left eye,
right eye, nose, left and right mouth corner in image coordinates), otherwise detected per frame with
dlib (HOG face detector + the 68-point predictor of face-recognition-models; eye centres, nose tip and
mouth corners give the 5 points). A frame with no detection reuses the previous frame's landmarks.
Each frame is warped by the similarity transform onto the FFHQ 5-point template (keep/face/align.py) and
written as `<out>/<clip>/<frame:08d>.png` - the `clips` layout of `keep.data.DataConfig`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from keep.cli import add_threads_argument, run_main
from keep.errors import KeepError
from keep.face.align import align_face, estimate_affine
from keep.face.detectors import DlibDetector
from keep.image import write_image
from keep.paths import check_output_outside_inputs
from keep.threads import set_threads
from keep.video import open_input


def read_annotations(path: Path) -> dict[int, np.ndarray]:
    """frame index -> landmarks (5, 2) from a VFHQ-style annotation text file."""
    out = {}
    for line in path.read_text().splitlines():
        tokens = line.replace(",", " ").split()
        try:
            numbers = [float(t) for t in tokens]
        except ValueError:
            continue  # header lines
        if len(numbers) >= 11:
            out[int(numbers[0])] = np.array(numbers[-10:], np.float32).reshape(5, 2)
    if not out:
        raise KeepError(f"{path}: no landmark lines (frame index followed by 10 numbers)")
    return out


class LargestFace:
    """RGB frame -> 5 landmarks (5, 2) of the largest face found by the offline dlib detector, or None."""

    def __init__(self) -> None:
        self.detector = DlibDetector()

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        faces = self.detector(frame)
        if not faces:
            return None
        return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).landmarks


def align(frame: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The frame aligned to the FFHQ template at `size` (the inference pipeline's alignment)."""
    return align_face(frame, estimate_affine(landmarks, size), size)


def _main(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    root = Path(args.input)
    if not root.is_dir():
        raise KeepError(f"input folder not found: {root}")
    check_output_outside_inputs(args.out, [args.input, args.annotations])
    entries = sorted(root.iterdir())
    if not entries:
        raise KeepError(f"input folder {root} is empty: expected clip folders of frames or video files")
    detector = None
    for entry in entries:
        name = entry.stem if entry.is_file() else entry.name
        annotation = Path(args.annotations) / f"{name}.txt" if args.annotations else None
        marks = read_annotations(annotation) if annotation and annotation.is_file() else None
        if marks is None and detector is None:
            detector = LargestFace()
        out_dir = Path(args.out) / name
        previous, written = None, 0
        reader = open_input(entry)
        for frame in reader:
            points = marks.get(frame.index) if marks is not None else detector(frame.rgb)
            points = points if points is not None else previous
            if points is None:
                continue  # no face yet in this clip
            previous = points
            out_dir.mkdir(parents=True, exist_ok=True)  # with the first aligned frame: a failed clip leaves nothing
            write_image(out_dir / f"{frame.index:08d}.png", align(frame.rgb, points, args.size))
            written += 1
        notes = [note for note in (reader.size_changes.message(), reader.stopped) if note]
        print(f"{name}: {written} aligned frames" + "".join(f"; {note}" for note in notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of clips (frame folders or video files)")
    parser.add_argument("--out", required=True, help="output folder (clips layout)")
    parser.add_argument("--annotations", help="folder of <clip>.txt landmark files (VFHQ)")
    parser.add_argument("--size", type=int, default=512)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
