import pytest
import torch

from keep.errors import KeepError, WeightsUnavailable
from keep.losses import (
    LPIPSLoss,
    PatchDiscriminator2D,
    PatchDiscriminator3D,
    adaptive_weight,
    build_discriminator,
    charbonnier_loss,
    code_cross_entropy,
    gan_losses,
    l1_loss,
    latent_mse,
    temporal_feature_loss,
)


def test_pixel_latent_code_losses():
    x = torch.zeros(2, 3, 8, 8)
    assert l1_loss(x + 0.5, x).item() == pytest.approx(0.5)
    assert latent_mse(x + 2, x).item() == pytest.approx(4.0)
    logits = torch.full((2, 3, 16, 5), -20.0)
    idx = torch.randint(0, 5, (6, 16))
    logits.view(6, 16, 5).scatter_(-1, idx[..., None], 20.0)
    assert code_cross_entropy(logits, idx).item() < 1e-6  # (B, T, hw, K) against (B*T, hw)
    assert code_cross_entropy(-logits, idx).item() > 10


def test_temporal_loss_zero_for_consistent_motion():
    torch.manual_seed(0)
    frame = torch.randn(1, 1, 8, 16, 16)
    still = frame.expand(1, 3, 8, 16, 16)
    zero_flow = torch.zeros(1, 2, 2, 64, 64)
    assert temporal_feature_loss(still, zero_flow).item() < 1e-6
    moving = torch.randn(1, 3, 8, 16, 16)
    assert temporal_feature_loss(moving, zero_flow).item() > 0.5
    # features move one feature pixel right per frame; the image flow t -> t-1 is -4 px in x at 64 px
    base = torch.randn(1, 8, 16, 20)
    shifted = torch.stack([base[..., 2 - t : 18 - t] for t in range(3)], dim=1)
    flow = torch.zeros(1, 2, 2, 64, 64)
    flow[:, :, 0] = -4.0
    assert temporal_feature_loss(shifted, flow).item() < 0.3 * temporal_feature_loss(shifted, zero_flow).item()


@pytest.mark.parametrize("penalty", ["l1", "charbonnier"])
def test_temporal_loss_is_zero_on_a_static_clip_and_grows_with_misalignment(penalty):
    """Decoder features of a clip whose content moves by `shift` feature pixels per frame, judged with a zero
    flow (the GT clip does not move): 0 for a static clip, and larger the further the frames are misaligned."""
    torch.manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.randn(1, 8, 40, 48), 3, 1, 1)  # smooth, like features
    zero_flow = torch.zeros(1, 3, 2, 64, 64)
    losses = []
    for shift in (0, 1, 2, 4):
        clip = torch.stack([base[..., 8:24, 8 + t * shift : 24 + t * shift] for t in range(4)], dim=1)
        losses.append(temporal_feature_loss(clip, zero_flow, penalty=penalty).item())
    assert losses[0] < 1e-5 and losses[0] < losses[1] < losses[2] < losses[3]
    with pytest.raises(KeepError, match="charbonnier"):
        temporal_feature_loss(clip, zero_flow, penalty="l2")


def test_charbonnier_is_a_smooth_l1():
    x = torch.tensor([0.0, 0.5, -2.0])
    assert charbonnier_loss(x, torch.zeros(3)).item() == pytest.approx(2.5 / 3, rel=1e-5)
    assert charbonnier_loss(x, x, eps=1e-6).item() == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize("name", ["hinge", "nonsaturating"])
def test_gan_losses_by_name(name):
    d_loss, g_loss = gan_losses(name)
    good_real, good_fake = torch.full((4,), 5.0), torch.full((4,), -5.0)
    assert d_loss(good_real, good_fake) < d_loss(good_fake, good_real)
    assert g_loss(good_real) < g_loss(good_fake)
    with pytest.raises(KeepError, match="hinge"):
        gan_losses("wgan")


def test_discriminators_shapes_and_names():
    assert PatchDiscriminator2D(nf=8, layers=2)(torch.randn(2, 3, 32, 32)).shape[:2] == (2, 1)
    out = PatchDiscriminator3D(nf=8, layers=2)(torch.randn(1, 3, 4, 32, 32))
    assert out.shape[:3] == (1, 1, 4)
    with pytest.raises(KeepError, match="patch2d"):
        build_discriminator("stylegan", nf=8, layers=2)


def test_adaptive_weight_balances_gradients():
    last = torch.nn.Parameter(torch.ones(3))
    rec = (last * 2).sum()
    gan = (last * 0.5).sum()
    assert adaptive_weight(rec, gan, last).item() == pytest.approx(4.0, rel=1e-3)
    # data parallel: the weight of the averaged gradients, not of this process's own
    other = torch.stack([torch.full((3,), 4.0), torch.full((3,), 0.5)])  # another process's rec / gan grads
    reduce = lambda grads: (grads + other) / 2  # noqa: E731
    assert adaptive_weight(rec, gan, last, reduce=reduce).item() == pytest.approx(6.0, rel=1e-3)


def test_lpips_offline_says_which_file(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("KEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailable, match="vgg16-397923af.pth.*download.pytorch.org"):
        LPIPSLoss(net="vgg")


def test_lpips_loads_backbone_from_registry_file(monkeypatch, tmp_path):
    import torchvision

    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")
    loss = LPIPSLoss(net="alex")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert loss(x, x).item() < 1e-6
    assert loss(x, -x).item() > 0
    assert not any(p.requires_grad for p in loss.parameters())
