"""Show what the network trains on: GT next to its synthetic degradation (issue #4).

    python scripts/preview_degradations.py --input ../shared/media/carphone_pristine.mp4 --out preview.png
    python scripts/preview_degradations.py --input clip_dir/ --opt configs/stage2_transformer.yml \
        --set crf=[30,35] --samples 6 --out preview.mp4

Rows of the PNG grid are independent draws (seeds seed, seed+1, ...): GT | LQ (upsampled, nearest) for
the first frame of each clip. With an .mp4 output, one clip is written with GT and LQ side by side.
Degradation ranges: `DegradationConfig` defaults, or `data.degradation` of a training config
(`--opt`), then `--set key=value` overrides of degradation keys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from keep.config import apply_overrides, from_dict, load_config, to_dict  # noqa: E402
from keep.data.datasets import read_video, square_resize  # noqa: E402
from keep.data.degradations import DegradationConfig, degrade_clip  # noqa: E402
from keep.errors import KeepError  # noqa: E402
from keep.image import list_images, read_image  # noqa: E402


def load_frames(path: Path, size: int, frames: int) -> np.ndarray:
    if path.is_dir():
        files = list_images(path)[:frames]
        if not files:
            raise KeepError(f"no images in {path}")
        clip = np.stack([square_resize(read_image(p), size) for p in files])
    else:
        clip = np.stack([square_resize(f, size) for f in read_video(path)[:frames]])
    return clip


def degradation_config(opt: str | None, overrides: list[str]) -> DegradationConfig:
    base = DegradationConfig()
    if opt:
        from keep.train import TrainConfig

        base = load_config(TrainConfig, opt).data.degradation
    return from_dict(DegradationConfig, apply_overrides(to_dict(base), overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="video file or folder of aligned frames")
    parser.add_argument("--out", default="degradation_preview.png", help=".png grid or .mp4 clip")
    parser.add_argument("--opt", help="training config whose data.degradation to use")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="degradation overrides")
    parser.add_argument("--size", type=int, default=256, help="GT crop size")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--samples", type=int, default=4, help="rows of the grid (independent draws)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        cfg = degradation_config(args.opt, args.set)
        gt = load_frames(Path(args.input), args.size, args.frames)
        up = lambda lq: np.stack([cv2.resize(f, (args.size, args.size), interpolation=cv2.INTER_NEAREST) for f in lq])  # noqa: E731
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".mp4":
            lq = up(degrade_clip(gt, np.random.default_rng(args.seed), cfg))
            side = np.concatenate([gt, lq], axis=2)
            import av

            with av.open(str(out), mode="w") as container:
                stream = container.add_stream("libx264", rate=25, options={"crf": "10"})
                stream.width, stream.height, stream.pix_fmt = side.shape[2], side.shape[1], "yuv420p"
                for frame in side:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                container.mux(stream.encode(None))
        else:
            rows = []
            for i in range(args.samples):
                lq = up(degrade_clip(gt, np.random.default_rng(args.seed + i), cfg))
                rows.append(np.concatenate([gt[0], lq[0]], axis=1))
            if not cv2.imwrite(str(out), np.concatenate(rows, axis=0)[..., ::-1]):
                raise KeepError(f"cannot write {out}")
        print(f"wrote {out}")
    except KeepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
