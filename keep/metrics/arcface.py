"""ArcFace IR-SE50 (Deng et al. 2019; the ResNet-IR with squeeze-excitation of InsightFace), laid out
so that facexlib's `recognition_arcface_ir_se50.pth` loads strictly (the paper's IDS embedding).

Input: an FFHQ-aligned face; the ArcFace crop is the pSp/e4e convention for FFHQ-aligned faces, rows
35:223 and columns 32:220 of the 256 face (x2 at 512), resized to 112 x 112, RGB in [-1, 1].
Output: unit-norm 512-D embedding.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import KeepError
from ..image import to_tensor
from ..weights import read_tensors, resolve_weights

STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))  # (channels, units) of IR-SE50, first unit strides 2
CROP_256 = (35, 223, 32, 220)  # top, bottom, left, right on a 256 FFHQ-aligned face


class SqueezeExcite(nn.Module):
    def __init__(self, *, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRSEUnit(nn.Module):
    """BN -> conv3x3 -> PReLU -> conv3x3 (stride) -> BN -> SE, plus a (projected) shortcut."""

    def __init__(self, *, in_channels: int, channels: int, stride: int):
        super().__init__()
        if in_channels == channels:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # subsampling identity
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
            SqueezeExcite(channels=channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class ArcFaceIRSE50(nn.Module):
    """`(N, 3, 112, 112)` RGB in [-1, 1] -> `(N, 512)` unit-norm embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, in_channels = [], 64
        for channels, count in STAGES:
            for i in range(count):
                units.append(IRSEUnit(in_channels=in_channels, channels=channels, stride=2 if i == 0 else 1))
                in_channels = channels
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


class ArcFaceIdentity:
    """Aligned face `(H, W, 3)` uint8 RGB -> unit-norm 512-D ArcFace embedding (numpy)."""

    name = "ArcFace IR-SE50 (facexlib recognition_arcface_ir_se50.pth, 512-D)"

    def __init__(self, *, weights: str = "arcface", device: str | torch.device = "cpu"):
        path = resolve_weights(weights)
        state = read_tensors(path, "ArcFace weights")
        self.net = ArcFaceIRSE50()
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise KeepError(f"ArcFace weights {path} do not fit IR-SE50: {str(exc)[:300]}") from None
        self.device = device
        self.net.eval().requires_grad_(False).to(device)

    @staticmethod
    def crop(img: np.ndarray) -> np.ndarray:
        """FFHQ-aligned face of any size -> the 112 x 112 ArcFace input (uint8 RGB)."""
        height, width = img.shape[:2]
        top, bottom, left, right = CROP_256
        sy, sx = height / 256.0, width / 256.0
        face = img[round(top * sy) : round(bottom * sy), round(left * sx) : round(right * sx)]
        return cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA)

    @torch.no_grad()
    def __call__(self, img: np.ndarray) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise KeepError(f"identity embedding needs an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
        x = to_tensor(self.crop(img), self.device)[None]
        return self.net(x)[0].double().cpu().numpy()
