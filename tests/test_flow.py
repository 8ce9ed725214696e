"""Flow estimators: sign convention, offline fallback, RAFT loading from a local file."""

import logging

import numpy as np
import pytest
import torch

from keep.archs.flow_warp import flow_warp
from keep.errors import KeepError
from keep.flow import DISFlow, GMFlow, GMFlowNet, RAFTFlow, build_flow


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


@pytest.fixture
def no_downloads(tmp_path, monkeypatch):
    """Empty weight folders, downloads allowed by the environment, and any download attempt fails the test."""
    for var in ("KEEP_WEIGHTS_DIR", "KEEP_CACHE_DIR", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("KEEP_OFFLINE", "0")

    def refuse(*args, **kwargs):
        raise AssertionError("flow 'auto' tried a download")

    monkeypatch.setattr("keep.weights._download", refuse)
    return tmp_path


def one_notice(caplog) -> str:
    records = [r for r in caplog.records if r.name == "keep.flow"]
    assert len(records) == 1, [r.getMessage() for r in records]
    return records[0].getMessage()


def test_auto_takes_dis_without_trying_a_download(no_downloads, caplog):
    with caplog.at_level(logging.INFO):
        estimator = build_flow("auto")
    assert isinstance(estimator, DISFlow)
    notice = one_notice(caplog)
    assert notice.startswith("flow: dis") and "raft_large_C_T_SKHT_V2-ff5fadd5.pth is not on disk" in notice


def test_auto_takes_raft_weights_already_at_hand(no_downloads, caplog):
    from torchvision.models.optical_flow import raft_large

    folder = no_downloads / "KEEP_WEIGHTS_DIR"
    folder.mkdir()
    torch.save(raft_large(weights=None).state_dict(), folder / "raft_large_C_T_SKHT_V2-ff5fadd5.pth")
    with caplog.at_level(logging.INFO):
        estimator = build_flow("auto")
    assert isinstance(estimator, RAFTFlow) and one_notice(caplog).startswith("flow: raft_large")


def test_auto_takes_the_checkpoints_gmflow_first(no_downloads, caplog):
    state = GMFlowNet().state_dict()
    with caplog.at_level(logging.INFO):
        estimator = build_flow("auto", gmflow_state=state)
    assert isinstance(estimator, GMFlow) and "checkpoint's own GMFlow" in one_notice(caplog)


def test_gmflow_needs_weights():
    with pytest.raises(KeepError, match="needs GMFlow weights"):
        build_flow("gmflow")


def test_gmflow_loads_its_own_checkpoint_format(tmp_path):
    """GMFlow's public checkpoints (`{"model": state}`) use the same names as ours."""
    torch.manual_seed(0)
    state = GMFlowNet().state_dict()
    torch.save({"model": state}, tmp_path / "gmflow_sintel.pth")
    estimator = build_flow("gmflow", weights=str(tmp_path / "gmflow_sintel.pth"))
    assert torch.equal(estimator.net.upsampler[2].bias, state["upsampler.2.bias"])


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
