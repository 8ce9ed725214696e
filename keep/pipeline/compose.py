"""Stage 4, paste: the output frame = the background (upsampled to `--upscale`) with every restored face
blended back through its inverse alignment (face-parsing or feathered mask), optionally outlined.

At `--upscale 1` with the default background, pixels outside every face are the input's, bit for bit.
`--face_upsample` upsamples each restored crop by `--upscale` with the face upsampler (Real-ESRGAN)
before pasting, so a face larger than the network's crop in the output is not merely interpolated.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..background import Upsampler
from ..face.align import crop_corners, draw_box, paste_face
from ..face.parsing import Masker
from .items import RestoredFrame, StageTimer


class ComposeStage:
    def __init__(
        self,
        *,
        size: int,
        masker: Masker,
        background: Upsampler,
        face_upsampler: Upsampler | None,
        upscale: int,
        draw_box: bool,
        timer: StageTimer,
    ):
        self.size = size
        self.masker = masker
        self.background = background
        self.face_upsampler = face_upsampler if upscale > 1 else None
        self.upscale = upscale
        self.draw_box = draw_box
        self.timer = timer

    def __call__(self, rgb: np.ndarray, frame: RestoredFrame) -> tuple[np.ndarray, list[dict]]:
        """The input frame `(H, W, 3)` and its restored faces -> output frame `(H*u, W*u, 3)`, face records."""
        u = self.upscale
        with self.timer("background"):
            out = self.background(rgb, u)  # a new array: the input slot stays untouched
        records = []
        with self.timer("paste"):
            for item in frame.faces:
                if item.matrix is None:  # --has_aligned: the restored crop is the whole frame
                    out = cv2.resize(item.face, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
                    continue
                mask = self.masker(item.face)
                face, matrix = item.face, item.matrix
                if self.face_upsampler is not None:
                    face = self.face_upsampler(face, u)  # (S*u, S*u, 3)
                    mask = cv2.resize(mask, face.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)
                    matrix = matrix * (face.shape[0] / self.size)  # frame -> upsampled crop
                paste_face(out, face, matrix, mask=mask, upscale=u, inplace=True)
                records.append({"track": item.track, "corners": crop_corners(item.matrix, self.size).round(2).tolist()})
            if self.draw_box:
                for item in frame.faces:
                    if item.matrix is not None:
                        draw_box(out, crop_corners(item.matrix, self.size) * u, item.track)
        return out, records
