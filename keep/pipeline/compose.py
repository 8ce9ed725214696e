"""Stage 4, paste: the output frame = the background (upsampled to `--upscale`) with every restored face
blended back through its inverse alignment (face-parsing or feathered mask), optionally outlined.

At `--upscale 1` with the default background, pixels outside every restored face are the input's, bit for
bit; so are faces left alone (`--faces`), which are only logged (`"restored": false`).
`--face_upsample` upsamples each restored crop by `--upscale` with the face upsampler (Real-ESRGAN)
before pasting, so a face larger than the network's crop in the output is not merely interpolated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ..background import Upsampler
from ..face.align import crop_corners, draw_box, paste_face
from ..face.parsing import Masker
from .items import Composed, Job, RestoredFrame
from .stage import Slots, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComposeSpec:
    """What the paste stage is built from: the network's crop size and the paste and background options."""

    size: int
    mask: str = "auto"
    device: str = "cpu"
    bg_upsampler: str = "bicubic"
    bg_tile: int = 400
    face_upsample: bool = False
    upscale: int = 1
    draw_box: bool = False

    def build(self) -> ComposeStage:
        from ..background import build_upsampler
        from ..face.parsing import build_masker

        masker = build_masker(self.mask, self.size, device=self.device)
        log.info("paste mask: %s", masker.name)
        upsample = dict(device=self.device, tile=self.bg_tile)
        background = build_upsampler(self.bg_upsampler, **upsample)
        face_upsampler = None
        if self.face_upsample:
            same = self.bg_upsampler == "realesrgan"
            face_upsampler = background if same else build_upsampler("realesrgan", **upsample)
        if self.upscale > 1 or self.bg_upsampler != "bicubic":
            log.info("background upsampler: %s", background.name)
        return ComposeStage(
            size=self.size, masker=masker, background=background, face_upsampler=face_upsampler,
            upscale=self.upscale, draw_box=self.draw_box,
        )  # fmt: skip


class ComposeStage(Stage):
    """`RestoredFrame`s in (their input frame in the pool), `Composed` output frames out; the slot is freed."""

    def __init__(
        self,
        *,
        size: int,
        masker: Masker,
        background: Upsampler,
        face_upsampler: Upsampler | None,
        upscale: int,
        draw_box: bool,
    ):
        super().__init__()
        self.size = size
        self.masker = masker
        self.background = background
        self.face_upsampler = face_upsampler if upscale > 1 else None
        self.upscale = upscale
        self.draw_box = draw_box
        self._info = {
            "mask": masker.name,
            "background": background.name,
            "face_upsampler": None if face_upsampler is None else face_upsampler.name,
        }

    def info(self) -> dict:
        return self._info

    def start(self, job: Job, slots: Slots) -> None:
        self.pool, self.release = job.pool, slots.release
        self.faces = self.frames_with_face = 0

    def push(self, frame: RestoredFrame) -> list[Composed]:
        out, records = self.compose(self.pool[frame.slot], frame)
        self.release(frame.slot)
        restored = sum(item.face is not None for item in frame.faces)
        self.faces += restored
        self.frames_with_face += bool(restored)
        return [Composed(frame.index, frame.pts, out, records)]

    def compose(self, rgb: np.ndarray, frame: RestoredFrame) -> tuple[np.ndarray, list[dict]]:
        """The input frame `(H, W, 3)` and its restored faces -> output frame `(H*u, W*u, 3)`, face records."""
        u = self.upscale
        with self.timer("background"):
            out = self.background(rgb, u)  # a new array: the input slot stays untouched
        records = []
        with self.timer("paste"):
            for item in frame.faces:
                if item.face is None:  # not chosen (--faces): left as it is
                    corners = crop_corners(item.matrix, self.size).round(2).tolist()
                    records.append({"track": item.track, "corners": corners, "restored": False})
                    continue
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
                    if item.matrix is not None and item.face is not None:
                        draw_box(out, crop_corners(item.matrix, self.size) * u, item.track)
        return out, records

    def stats(self) -> dict:
        return {"faces": self.faces, "frames_with_face": self.frames_with_face}
