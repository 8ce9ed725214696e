"""OpenCV's DIS optical flow: classical, weight-free, works offline."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..image import to_uint8

_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


class DISFlow:
    """Dense inverse search flow on grayscale frames; see `keep.flow` for the call convention."""

    name = "dis"

    def __init__(self, preset: str = "medium"):
        if preset not in _PRESETS:
            raise ValueError(f"unknown DIS preset '{preset}'; choose one of {sorted(_PRESETS)}")
        self.preset = preset

    @staticmethod
    def _gray(frames: torch.Tensor) -> np.ndarray:
        # [-1, 1] RGB -> uint8 luma, (N, H, W)
        rgb = torch.from_numpy(to_uint8(frames)).float()  # (N, H, W, 3), the project's one conversion
        luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        return luma.round().to(torch.uint8).numpy()

    @torch.no_grad()
    def __call__(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        dis = cv2.DISOpticalFlow_create(_PRESETS[self.preset])
        flows = [dis.calc(t, s, None) for t, s in zip(self._gray(target), self._gray(source), strict=True)]
        flow = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2)  # (N, 2, H, W), x then y
        return flow.to(device=target.device, dtype=torch.float32)
