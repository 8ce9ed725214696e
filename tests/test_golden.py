"""Parity with the released KEEP v0.1.0 network (../shared/golden/README.md)."""

import importlib.util

import numpy as np
import pytest
import torch

import keep


@pytest.fixture(scope="module")
def golden(shared_dir):
    spec = importlib.util.spec_from_file_location("make_weights", shared_dir / "golden" / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    state = make_weights.official_state_dict(shared_dir / "golden" / "keep_v010_manifest.json")
    case = np.load(shared_dir / "golden" / "keep_v010_case_a.npz")
    return state, {k: case[k] for k in case.files}


def test_released_checkpoint_layout_loads_and_matches(golden):
    state, case = golden
    model = keep.load_network(state)
    assert not model.training
    with torch.inference_mode():
        result = model.run(torch.from_numpy(case["lq"]), torch.from_numpy(case["flows"]))
    idx = result.idx[0].numpy()  # (T, 256)
    expected_idx = case["idx"][..., 0]  # (T, 256, B) -> (T, 256)
    assert (idx == expected_idx).mean() == 1.0
    out = result.out.clamp(-1, 1).numpy()
    err = np.abs(out - np.clip(case["out"], -1, 1)).max()
    assert err <= 1e-3, f"max |clamp(out) - clamp(expected)| = {err}"


def test_upstream_layout_with_params_ema_loads_identically(golden):
    state, _ = golden
    renamed = {
        k.replace("fuse_convs_dict.", "cft.").replace("cross_fuse.", "cfa."): v
        for k, v in state.items()
        if not k.startswith("flownet.")
    }
    a = keep.load_network(state).state_dict()
    b = keep.load_network({"params_ema": renamed}).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
