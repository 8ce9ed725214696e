"""Parity with the released KEEP v0.1.0 network (../shared/golden/README.md)."""

import numpy as np
import pytest
import torch

import keep


def load_case(shared_dir, name: str) -> dict[str, np.ndarray]:
    case = np.load(shared_dir / "golden" / name)
    return {k: case[k] for k in case.files}


@pytest.fixture(scope="module")
def golden(golden_state, shared_dir):
    return golden_state, load_case(shared_dir, "keep_v010_case_a.npz")


def check_codes_and_output(result, case) -> float:
    idx = result.idx[0].numpy()  # (T, 256)
    expected_idx = case["idx"][..., 0]  # (T, 256, B) -> (T, 256)
    assert (idx == expected_idx).mean() == 1.0, f"{(idx == expected_idx).mean():.2%} of codes identical"
    out = result.out.clamp(-1, 1).numpy()
    err = np.abs(out - np.clip(case["out"], -1, 1)).max()
    assert err <= 1e-3, f"max |clamp(out) - clamp(expected)| = {err}"
    return err


def test_released_checkpoint_layout_loads_and_matches(golden):
    state, case = golden
    model = keep.load_network(state)
    assert not model.training
    with torch.inference_mode():
        result = model.run(torch.from_numpy(case["lq"]), torch.from_numpy(case["flows"]))
    check_codes_and_output(result, case)


def test_released_gmflow_computes_the_released_flows_and_output(golden_state, shared_dir, capsys):
    """The checkpoint's own GMFlow, loaded with no second file; `model(lq)` with no flows given
    (../shared/golden/README.md, case with the released GMFlow inside)."""
    case = load_case(shared_dir, "keep_v010_case_gmflow.npz")
    model = keep.load_model(golden_state, flow="gmflow")
    estimated = []
    gmflow = model.flow
    model.flow = lambda target, source: estimated.append(gmflow(target, source)) or estimated[-1]
    with torch.inference_mode():
        result = model.run(torch.from_numpy(case["lq"]))  # flows estimated inside, frame t -> t-1
    flows = torch.cat(estimated).numpy()  # (T-1, 2, H, W)
    flow_err = np.abs(flows - case["flows"][0]).max()
    with capsys.disabled():
        print(f"\nGMFlow golden case: max |flow - released flow| = {flow_err:.2e} px (flows ~100 px)")
    assert flow_err <= 5e-3, f"max |flow - released flow| = {flow_err} px"
    err = check_codes_and_output(result, case)
    with capsys.disabled():
        print(f"GMFlow golden case: codes 100% identical, max |clamp(out) - clamp(expected)| = {err:.1e}")
