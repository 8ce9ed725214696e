"""GMFlow (keep/flow/gmflow.py): its parts' invariants, the released checkpoint's names, batching.
Parity with the released GMFlow on the golden case is in test_golden.py."""

import json

import pytest
import torch

from keep.checkpoint import convert_upstream_state_dict, split_flow_state
from keep.flow.gmflow import GMFlow, GMFlowNet, global_matching, window_attention

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: see conftest.one_thread


def test_parameters_are_those_of_the_released_gmflow():
    state = GMFlowNet().state_dict()
    assert len(state) == 123 and sum(v.numel() for v in state.values()) == 4_680_288  # docs/network.md "Flow"


def test_released_keys_map_one_to_one(shared_dir):
    manifest = json.loads((shared_dir / "golden" / "keep_v010_manifest.json").read_text())["tensors"]
    released = {e["key"]: torch.empty(e["shape"]) for e in manifest}
    _, flow_state = split_flow_state(convert_upstream_state_dict(released))
    ours = GMFlowNet().state_dict()
    assert flow_state.keys() == ours.keys()
    assert all(flow_state[k].shape == ours[k].shape for k in ours)


def test_global_matching_finds_a_shift():
    """Frame 1 is frame 0 moved by (+3, -2) feature pixels: the matched flow is that move."""
    torch.manual_seed(0)
    feature0 = 8 * torch.randn(1, 32, 16, 16)  # peaked matches
    feature1 = torch.roll(feature0, shifts=(-2, 3), dims=(2, 3))  # feature1(p) = feature0(p - d), d = (3, -2)
    flow = global_matching(feature0, feature1)[..., 2:-2, 3:-3]  # away from the wrapped border
    assert torch.allclose(flow[:, 0], torch.full_like(flow[:, 0], 3.0), atol=1e-3)
    assert torch.allclose(flow[:, 1], torch.full_like(flow[:, 1], -2.0), atol=1e-3)


def affected(i: int, j: int, *, shift: bool, size: int = 8, splits: int = 2) -> torch.Tensor:
    """Which output tokens change when the value at grid position (i, j) changes: `(size, size)` bool."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, size * size, 4) for _ in range(3))
    out = window_attention(q, k, v, size=(size, size), splits=splits, shift=shift)
    v2 = v.clone()
    v2[0, i * size + j] += 10
    out2 = window_attention(q, k, v2, size=(size, size), splits=splits, shift=shift)
    return ((out2 - out).abs().amax(-1) > 1e-6).view(size, size)


def region(rows: slice, cols: slice, size: int = 8) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def test_window_attention_stays_in_its_window():
    # 8 x 8 grid, 2 x 2 windows of 4 x 4; shifted windows move by 2
    assert torch.equal(affected(5, 6, shift=False), region(slice(4, 8), slice(4, 8)))
    assert torch.equal(affected(2, 2, shift=True), region(slice(2, 6), slice(2, 6)))
    # the shift wraps the top-left corner to the bottom-right window, where the mask keeps it apart
    assert torch.equal(affected(0, 0, shift=True), region(slice(0, 2), slice(0, 2)))
    assert torch.equal(affected(0, 5, shift=True), region(slice(0, 2), slice(2, 6)))


def test_one_split_is_global_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 36, 8) for _ in range(3))
    expected = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1) @ v
    out = window_attention(q, k, v, size=(6, 6), splits=1, shift=True)
    assert torch.allclose(out, expected, atol=1e-6)


def test_convex_upsampling_keeps_a_constant_flow():
    torch.manual_seed(0)
    net = GMFlowNet().eval()
    flow = torch.tensor([2.5, -1.0]).view(1, 2, 1, 1).expand(1, 2, 6, 6)
    with torch.no_grad():
        up = net.upsample(flow, torch.randn(1, 128, 6, 6))
    assert up.shape == (1, 2, 48, 48)
    inner = up[..., 8:-8, 8:-8]  # the outer cells also mix in the zero padding
    assert torch.allclose(inner[:, 0], torch.full_like(inner[:, 0], 20.0), atol=1e-4)
    assert torch.allclose(inner[:, 1], torch.full_like(inner[:, 1], -8.0), atol=1e-4)


def test_estimator_batches_pairs_and_pads_odd_sizes():
    torch.manual_seed(0)
    estimator = GMFlow(GMFlowNet().state_dict(), pairs_per_call=1)
    frames = torch.rand(4, 3, 40, 56) * 2 - 1  # not multiples of 16: padded, then cropped
    one_by_one = estimator(frames[1:], frames[:-1])
    estimator.pairs_per_call = 3
    batched = estimator(frames[1:], frames[:-1])
    assert one_by_one.shape == (3, 2, 40, 56) and torch.isfinite(one_by_one).all()
    assert torch.allclose(batched, one_by_one, atol=1e-4)
    # the first frame's flow does not depend on which frames share its batch
    assert torch.allclose(estimator(frames[1:2], frames[:1]), one_by_one[:1], atol=1e-4)


def test_identical_frames_give_small_flow_compared_with_random_pairs():
    """Sanity of the whole network with the released structure: a frame against itself matches itself
    better than against another frame (random weights, so only a loose check)."""
    torch.manual_seed(0)
    net = GMFlowNet().eval()
    frames = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        same = net(frames[:1], frames[:1]).abs().mean()
        other = net(frames[:1], frames[1:]).abs().mean()
    assert same < other


@pytest.mark.parametrize("size", [(32, 48)])
def test_net_output_shape(size):
    net = GMFlowNet().eval()
    with torch.no_grad():
        flow = net(torch.zeros(1, 3, *size), torch.zeros(1, 3, *size))
    assert flow.shape == (1, 2, *size)


def test_wrong_weights_are_a_clear_error():
    from keep.errors import KeepError

    state = GMFlowNet().state_dict()
    del state["upsampler.2.bias"]
    with pytest.raises(KeepError, match="do not fit"):
        GMFlow(state)
