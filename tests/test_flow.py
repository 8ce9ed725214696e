"""Flow estimators: sign convention, offline fallback, RAFT loading from a local file."""

import logging

import numpy as np
import pytest
import torch

from keep.archs.flow_warp import flow_warp
from keep.errors import KeepError
from keep.flow import DISFlow, RAFTFlow, build_flow


def textured(height=96, width=128, seed=0):
    """A smooth random texture (blurred noise) in [-1, 1], (1, 3, H, W)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((height + 32, width + 32)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min()) * 2 - 1
    return torch.from_numpy(img).expand(3, -1, -1)[None].contiguous()


def test_dis_recovers_a_translation_with_keep_convention():
    big = textured()
    dx, dy = 3, 2
    # frame t-1 (source) and frame t (target); content moves by (+dx, +dy) from t-1 to t
    source = big[..., 16:-16, 16:-16]
    target = big[..., 16 - dy : -16 - dy, 16 - dx : -16 - dx]
    flow = DISFlow("medium")(target, source)
    assert flow.shape == (1, 2, 96, 128)
    inner = flow[..., 10:-10, 10:-10]
    # target(p) = source(p - d)  =>  flow(p) = -d
    assert abs(inner[:, 0].median().item() + dx) < 0.5 and abs(inner[:, 1].median().item() + dy) < 0.5
    warped = flow_warp(source, flow)
    assert (warped - target)[..., 10:-10, 10:-10].abs().mean() < 0.05


def test_auto_falls_back_to_dis_offline(caplog):
    with caplog.at_level(logging.WARNING):
        estimator = build_flow("auto")
    assert isinstance(estimator, DISFlow) and "DIS" in caplog.text


def test_unknown_flow_name():
    with pytest.raises(KeepError, match="raft_large"):
        build_flow("pwcnet")


def test_raft_loads_a_local_weight_file(tmp_path):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    estimator = build_flow("raft_small", weights=str(path))
    assert isinstance(estimator, RAFTFlow)
    estimator.num_flow_updates = 2
    frames = textured(60, 70)[..., 16:-16, 16:-16]  # small and not a multiple of 8
    flow = estimator(frames, frames)
    assert flow.shape == (1, 2, 60, 70) and torch.isfinite(flow).all()
