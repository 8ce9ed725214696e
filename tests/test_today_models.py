"""The CLIP-based image metrics (CLIP-IQA, LIQE) and the DOVER video metric of today's face-video tables,
each against its reference implementation with the same random stand-in weights (the real files
cannot be downloaded here): CLIP-IQA and LIQE against `pyiqa.create_metric`, CLIP-IQA's backbone read
from a TorchScript archive by `keep.torchscript` while pyiqa's reference runs `torch.jit.load` on it.
DOVER: the released checkpoint's key layout (tests/data/dover_keys.txt, listed once from the reference
code) loads strictly, and a tiny forward; equality with the reference code is a one-off check
(docs/benchmark.md)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(
        "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning", "ignore::torch.jit.TracerWarning"
    ),
]
OPTIONAL = "optional: pip install --no-deps pyiqa==0.1.16 -r requirements-metrics.txt"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """An empty weights folder and caches for the whole module: the files the tests write are the only ones."""
    folder = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("KEEP_WEIGHTS_DIR", "KEEP_CACHE_DIR", "TORCH_HOME"):
            mp.setenv(var, str(folder))
        mp.setenv("KEEP_OFFLINE", "1")
        yield folder


def photos(size: int) -> torch.Tensor:
    """Two real photos and a blurred copy of the first, `(3, 3, size, size)` RGB in [0, 1]."""
    astronaut = cv2.resize(skimage.data.astronaut()[20:260, 80:320], (size, size), interpolation=cv2.INTER_AREA)
    coffee = cv2.resize(skimage.data.coffee()[:, 100:500], (size, size), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    return torch.from_numpy(np.stack([astronaut, coffee, blurred])).permute(0, 3, 1, 2).float() / 255


def tiny_clip(vision: str) -> torch.nn.Module:
    """pyiqa's CLIP at toy widths, with the real tokenizer's vocabulary and context: a ResNet (`rn`) or
    ViT/32 (`vit`) image tower at 224, one text layer; random weights."""
    from pyiqa.archs.clip_model import CLIP

    torch.manual_seed(0)
    layers, width, patch = ((1, 1, 1, 1), 8, None) if vision == "rn" else (1, 64, 32)
    model = CLIP(32, 224, layers, width, patch, 77, 49408, 64, 1, 1).eval()
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))
    return model


# ------------------------------------------------------------------------------------------- CLIP-IQA
def test_clipiqa_from_a_torchscript_archive_equals_pyiqa(weights_dir, monkeypatch):
    """OpenAI publishes RN50 only as a TorchScript archive: a traced tiny CLIP saved like it (with the
    three integer attributes OpenAI's archives carry) is read without running it; pyiqa's own `load`
    runs `torch.jit.load` on the same archive."""
    pyiqa = pytest.importorskip("pyiqa", reason=OPTIONAL)
    openai_clip = pytest.importorskip("clip", reason=OPTIONAL)
    import pyiqa.archs.clipiqa_arch as clipiqa_arch

    from keep.metrics.iqa import build_iqa

    model = tiny_clip("rn")
    model.register_buffer("input_resolution", torch.tensor(224))
    archive = weights_dir / "RN50.pt"
    torch.jit.trace(model, (torch.rand(1, 3, 224, 224), openai_clip.tokenize(["a face"])), check_trace=False).save(
        str(archive)
    )
    ours, _ = build_iqa("clipiqa")
    real_load = clipiqa_arch.load
    monkeypatch.setattr(clipiqa_arch, "load", lambda name, device: real_load(str(archive), device))
    reference = pyiqa.create_metric("clipiqa", device="cpu")
    x = photos(64)
    with torch.no_grad():
        got, expected = ours(x).flatten(), reference(x).flatten()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)  # pyiqa prints 4 decimals
    assert got.min() > 0 and got.max() < 1 and (got - got.mean()).abs().max() > 1e-4  # not a constant


def test_liqe_equals_pyiqa(weights_dir, monkeypatch):
    """liqe_koniq.pt holds every weight of LIQE's fine-tuned CLIP (pyiqa loads it strictly): ours builds the
    network from it alone; pyiqa's reference builds OpenAI's backbone (here the tiny one) and loads it over."""
    pyiqa = pytest.importorskip("pyiqa", reason=OPTIONAL)
    pytest.importorskip("clip", reason=OPTIONAL)
    import pyiqa.archs.liqe_arch as liqe_arch
    from pyiqa.archs.clip_model import CLIP

    from keep.metrics.iqa import build_iqa

    model = tiny_clip("vit")
    path = weights_dir / "liqe_koniq.pt"
    torch.save({"params": {f"clip_model.{k}": v for k, v in model.state_dict().items()}}, path)
    ours, _ = build_iqa("liqe")
    base = CLIP(32, 224, 1, 64, 32, 77, 49408, 64, 1, 1)  # OpenAI's backbone stand-in, overwritten by the file
    monkeypatch.setattr(liqe_arch, "load", lambda name, device: base)
    monkeypatch.setattr(liqe_arch, "DEFAULT_CACHE_DIR", str(weights_dir))  # pyiqa's prompt-feature cache
    reference = pyiqa.create_metric("liqe", device="cpu", pretrained_model_path=str(path))
    x = photos(256)  # 4 crops of 224 each
    with torch.no_grad():
        got, expected = ours(x).flatten(), reference(x).flatten()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)  # pyiqa prints 4 decimals, levels 1-5
    assert 1 <= got.min() and got.max() <= 5
    with torch.no_grad():  # smaller frames are upsampled to 224 instead of refused
        small = ours(photos(64))
    assert small.shape == (3, 1) and torch.isfinite(small).all()


# ---------------------------------------------------------------------------------------------- DOVER
DOVER_KEYS = __import__("pathlib").Path(__file__).with_name("data") / "dover_keys.txt"


@pytest.fixture(scope="module")
def dover_net():
    """Our DOVER with random stand-in weights, built once (58 M values)."""
    from keep.metrics.dover import DOVER

    torch.manual_seed(0)
    net = DOVER().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def test_dover_loads_the_released_key_layout_strictly(dover_net, tmp_path):
    """Every key of the reference model's state dict (the layout of DOVER.pth and DOVER++), with its shape,
    is a key of ours and nothing else: a released checkpoint loads strictly. A file of another layout is
    one line."""
    from keep.errors import KeepError
    from keep.metrics.dover import load_dover

    lines = [line.split() for line in DOVER_KEYS.read_text().splitlines() if not line.startswith("#")]
    expected = {key: tuple(int(n) for n in shape.split("x")) if shape != "-" else () for key, shape in lines}
    state = dover_net.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    dover_net.load_state_dict({k: state[k] for k in expected}, strict=True)
    wrong = tmp_path / "wrong.pth"
    torch.save({"technical_backbone.norm.weight": torch.ones(768)}, wrong)
    with pytest.raises(KeepError, match="do not fit DOVER's network: 380 missing keys") as info:
        load_dover(wrong)
    assert "\n" not in str(info.value)


def test_dover_views_and_a_tiny_forward(dover_net):
    """The views DOVER samples (frame runs, fragments, the resized aesthetic view) and a forward of the whole
    network on small inputs with random weights; the fusion as the reference code computes it."""
    from keep.metrics.dover import frame_indices, fuse, sample_views

    rng = np.random.default_rng(0)
    runs = frame_indices(200, 32, 3, 2, rng)  # 3 runs of 32 frames 2 apart, each inside its third
    assert runs.shape == (96,) and all(np.diff(runs.reshape(3, 32), axis=1).ravel() == 2)
    assert all(66 * i <= r[0] and r[-1] < 66 * (i + 1) for i, r in enumerate(runs.reshape(3, 32)))
    assert list(frame_indices(40, 32, 3, 2, rng)[:3]) == [0, 2, 4] and frame_indices(40, 32, 3, 2, rng).max() < 40
    clip = np.stack([np.roll(cv2.resize(skimage.data.astronaut(), (224, 224)), t, axis=1) for t in range(40)])
    aesthetic, technical = sample_views(clip, np.random.default_rng(0))
    assert aesthetic.shape == (1, 3, 32, 224, 224) and technical.shape == (3, 3, 32, 224, 224)
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    pixels = technical.permute(0, 2, 3, 4, 1) * std + mean  # at 224 the 7x7 fragments tile the frame exactly
    runs = frame_indices(40, 32, 3, 2, np.random.default_rng(0))  # 40 frames: each third starts at its start
    torch.testing.assert_close(pixels.reshape(96, 224, 224, 3), torch.from_numpy(clip[runs]).float(), atol=1e-3, rtol=0)

    with torch.no_grad():
        a, t = dover_net(aesthetic[:, :, :8, :64, :64], technical[:2, :, :8, :64, :64])
    assert torch.isfinite(a) and torch.isfinite(t)
    assert fuse(-0.08285, 0.1107) == 0.5 and fuse(float(a), float(t)) == pytest.approx(
        1 / (1 + np.exp(-(0.6104 * (float(t) - 0.1107) / 0.07355 + 0.3896 * (float(a) + 0.08285) / 0.03774)))
    )
