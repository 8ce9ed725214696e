"""Precision modes, the half-precision group norm of the GPU, and the in-place inference blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import keep
from keep.archs.blocks import AttnBlock, GroupNorm, ResBlock, group_norm, half_group_norm
from keep.archs.keep_arch import KEEP, PRESETS
from keep.errors import KeepError
from keep.precision import autocast, autocast_dtype, check_precision

REPO = Path(__file__).resolve().parent.parent
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# unit roundoff of each half precision (8 and 11 significant bits)
ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def tiny_clip(frames: int = 3, seed: int = 0) -> tuple[KEEP, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # module initialisation
    model = KEEP(PRESETS["tiny"]).eval()
    # Non-zero fusion layers, so that CFT / CFA change the output.
    with torch.no_grad():
        for p in list(model.cft.parameters()) + list(model.cfa.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    lq = torch.rand(1, frames, 3, 64, 64, generator=gen) * 2 - 1
    flows = torch.randn(1, frames - 1, 2, 64, 64, generator=gen)
    return model, lq, flows


def test_precision_names():
    assert check_precision("fp32") is None and check_precision("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="fp32"):
        autocast("cpu", "int4")
    assert autocast_dtype("cpu") is None
    with autocast("cpu", "fp32"):
        assert autocast_dtype("cpu") is None
    with autocast("cpu", "bf16"):
        assert autocast_dtype("cpu") is torch.bfloat16
        with autocast("cpu", "fp32"):  # the network's fp32 is exact inside any autocast
            assert autocast_dtype("cpu") is None


def test_reuse_freed_memory_is_harmless():
    # in a child process: the setting is process-wide and would outlive this test
    code = (
        "import sys, torch; from keep.precision import reuse_freed_memory as r\n"
        "applied = r(); assert applied == r()\n"
        "assert applied or not sys.platform.startswith('linux')\n"
        "for _ in range(3): assert torch.ones(64, 1024, 1024).sum().item() == 64 * 1024 * 1024\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("block", [ResBlock(32, 64, norm_groups=8), AttnBlock(32, norm_groups=8)])
def test_inplace_inference_path_equals_autograd_path(block):
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():  # in-place path
        fast = block(x.clone())
    slow = block(x.clone().requires_grad_())  # autograd path
    torch.testing.assert_close(fast, slow.detach(), atol=0, rtol=0)
    slow.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_inplace_inference_does_not_touch_the_input():
    block = ResBlock(16, 16, norm_groups=8)
    x = torch.randn(1, 16, 8, 8)
    before = x.clone()
    with torch.inference_mode():
        block(x)
    assert torch.equal(x, before)


def test_bf16_autocast_runs_the_network():
    model, lq, flows = tiny_clip()
    with torch.inference_mode(), autocast("cpu", "bf16"):
        result = model.run(lq, flows)
    assert result.out.shape == lq.shape and torch.isfinite(result.out.float()).all()


def test_precision_is_the_restorers_alone():
    """One place decides the precision: the Restorer's, which its streams follow; an enclosing
    autocast does not change it."""
    model, lq, flows = tiny_clip()
    with torch.inference_mode():
        with autocast("cpu", "bf16"):
            expected = model.run(lq, flows).out
        restorer = keep.Restorer(model, precision="bf16")
        assert torch.equal(restorer(lq, flows), expected)
        streamed = keep.StreamingRestorer(restorer, window=3).step({0: lq[0]}, {0: flows[0]})[0].out
        assert torch.equal(streamed, expected[0])
        exact = keep.Restorer(model)(lq, flows)
        assert exact.dtype == torch.float32 and not torch.equal(exact, expected.float())
        with autocast("cpu", "bf16"):
            assert torch.equal(keep.Restorer(model)(lq, flows), exact)
    with pytest.raises(KeepError, match="unknown precision 'fp64'"):
        keep.Restorer(model, precision="fp64")


# ------------------------------------------------------------------------------------------ group norm
def affine_norm(device: str = "cpu") -> GroupNorm:
    torch.manual_seed(0)
    norm = group_norm(64).to(device)
    with torch.no_grad():  # a non-trivial affine map, as trained weights have
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    return norm


def check_half_norm_against_float32(device: str, dtype: torch.dtype) -> None:
    """In half precision the norm computes the float32 norm of the same input, rounded: statistics in
    float32, the weight, the bias and the output each rounded once to `dtype`. So per element
    |half - float32| <= u (|w x_hat| + |b|) (weight and bias) + u |float32| (output) <= 2u (|w x_hat| + |b|),
    u the unit roundoff (measured on the CPU: 1.8u in bf16, 1.7u in fp16). Asserted: 4u, room for the
    float32 statistics, which another kernel sums in another order (CUDA's Welford). On CUDA through the
    module under autocast, as the network runs; on the CPU through the function it calls there."""
    norm = affine_norm(device)
    x = (3 * torch.randn(2, 64, 16, 16, device=device) + 1).to(dtype)  # the conv output autocast gives
    reference = F.group_norm(x.float(), 32, norm.weight, norm.bias, norm.eps)  # what CUDA autocast computes
    with torch.no_grad(), torch.autocast(device, dtype=dtype):
        half = norm(x) if device == "cuda" else half_group_norm(x, 32, norm.weight, norm.bias, norm.eps)
    assert half.dtype == dtype
    x_hat = F.group_norm(x.double(), 32, eps=norm.eps)
    weight, bias = norm.weight.double()[:, None, None], norm.bias.double()[:, None, None]
    bound = 4 * ROUNDOFF[dtype] * ((weight * x_hat).abs() + bias.abs())
    assert ((half.double() - reference.double()).abs() <= bound + 1e-6).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_group_norm_is_the_float32_norm_rounded_once(dtype):
    check_half_norm_against_float32("cpu", dtype)


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_group_norm_runs_in_half_precision_under_cuda_autocast(dtype):
    check_half_norm_against_float32("cuda", dtype)  # the kernel autocast's float32 norm would avoid


def test_group_norm_is_nn_group_norm_on_the_cpu():
    """On the CPU, in float32 and in bf16 with or without autocast, the network's group norm is
    `nn.GroupNorm`: CPU outputs (golden cases, pinned tiny values) are unchanged by the GPU's path."""
    norm = affine_norm()
    reference = nn.GroupNorm(32, 64, eps=norm.eps)
    reference.load_state_dict(norm.state_dict())
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        for value in (x, x.bfloat16()):
            assert torch.equal(norm(value), reference(value))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert torch.equal(norm(value), reference(value))
        rounded = half_group_norm(x.bfloat16(), 32, norm.weight, norm.bias, norm.eps)
        assert not torch.equal(rounded, reference(x.bfloat16()))  # (the weights' rounding shows, were it taken)


def test_every_group_norm_of_the_network_is_the_one_of_blocks():
    network = keep.load_network("preset:tiny")
    norms = [m for m in network.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(type(m) is GroupNorm for m in norms)
