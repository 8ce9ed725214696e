"""The per-frame step and its CUDA-graph replay (keep.cuda_graphs), and the TF32 switch (keep.precision).

The replay tests need a GPU and skip without one (CI has none; they ran on a lent H100, docs/speed.md)."""

import pytest
import torch

import keep
from keep.cuda_graphs import GraphedStep
from keep.precision import autocast, tf32, tf32_state
from keep.restorer import Restorer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def clip(batch: int, frames: int, size: int, device: str = "cpu", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, frames, 3, size, size, generator=gen) * 2 - 1
    flows = torch.randn(batch, frames - 1, 2, size, size, generator=gen) * 2
    return lq.to(device), flows.to(device)


def test_run_computes_predicted_frames_with_the_step_it_is_given():
    network = keep.load_network("preset:tiny")
    lq, flows = clip(2, 5, network.config.img_size)
    calls = []

    def step(*args, **kwargs):
        calls.append(args[3].shape)  # prev_out
        return network.step(*args, **kwargs)

    with torch.inference_mode():
        expected = network.run(lq, flows)
        result = network.run(lq, flows, step=step)
    assert len(calls) == 4  # frames 1..4: the first frame has no prediction and runs KEEP.step itself
    assert torch.equal(result.out, expected.out) and torch.equal(result.idx, expected.idx)


def test_graphs_are_a_gpu_matter():
    network = keep.load_network("preset:tiny")
    assert Restorer(network).frame_step() is None  # CPU: KEEP.step
    graphed = GraphedStep(network)
    lq, flows = clip(1, 3, network.config.img_size)
    with torch.inference_mode():
        assert torch.equal(network.run(lq, flows, step=graphed).out, network.run(lq, flows).out)
    assert graphed.captures == 0 and graphed.replays == 0  # CPU tensors: eager


def test_tf32_switch_is_restored():
    before = tf32_state()
    with tf32(True):
        on = tf32_state()
        with tf32(False):
            assert tf32_state() != on
        assert tf32_state() == on
    assert tf32_state() == before
    with pytest.raises(ValueError, match="unknown precision"):
        autocast("cpu", "fp64")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_replay_gives_the_eager_values(precision):
    network = keep.load_network("preset:tiny", device="cuda")
    size = network.config.img_size
    graphed = GraphedStep(network, capacity=2)
    with torch.inference_mode(), autocast("cuda", precision):
        for batch in (2, 1, 2):  # a second batch size: a second graph; back to 2: the first, replayed
            lq, flows = clip(batch, 6, size, "cuda", seed=batch)
            eager = network.run(lq, flows)
            replayed = network.run(lq, flows, step=graphed)
            assert torch.equal(replayed.idx, eager.idx)
            assert (replayed.out.float() - eager.out.float()).abs().max().item() == 0.0
    # one graph per batch size, or two where autocast makes the first frame's output another dtype
    assert 2 <= graphed.captures <= 6 and graphed.replays == 3 * 5  # every predicted frame replayed
    assert len(graphed.graphs) == 2


@cuda
def test_restorer_streams_with_graphs_as_without():
    model = keep.load_model("preset:tiny", device="cuda", flow=None)
    lq, flows = clip(2, 8, model.config.img_size, "cuda")
    with torch.inference_mode():
        model.cuda_graphs = False
        eager = model(lq, flows)
        model.cuda_graphs = True
        graphed = model(lq, flows)
    assert model.frame_step().replays == 7
    assert torch.equal(graphed, eager)
