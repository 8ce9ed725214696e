"""Weights registry lookup order, checkpoint layouts and their error messages."""

import dataclasses
import hashlib
import logging

import pytest
import torch

import keep
from keep.archs.keep_arch import KEEP, PRESETS
from keep.checkpoint import convert_upstream_state_dict, split_flow_state
from keep.errors import KeepError, WeightsUnavailable
from keep.flow import GMFlow, GMFlowNet
from keep.model import load_checkpoint
from keep.weights import REGISTRY, WeightFile, resolve_weights


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    payload = b"pretend weights"
    source = tmp_path / "published" / "fake-weights.pth"
    source.parent.mkdir()
    source.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    entry = WeightFile("fake-weights.pth", source.as_uri(), digest[:8], "MIT", "a test file")
    monkeypatch.setitem(REGISTRY, "fake", entry)
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("KEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return entry, tmp_path


def test_local_path_wins(tmp_path):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert resolve_weights(f) == f


def test_unknown_name_lists_known_names():
    with pytest.raises(KeepError, match="not a known name.*keep"):
        resolve_weights("no-such-weights")


def test_offline_missing_file_gives_one_clear_message(fake_entry):
    entry, tmp_path = fake_entry
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights("fake")
    message = str(info.value)
    assert entry.filename in message and entry.url in message and str(tmp_path / "weights") in message
    assert "KEEP_OFFLINE" in message


def test_weights_dir_then_cache(fake_entry):
    entry, tmp_path = fake_entry
    cached = tmp_path / "cache" / entry.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"c")
    assert resolve_weights("fake") == cached
    local = tmp_path / "weights" / entry.filename
    local.parent.mkdir(parents=True)
    local.write_bytes(b"w")
    assert resolve_weights("fake") == local


def test_download_checks_the_checksum(fake_entry, monkeypatch):
    entry, tmp_path = fake_entry
    monkeypatch.setenv("KEEP_OFFLINE", "0")
    path = resolve_weights("fake")  # a file:// URL stands in for the network
    assert path == tmp_path / "cache" / entry.filename and path.read_bytes() == b"pretend weights"
    path.unlink()
    monkeypatch.setitem(REGISTRY, "fake", WeightFile(entry.filename, entry.url, "deadbeef", "MIT", "x"))
    with pytest.raises(KeepError, match="sha256"):
        resolve_weights("fake")
    assert not path.exists()


def test_failed_download_names_file_and_url(fake_entry, monkeypatch):
    entry, _ = fake_entry
    monkeypatch.setenv("KEEP_OFFLINE", "0")
    monkeypatch.setitem(REGISTRY, "fake", WeightFile(entry.filename, entry.url + ".gone", "00", "MIT", "x"))
    with pytest.raises(WeightsUnavailable, match=r"download failed.*fake-weights.pth.gone"):
        resolve_weights("fake")


def test_released_weights_offline_message():
    with pytest.raises(WeightsUnavailable, match=r"KEEP-b76feb75.pth.*github.com/jnjaby/KEEP.*--model"):
        keep.load_model("keep")


