"""Stage 4, paste: the output frame = the background (upsampled to `--upscale`) with every restored face
blended back through its inverse alignment (face-parsing or feathered mask), optionally outlined.

The frame is composed in the input's own planes and depth (`keep.video.colour`: Y'CbCr 4:2:0 8 or 10 bits,
RGB for images): a restored face, 8-bit RGB as the network sees faces, is converted into the input's colour
(for HDR through the inverse of the SDR view) and blended into each plane at that plane's resolution. At
`--upscale 1` with the default background, pixels outside every restored face are the decoded input's, bit
for bit; so are faces left alone (`--faces`), which are only logged (`"restored": false`).
`--face_upsample` upsamples each restored crop by `--upscale` with the face upsampler (Real-ESRGAN)
before pasting, so a face larger than the network's crop in the output is not merely interpolated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ..background import Upsampler
from ..face.align import crop_corners, draw_box, paste_face, track_color
from ..face.parsing import Masker
from ..video.colour import SRGB, Colour, codes_from_view, planes_from_view
from .items import Composed, Job, RestoredFrame
from .stage import Slots, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComposeSpec:
    """What the paste stage is built from: the network's crop size, the mask and the upsamplers; `--upscale` and
    `--draw_box` come with each input (`Job.settings`)."""

    size: int
    mask: str
    device: str
    bg_upsampler: str
    bg_tile: int
    face_upsample: bool

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
        if self.bg_upsampler != "bicubic":
            log.info("background upsampler: %s", background.name)
        return ComposeStage(size=self.size, masker=masker, background=background, face_upsampler=face_upsampler)


class ComposeStage(Stage):
    """`RestoredFrame`s in (their input frame in the pool), `Composed` output frames out; the slot is freed.
    `upscale` and `draw_box` are the input's (`use`, called by `start`)."""

    def __init__(self, *, size: int, masker: Masker, background: Upsampler, face_upsampler: Upsampler | None):
        super().__init__()
        self.size = size
        self.masker = masker
        self.background = background
        self.face_upsampler = face_upsampler
        self._info = {
            "mask": masker.name,
            "background": background.name,
            "face_upsampler": None if face_upsampler is None else face_upsampler.name,
        }

    def info(self) -> dict:
        return self._info

    def start(self, job: Job, slots: Slots) -> None:
        self.pool, self.release = job.pool, slots.release
        self.use(job.settings)
        self.faces = self.frames_with_face = 0

    def use(self, settings) -> None:
        """Compose at a run's `upscale` with its `draw_box` (`RunOptions`)."""
        self.upscale, self.draw_box = settings.upscale, settings.draw_box

    def push(self, frame: RestoredFrame) -> list[Composed]:
        planes, colour = self.pool.planes(frame.slot), self.pool.colour
        out, records = self.compose(self.pool[frame.slot], frame, planes=planes, colour=colour)
        self.release(frame.slot)
        restored = sum(item.face is not None for item in frame.faces)
        self.faces += restored
        self.frames_with_face += bool(restored)
        return [Composed(frame.index, frame.pts, out, records)]

    def compose(
        self, rgb: np.ndarray, frame: RestoredFrame, *, planes: list[np.ndarray] | None = None, colour: Colour = SRGB
    ) -> tuple[list[np.ndarray], list[dict]]:
        """The input frame (the networks' view `rgb` `(H, W, 3)`; its `planes` in `colour`, default the view
        itself) and its restored faces -> the output frame's planes `(H*u, W*u[, 3])` in `colour`, face records."""
        u = self.upscale
        planes = [rgb] if planes is None else planes
        with self.timer("background"):
            out = self._background(rgb, planes, colour)  # new arrays: the input slot stays untouched
        records = []
        with self.timer("paste"):
            for item in frame.faces:
                if item.face is None:  # not chosen (--faces): left as it is
                    corners = crop_corners(item.matrix, self.size).round(2).tolist()
                    records.append({"track": item.track, "corners": corners, "restored": False})
                    continue
                if item.matrix is None:  # --has_aligned: the restored crop is the whole frame
                    size = out[0].shape[1], out[0].shape[0]
                    out = planes_from_view(cv2.resize(item.face, size, interpolation=cv2.INTER_CUBIC), colour)
                    continue
                mask = self.masker(item.face)
                face, matrix = item.face, item.matrix
                if self.face_upsampler is not None and u > 1:
                    face = self.face_upsampler(face, u)  # (S*u, S*u, 3)
                    mask = cv2.resize(mask, face.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)
                    matrix = matrix * (face.shape[0] / self.size)  # frame -> upsampled crop
                paste_planes(out, codes_from_view(face, colour), matrix, mask, colour, u)
                records.append({"track": item.track, "corners": crop_corners(item.matrix, self.size).round(2).tolist()})
            if self.draw_box:
                for item in frame.faces:
                    if item.matrix is not None and item.face is not None:
                        draw_planes(out, crop_corners(item.matrix, self.size) * u, item.track, colour)
        return out, records

    def _background(self, rgb: np.ndarray, planes: list[np.ndarray], colour: Colour) -> list[np.ndarray]:
        """The input upsampled by `--upscale`: each plane on its own with bicubic (exact copies at 1), or the
        networks' view through Real-ESRGAN, converted back into `colour`."""
        if self.background.name == "bicubic":
            return [self.background(plane, self.upscale) for plane in planes]
        return planes_from_view(self.background(rgb, self.upscale), colour)

    def stats(self) -> dict:
        return {"faces": self.faces, "frames_with_face": self.frames_with_face}


def paste_planes(
    planes: list[np.ndarray], values: np.ndarray, matrix: np.ndarray, mask: np.ndarray, colour: Colour, upscale: int
) -> None:
    """Blend a face's values `(S, S, 3)` into each plane at that plane's resolution, in place (`paste_face`)."""
    if colour.is_rgb:
        paste_face(planes[0], values, matrix, mask=mask, upscale=upscale, inplace=True)
        return
    for k, plane in enumerate(planes):
        step = colour.chroma_step if k else 1
        paste_face(plane, values[..., k], matrix, mask=mask, upscale=upscale, step=step, inplace=True)


def draw_planes(planes: list[np.ndarray], corners: np.ndarray, track: int, colour: Colour) -> None:
    """`draw_box` on every plane, with the track's colour in `colour` (`corners` in output pixels)."""
    if colour.is_rgb:
        draw_box(planes[0], corners, track)
        return
    rgb = np.array([[track_color(track)]], np.uint8)
    values = codes_from_view(rgb, colour)[0, 0]
    thickness = max(1, round(min(planes[0].shape[:2]) / 360))
    for k, plane in enumerate(planes):
        step = colour.chroma_step if k else 1
        where = (corners - (step - 1) / 2) / step
        draw_box(plane, where, track, color=int(values[k]), thickness=max(1, thickness // step))
