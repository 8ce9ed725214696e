"""Invariants of the KEEP network on tiny configurations (paper section 3; the released network's choices)."""

import dataclasses
import hashlib
import os

import pytest
import torch

from keep.archs.flow_warp import flow_warp
from keep.archs.kalman import kalman_update
from keep.archs.keep_arch import KEEP, PRESETS
from keep.archs.vqgan import Decoder, Encoder
from keep.flow import build_flow
from keep.restorer import Restorer
from keep.streaming import StreamingRestorer


def tiny(seed: int = 0, **overrides) -> KEEP:
    torch.manual_seed(seed)
    model = KEEP(dataclasses.replace(PRESETS["tiny"], **overrides)).eval()
    # CFT and CFA start as identities; give their last maps values so the tests exercise them.
    with torch.no_grad():
        for cft in model.cft.values():
            cft.scale[2].weight.normal_(0, 0.02)
            cft.shift[2].weight.normal_(0, 0.02)
        for cfa in model.cfa.values():
            cfa.norm1.weight.fill_(1.0)
            cfa.norm2.weight.fill_(1.0)
    return model


def clip(batch=1, frames=4, size=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, frames, 3, size, size, generator=g) * 2 - 1
    flows = torch.randn(batch, frames - 1, 2, size, size, generator=g)
    return lq, flows


def test_released_block_indices():
    cfg = PRESETS["released"]
    args = dict(img_size=512, nf=64, ch_mult=cfg.ch_mult, num_res_blocks=2, attn_resolutions=(16,), emb_dim=256)
    assert Encoder(**args).tap_index == {512: 2, 256: 5, 128: 8, 64: 11, 32: 14, 16: 18}
    decoder = Decoder(**args)
    assert decoder.fuse_index == {16: 6, 32: 9, 64: 12, 128: 15, 256: 18, 512: 21}
    assert decoder.channels == {16: 512, 32: 256, 64: 256, 128: 128, 256: 128, 512: 64}
    assert len(decoder.blocks) == 25


FLOWNET_VALUES = 4_680_288  # GMFlow values in the manifest


def test_released_parameter_count():
    # 158.5 M values in all including GMFlow (4.68 M), which is the flow estimator's (keep.flow.gmflow).
    model = KEEP(PRESETS["released"])
    n = sum(p.numel() for p in model.parameters())
    assert n == 158_485_860 - FLOWNET_VALUES, n


def test_output_shapes_and_tensors():
    model = tiny()
    lq, flows = clip(batch=2, frames=3)
    with torch.no_grad():
        res = model.run(lq, flows, keep_features=True)
    assert res.out.shape == lq.shape
    assert res.logits.shape == (2, 3, 16 * 16, 64)
    assert res.idx.shape == (2, 3, 256)
    assert res.z_obs.shape == res.z_post.shape == (2, 3, 32, 16, 16)
    assert res.gain.shape == (2, 3, 1, 16, 16) and ((res.gain > 0) & (res.gain < 1)).all()
    assert set(res.features) == {16, 32} and res.features[32].shape[:2] == (2, 3)
    assert torch.equal(res.z_post[:, 0], res.z_obs[:, 0])  # first frame: posterior = observation


def test_batch_gives_per_sample_results_of_batch_one():
    model = tiny()
    lq, flows = clip(batch=3, frames=3)
    with torch.no_grad():
        batched = model.run(lq, flows)
        singles = [model.run(lq[i : i + 1], flows[i : i + 1]) for i in range(3)]
    # Same codes, and outputs equal up to float32 summation order (kernels differ with batch size).
    assert torch.equal(batched.idx, torch.cat([s.idx for s in singles]))
    torch.testing.assert_close(batched.out, torch.cat([s.out for s in singles]), atol=2e-4, rtol=0)


def test_kalman_update_extremes():
    z_obs, z_pred = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert torch.equal(kalman_update(z_obs, z_pred, torch.zeros(2, 1, 4, 4)), z_obs)
    assert torch.equal(kalman_update(z_obs, z_pred, torch.ones(2, 1, 4, 4)), z_pred)


def test_zero_flow_warp_is_identity_and_shift_moves_pixels():
    image = torch.randn(2, 3, 9, 11)
    torch.testing.assert_close(flow_warp(image, torch.zeros(2, 2, 9, 11)), image)
    flow = torch.zeros(2, 2, 9, 11)
    flow[:, 0] = 1.0  # sample one pixel to the right
    shifted = flow_warp(image, flow)
    torch.testing.assert_close(shifted[..., :-1], image[..., 1:])
    assert shifted[..., -1].abs().max() < 0.5 * image[..., -1].abs().max() + 1e-6  # zeros outside (half)


