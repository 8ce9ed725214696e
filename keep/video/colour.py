"""What a video's pixel values mean, and the conversions between them and the RGB the networks see.

A decoded video frame is Y'CbCr (or R'G'B') code values; their meaning is four tags the stream carries
(FFmpeg's names, as `ffprobe` prints them): the matrix (`bt709`, `smpte170m`, `bt2020nc`, ...), the range
(`tv`: Y' 16-235 at 8 bits, `pc`: 0-255), the primaries and the transfer (`bt709`; `arib-std-b67` is HLG,
`smpte2084` is PQ), plus the bit depth. `Colour` holds them as read from the input, with what players assume
where a tag is missing (the matrix by frame size: BT.709 from 1280 pixels wide or 577 lines up, else BT.601).

The pipeline keeps each frame in `Colour.format` (`yuv420p`, 4:4:4 at odd sizes, 10-bit for deeper input;
RGB for images): faces are pasted into those planes and the rest goes to the encoder untouched. The networks
(detector, KEEP, Real-ESRGAN) see 8-bit R'G'B' as they were trained on (`view`): the frame decoded with its
own matrix and range; for HDR (HLG, PQ) and BT.2020 input a documented conversion to SDR BT.709
(docs/inference.md, "Colour"), whose exact inverse (`values_from_view`) brings a restored face back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import cv2
import numpy as np
from av.sidedata.sidedata import Type


def side_data(frame) -> list:
    """A decoded frame's side data (`av.sidedata.SideData` each): PyAV up to 18.1.0 iterates them, later PyAV
    iterates their types, as a mapping does."""
    container = frame.side_data
    entries = list(container)
    return [container[entry] if isinstance(entry, Type) else entry for entry in entries]


# FFmpeg's enumerations (AVColorSpace, AVColorRange, AVColorPrimaries, AVColorTransferCharacteristic) by value
MATRICES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
            8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 14: "ictcp"}  # fmt: skip
RANGES = {0: "unknown", 1: "tv", 2: "pc"}
PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
             9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}  # fmt: skip
TRANSFERS = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
             13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}  # fmt: skip
UNSPECIFIED = 2  # the matrix, primaries and transfer tags' "unknown"
BT709, BT601, BT2020 = 1, 6, 9
PQ, HLG = 16, 18

# (Kr, Kb) of each matrix: Y' = Kr R' + (1 - Kr - Kb) G' + Kb B'
LUMA_WEIGHTS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
                9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}  # fmt: skip
SWSCALE_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}

# Chromaticities (x, y) of the red, green and blue primaries and the D65 white both standards use
CHROMATICITIES = {
    BT709: ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06)),
    BT2020: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
}
D65 = (0.3127, 0.3290)

REFERENCE_WHITE = 203.0  # cd/m2 of HDR reference (diffuse) white, ITU-R BT.2408: SDR's 100%
HLG_PEAK = 1000.0  # cd/m2: the nominal HLG display the OOTF (ITU-R BT.2100, gamma 1.2) renders for
KNEE = 0.5  # SDR linear light below this is left as it is; above, highlights are compressed towards 1
SDR_GAMMA = 2.4  # ITU-R BT.1886: the display gamma of the SDR R'G'B' the networks were trained on


def assumed_matrix(width: int, height: int) -> int:
    """The matrix players assume for an untagged video of this size (mpv, VLC, browsers): BT.709 for HD."""
    return BT709 if width >= 1280 or height > 576 else BT601


@dataclass(frozen=True)
class HdrMetadata:
    """HDR side data: the mastering display (SMPTE ST 2086) and the content light levels (CTA-861.3), which the
    output carries; `dynamic` names per-scene metadata it cannot (HDR10+, Dolby Vision)."""

    mastering: tuple[float, ...] | None = None  # Rx Ry Gx Gy Bx By (primaries), Wx Wy (white), min, max cd/m2
    light: tuple[int, int] | None = None  # MaxCLL, MaxFALL in cd/m2
    dynamic: tuple[str, ...] = ()

    @classmethod
    def from_frame(cls, frame) -> HdrMetadata | None:
        """What a decoded frame's side data says (FFmpeg attaches the stream's or the SEI's to frames)."""
        mastering = light = None
        dynamic = []
        for data in side_data(frame):
            if data.type == Type.MASTERING_DISPLAY_METADATA:
                # AVMasteringDisplayMetadata: 10 rationals (primaries R, G, B; white; min, max) + 2 presence flags
                v = np.frombuffer(bytes(data), np.int32)
                ratios = v[0:20:2] / np.maximum(v[1:20:2], 1)
                if v[20] and v[21]:
                    mastering = tuple(float(round(r, 6)) for r in ratios)
            elif data.type == Type.CONTENT_LIGHT_LEVEL:
                light = tuple(int(x) for x in np.frombuffer(bytes(data), np.uint32)[:2])
            elif data.type in (Type.DYNAMIC_HDR_PLUS, Type.DOVI_METADATA, Type.DOVI_RPU_BUFFER):
                dynamic.append({"DYNAMIC_HDR_PLUS": "HDR10+"}.get(data.type.name, "Dolby Vision"))
        if not (mastering or light or dynamic):
            return None
        return cls(mastering, light, tuple(sorted(set(dynamic))))

    def x265_params(self) -> list[str]:
        """x265's `master-display` (chromaticities in 1/50000, luminance in 1/10000 cd/m2) and `max-cll`."""
        params = []
        if self.mastering:
            red, green, blue, white = (self.mastering[i : i + 2] for i in range(0, 8, 2))
            points = {"G": green, "B": blue, "R": red, "WP": white}
            xy = "".join(f"{name}({round(x * 50000)},{round(y * 50000)})" for name, (x, y) in points.items())
            low, high = self.mastering[8], self.mastering[9]
            params.append(f"master-display={xy}L({round(high * 10000)},{round(low * 10000)})")
        if self.light:
            params.append(f"max-cll={self.light[0]},{self.light[1]}")
        return params


