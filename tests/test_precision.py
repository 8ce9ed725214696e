"""Precision modes, the inference fast paths (channels-last, in-place blocks) and the speed benchmark."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import keep
from keep.archs.blocks import AttnBlock, ResBlock
from keep.archs.keep_arch import KEEP, PRESETS
from keep.errors import KeepError
from keep.precision import autocast, check_precision, prepare_for_inference

REPO = Path(__file__).resolve().parent.parent


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_speed", REPO / "scripts" / "benchmark_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")


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


def test_channels_last_changes_layout_not_result():
    model, lq, flows = tiny_clip(frames=2)  # channels-last is slow on tiny maps: keep it short
    with torch.inference_mode():
        expected = model.run(lq, flows)
    prepare_for_inference(model, channels_last=True)
    assert model.decoder.blocks[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        result = model.run(lq, flows)
    assert torch.equal(result.idx, expected.idx)
    torch.testing.assert_close(result.out, expected.out, atol=1e-4, rtol=1e-4)
    # still trainable: gradients reach the decoder's first convolution
    model.train()
    model.run(lq, flows).out.square().mean().backward()
    assert model.decoder.blocks[0].weight.grad.abs().sum() > 0


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
    autocast does not change it (issue 17)."""
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


def test_benchmark_reports_speed_memory_and_agreement(tmp_path):
    bench = load_benchmark()
    out = tmp_path / "speed.json"
    argv = ["--weights", "preset:tiny", "--frames", "5", "--window", "2", "--precision", "bf16"]
    results = bench.main(argv + ["--agreement", "--warmup", "--repeats", "2", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text())["fps_max"] == results["fps_max"]
    assert results["fps_max"] > 0 and results["fps_median"] <= results["fps_max"]
    assert results["s_per_frame_min"] == pytest.approx(1 / results["fps_max"])
    assert results["peak_memory_all_frames_mib"] >= results["peak_memory_first_window_mib"] > 0
    assert 0.0 <= results["code_agreement_vs_fp32"] <= 1.0 and results["agreement_tokens"] == 5 * 16 * 16
    # the codes compared are those of the stream: window by window, with the state carried
    model = keep.load_network("preset:tiny")
    args = bench.parse_args(["--weights", "preset:tiny", "--frames", "5", "--window", "2"])
    frames, flows = bench.make_inputs(args, 64, None)
    streamed = bench.codes(keep.Restorer(model), frames, flows, args, torch.device("cpu"), "fp32")
    with torch.inference_mode():
        first = model.run(frames[:, :2], flows[:, 1:2])
        second = model.run(frames[:, 2:4], flows[:, 2:4], state=first.state)
    assert streamed.shape == (1, 5, 16 * 16)
    assert torch.equal(streamed[:, :4], torch.cat([first.idx, second.idx], 1))


def test_benchmark_bad_arguments_are_clear_errors():
    bench = load_benchmark()
    with pytest.raises(KeepError, match="--frames"):
        bench.main(["--weights", "preset:tiny", "--frames", "0"])
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark_speed.py"), "--weights", "preset:nope", "--frames", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown preset" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_golden_codes_with_channels_last(shared_dir):
    """Channels-last keeps the released network's codes; its output moves by at most 2e-3 (the exact
    NCHW path, with the in-place blocks, is held to 1e-3 by tests/test_golden.py)."""
    bench = load_benchmark()
    state, case = bench.load_golden()
    model = prepare_for_inference(keep.load_network(state), channels_last=True)
    with torch.inference_mode():
        result = model.run(torch.from_numpy(case["lq"]), torch.from_numpy(case["flows"]))
    assert (result.idx[0].numpy() == case["idx"][..., 0]).mean() == 1.0
    err = np.abs(result.out.clamp(-1, 1).numpy() - np.clip(case["out"], -1, 1)).max()
    assert err <= 2e-3
