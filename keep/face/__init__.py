"""Faces in video frames: detection, tracking, alignment to the FFHQ template and paste-back."""

from .align import align_face, crop_corners, draw_box, estimate_affine, feathered_mask, paste_face, template
from .detectors import DETECTORS, Detection, build_detector
from .tracker import FaceTracker, TrackSmoother

__all__ = [
    "DETECTORS",
    "Detection",
    "FaceTracker",
    "TrackSmoother",
    "align_face",
    "build_detector",
    "crop_corners",
    "draw_box",
    "estimate_affine",
    "feathered_mask",
    "paste_face",
    "template",
]
