"""The GPU paths of issue 20, each against its reference path: group norm in autocast's dtype, the compiled
per-frame step, and the profile of one window (scripts/profile_gpu.py).

On the CPU each new path is forced and compared with the path it replaces; the CUDA tests run the same
comparisons on a GPU (scripts/gpu_session.sh runs this file there)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import keep
from keep.archs.blocks import GroupNorm, group_norm, norm_in_autocast_dtype
from keep.restorer import Restorer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: see conftest.one_thread
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REPO = Path(__file__).resolve().parent.parent
# unit roundoff of each half precision (8 and 11 significant bits)
ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clip(network, batch: int = 2, frames: int = 3, seed: int = 0, device: str = "cpu"):
    gen = torch.Generator().manual_seed(seed)
    size = network.config.img_size
    lq = torch.rand(batch, frames, 3, size, size, generator=gen) * 2 - 1
    flows = torch.randn(batch, frames - 1, 2, size, size, generator=gen) * 2
    return lq.to(device), flows.to(device)


# ------------------------------------------------------------------------------------------ group norm
def affine_norm(device: str = "cpu") -> GroupNorm:
    torch.manual_seed(0)
    norm = group_norm(64).to(device)
    with torch.no_grad():  # a non-trivial affine map, as trained weights have
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    return norm


def check_half_norm_against_float32(device: str, dtype: torch.dtype) -> None:
    """In autocast's dtype the norm computes the float32 norm of the same input, rounded: statistics in
    float32, the weight, the bias and the output each rounded once to `dtype`. So per element
    |half - float32| <= u (|w x_hat| + |b|) (weight and bias) + u |float32| (output) <= 2u (|w x_hat| + |b|),
    u the unit roundoff (measured on the CPU: 1.8u in bf16, 1.7u in fp16). Asserted: 4u, room for the
    float32 statistics, which another kernel sums in another order (CUDA's Welford)."""
    norm = affine_norm(device)
    x = (3 * torch.randn(2, 64, 16, 16, device=device) + 1).to(dtype)  # the conv output autocast gives
    reference = F.group_norm(x.float(), 32, norm.weight, norm.bias, norm.eps)  # what CUDA autocast computes
    with torch.no_grad(), torch.autocast(device, dtype=dtype), norm_in_autocast_dtype({device}):
        half = norm(x)
    assert half.dtype == dtype
    x_hat = F.group_norm(x.double(), 32, eps=norm.eps)
    weight, bias = norm.weight.double()[:, None, None], norm.bias.double()[:, None, None]
    bound = 4 * ROUNDOFF[dtype] * ((weight * x_hat).abs() + bias.abs())
    assert ((half.double() - reference.double()).abs() <= bound + 1e-6).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_group_norm_in_autocast_dtype_is_float32_norm_rounded_once(dtype):
    check_half_norm_against_float32("cpu", dtype)


def test_group_norm_unchanged_on_cpu_and_in_float32():
    """The CPU keeps autocast's own group norm unless forced, and a float32 input is never touched: CPU
    fp32 outputs (golden cases, pinned tiny values) are those of nn.GroupNorm."""
    norm = affine_norm()
    reference = nn.GroupNorm(32, 64, eps=norm.eps)
    reference.load_state_dict(norm.state_dict())
    x = torch.randn(2, 64, 8, 8)
    half = x.bfloat16()
    forced = F.group_norm(half, 32, norm.weight.bfloat16(), norm.bias.bfloat16(), norm.eps)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(norm(half), reference(half))  # not forced: autocast's own path
        with norm_in_autocast_dtype({"cpu"}):
            assert torch.equal(norm(x), reference(x))  # forced, but float32 without autocast
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert torch.equal(norm(x), reference(x))  # forced, but the input is not in autocast's dtype
                with norm_in_autocast_dtype(()):
                    assert torch.equal(norm(half), reference(half))
                assert torch.equal(norm(half), forced)  # the outer choice is back
                assert not torch.equal(forced, reference(half))  # (the weights' rounding shows)


def test_every_group_norm_of_the_network_takes_the_choice():
    network = keep.load_network("preset:tiny")
    norms = [m for m in network.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(type(m) is GroupNorm for m in norms)


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_group_norm_in_autocast_dtype_on_cuda(dtype):
    check_half_norm_against_float32("cuda", dtype)  # on by default there: the kernel autocast avoids


# ------------------------------------------------------------------------------------------ compiled step
def test_graphed_step_computes_with_the_step_it_is_given():
    """CPU tensors run eagerly: the step given (a compiled one on a GPU) is what runs."""
    from keep.cuda_graphs import GraphedStep

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
    """`compile_step` with dynamo's `eager` backend: the step traced as one graph (fullgraph: a graph break
    fails) and run op by op, so the values are the step's exactly, under bf16 autocast with the
    half-precision group norm (the GPU's path) forced. Inductor's fused kernels round differently (a
    measurement of scripts/gpu_session.sh, not a test)."""
    network = keep.load_network("preset:tiny")
    lq, flows = clip(network)
    model = Restorer(network, precision="bf16", compile_step="eager")
    step = model.frame_step()
    assert step is not None and model.frame_step() is step  # made once
    with torch.inference_mode(), norm_in_autocast_dtype({"cpu"}):
        compiled = model(lq, flows)
        model.compile_step = None
        assert model.frame_step() is None  # CPU, not compiled: KEEP.step
        eager = model(lq, flows)
    assert torch.equal(compiled, eager)


@cuda
def test_compiled_step_replays_from_cuda_graphs():
    network = keep.load_network("preset:tiny", device="cuda")
    lq, flows = clip(network, frames=5, device="cuda")
    with torch.inference_mode():
        eager = Restorer(network, precision="bf16", cuda_graphs=False)(lq, flows)
        model = Restorer(network, precision="bf16", compile_step="eager")
        graphed = model(lq, flows)
    assert model.frame_step().replays == 4 and torch.equal(graphed, eager)


# ------------------------------------------------------------------------------------------ profile
def test_profile_of_one_window_on_the_tiny_network(tmp_path):
    profile = load_script("profile_gpu")
    summary = profile.main(
        ["--weights", "preset:tiny", "--window", "2", "--batch", "2", "--flow", "dis", "--top", "5",
         "--threads", "1", "--out", str(tmp_path)]
    )  # fmt: skip
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
    kind = load_script("profile_gpu").kind_of
    assert kind("aten::cudnn_convolution") == kind("aten::mkldnn_convolution") == "convolution"
    assert kind("aten::native_group_norm") == "group norm" and kind("aten::native_layer_norm") == "layer norm"
    assert kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert kind("aten::_efficient_attention_forward") == "attention"
    assert kind("aten::addmm") == "matrix product" and kind("aten::_to_copy") == "copy / cast"
    assert kind("aten::silu_") == "elementwise" and kind("aten::grid_sampler_2d") == "resampling"
    assert kind("aten::argmax") == "other"


# ------------------------------------------------------------------------------------------ agreement
def test_benchmark_measures_code_agreement_per_precision():
    bench = load_script("benchmark_speed")
    argv = ["--weights", "preset:tiny", "--frames", "2", "--window", "2", "--threads", "1"]
    results = bench.main(argv + ["--agreement", "tf32", "bf16", "fp16", "--no_norm_in_autocast_dtype"])
    shares = results["code_agreement"]
    assert set(shares) == {"tf32", "bf16", "fp16"} and all(0.0 <= s <= 1.0 for s in shares.values())
    assert shares["tf32"] == 1.0  # tf32 is float32 on a CPU
    assert results["agreement_tokens"] == 2 * 16 * 16 and "code_agreement_vs_fp32" not in results
    assert results["norm_in_autocast_dtype"] is False  # a GPU matter