def test_cft_and_cfa_weights_learn():
    """The released code zero-initialises all CFT/CFA weights, so they never learn (docs/network.md)."""
    torch.manual_seed(0)
    model = KEEP(PRESETS["tiny"]).train()
    lq, flows = clip(frames=2)
    params = {n: p for n, p in model.named_parameters() if n.startswith(("cft.", "cfa."))}
    optimizer = torch.optim.SGD(params.values(), lr=0.1)
    for step in range(2):
        optimizer.zero_grad()
        res = model.run(lq, flows)
        loss = (res.out - torch.tanh(lq)).square().mean()
        loss.backward()
        grads = {n: p.grad for n, p in params.items()}
        if step == 0:
            # each layer starts as the identity, and its last maps get gradients at once
            last = [n for n in params if n.endswith(("scale.2.weight", "shift.2.weight"))]
            last += [n for n in params if n.startswith("cfa.") and n.endswith(("norm1.weight", "norm2.weight"))]
            assert last and all(grads[n].abs().sum() > 0 for n in last)
        optimizer.step()
    dead = [n for n, g in grads.items() if n.endswith("weight") and (g is None or g.abs().sum() == 0)]
    assert not dead, f"weights without gradient after one step: {dead}"


def test_encoder_taps_are_detached_and_codes_are_detached():
    model = tiny().train()
    lq, flows = clip(frames=2)
    res = model.run(lq, flows)
    res.out.mean().backward()
    # the decoder input is a codebook lookup, so no gradient reaches the LQ encoder via the image
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.lq_encoder.parameters())
    # the transformer is trained through its logits only
    assert all(p.grad is None for p in model.transformer.parameters())


def test_streaming_single_window_equals_forward_and_modes():
    model = tiny()
    lq, flows = clip(frames=5)
    with torch.no_grad():
        reference = model(lq, flows)
        for mode in ("carry", "reset", "released"):
            restorer = StreamingRestorer(model, window=5, mode=mode)
            torch.testing.assert_close(restorer.step({0: lq[0]}, {0: flows[0]})[0].out, reference[0], atol=0, rtol=0)


def test_streaming_carries_state_across_windows():
    model = tiny()
    lq, flows = clip(frames=6)
    step = lambda restorer, a, b, fa, fb: restorer.step({0: lq[0, a:b]}, {0: flows[0, fa:fb]})[0].out  # noqa: E731
    with torch.no_grad():
        # carry mode: two windows of 3 -> the second window's first frame has a prediction
        restorer = StreamingRestorer(model, window=3, mode="carry")
        first = step(restorer, 0, 3, 0, 2)
        second = step(restorer, 3, 6, 2, 5)
        torch.testing.assert_close(first, model(lq[:, :3], flows[:, :2])[0], atol=0, rtol=0)
        assert not torch.allclose(second[0], model(lq[:, 3:4])[0, 0])
        expected = model.run(lq[:, 3:], flows[:, 2:], state=model.run(lq[:, :3], flows[:, :2]).state).out[0]
        torch.testing.assert_close(second, expected, atol=0, rtol=0)
        # reset mode: the second window is an independent clip
        restorer = StreamingRestorer(model, window=3, mode="reset")
        step(restorer, 0, 3, 0, 2)
        torch.testing.assert_close(step(restorer, 3, 6, 3, 5), model(lq[:, 3:], flows[:, 3:])[0])


def test_streaming_gain_sees_the_configured_context():
    """Window 2's gain is computed over the last `gain_context` observations plus the window."""
    model = tiny()
    lq, flows = clip(frames=5)
    with torch.no_grad():
        z_obs, _ = model.encode_observations(lq)
        first = model.run(lq[:, :3], flows[:, :2], gain_context=2)
        second = model.run(lq[:, 3:], flows[:, 2:], state=first.state, gain_context=2)
        torch.testing.assert_close(second.gain, model.kalman(z_obs[:, 1:])[:, -2:], atol=1e-6, rtol=0)
        # without context the gain sees the window only
        no_history = model.run(lq[:, :3], flows[:, :2], gain_context=0).state
        alone = model.run(lq[:, 3:], flows[:, 2:], state=no_history)
        torch.testing.assert_close(alone.gain, model.kalman(z_obs[:, 3:]), atol=1e-6, rtol=0)


