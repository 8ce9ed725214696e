"""Paste-back masks: a face-parsing mask when its network is at hand, else the feathered square.

`--mask auto` (default) uses facexlib's ParseNet (19 CelebAMask-HQ labels) when the optional
`facexlib` package is installed and `parsing_parsenet.pth` resolves through `keep.weights`, and falls
back to the feathered square mask, saying which. The parsing mask keeps the face proper (skin, brows,
eyes, glasses, ears, nose, mouth, lips) and leaves hair, neck, clothes, hat and background to the
input frame, which avoids pasting a restored square over hair and shoulders. It is softened and then
multiplied by the feathered square mask, so pixels near and beyond the crop edge stay exactly the
input's (the `--upscale 1` guarantee holds with either mask).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np
import torch

from ..errors import KeepError
from ..image import to_tensor
from ..weights import read_tensors, resolve_weights
from .align import feathered_mask

log = logging.getLogger(__name__)

# CelebAMask-HQ labels of ParseNet: 0 background, 1 skin, 2-3 brows, 4-5 eyes, 6 glasses, 7-8 ears,
# 9 earring, 10 nose, 11 mouth, 12-13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
FACE_LABELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)

Masker = Callable[[np.ndarray], np.ndarray]  # restored face (S, S, 3) uint8 RGB -> mask (S, S) in [0, 1]


def labels_to_mask(labels: np.ndarray, square: np.ndarray) -> np.ndarray:
    """Per-pixel labels `(S, S)` -> soft mask `(S, S)` float32: face labels softened, times `square`."""
    size = labels.shape[0]
    mask = np.isin(labels, FACE_LABELS).astype(np.float32)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=max(1.0, 0.02 * size))
    return mask * square


class FeatherMask:
    """The same feathered square mask for every face."""

    name = "feather"

    def __init__(self, size: int):
        self.mask = feathered_mask(size)

    def __call__(self, face: np.ndarray) -> np.ndarray:
        return self.mask


class ParsingMask:
    """ParseNet labels of the restored face -> soft mask (see the module docstring)."""

    name = "parsenet"
    NET_SIZE = 512

    def __init__(self, network: Callable, size: int, device: str = "cpu"):
        self.network = network
        self.device = device
        self.square = feathered_mask(size)

    @classmethod
    def from_facexlib(cls, size: int, device: str = "cpu", *, download: bool = True) -> ParsingMask:
        try:
            from facexlib.parsing.parsenet import ParseNet
        except ImportError:
            raise KeepError("the parsing mask needs the optional package facexlib (pip install facexlib)") from None
        path = resolve_weights("parsenet", download=download)
        net = ParseNet(in_size=cls.NET_SIZE, out_size=cls.NET_SIZE, parsing_ch=19)
        net.load_state_dict(read_tensors(path, "ParseNet weights"), strict=True)
        return cls(net.to(device).eval(), size, device)

    def __call__(self, face: np.ndarray) -> np.ndarray:
        size = face.shape[0]
        x = cv2.resize(face, (self.NET_SIZE, self.NET_SIZE), interpolation=cv2.INTER_LINEAR)
        x = to_tensor(x, self.device)[None]
        with torch.no_grad():
            logits = self.network(x)[0]  # (1, 19, 512, 512)
        labels = logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
        if size != self.NET_SIZE:
            labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
        return labels_to_mask(labels, self.square)


def build_masker(name: str, size: int, *, device: str = "cpu") -> Masker:
    """Paste mask by name: `auto` (parsing if available, else feather), `parsenet`, `feather`."""
    if name == "feather":
        return FeatherMask(size)
    if name == "parsenet":
        return ParsingMask.from_facexlib(size, device)
    if name == "auto":
        try:
            return ParsingMask.from_facexlib(size, device, download=False)  # automatic: what is at hand
        except KeepError as exc:
            log.info("parsing mask unavailable (%s); using the feathered mask", str(exc).split(". ")[0])
            return FeatherMask(size)
    raise KeepError(f"unknown paste mask '{name}'; choose one of: auto, parsenet, feather")
