"""Restore every face in a video, streaming (issue #3).

    decode -> detect -> track (Kalman per face) -> look-ahead buffer (gap interpolation, landmark
    smoothing) -> chunk of `window` frames -> align each track's faces -> flow + KEEP, state carried
    over the whole track -> paste back -> encode

Memory is bounded by the look-ahead buffer plus one chunk of frames and one carried state per live
track, whatever the video's length. Time spent in each stage is accumulated in `Pipeline.timings`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .errors import KeepError
from .face.align import align_face, crop_corners, estimate_affine, paste_face
from .face.parsing import build_masker
from .face.tracker import FaceTracker, TrackSmoother
from .image import to_tensor, to_uint8
from .precision import autocast
from .streaming import StreamingRestorer
from .video.io import Frame, VideoWriter, open_input, write_image

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "track_align", "flow", "network", "paste", "encode")


@dataclass
class PipelineOptions:
    """Command-line options of `inference.py`, one to one."""

    model: str = "keep"
    detector: str = "auto"
    mask: str = "auto"  # paste-back mask: auto (face parsing if available, else feather) | parsenet | feather
    flow: str = "auto"
    fidelity: float = 1.0  # CFT weight: 0 .. 1 (CodeFormer's -w); 1 as every release
    upscale: int = 1
    has_aligned: bool = False
    save_frames: bool = False
    save_faces: bool = False  # write <stem>_faces.jsonl: per frame, each face's track, landmarks, crop corners
    device: str = "cpu"
    precision: str = "fp32"
    window: int = 20  # frames restored per network call (state carried across calls)
    gain_context: int = 0
    crf: int = 18
    min_face: float = 16.0  # faces whose eye-to-mouth distance x 3 is below this many pixels are left alone
    max_gap: int = 5  # frames a track may miss and still be interpolated
    smooth_sigma: float = 1.5  # Gaussian landmark smoothing over time, in frames (0: off)
    fps: float = 25.0  # frame rate for folders of frames
    restore: bool = True  # False: detect, align and paste the unrestored crops (checks the geometry)


def face_size(landmarks: np.ndarray) -> float:
    """A scale-invariant face size: 3x the distance from the eye centre to the mouth centre."""
    return float(3 * np.linalg.norm(landmarks[3:5].mean(0) - landmarks[0:2].mean(0)))


class Pipeline:
    def __init__(self, options: PipelineOptions):
        self.options = options
        self.timings: dict[str, float] = defaultdict(float)
        if options.upscale < 1:
            raise KeepError(f"--upscale must be >= 1, got {options.upscale}")
        from .model import load_model

        self.model = load_model(options.model, device=options.device, flow=options.flow, cft_weight=options.fidelity)
        self.size = self.model.config.img_size
        self.detector = None
        if not options.has_aligned:
            from .face.detectors import build_detector

            self.detector = build_detector(options.detector, device=options.device)
            log.info("face detector: %s", self.detector.name)
        self.masker = build_masker(options.mask, self.size, device=options.device)
        log.info("paste mask: %s", self.masker.name)

    @contextmanager
    def _timed(self, stage: str):
        start = time.perf_counter()
        yield
        self.timings[stage] += time.perf_counter() - start

    def _restore(self, restorer: StreamingRestorer, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Restore consecutive aligned crops of one track, continuing the track's state."""
        if not self.options.restore:
            return crops
        lq = to_tensor(np.stack(crops), self.options.device)[None]  # (1, T, 3, S, S)
        with self._timed("flow"):
            flows = self.model.flows(lq, restorer.previous if restorer.state is not None else None)
        with self._timed("network"), autocast(self.options.device, self.options.precision):
            out = restorer.step(lq, flows)
        if self.options.device.startswith("cuda"):
            torch.cuda.synchronize()
        return list(to_uint8(out[0]))

    def run(self, input_path: str | Path, outdir: str | Path) -> dict:
        opts = self.options
        start = time.perf_counter()
        reader = open_input(input_path, fps=opts.fps)
        outdir = Path(outdir)
        try:
            outdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KeepError(f"cannot create output folder {outdir}: {exc.strerror}") from None
        stem = Path(input_path).stem if Path(input_path).suffix else Path(input_path).name
        suffix = ".png" if reader.kind == "image" else ".mp4"
        output = outdir / f"{stem}{suffix}"
        if output.resolve() == Path(input_path).resolve():
            raise KeepError(f"output {output} would overwrite the input; choose another output folder")
        partial = outdir / f".{stem}.partial{suffix}"
        width, height = reader.width * opts.upscale, reader.height * opts.upscale
        try:
            partial.touch()
        except OSError as exc:
            raise KeepError(f"cannot write to output folder {outdir}: {exc.strerror}") from None
        writer = None
        if reader.kind != "image":
            writer = VideoWriter(
                partial, width=width, height=height, fps=reader.fps, time_base=reader.time_base, crf=opts.crf,
                audio_source=input_path if reader.kind == "video" else None,
            )  # fmt: skip
        frames_dir = outdir / stem / "frames" if opts.save_frames else None
        if frames_dir is not None:
            frames_dir.mkdir(parents=True, exist_ok=True)
        faces_log = open(outdir / f"{stem}_faces.jsonl", "w") if opts.save_faces else None
        self._stats = {"faces": 0, "frames_with_face": 0, "track_frames": defaultdict(int), "small": 0}
        self._restorers: dict[int, StreamingRestorer] = {}
        written = 0

        def emit(chunk):
            nonlocal written
            for index, frame, pts in self._process_chunk(chunk, faces_log):
                with self._timed("encode"):
                    if writer is not None:
                        writer.write(frame, pts)
                    else:
                        write_image(partial, frame)
                    if frames_dir is not None:
                        write_image(frames_dir / f"{index:06d}.png", frame)
                written += 1

        tracker = FaceTracker(max_gap=opts.max_gap)
        smoother = TrackSmoother(max_gap=opts.max_gap, sigma=opts.smooth_sigma)
        chunk: list = []
        frames = iter(reader)
        bar = tqdm(total=reader.num_frames, unit="frame", desc="restoring", dynamic_ncols=True)
        try:
            while True:
                with self._timed("decode"):
                    frame: Frame | None = next(frames, None)
                if frame is None:
                    break
                observations = self._detect(frame.rgb, tracker)
                ready = list(smoother.push(frame.index, frame, observations))
                for item in ready:
                    chunk.append(item)
                    if len(chunk) == opts.window:
                        emit(chunk)
                        chunk = []
                bar.update(1)
            chunk.extend(smoother.flush())
            for i in range(0, len(chunk), opts.window):
                emit(chunk[i : i + opts.window])
        finally:
            bar.close()
            if writer is not None and written:
                writer.close()
            if faces_log is not None:
                faces_log.close()
        if written == 0:
            partial.unlink(missing_ok=True)
            raise KeepError(
                f"no frame could be decoded from {input_path}" + (f" ({reader.stopped})" if reader.stopped else "")
            )
        partial.replace(output)
        elapsed = time.perf_counter() - start
        tracks = self._stats["track_frames"]
        summary = {
            "input": str(input_path),
            "output": str(output),
            "frames": written,
            "faces": self._stats["faces"],
            "frames_with_face": self._stats["frames_with_face"],
            "tracks": len(tracks),
            "longest_track_coverage": max(tracks.values(), default=0) / written,
            "small_faces_skipped": self._stats["small"],
            "detector": getattr(self.detector, "name", None),
            "seconds": round(elapsed, 3),
            "frames_per_second": round(written / elapsed, 3),
            "stopped": reader.stopped,
            "timings": {s: round(self.timings[s], 4) for s in STAGES},
        }
        if reader.kind != "image":
            (outdir / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _detect(self, rgb: np.ndarray, tracker: FaceTracker) -> dict[int, np.ndarray]:
        """Landmarks `(5, 2)` of every face large enough to restore, by track id."""
        if self.detector is None:  # --has_aligned: the whole frame is one face
            return {}
        with self._timed("detect"):
            detections = [d for d in self.detector(rgb) if face_size(d.landmarks) >= self.options.min_face]
        with self._timed("track_align"):
            ids = tracker.update(detections)
        return {i: d.landmarks for i, d in zip(ids, detections, strict=True)}

    def _process_chunk(self, chunk: list, faces_log) -> list[tuple[int, np.ndarray, int | None]]:
        """Restore and paste the faces of up to `window` consecutive frames."""
        opts, size = self.options, self.size
        per_track: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)  # pos, matrix, crop
        with self._timed("track_align"):
            for pos, (_, frame, faces) in enumerate(chunk):
                if self.detector is None:
                    crop = cv2.resize(frame.rgb, (size, size), interpolation=cv2.INTER_AREA)
                    per_track[0].append((pos, None, crop))
                    continue
                for track_id, landmarks in faces.items():
                    matrix = estimate_affine(landmarks, size)
                    per_track[track_id].append((pos, matrix, align_face(frame.rgb, matrix, size)))
        restored: dict[int, list[np.ndarray]] = {}
        for track_id, items in per_track.items():
            if track_id not in self._restorers:
                self._restorers[track_id] = StreamingRestorer(
                    self.model, window=opts.window, gain_context=opts.gain_context
                )
            restored[track_id] = self._restore(self._restorers[track_id], [crop for _, _, crop in items])
            self._stats["track_frames"][track_id] += len(items)
        for track_id in list(self._restorers):  # a track absent from a whole chunk has ended
            if track_id not in per_track:
                del self._restorers[track_id]

        results = []
        with self._timed("paste"):
            pasted = {pos: [] for pos in range(len(chunk))}
            for track_id, items in per_track.items():
                for (pos, matrix, _), face in zip(items, restored[track_id], strict=True):
                    pasted[pos].append((track_id, matrix, face))
            for pos, (index, frame, _) in enumerate(chunk):
                height, width = frame.rgb.shape[:2]
                out = frame.rgb
                if opts.upscale > 1:
                    out = cv2.resize(out, (width * opts.upscale, height * opts.upscale), interpolation=cv2.INTER_CUBIC)
                records = []
                for track_id, matrix, face in pasted[pos]:
                    if matrix is None:
                        out = cv2.resize(face, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
                        continue
                    out = paste_face(out, face, matrix, mask=self.masker(face), upscale=opts.upscale)
                    records.append({"track": track_id, "corners": crop_corners(matrix, size).round(2).tolist()})
                self._stats["faces"] += len(pasted[pos])
                self._stats["frames_with_face"] += bool(pasted[pos])
                if faces_log is not None:
                    faces_log.write(json.dumps({"frame": index, "faces": records}) + "\n")
                results.append((index, out, frame.pts))
        return results