@dataclass(frozen=True)
class Colour:
    """How a frame's values are held in the pipeline and what they mean. Tags are FFmpeg's values as read
    (written back to the output as they are); `matrix_in_use` is what the conversions use (the tag, or what
    players assume for the input's size when it is missing)."""

    format: str  # the pipeline's pixel format: yuv420p | yuv444p | yuv420p10le | yuv444p10le | rgb24
    matrix: int = UNSPECIFIED
    range: int = 0
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix_in_use: int = BT601
    field_order: str | None = None  # "tt" (top field first) or "bb" for interlaced frames; None: progressive
    hdr: HdrMetadata | None = None
    source: str = ""  # the decoded pixel format (e.g. yuv422p10le), for the summary

    @property
    def is_rgb(self) -> bool:
        return self.format == "rgb24"

    @property
    def bits(self) -> int:
        return 10 if self.format.endswith("10le") else 8

    @property
    def dtype(self) -> type:
        return np.uint16 if self.bits > 8 else np.uint8

    @property
    def chroma_step(self) -> int:
        """Luma pixels per chroma sample along each axis: 2 in 4:2:0, 1 in 4:4:4."""
        return 2 if self.format.startswith("yuv420") else 1

    @property
    def full_range(self) -> bool:
        return self.is_rgb or self.range == 2

    @property
    def transfer_kind(self) -> str:
        """ "pq", "hlg" or "sdr"."""
        return {PQ: "pq", HLG: "hlg"}.get(self.transfer, "sdr")

    @property
    def linear_view(self) -> bool:
        """Whether the networks' view goes through linear light (HDR or BT.2020 primaries) or is the decoded R'G'B'."""
        return self.transfer_kind != "sdr" or self.primaries == BT2020

    def plane_shapes(self, height: int, width: int) -> list[tuple[int, ...]]:
        """Shapes of the planes of a `height` x `width` frame: one `(H, W, 3)` for RGB, else Y, Cb, Cr."""
        if self.is_rgb:
            return [(height, width, 3)]
        step = self.chroma_step
        chroma = (-(-height // step), -(-width // step))
        return [(height, width), chroma, chroma]

    def for_output(self, width: int, height: int) -> Colour:
        """The colour of the encoded video at this size: RGB frames become Y'CbCr with the matrix players
        assume for the size (BT.601 untagged below HD, as before; BT.709 tagged from HD); 4:2:0, 4:4:4 at odd
        sizes. A Y'CbCr input keeps its tags, and an untagged matrix is tagged where players would assume
        another one at the output's size (an SD input at --upscale 4)."""
        odd = width % 2 or height % 2
        if self.is_rgb:
            matrix = assumed_matrix(width, height)
            tag = BT709 if matrix == BT709 else UNSPECIFIED
            return Colour("yuv444p" if odd else "yuv420p", tag, 1, tag, tag, matrix, source=self.format)
        colour = self
        if self.matrix == UNSPECIFIED and assumed_matrix(width, height) != self.matrix_in_use:
            colour = replace(colour, matrix=self.matrix_in_use)
        if self.chroma_step == 1 and not odd:  # an odd-sized input upscaled to an even size: 4:2:0 again
            colour = replace(colour, format=self.format.replace("444", "420"))
        return colour

    def describe(self) -> dict:
        """The summary's words for it."""
        return {
            "pixel_format": self.format,
            "decoded_as": self.source or self.format,
            "matrix": MATRICES.get(self.matrix, str(self.matrix)),
            "matrix_in_use": MATRICES.get(self.matrix_in_use, str(self.matrix_in_use)),
            "range": RANGES.get(self.range, str(self.range)),
            "primaries": PRIMARIES.get(self.primaries, str(self.primaries)),
            "transfer": TRANSFERS.get(self.transfer, str(self.transfer)),
            "bits": self.bits,
            "field_order": self.field_order or "progressive",
            "mastering_display": list(self.hdr.mastering) if self.hdr and self.hdr.mastering else None,
            "content_light": list(self.hdr.light) if self.hdr and self.hdr.light else None,
            "dynamic_hdr": list(self.hdr.dynamic) if self.hdr else [],
        }


SRGB = Colour("rgb24", matrix=0, range=2, primaries=BT709, transfer=13)  # images and folders of frames


# ----------------------------------------------------------------------------------------- R'G'B' <-> Y'CbCr
def _levels(colour: Colour) -> tuple[float, float, float]:
    """(Y' offset, Y' scale, chroma scale) of the code values: Y = offset + scale Y', C = half + cscale C."""
    top = (1 << colour.bits) - 1
    if colour.full_range:
        return 0.0, float(top), float(top)
    unit = 1 << (colour.bits - 8)
    return 16.0 * unit, 219.0 * unit, 224.0 * unit


def rgb_to_ycbcr_matrix(colour: Colour) -> np.ndarray:
    """`(3, 4)`: code values (Y, Cb, Cr) = M @ (R', G', B', 1) for R'G'B' in [0, 1]."""
    kr, kb = LUMA_WEIGHTS[colour.matrix_in_use]
    kg = 1 - kr - kb
    offset, luma, chroma = _levels(colour)
    half = float(1 << (colour.bits - 1))
    rows = np.array(
        [[kr, kg, kb], [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5], [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)]]
    )
    rows *= np.array([[luma], [chroma], [chroma]])
    return np.concatenate([rows, [[offset], [half], [half]]], axis=1)


def signal_from_planes(planes: list[np.ndarray], colour: Colour) -> np.ndarray:
    """Planes (Y, Cb, Cr) -> R'G'B' `(H, W, 3)` float32 in [0, 1] (chroma upsampled bilinearly)."""
    if colour.is_rgb:
        return planes[0].astype(np.float32) / float((1 << colour.bits) - 1)
    height, width = planes[0].shape
    chroma = [cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in planes[1:]]
    ycc = cv2.merge([plane.astype(np.float32) for plane in (planes[0], *chroma)])
    forward = rgb_to_ycbcr_matrix(colour)
    inverse = np.linalg.inv(forward[:, :3])
    affine = np.concatenate([inverse, -(inverse @ forward[:, 3:])], axis=1)  # code values -> R'G'B'
    rgb = cv2.transform(ycc, affine.astype(np.float32))
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def values_from_signal(rgb: np.ndarray, colour: Colour, scale: float = 1.0) -> np.ndarray:
    """R'G'B' `(H, W, 3)` in [0, `scale`] -> code values `(H, W, 3)` at full resolution (Y, Cb, Cr, or R, G, B),
    float32; uint8 input with `colour.bits` 8 gives uint8 (rounded by OpenCV)."""
    if colour.is_rgb:
        forward = np.concatenate([np.eye(3) * ((1 << colour.bits) - 1), np.zeros((3, 1))], axis=1)
    else:
        forward = rgb_to_ycbcr_matrix(colour)
    forward = forward / [scale, scale, scale, 1]
    if rgb.dtype != np.uint8 or colour.bits > 8:
        rgb = rgb.astype(np.float32)
    return cv2.transform(rgb, forward.astype(np.float32))


def planes_from_values(values: np.ndarray, colour: Colour) -> list[np.ndarray]:
    """Full-resolution code values `(H, W, 3)` -> the planes of `colour.format` (each chroma sample the mean of
    its block), rounded and clipped to the format's integers."""
    top = (1 << colour.bits) - 1

    def quantise(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 0, top).astype(colour.dtype)

    if colour.is_rgb:
        return [quantise(values)]
    step = colour.chroma_step
    chroma = values[..., 1:]
    if step > 1:
        height, width = values.shape[:2]
        chroma = cv2.resize(chroma, (-(-width // step), -(-height // step)), interpolation=cv2.INTER_AREA)
    return [quantise(values[..., 0]), quantise(chroma[..., 0]), quantise(chroma[..., 1])]


# ----------------------------------------------------------------------------------------- transfer functions
def pq_to_nits(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 (PQ) EOTF: signal in [0, 1] -> display light in cd/m2."""
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(signal, 0, 1), 1 / m2)
    return 10000 * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)


def nits_to_pq(nits: np.ndarray) -> np.ndarray:
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = np.power(np.clip(nits / 10000, 0, 1), m1)
    return np.power((c1 + c2 * y) / (1 + c3 * y), m2)


HLG_A = 0.17883277
HLG_B = 1 - 4 * HLG_A
HLG_C = 0.5 - HLG_A * np.log(4 * HLG_A)


def hlg_to_scene(signal: np.ndarray) -> np.ndarray:
    """ITU-R BT.2100 HLG inverse OETF: signal in [0, 1] -> scene light in [0, 1]."""
    signal = np.clip(signal, 0, 1)
    high = (np.exp((np.maximum(signal, 0.5) - HLG_C) / HLG_A) + HLG_B) / 12
    return np.where(signal <= 0.5, signal * signal / 3, high)


def scene_to_hlg(scene: np.ndarray) -> np.ndarray:
    scene = np.clip(scene, 0, 1)
    high = HLG_A * np.log(np.maximum(12 * scene - HLG_B, 1e-6)) + HLG_C
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene), high)


def to_light(signal: np.ndarray, kind: str) -> np.ndarray:
    """Signal in [0, 1] -> relative display light, 1 = SDR white = HDR reference white (203 cd/m2).

    PQ: its EOTF. HLG: on the nominal 1000 cd/m2 display, BT.2100's OOTF (gamma 1.2) applied per channel (the
    standard applies it to the luminance; per channel keeps this a function of one value, a lookup table, and
    exactly invertible). SDR: BT.1886's gamma 2.4."""
    if kind == "pq":
        return pq_to_nits(signal) / REFERENCE_WHITE
    if kind == "hlg":
        return HLG_PEAK * np.power(hlg_to_scene(signal), 1.2) / REFERENCE_WHITE
    return np.power(np.clip(signal, 0, 1), SDR_GAMMA)


def from_light(light: np.ndarray, kind: str) -> np.ndarray:
    """The inverse of `to_light`."""
    if kind == "pq":
        return nits_to_pq(light * REFERENCE_WHITE)
    if kind == "hlg":
        return scene_to_hlg(np.power(np.maximum(light, 0) * REFERENCE_WHITE / HLG_PEAK, 1 / 1.2))
    return np.power(np.clip(light, 0, 1), 1 / SDR_GAMMA)


def compress(light: np.ndarray) -> np.ndarray:
    """HDR relative light (1 = reference white) -> SDR light in [0, 1): unchanged below `KNEE`, above it
    k + (1 - k) t / (t + 1 - k) with t = x - k (same slope at the knee, 1 only at infinity): invertible."""
    over = np.maximum(light - KNEE, 0)
    return np.where(light <= KNEE, light, KNEE + (1 - KNEE) * over / (over + 1 - KNEE))


def expand(sdr: np.ndarray) -> np.ndarray:
    """The inverse of `compress`."""
    t = np.clip((sdr - KNEE) / (1 - KNEE), 0, 0.999)
    return np.where(sdr <= KNEE, sdr, KNEE + t * (1 - KNEE) / (1 - t))


@cache
def gamut_matrix(source: int, target: int) -> np.ndarray:
    """`(3, 3)` linear RGB of `source` primaries -> linear RGB of `target` primaries (same D65 white)."""

    def to_xyz(primaries: int) -> np.ndarray:
        xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in CHROMATICITIES[primaries]]).T
        white = np.array([D65[0] / D65[1], 1.0, (1 - D65[0] - D65[1]) / D65[1]])
        return xyz * np.linalg.solve(xyz, white)

    return (np.linalg.inv(to_xyz(target)) @ to_xyz(source)).astype(np.float32)


# ------------------------------------------------------------------------------------- the networks' view
LIGHT_STEPS = 65536  # steps of the tables indexed by light, uniform in sqrt(light) (fine steps in the dark)


def sdr_from_light(light: np.ndarray, kind: str) -> np.ndarray:
    """Relative light (BT.709 primaries) -> the networks' 8-bit R'G'B': HDR highlights compressed (`compress`),
    SDR clipped to white; BT.1886's inverse gamma."""
    light = compress(np.maximum(light, 0)) if kind != "sdr" else np.clip(light, 0, 1)
    return np.clip(np.rint(255 * np.power(light, 1 / SDR_GAMMA)), 0, 255).astype(np.uint8)


@cache
def _view_tables(kind: str) -> tuple[np.ndarray, np.ndarray, float]:
    """`view_from_signal`'s tables: 16-bit signal -> light, and `sdr_from_light` at the centres of `LIGHT_STEPS`
    steps uniform in sqrt(light / top); top: the brightest light."""
    light = to_light(np.arange(65536) / 65535, kind).astype(np.float32)
    top = float(light[-1])
    centres = np.square((np.arange(LIGHT_STEPS) + 0.5) / (LIGHT_STEPS - 1)) * top
    return light, sdr_from_light(centres, kind), top


def view_from_signal(signal: np.ndarray, colour: Colour) -> np.ndarray:
    """The input's R'G'B' `(H, W, 3)` uint16 (0-65535: FFmpeg's `rgb48`) -> the networks' 8-bit SDR BT.709 R'G'B':
    to light (`to_light`), BT.2020 to BT.709 primaries in light (colours outside BT.709 clipped), to SDR
    (`sdr_from_light`). A table each side of the 3x3 product, and OpenCV's threaded element-wise operations
    between (numpy's take several times as long at 1080p)."""
    to_light_table, to_sdr_table, top = _view_tables(colour.transfer_kind)
    light = to_light_table[signal]
    if colour.primaries == BT2020:
        light = cv2.transform(light, gamut_matrix(BT2020, BT709))
    root = cv2.sqrt(cv2.threshold(light, 0, 0, cv2.THRESH_TOZERO)[1])
    root = cv2.min(root, (float(np.sqrt(top)),) * 3 + (0.0,))  # a tuple: a bare number bounds channel 0 only
    index = np.empty(root.shape, np.uint16)
    np.multiply(root, (LIGHT_STEPS - 1) / np.sqrt(top), out=index, casting="unsafe")  # truncated: the step
    return to_sdr_table[index]


@cache
def _inverse_tables(kind: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(8-bit -> light table, sqrt(light / top) -> signal table, top) of `signal_from_view`."""
    light = np.power(np.arange(256) / 255, SDR_GAMMA)
    top = _view_tables(kind)[2]
    if kind != "sdr":
        light = np.minimum(expand(light), top)  # no brighter than the input can be
    signal = from_light(np.square(np.linspace(0, 1, LIGHT_STEPS)) * top, kind)
    return light.astype(np.float32), np.clip(signal, 0, 1).astype(np.float32), top


def signal_from_view(rgb: np.ndarray, colour: Colour) -> np.ndarray:
    """The inverse of `view_from_signal`: 8-bit SDR R'G'B' -> the input's R'G'B' in [0, 1], float32 (`expand`,
    BT.709 to BT.2020 primaries, `from_light`; a table each side of the 3x3 product)."""
    to_light_table, to_signal_table, top = _inverse_tables(colour.transfer_kind)
    light = to_light_table[rgb]
    if colour.primaries == BT2020:  # all its coefficients are positive and its rows sum to 1: stays in [0, top]
        light = cv2.transform(light, gamut_matrix(BT709, BT2020))
    index = np.rint(np.sqrt(np.clip(light, 0, top) * (1 / top)) * (LIGHT_STEPS - 1)).astype(np.int32)
    return to_signal_table[index]


def view(planes: list[np.ndarray], colour: Colour) -> np.ndarray:
    """Planes in `colour` -> the networks' view `(H, W, 3)` uint8 RGB (the reader converts with FFmpeg's
    scaler instead: `keep.video.pictures.network_view`)."""
    signal = signal_from_planes(planes, colour)
    if not colour.linear_view:
        return np.clip(np.rint(signal * 255), 0, 255).astype(np.uint8)
    return view_from_signal(np.rint(signal * 65535).astype(np.uint16), colour)


def values_from_view(rgb: np.ndarray, colour: Colour) -> np.ndarray:
    """The networks' view `(H, W, 3)` uint8 (a restored face) -> code values of `colour` at full resolution
    `(H, W, 3)`: float32, or uint8 for 8-bit SDR colour (rounded)."""
    if colour.is_rgb and colour.bits == 8:
        return rgb
    if colour.linear_view:
        return values_from_signal(signal_from_view(rgb, colour), colour)
    return values_from_signal(rgb, colour, scale=255.0)


def codes_from_view(rgb: np.ndarray, colour: Colour) -> np.ndarray:
    """`values_from_view` rounded to the planes' integers (what a restored face is pasted as)."""
    values = values_from_view(rgb, colour)
    if values.dtype == colour.dtype:
        return values
    return np.clip(np.rint(values), 0, (1 << colour.bits) - 1).astype(colour.dtype)


def planes_from_view(rgb: np.ndarray, colour: Colour) -> list[np.ndarray]:
    """A whole frame in the networks' view -> planes of `colour` (Real-ESRGAN's background, `--has_aligned`)."""
    if colour.is_rgb and colour.bits == 8:
        return [np.ascontiguousarray(rgb)]
    return planes_from_values(values_from_view(rgb, colour), colour)