@pytest.mark.parametrize(
    "name, filename, release",
    [
        ("keep", "KEEP-b76feb75.pth", "v1.0.0"),
        ("keep_asian", "KEEP_Asian-4765ebe0.pth", "v1.0.0"),
        ("keep_v0.1.0", "KEEP-a1a14d46.pth", "v0.1.0"),
    ],
)
def test_each_keep_name_resolves_to_its_file_and_url(name, filename, release, tmp_path, monkeypatch):
    entry = REGISTRY[name]
    assert entry.filename == filename
    assert entry.url == f"https://github.com/jnjaby/KEEP/releases/download/{release}/{filename}"
    assert filename.rsplit("-", 1)[1].removesuffix(".pth") == entry.sha256  # checksum prefix from the name
    assert "S-Lab" in entry.licence and entry.path_option.startswith("--model")
    for var in ("KEEP_WEIGHTS_DIR", "KEEP_CACHE_DIR", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights(name)
    message = str(info.value)
    assert filename in message and entry.url in message and "--model" in message
    assert str(tmp_path / "KEEP_WEIGHTS_DIR") in message
    (tmp_path / "KEEP_WEIGHTS_DIR").mkdir()
    (tmp_path / "KEEP_WEIGHTS_DIR" / filename).write_bytes(b"x")
    assert resolve_weights(name) == tmp_path / "KEEP_WEIGHTS_DIR" / filename


def test_missing_weights_message_names_the_flag_the_caller_gives(fake_entry):
    with pytest.raises(WeightsUnavailable, match=r"pass its path with --detector_weights\.$"):
        resolve_weights("fake", path_option="--detector_weights")
    with pytest.raises(WeightsUnavailable, match=r"it is not on disk.*pass its path\.$"):
        resolve_weights("fake", download=False)  # the entry names no flag


def test_no_download_when_told_not_to(fake_entry, monkeypatch):
    entry, tmp_path = fake_entry
    monkeypatch.setenv("KEEP_OFFLINE", "0")
    with pytest.raises(WeightsUnavailable, match="not on disk"):
        resolve_weights("fake", download=False)
    assert not (tmp_path / "cache" / entry.filename).exists()


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return KEEP(PRESETS["tiny"]).eval()


def test_own_checkpoint_round_trip_with_ema(tmp_path):
    model, ema = tiny_model(0), tiny_model(1)
    path = tmp_path / "ckpt" / "net.pth"
    keep.save_checkpoint(path, model, ema=ema, step=7)
    assert path.is_file() and not path.with_name("net.pth.tmp").exists()
    for use_ema, ref in ((True, ema), (False, model)):
        loaded = keep.load_network(path, use_ema=use_ema)
        assert loaded.config == model.config and not loaded.training
        expected = ref.state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def test_converter_renames_and_keeps_gmflow_apart():
    state = {
        "encoder.blocks.0.weight": torch.zeros(1),
        "generator.blocks.0.weight": torch.zeros(1),
        "fuse_convs_dict.16.scale.0.weight": torch.zeros(1),
        "cross_fuse.32.attn.to_q.weight": torch.zeros(1),
        "cfa.16.attn.to_q.weight": torch.zeros(1),
        "kalman_filter.kalman_gain_calculator.3.bias": torch.zeros(1),
        "kalman_filter.uncertainty_estimator.0.norm1.weight": torch.zeros(1),
        "idx_pred_layer.1.weight": torch.zeros(1),
        "position_emb": torch.zeros(1),
        "flownet.model.backbone.conv1.weight": torch.zeros(1),
    }
    out = convert_upstream_state_dict(state)
    assert sorted(out) == sorted(
        [
            "lq_encoder.blocks.0.weight",
            "decoder.blocks.0.weight",
            "cft.16.scale.0.weight",
            "cfa.32.attn.to_q.weight",
            "cfa.16.attn.to_q.weight",
            "kalman.gain_head.3.bias",
            "kalman.uncertainty_blocks.0.norm1.weight",
            "transformer.head.1.weight",
            "transformer.position_emb",
            "flow.backbone.conv1.weight",
        ]
    )
    network, flow = split_flow_state(out)
    assert flow == {"backbone.conv1.weight": state["flownet.model.backbone.conv1.weight"]}
    assert not any(k.startswith("flow.") for k in network) and len(network) == len(out) - 1


def test_gmflow_travels_with_our_checkpoints(tmp_path):
    """A released model fine-tuned and saved by us keeps its GMFlow; models without one have none."""
    model = tiny_model()
    flow_state = {k: torch.randn(v.shape) for k, v in GMFlowNet().state_dict().items()}
    path = tmp_path / "net.pth"
    keep.save_checkpoint(path, model, flow_state=flow_state)
    network, loaded_flow = load_checkpoint(path)
    assert loaded_flow.keys() == flow_state.keys() and all(
        torch.equal(loaded_flow[k], flow_state[k]) for k in flow_state
    )
    restorer = keep.load_model(path, flow="auto")
    assert isinstance(restorer.flow, GMFlow) and torch.equal(
        restorer.flow.net.backbone.conv1.weight, flow_state["backbone.conv1.weight"]
    )
    keep.save_checkpoint(path, model)
    assert load_checkpoint(path).flow_state is None
    with pytest.raises(KeepError, match="gmflow.*has none"):
        keep.load_model(path, flow="gmflow")
    with pytest.raises(KeepError, match="gmflow.*has none"):
        keep.load_model("preset:tiny", flow="gmflow")


@pytest.mark.parametrize(
    "obj, message",
    [
        ([1, 2], "expected a dict"),
        ({"meta": "x"}, "no tensors"),
        ({"some.other.net": torch.zeros(1)}, "unexpected keys"),
        ({"params_ema": {"encoder.blocks.0.weight": torch.zeros(1)}}, "no Kalman filter"),
    ],
)
def test_wrong_kind_of_checkpoint(obj, message):
    with pytest.raises(KeepError, match=message):
        keep.load_network(obj)


def test_shape_mismatch_and_corrupt_file(tmp_path):
    model = tiny_model()
    state = {f"{k}": v for k, v in model.state_dict().items()}
    bad = tmp_path / "bad.pth"
    keep.save_checkpoint(bad, model)
    payload = torch.load(bad, weights_only=True)
    payload["state_dict"] = {k: v for k, v in state.items() if not k.startswith("kalman.")}
    torch.save(payload, bad)
    with pytest.raises(KeepError, match="missing"):
        keep.load_network(bad)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(KeepError, match="cannot read checkpoint"):
        keep.load_network(corrupt)
    with pytest.raises(KeepError, match="unknown preset"):
        keep.load_model("preset:huge")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_formats_load_alike(tmp_path, suffix):
    """Our checkpoint as a torch file or as safetensors (config in its metadata), and a bare state dict
    of a preset in either, load the same weights (checkpoints as users bring them)."""
    model, ema = tiny_model(0), tiny_model(1)
    flow_state = {"backbone.conv1.weight": torch.randn(2, 3)}
    path = tmp_path / f"net{suffix}"
    keep.save_checkpoint(path, model, ema=ema, flow_state=flow_state, step=7)
    for use_ema, ref in ((True, ema), (False, model)):
        loaded, flow = load_checkpoint(path, use_ema=use_ema)
        assert loaded.config == model.config and torch.equal(
            flow["backbone.conv1.weight"], flow_state[next(iter(flow))]
        )
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in loaded.state_dict().items())
    keep.save_checkpoint(path, model, ema=model)  # an EMA that is the model itself: shared memory
    assert torch.equal(keep.load_network(path).decoder.blocks[0].weight, model.decoder.blocks[0].weight)
    bare = tmp_path / f"bare{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), bare)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    loaded = keep.load_network(bare)
    assert loaded.config == PRESETS["tiny"] and torch.equal(
        loaded.quantizer.embedding.weight, model.quantizer.embedding.weight
    )


