"""The lab (benchmarks/): its commands on the tiny network, and its variants of the runtime against the
product's path: the compiled per-frame step, group norm in float32, the channels-last layout.

Marked `lab`: deselected by default (pyproject's addopts), run with `python -m pytest -m lab`. On the CPU
each variant runs against the path it stands beside; the CUDA tests run the same comparisons on a GPU
(benchmarks/gpu_session.sh runs this file there)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import keep
from benchmarks import common, profiling, speed
from keep.archs.blocks import GroupNorm, half_group_norm
from keep.cuda_graphs import GraphedStep
from keep.errors import KeepError
from keep.restorer import Restorer

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("one_thread")]  # tiny inputs: see conftest.one_thread
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REPO = Path(__file__).resolve().parent.parent
TINY = ["--weights", "preset:tiny", "--threads", "1"]


def clip(network, batch: int = 2, frames: int = 3, seed: int = 0, device: str = "cpu"):
    gen = torch.Generator().manual_seed(seed)
    size = network.config.img_size
    lq = torch.rand(batch, frames, 3, size, size, generator=gen) * 2 - 1
    flows = torch.randn(batch, frames - 1, 2, size, size, generator=gen) * 2
    return lq.to(device), flows.to(device)


# ------------------------------------------------------------------------------------------ variants
def test_graphed_step_computes_with_the_step_it_is_given():
    """CPU tensors run eagerly: the step given (a compiled one on a GPU) is what runs."""
    network = keep.load_network("preset:tiny")
    calls = []

    def step(*args, **kwargs):
        calls.append(1)
        return network.step(*args, **kwargs)

    lq, flows = clip(network)
    with torch.inference_mode():
        expected = network.run(lq, flows)
        result = network.run(lq, flows, step=GraphedStep(network, step=step))
    assert len(calls) == 2 and torch.equal(result.out, expected.out)


def test_compiled_step_computes_what_the_step_computes():
    """`CompiledRestorer` with dynamo's `eager` backend: the step traced as one graph (fullgraph: a graph
    break fails) and run op by op, so the values are the step's exactly, under bf16 autocast; and the GPU's
    half-precision group norm traces as one graph too. Inductor's fused kernels round differently (a
    measurement of benchmarks/gpu_session.sh, not a test)."""
    network = keep.load_network("preset:tiny")
    lq, flows = clip(network)
    model = common.make_restorer(network, backend="eager", precision="bf16")
    step = model.frame_step()
    assert step is not None and model.frame_step() is step  # made once
    with torch.inference_mode():
        compiled = model(lq, flows)
        eager = Restorer(network, precision="bf16")(lq, flows)
    assert torch.equal(compiled, eager)
    x, weight, bias = torch.randn(2, 8, 4, 4).bfloat16(), torch.rand(8), torch.rand(8)
    norm = torch.compile(half_group_norm, backend="eager", fullgraph=True)
    assert torch.equal(norm(x, 4, weight, bias, 1e-6), half_group_norm(x, 4, weight, bias, 1e-6))


@cuda
def test_compiled_step_replays_from_cuda_graphs():
    network = keep.load_network("preset:tiny", device="cuda")
    lq, flows = clip(network, frames=5, device="cuda")
    with torch.inference_mode():
        eager = Restorer(network, precision="bf16", cuda_graphs=False)(lq, flows)
        model = common.make_restorer(network, backend="eager", precision="bf16")
        graphed = model(lq, flows)
    assert model.frame_step().replays == 4 and torch.equal(graphed, eager)


def test_group_norm_in_float32_is_nn_group_norm_for_its_duration():
    product = GroupNorm.forward
    with common.group_norm_in_float32():
        assert GroupNorm.forward is nn.GroupNorm.forward  # under CUDA autocast: autocast's float32 norm
    assert GroupNorm.forward is product


def test_channels_last_changes_layout_not_result():
    network = keep.load_network("preset:tiny")
    lq, flows = clip(network, batch=1, frames=2)  # channels-last is slow on tiny maps: keep it short
    with torch.inference_mode():
        expected = network.run(lq, flows)
    common.to_channels_last(network)
    assert network.decoder.blocks[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        result = network.run(lq, flows)
    assert torch.equal(result.idx, expected.idx)
    torch.testing.assert_close(result.out, expected.out, atol=1e-4, rtol=1e-4)
    network.train()  # still trainable: gradients reach the decoder's first convolution
    network.run(lq, flows).out.square().mean().backward()
    assert network.decoder.blocks[0].weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_golden_codes_with_channels_last(shared_dir):
    """Channels-last keeps the released network's codes; its output moves by at most 2e-3 (the exact
    NCHW path, with the in-place blocks, is held to 1e-3 by tests/test_golden.py)."""
    state, case = common.load_golden()
    network = common.to_channels_last(keep.load_network(state))
    with torch.inference_mode():
        result = network.run(torch.from_numpy(case["lq"]), torch.from_numpy(case["flows"]))
    assert (result.idx[0].numpy() == case["idx"][..., 0]).mean() == 1.0
    err = np.abs(result.out.clamp(-1, 1).numpy() - np.clip(case["out"], -1, 1)).max()
    assert err <= 2e-3


# ------------------------------------------------------------------------------------------ speed
def test_speed_reports_speed_memory_and_agreement(tmp_path):
    out = tmp_path / "speed.json"
    argv = [*TINY, "--frames", "5", "--window", "2", "--precision", "bf16"]
    results = speed.main(argv + ["--agreement", "--warmup", "--repeats", "2", "--json", str(out)])
    assert json.loads(out.read_text())["fps_max"] == results["fps_max"]
    assert results["fps_max"] > 0 and results["fps_median"] <= results["fps_max"]
    assert results["s_per_frame_min"] == pytest.approx(1 / results["fps_max"])
    assert results["peak_memory_all_frames_mib"] >= results["peak_memory_first_window_mib"] > 0
    assert 0.0 <= results["code_agreement_vs_fp32"] <= 1.0 and results["agreement_tokens"] == 5 * 16 * 16
    # the codes compared are those of the stream: window by window, with the state carried
    model = keep.load_network("preset:tiny")
    args = speed.parse_args(["--weights", "preset:tiny", "--frames", "5", "--window", "2"])
    frames, flows = speed.make_inputs(args, 64, None)
    streamed = speed.codes(keep.Restorer(model), frames, flows, args, torch.device("cpu"), "fp32")
    with torch.inference_mode():
        first = model.run(frames[:, :2], flows[:, 1:2])
        second = model.run(frames[:, 2:4], flows[:, 2:4], state=first.state)
    assert streamed.shape == (1, 5, 16 * 16)
    assert torch.equal(streamed[:, :4], torch.cat([first.idx, second.idx], 1))


def test_speed_measures_code_agreement_per_precision():
    argv = [*TINY, "--frames", "2", "--window", "2", "--agreement", "tf32", "bf16", "fp16", "--group_norm_fp32"]
    results = speed.main(argv)
    shares = results["code_agreement"]
    assert set(shares) == {"tf32", "bf16", "fp16"} and all(0.0 <= s <= 1.0 for s in shares.values())
    assert shares["tf32"] == 1.0  # tf32 is float32 on a CPU
    assert results["agreement_tokens"] == 2 * 16 * 16 and "code_agreement_vs_fp32" not in results
    assert results["group_norm_fp32"] is True and GroupNorm.forward is not nn.GroupNorm.forward  # restored


def test_speed_times_gmflow_beside_the_network():
    r = speed.main([*TINY, "--flow", "gmflow", "--frames", "3", "--window", "2", "--no_reuse_memory"])
    assert r["flow"] == "gmflow" and r["flow_pairs"] == 2 and r["flow_size"] == 64
    assert 0 < r["flow_s_per_pair_min"] and 0 < r["network_s_per_frame_min"] < r["s_per_frame_min"]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(KeepError, match="--frames"):
        speed.main(["--weights", "preset:tiny", "--frames", "0"])
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "speed", "--weights", "preset:nope", "--frames", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown preset" in proc.stderr and "Traceback" not in proc.stderr
    listed = subprocess.run([sys.executable, "-m", "benchmarks"], cwd=REPO, capture_output=True, text=True)
    assert listed.returncode == 0 and all(f"  {name} " in listed.stdout for name in ("speed", "profile", "ddp"))


# ------------------------------------------------------------------------------------------ profile
def test_profile_of_one_window_on_the_tiny_network(tmp_path):
    summary = profiling.main(
        [*TINY, "--window", "2", "--batch", "2", "--flow", "dis", "--top", "5", "--out", str(tmp_path)]
    )
    parts = {"LQ encoder", "HQ encoder (prediction)", "Kalman gain", "code transformer", "decoder", "CFT", "CFA"}
    assert set(summary["by_part"]) == parts | {"flow"}
    assert sum(summary["by_part"].values()) <= summary["wall_ms"]  # the parts do not overlap
    assert max(summary["by_kind"], key=summary["by_kind"].get) == "convolution"
    assert 0 < summary["busy_ms"] <= summary["wall_ms"] and len(summary["operators"]) == 5
    assert summary["operators"][0]["ms"] >= summary["operators"][-1]["ms"]
    text = (tmp_path / "profile.md").read_text()
    assert text.startswith("# KEEP preset:tiny weights, fp32, batch 2, window 2, flow dis, eager on cpu")
    assert "| `convolution` |" in text and "| `HQ encoder (prediction)` |" in text
    trace = json.loads(gzip.decompress((tmp_path / "trace.json.gz").read_bytes()))
    names = {event.get("name") for event in trace["traceEvents"]}
    assert "part: CFA" in names and "aten::native_group_norm" in names


def test_operator_kinds():
    kind = profiling.kind_of
    assert kind("aten::cudnn_convolution") == kind("aten::mkldnn_convolution") == "convolution"
    assert kind("aten::native_group_norm") == "group norm" and kind("aten::native_layer_norm") == "layer norm"
    assert kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert kind("aten::_efficient_attention_forward") == "attention"
    assert kind("aten::addmm") == "matrix product" and kind("aten::_to_copy") == "copy / cast"
    assert kind("aten::silu_") == "elementwise" and kind("aten::grid_sampler_2d") == "resampling"
    assert kind("aten::argmax") == "other"
