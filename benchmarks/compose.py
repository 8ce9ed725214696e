"""Milliseconds per frame of the back worker's stages alone: background, paste, encode.

    python -m benchmarks compose --size 1920x1080 --frames 40
    python -m benchmarks compose --size 1920x1080 --frames 40 --preset veryfast
    python -m benchmarks compose --size 1920x1080 --frames 40 --input hdr     # 10-bit HLG, HEVC out

Input: the generated two-person clip of `benchmarks pipeline` (`common.two_person_frame`: two crops of
the shipped carphone sample side by side), built in memory. Each person's five landmarks are fixed (what
`retinaface_mobilenet` finds in carphone frames 0 and 37, mapped into the frame), so every frame pastes two
faces of the same size, about 380 x 470 px at 1080p. The "restored" faces are the aligned crops of the
frame itself (`--crop` px, 512 as the released network), so no network runs. `--input`: the frames as the
pipeline holds a video's (`video`, default: 8-bit BT.709 4:2:0 planes, pasted into and encoded as they are),
a 10-bit HLG video's (`hdr`: HEVC output), or RGB frames (`rgb`: a folder of images, converted to 4:2:0 by
the encoder; the only path before the pipeline kept each input's own colour). Stages run one after another
as in `--overlap off`, timed with the pipeline's own `StageTimer`: `background` + `paste` by
`ComposeStage` (feathered mask, `--upscale 1`), `convert` (the pixels into the encoder's frame: RGB to 4:2:0, or
planes copied) and `encode` by `VideoWriter` (libx264, libx265 for `hdr`, at `--crf` / `--preset`, the
encoder's delayed frames included through the final flush). Prints ms/frame per stage and frames/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from keep.background import BicubicUpsampler
from keep.errors import KeepError
from keep.face.align import align_face, estimate_affine
from keep.face.parsing import FeatherMask
from keep.pipeline.compose import ComposeStage
from keep.pipeline.items import RestoredFace, RestoredFrame
from keep.pipeline.options import RunOptions
from keep.threads import set_threads
from keep.video import VideoWriter
from keep.video.colour import HLG, SRGB, Colour, planes_from_view
from keep.video.io import PRESETS

from .common import add_common_arguments, frame_size, machine, parser, sample_frames, two_person_frame, write_json

# retinaface_mobilenet's landmarks (x, y) in carphone frames 0 and 37 (176 x 144), the two people's faces
CARPHONE_LANDMARKS = {
    0: [[80.69, 58.52], [101.44, 56.86], [93.02, 70.04], [83.58, 79.83], [101.72, 78.56]],
    37: [[64.30, 64.47], [85.16, 58.56], [77.70, 74.90], [71.82, 85.41], [89.46, 80.49]],
}


def two_person_landmarks(source_size: tuple[int, int], width: int, height: int) -> list[np.ndarray]:
    """The two faces' landmarks `(5, 2)` in a `two_person_frame` of `width` x `height`, as it scales and crops."""
    src_height, src_width = source_size
    half, scale = width // 2, height / src_height
    left = (round(src_width * scale) - half) // 2
    return [(np.array(CARPHONE_LANDMARKS[o]) + 0.5) * scale - 0.5 - [left - k * half, 0] for k, o in enumerate((0, 37))]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    width, height = frame_size(args.size)
    if width < 64 or height < 64 or width % 2 or height % 2 or args.frames < 1 or args.crop < 16:
        raise KeepError("--size must be even and at least 64x64, --frames >= 1, --crop >= 16")
    sources = sample_frames()
    landmarks = two_person_landmarks(sources[0].shape[:2], width, height)
    matrices = [estimate_affine(points, args.crop) for points in landmarks]
    frames = [two_person_frame(sources, t, width, height) for t in range(args.frames)]
    colour = {"rgb": SRGB, "video": Colour("yuv420p", 1, 1, 1, 1, 1), "hdr": Colour("yuv420p10le", 9, 1, 9, HLG, 9)}
    colour = colour[args.input]
    pictures = [planes_from_view(rgb, colour) for rgb in frames]  # as the decoder leaves them in the frame pool
    compose = ComposeStage(size=args.crop, masker=FeatherMask(args.crop), background=BicubicUpsampler(),
                           face_upsampler=None)  # fmt: skip
    compose.use(RunOptions())  # at --upscale 1, no boxes
    timer = compose.timer  # the pipeline's own stage timer; encode is timed here as the encode stage times it
    with tempfile.TemporaryDirectory() as tmp:
        writer = VideoWriter(
            Path(tmp) / "out.mp4", width=width, height=height, fps=Fraction(25), crf=args.crf, preset=args.preset,
            colour=colour,
        )  # fmt: skip
        start = time.perf_counter()
        for t, (rgb, planes) in enumerate(zip(frames, pictures, strict=True)):
            faces = [RestoredFace(k, m, align_face(rgb, m, args.crop)) for k, m in enumerate(matrices)]
            out, _ = compose.compose(rgb, RestoredFrame(t, 0, t, faces), planes=planes, colour=colour)
            with timer("convert"):  # the pixels into the encoder's frame (RGB: to 4:2:0; planes: copied)
                frame = writer.frame(out)
            with timer("encode"):
                writer.write(frame, t)
        with timer("encode"):
            writer.close()
        total = time.perf_counter() - start
    print(f"{args.frames} frames {width}x{height} ({args.input}: {colour.format}), 2 faces each ({args.crop} px "
          f"crops), crf {args.crf}, preset {args.preset}")  # fmt: skip
    print(machine(threads))
    print(f"{'stage':<11} {'ms/frame':>9} {'frames/s':>9}")
    report = {}
    for stage in ("background", "paste", "convert", "encode"):
        seconds = timer.seconds[stage]
        report[stage] = round(1000 * seconds / args.frames, 2)
        print(f"{stage:<11} {report[stage]:9.1f} {args.frames / seconds:9.1f}")
    print(f"all (with aligning the crops) {1000 * total / args.frames:.1f} ms/frame")
    figures = {"ms_per_frame": report, "size": args.size, "frames": args.frames, "input": args.input}
    write_json(args.json, figures)
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("compose", __doc__)
    p.add_argument("--size", default="1920x1080", help="frame size WxH")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--crop", type=int, default=512, help="restored face crop size (the network's img_size)")
    p.add_argument("--crf", type=int, default=18)
    p.add_argument("--preset", default="medium", choices=PRESETS, help="libx264 preset")
    p.add_argument("--input", default="video", choices=("video", "hdr", "rgb"), help="frames held as (see above)")
    add_common_arguments(p, device=False)
    return p.parse_args(argv)
