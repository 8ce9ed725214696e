"""Milliseconds per frame of `retinaface_mobilenet`'s `detect_batch` on large frames.

    python -m benchmarks detect                              # CPU, 1920x1080, detect sizes 0 and 1280
    python -m benchmarks detect --device cuda --detect_sizes 0,1280,960
    python -m benchmarks detect --size 3840x2160 --detect_sizes 0,1920,1280,960

The frames are the generated two-person frames of `benchmarks pipeline` (two crops of the
shipped carphone sample side by side, 37 frames apart, scaled to `--size`), `--frames` distinct ones,
detected `--batch` per call (the pipeline's 8), after one warm-up pass. For each `--detect_sizes`
entry (0: full resolution; else frames of more than its square in pixels are shrunk by an integer
factor first) it prints the factor, ms/frame (the fastest of `--repeats` passes over all frames, so other
work on a shared machine counts less), faces per frame, and how far the landmarks of each face are
from those of the same face (box IoU >= 0.5) found at full resolution (mean and max over
faces of the mean distance of the 5 points, pixels and / inter-ocular distance), with the faces found
there and missed here, and the faces found here only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from keep.devices import resolve_device
from keep.errors import KeepError
from keep.face.detectors import RetinaFaceMobileNetDetector
from keep.face.tracker import iou
from keep.threads import set_threads

from .common import add_common_arguments, at_least_one, fastest, frame_size, parser, two_person_frames, write_json


def timed(detector, frames: list[np.ndarray], batch: int, repeats: int) -> tuple[list, float]:
    """Detections of every frame, `batch` frames per call, and the fastest pass's milliseconds per frame
    (`detect_batch` returns host arrays: the GPU is done when it returns)."""
    detector.detect_batch(frames[:batch])  # warm-up: first-call allocations, cuDNN's choice of kernels
    found, best = fastest(
        lambda: [d for i in range(0, len(frames), batch) for d in detector.detect_batch(frames[i : i + batch])], repeats
    )
    return found, 1000 * best / len(frames)


def landmark_distances(found: list, reference: list) -> dict:
    """Faces of `found` paired with the reference's (box IoU >= 0.5): mean distance of their 5 points,
    in pixels and / the reference's inter-ocular distance; reference faces unpaired (missed) and
    found faces unpaired (extra)."""
    pixels, relative, missed, extra = [], [], 0, 0
    for faces, reference_faces in zip(found, reference, strict=True):
        paired = set()
        for ref in reference_faces:
            overlaps = [iou(f.box, ref.box) if i not in paired else 0.0 for i, f in enumerate(faces)]
            if not overlaps or max(overlaps) < 0.5:
                missed += 1
                continue
            paired.add(i := int(np.argmax(overlaps)))
            pixels.append(np.linalg.norm(faces[i].landmarks - ref.landmarks, axis=1).mean())
            relative.append(pixels[-1] / np.linalg.norm(ref.landmarks[1] - ref.landmarks[0]))
        extra += len(faces) - len(paired)
    out = {"faces": len(pixels), "missed": missed, "extra": extra}
    if pixels:
        out |= {"mean_px": round(float(np.mean(pixels)), 2), "max_px": round(float(np.max(pixels)), 2)}
        out |= {"mean_rel": round(float(np.mean(relative)), 4), "max_rel": round(float(np.max(relative)), 4)}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("detect", __doc__)
    p.add_argument("--size", default="1920x1080", help="frame size WIDTHxHEIGHT")
    p.add_argument("--detect_sizes", default="0,1280", help="comma-separated detect sizes (0: full resolution)")
    p.add_argument("--frames", type=int, default=32, help="distinct frames generated")
    p.add_argument("--batch", type=int, default=8, help="frames per detect_batch call (the pipeline's 8)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the frames; the fastest counts")
    add_common_arguments(p)
    args = p.parse_args(argv)
    args.width, args.height = frame_size(args.size)
    try:
        args.sizes = [int(v) for v in args.detect_sizes.split(",")]
    except ValueError:
        raise KeepError(f"--detect_sizes must be integers, got '{args.detect_sizes}'") from None
    at_least_one(args, "frames", "batch", "repeats")
    if min(args.sizes) < 0:
        raise KeepError(f"--detect_sizes must be >= 0 (0: full resolution), got '{args.detect_sizes}'")
    return args


def first_call(device, frames: list, args: argparse.Namespace, results: dict):
    """The first detector, built and called once: what start-up costs in a fresh process."""
    start = time.perf_counter()
    detector = RetinaFaceMobileNetDetector(device=str(device), detect_size=args.sizes[0], batch_size=args.batch)
    built = time.perf_counter() - start
    start = time.perf_counter()
    detector.detect_batch(frames[: args.batch])
    first = time.perf_counter() - start  # CUDA: warmed up when built
    print(f"first detector built in {built:.2f} s, its first call {1000 * first / args.batch:.1f} ms/frame")
    results |= {"first_build_s": round(built, 3), "first_call_ms_per_frame": round(1000 * first / args.batch, 2)}
    return detector


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    frames = two_person_frames(args.frames, args.width, args.height)
    results: dict = {"device": str(device), "threads": threads, "size": [args.width, args.height], "runs": []}
    detector = first_call(device, frames, args, results)
    found_at: dict = {}
    if 0 not in args.sizes:  # the reference: full resolution (untimed)
        found_at[0] = timed(RetinaFaceMobileNetDetector(device=str(device), detect_size=0), frames, args.batch, 1)[0]
    print(f"{'detect_size':>11} {'factor':>6} {'ms/frame':>9} {'faces/frame':>11}  landmarks vs full resolution")
    for size in sorted(args.sizes, key=bool):  # the reference first
        if size != detector.detect_size:
            detector = RetinaFaceMobileNetDetector(device=str(device), detect_size=size, batch_size=args.batch)
        found_at[size], ms = timed(detector, frames, args.batch, args.repeats)
        found, reference = found_at[size], found_at[0]
        distances = landmark_distances(found, reference)
        row = {
            "detect_size": size, "factor": detector.shrink_factor(args.height, args.width),
            "ms_per_frame": round(ms, 2), "faces_per_frame": round(sum(map(len, found)) / len(found), 3),
            "landmarks_vs_full_resolution": distances,
        }  # fmt: skip
        results["runs"].append(row)
        shown = (
            f"mean {distances['mean_px']} px ({distances['mean_rel']}), max {distances['max_px']} px "
            f"({distances['max_rel']}); {distances['missed']} missed, {distances['extra']} extra"
            if distances["faces"]
            else f"{distances['missed']} missed, {distances['extra']} extra"
        )
        print(f"{size:>11} {row['factor']:>6} {ms:>9.2f} {row['faces_per_frame']:>11.2f}  {shown}")
    print(f"\n{args.size}, {len(frames)} frames, {args.batch} per call, {device}, {threads} torch threads")
    write_json(args.json, results)
    return results
