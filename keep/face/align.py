"""FFHQ-template alignment and paste-back through the inverse affine.

The template is the FFHQ 512x512 five-point layout (eyes, nose tip, mouth corners; image-left
first) used by the face-restoration pipelines the released KEEP network was trained with. A network
with a smaller `img_size` (the tiny test preset: 64) gets the same template scaled to its size.
"""

from __future__ import annotations

import cv2
import numpy as np

FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)


def template(size: int = 512) -> np.ndarray:
    """The five template points `(5, 2)` for an aligned face of `size` x `size` pixels."""
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def estimate_affine(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """Similarity transform `(2, 3)` mapping frame landmarks `(5, 2)` onto the template at `size`."""
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float64), template(size), method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all equal): fall back to a least-squares fit
        matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float64), template(size), method=0)
    return matrix


def align_face(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp a frame `(H, W, 3)` uint8 into the aligned crop `(size, size, 3)` uint8."""
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def crop_corners(matrix: np.ndarray, size: int) -> np.ndarray:
    """Corners `(4, 2)` of the aligned crop in frame coordinates."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    return corners @ inverse[:, :2].T + inverse[:, 2]


def feathered_mask(size: int, *, border: float = 0.08, feather: float = 0.06) -> np.ndarray:
    """A soft mask `(size, size)` in [0, 1]: 1 inside, falling smoothly to exactly 0 over the crop's
    outer band, so the pasted face has no seam and nothing outside the crop changes.

    border: fraction of the crop left untouched at each edge; feather: width of the ramp (fraction).
    """
    inner = int(round(size * border))
    mask = np.zeros((size, size), np.float32)
    mask[inner : size - inner, inner : size - inner] = 1.0
    sigma = max(size * feather / 2.0, 0.5)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    edge = max(int(round(size * border / 2)), 1)  # the blur must not reach the crop edge
    mask[:edge], mask[-edge:], mask[:, :edge], mask[:, -edge:] = 0, 0, 0, 0
    return mask


def paste_face(
    background: np.ndarray,
    face: np.ndarray,
    matrix: np.ndarray,
    *,
    mask: np.ndarray,
    upscale: float = 1,
    step: int = 1,
    inplace: bool = False,
) -> np.ndarray:
    """Blend a restored aligned face `(F, F, C)` or `(F, F)` into `background` `(H*u, W*u, C)` or `(H*u, W*u)`.

    matrix: the frame -> face-crop affine at the input resolution (for a crop upsampled k times, k x the
    alignment matrix); `upscale` u scales it to the background. `step`: background pixels are every `step`-th
    output pixel, centred (2 for the chroma planes of 4:2:0 video, `keep.video.colour`). mask: `(F, F)` in
    [0, 1]. Pixels where the warped mask is 0 are returned bit-for-bit unchanged; `inplace` writes into
    `background`. uint8 (and uint16, for deeper video) values.

    Only the box of output pixels the mask can reach is touched (speed at 1080p): the face and the mask are
    warped into that box, which is blended in float32 in one threaded pass, `alpha * face + (1 - alpha) *
    background`, rounded; within 1 grey level of the same blend over the whole frame (tested).
    """
    out = background if inplace else background.copy()
    scaled = matrix.copy()
    scaled[:, :2] *= step / upscale  # crop = A (step x + (step - 1) / 2) / u + b for background pixel x
    scaled[:, 2] += matrix[:, :2].sum(axis=1) * (step - 1) / (2 * upscale)
    box = mask_box(mask, scaled, out.shape[:2])
    if box is None:
        return out
    left, top, right, bottom = box
    shift = cv2.invertAffineTransform(scaled)  # crop -> output pixels
    shift[:, 2] -= (left, top)  # crop -> box pixels
    size = (right - left, bottom - top)
    mask = np.asarray(mask, np.float32)
    alpha = cv2.warpAffine(mask, shift, size, flags=cv2.INTER_LINEAR, borderValue=0)  # (h, w) in [0, 1]
    warped = cv2.warpAffine(face, shift, size, flags=cv2.INTER_LINEAR, borderValue=0)  # (h, w[, C])
    region = out[top:bottom, left:right]
    if region.dtype == np.uint8:
        # OpenCV divides by the sum of the weights (+1e-5): exact where alpha is 0 or 1, within 1 elsewhere
        region[...] = cv2.blendLinear(warped, region, alpha, 1.0 - alpha)
    else:  # exact where alpha is 0: float32 holds every 16-bit value
        weight = alpha if region.ndim == 2 else alpha[..., None]
        blended = region.astype(np.float32)
        blended += weight * (warped.astype(np.float32) - blended)
        region[...] = np.rint(blended)
    return out


def mask_box(mask: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """`(left, top, right, bottom)` of the output pixels whose warped `mask` can be non-zero (None: none).

    matrix: output -> crop affine `(2, 3)`; shape: the output's `(height, width)`. A bilinear sample at crop
    point q is non-zero only when q lies within one pixel of the mask's non-zero rows and columns.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    (x0, x1), (y0, y1) = (cols[0] - 1, cols[-1] + 1), (rows[0] - 1, rows[-1] + 1)
    support = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    inverse = cv2.invertAffineTransform(matrix)
    corners = support @ inverse[:, :2].T + inverse[:, 2]
    left, top = np.floor(corners.min(0)).astype(int) - 1  # 1 px beyond: OpenCV rounds coordinates to 1/32 px
    right, bottom = np.ceil(corners.max(0)).astype(int) + 2
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, shape[1]), min(bottom, shape[0])
    if right <= left or bottom <= top:
        return None
    return int(left), int(top), int(right), int(bottom)


def track_color(track: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per track id (for `--draw_box`)."""
    hue = (track * 47) % 180  # OpenCV hue range; 47 spreads consecutive ids apart
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_box(
    image: np.ndarray, corners: np.ndarray, track: int, *, color: tuple | None = None, thickness: int | None = None
) -> None:
    """Outline a face's aligned crop (`corners` `(4, 2)` in `image` pixels) and write its track id, in place.

    color: `track_color(track)` unless given (a plane of a Y'CbCr frame takes its own value of that colour)."""
    color = track_color(track) if color is None else color
    thickness = thickness or max(1, round(min(image.shape[:2]) / 360))
    points = np.rint(corners).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(image, [points], isClosed=True, color=color, thickness=thickness, lineType=cv2.LINE_AA)
    x, y = np.rint(corners.min(0)).astype(int)
    scale = 0.4 * thickness
    cv2.putText(image, str(track), (max(x, 0), max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness)
