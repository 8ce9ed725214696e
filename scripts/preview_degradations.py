"""Show what the network trains on: GT next to its synthetic degradation (docs/training.md).

    python scripts/preview_degradations.py --input ../shared/media/carphone_pristine.mp4 --out preview.png
    python scripts/preview_degradations.py --input clip_dir/ --opt configs/released/stage2_kalman.yml \
        --set crf=[30,35] --samples 6 --out preview.mp4
    python scripts/preview_degradations.py --input clip.mp4 --out resize.png \
        --compare resize_probs=[1,0,0] resize_probs=[0,1,0] resize_probs=[0,0,1]

Rows of the PNG grid are independent draws (seeds seed, seed+1, ...): GT | LQ (upsampled, nearest) for
the first frame of each clip. With `--compare`, each row is one override of the same base configuration
and the same seed, labelled: what that one parameter changes. With an .mp4 output, one clip is written
with GT and LQ side by side. Degradation ranges: `DegradationConfig` defaults, or `data.degradation` of a
training config (`--opt`), then `--set key=value` overrides of degradation keys.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import cv2
import numpy as np

from keep.cli import add_set_argument, add_threads_argument, run_main
from keep.config import apply_overrides, from_dict, load_config, to_dict
from keep.data.datasets import read_frames
from keep.data.degradations import DegradationConfig, degrade_clip
from keep.image import write_image
from keep.paths import check_output_outside_inputs
from keep.threads import set_threads
from keep.train import TrainConfig


def load_frames(path: Path, size: int, frames: int) -> np.ndarray:
    """The first `frames` frames of a video or a folder of frames, upright, square-resized to `size`."""
    return read_frames(path, size, (0, frames))


def degradation_config(opt: str | None, overrides: list[str]) -> DegradationConfig:
    base = DegradationConfig()
    if opt:
        base = load_config(TrainConfig, opt).data.degradation
    return from_dict(DegradationConfig, apply_overrides(to_dict(base), overrides))


def label(img: np.ndarray, text: str) -> np.ndarray:
    """Write `text` in the top-left corner of an RGB image (white on a dark band)."""
    img = img.copy()
    scale = max(img.shape[0] / 400, 0.3)
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    img[: height + 6, : width + 6] //= 3
    cv2.putText(img, text, (3, height + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_clip(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def _main(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    out = Path(args.out)
    check_output_outside_inputs(out, [args.input])
    cfg = degradation_config(args.opt, args.overrides)
    gt = load_frames(Path(args.input), args.size, args.frames)
    size = (args.size, args.size)
    up = lambda lq: np.stack([cv2.resize(f, size, interpolation=cv2.INTER_NEAREST) for f in lq])  # noqa: E731
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".mp4":
        lq = up(degrade_clip(gt, np.random.default_rng(args.seed), cfg))
        write_clip(out, np.concatenate([gt, lq], axis=2))
    else:
        rows = []
        if args.compare:  # one parameter at a time, same draw otherwise
            for override in args.compare:
                varied = from_dict(DegradationConfig, apply_overrides(to_dict(cfg), [override]))
                lq = up(degrade_clip(gt, np.random.default_rng(args.seed), varied))
                rows.append(np.concatenate([gt[0], label(lq[0], override)], axis=1))
        else:
            for i in range(args.samples):
                lq = up(degrade_clip(gt, np.random.default_rng(args.seed + i), cfg))
                rows.append(np.concatenate([gt[0], lq[0]], axis=1))
        write_image(out, np.concatenate(rows, axis=0))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="video file or folder of aligned frames")
    parser.add_argument("--out", default="degradation_preview.png", help=".png grid or .mp4 clip")
    parser.add_argument("--opt", help="training config whose data.degradation to use")
    add_set_argument(parser)
    parser.add_argument("--compare", nargs="+", metavar="KEY=VALUE", help="one grid row per override (same seed)")
    parser.add_argument("--size", type=int, default=256, help="GT crop size")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--samples", type=int, default=4, help="rows of the grid (independent draws)")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
