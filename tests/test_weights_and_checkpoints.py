"""Weights registry lookup order, checkpoint layouts and their error messages."""

import hashlib
import logging

import pytest
import torch

import keep
from keep.archs.keep_arch import KEEP, PRESETS
from keep.checkpoint import convert_upstream_state_dict
from keep.errors import KeepError, WeightsUnavailable
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
    with pytest.raises(WeightsUnavailable, match="KEEP-a1a14d46.pth.*github.com/jnjaby/KEEP"):
        keep.load_model("keep")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return KEEP.from_config(PRESETS["tiny"]).eval()


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


def test_converter_renames_and_drops_gmflow(caplog):
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
    with caplog.at_level(logging.INFO):
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
        ]
    )
    assert "GMFlow" in caplog.text


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