def test_streaming_restore_iterates_all_frames_with_estimated_flow():
    model = tiny()
    lq, _ = clip(frames=7)
    with torch.no_grad():
        outs = list(StreamingRestorer(Restorer(model, build_flow("dis")), window=3).restore(lq.unbind(1)))
        whole = Restorer(model, build_flow("dis")).run(lq[:, :3]).out
    assert len(outs) == 7 and outs[0].shape == (1, 3, 64, 64)
    torch.testing.assert_close(torch.stack(outs[:3], dim=1), whole, atol=0, rtol=0)


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    lq, flows = clip(frames=3)
    with pytest.raises(ValueError, match="no flows given"):
        model(lq)
    with pytest.raises(ValueError, match="flows must be"):
        model(lq, flows[:, :1])
    with pytest.raises(ValueError, match="64x64"):
        model(torch.zeros(1, 2, 3, 32, 32), torch.zeros(1, 1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        model(torch.zeros(2, 3, 64, 64))


def test_network_imports_without_gpu_packages():
    import subprocess
    import sys

    code = "import sys, keep; assert 'cupy' not in sys.modules; print('ok')"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    )
    assert out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------------------------------ pinned
def named_weights(model: KEEP) -> KEEP:
    """Weights drawn from each parameter's name (not from module creation order), so the pinned values
    below move only when the computation (or a name) changes."""
    with torch.no_grad():
        for name, value in model.state_dict().items():
            g = torch.Generator().manual_seed(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
            noise = torch.randn(value.shape, generator=g)
            if value.ndim > 1:
                value.copy_(noise / value[0].numel() ** 0.5)  # fan-in scaled
            elif name.endswith("weight"):
                value.copy_(1 + 0.1 * noise)  # norm scales
            else:
                value.copy_(0.02 * noise)
    return model


def test_tiny_network_output_is_pinned():
    """Fixed expected values (as diffusers does): guards the network where ../shared is absent.
    The values were produced by this implementation after it matched the released network on the
    golden cases; a change here is a change of what the network computes."""
    model = named_weights(KEEP(PRESETS["tiny"]).eval())
    lq, flows = clip(frames=3)
    with torch.no_grad():
        result = model.run(lq, flows)
    out = result.out[0]
    values = torch.stack([out[0, :, 5, 7], out[1, :, 31, 40], out[2, :, 60, 2]]).flatten()
    expected = torch.tensor(PINNED_OUT)
    assert torch.allclose(values, expected, atol=1e-4), values.tolist()
    assert out.abs().mean().item() == pytest.approx(PINNED_MEAN_ABS, abs=1e-4)
    assert result.gain.mean().item() == pytest.approx(PINNED_GAIN, abs=1e-5)
    assert result.idx[0, :, :8].tolist() == PINNED_IDX


PINNED_OUT = [0.038702, 0.337099, 0.039651, 0.488739, 0.611728, 0.218821, -1.122463, 0.523414, -0.178522]
PINNED_MEAN_ABS = 0.777364
PINNED_GAIN = 0.298258
PINNED_IDX = [[23, 61, 11, 23, 51, 15, 49, 57], [37, 15, 57, 62, 28, 15, 15, 2], [51, 49, 24, 62, 15, 11, 23, 23]]


# ------------------------------------------------------------------------------------------ fidelity
def test_fidelity_zero_ignores_the_lq_encoders_cft_features():
    """fidelity (the CFT weight, CodeFormer's w) 0: the decoder does not see the LQ encoder's taps."""
    lq, flows = clip(frames=3)
    model = tiny()
    encode = model.encode_observations

    def other_taps(x):
        z, taps = encode(x)
        return z, {s: torch.randn_like(f) for s, f in taps.items()}

    for fidelity, independent in ((0.0, True), (1.0, False)):
        with torch.no_grad():
            model.encode_observations = encode
            reference = model(lq, flows, fidelity=fidelity)
            model.encode_observations = other_taps
            changed = model(lq, flows, fidelity=fidelity)
        assert torch.equal(reference, changed) == independent, fidelity


def test_fidelity_is_a_run_argument_checked_once():
    import keep
    from keep.errors import KeepError

    network = tiny()
    lq, flows = clip(frames=3)
    model = keep.Restorer(network, fidelity=0.3)
    with torch.no_grad():
        torch.testing.assert_close(model(lq, flows), network(lq, flows, fidelity=0.3), atol=0, rtol=0)
        assert not torch.equal(model(lq, flows), network(lq, flows))
    assert keep.load_model("preset:tiny", flow=None, fidelity=0.25).fidelity == 0.25
    for bad in (1.5, -0.1, "high"):
        with pytest.raises(KeepError, match="between 0 and 1"):
            keep.load_model("preset:tiny", flow=None, fidelity=bad)
        with pytest.raises(KeepError, match="between 0 and 1"):
            model.fidelity = bad
    with pytest.raises(KeepError, match="fidelity is chosen when the model runs"):
        keep.load_network("preset:tiny", cft_weight=0.5)  # no longer a configuration field


def test_unknown_override_is_a_clear_error():
    import keep
    from keep.errors import KeepError

    with pytest.raises(KeepError, match="unknown config key 'foo'.*cfa_scales"):
        keep.load_network("preset:tiny", foo=1)
    with pytest.raises(KeepError, match="cfa_scales"):
        keep.load_network("preset:tiny", cfa_scales="16")
    with pytest.raises(KeepError, match="cannot build the KEEP network.*fusion scale 8"):
        keep.load_network("preset:tiny", cfa_scales=(8,))
    assert keep.load_network("preset:tiny", cfa_scales=[16]).config.cfa_scales == (16,)  # typed: a tuple