def test_bare_state_dict_of_an_unknown_configuration_names_the_closest(tmp_path):
    torch.manual_seed(0)
    odd = KEEP(dataclasses.replace(PRESETS["tiny"], nf=48, norm_groups=16))
    path = tmp_path / "odd.pth"
    torch.save(odd.state_dict(), path)
    with pytest.raises(KeepError) as info:
        keep.load_network(path)
    message = str(info.value)
    assert str(path) in message and "closest is preset 'tiny'" in message
    assert "keep.save_checkpoint" in message and "model.preset=tiny" in message
    keep.save_checkpoint(tmp_path / "odd_own.pth", odd)  # the remedy the message names
    assert keep.load_network(tmp_path / "odd_own.pth").config.nf == 48


def test_stored_fidelity_of_older_checkpoints_is_dropped(tmp_path, caplog):
    """Checkpoints written when the fidelity was a config field (`cft_weight`) still load (keep/checkpoint.py)."""
    model = tiny_model()
    path = tmp_path / "old.pth"
    keep.save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    for value, warned in ((1.0, False), (0.5, True)):
        payload["config"]["cft_weight"] = value
        torch.save(payload, path)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert keep.load_network(path).config == model.config
        assert ("cft_weight" in caplog.text) == warned


def test_folder_given_for_a_checkpoint(tmp_path):
    keep.save_checkpoint(tmp_path / "models" / "net_g_latest.pth", tiny_model())
    with pytest.raises(KeepError, match=r"is a folder, not a weight file \(it holds net_g_latest.pth\)"):
        keep.load_network(tmp_path / "models")
    with pytest.raises(KeepError, match="no such file"):
        keep.load_network(tmp_path / "missing.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(KeepError, match="cannot read checkpoint .*bad.safetensors"):
        keep.load_network(tmp_path / "bad.safetensors")
