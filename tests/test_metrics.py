"""Benchmark metrics (docs/benchmark.md): PSNR/SSIM against scikit-image, LPIPS, IDS, AKD, TWE."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import skimage.metrics
import torch
import torchvision

from keep.errors import KeepError, WeightsUnavailable
from keep.metrics.identity import build_identity, identity_similarity
from keep.metrics.landmarks import DlibLandmarks68, akd
from keep.metrics.lpips import build_lpips
from keep.metrics.psnr_ssim import psnr, ssim
from keep.metrics.temporal import consistent_flows, fluctuation, warping_error

TEMPLATE = np.array(
    [[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]], np.float32
)


def align(img: np.ndarray, size: int = 512) -> np.ndarray:
    """Align a photo's face to the FFHQ template (keep/face/align.py) with dlib's detector + 68 points."""
    import dlib

    from keep.face.dlib_models import dlib_model_path

    rects = dlib.get_frontal_face_detector()(img, 2)
    assert rects, "test photo: no face found"
    shape = dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))(img, rects[0])
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    five = np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
    matrix, _ = cv2.estimateAffinePartial2D(five, TEMPLATE * size / 512, method=cv2.LMEDS)
    return cv2.warpAffine(img, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return align(skimage.data.astronaut())  # Eileen Collins, a real photo shipped with scikit-image


@pytest.fixture(scope="module")
def carphone(shared_dir) -> list[np.ndarray]:
    import av

    with av.open(str(shared_dir / "media" / "carphone_pristine.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(60), container.decode(video=0), strict=False)]
    return [align(frames[i]) for i in (0, 30, 59)]  # one person, three moments


# ------------------------------------------------------------------------------------ PSNR / SSIM
def test_identical_images_psnr_inf_ssim_one(astronaut):
    assert psnr(astronaut, astronaut) == float("inf")
    assert ssim(astronaut, astronaut) == pytest.approx(1.0, abs=1e-12)


def test_known_noise_gives_expected_psnr():
    rng = np.random.default_rng(0)
    ref = rng.integers(20, 236, size=(64, 48, 3)).astype(np.uint8)
    signs = rng.choice([-1, 1], size=ref.shape)
    noisy = (ref.astype(int) + 5 * signs).astype(np.uint8)  # every value off by exactly 5: MSE = 25
    assert psnr(noisy, ref) == pytest.approx(10 * np.log10(255**2 / 25), abs=1e-9)  # 34.15 dB
    assert psnr(noisy, ref, y_channel=True) > psnr(noisy, ref)  # luma averages the +-5 of the channels


def test_psnr_ssim_match_scikit_image(astronaut):
    rng = np.random.default_rng(1)
    ref = astronaut[::4, ::4]
    noisy = np.clip(ref + rng.normal(0, 12, ref.shape), 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(ref, (7, 7), 2.0)
    for img in (noisy, blurred):
        expected_psnr = skimage.metrics.peak_signal_noise_ratio(ref, img, data_range=255)
        expected_ssim = skimage.metrics.structural_similarity(
            ref, img, data_range=255, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert psnr(img, ref) == pytest.approx(expected_psnr, abs=1e-9)
        assert ssim(img, ref) == pytest.approx(expected_ssim, abs=1e-5)
    assert ssim(noisy, ref) < 0.9 and ssim(blurred, ref) < 0.95


def test_psnr_ssim_reject_bad_shapes():
    with pytest.raises(KeepError, match="same shape"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(KeepError, match="11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


# ------------------------------------------------------------------------------------------ LPIPS
def test_lpips_backbone_unavailable_offline_says_where(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEP_OFFLINE", "1")
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("KEEP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="alexnet-owt-7be5be79.pth.*download.pytorch.org"):
        build_lpips("alex")
    with pytest.raises(KeepError, match="choose one of"):
        build_lpips("resnet")


def test_lpips_with_local_backbone_identical_is_zero(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    net = build_lpips("alex", backbone_weights=path)
    assert torch.equal(net.net.slice1[0].weight, torch.load(path)["features.0.weight"])  # backbone loaded
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert net(x, x).abs().max().item() == 0.0
    assert (net(x, x.flip(-1)) > 0).all()
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(KeepError, match="not a torchvision backbone"):
        build_lpips("alex", backbone_weights=tmp_path / "bad.pth")


def test_lpips_real_backbone_if_present(astronaut):
    try:
        net = build_lpips("alex")
    except WeightsUnavailable as exc:
        pytest.skip(f"LPIPS unavailable: {str(exc)[:80]}")
    x = torch.from_numpy(astronaut[::2, ::2].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    assert net(x, x).item() == 0.0 and 0.05 < net(x, blurred).item() < 1.0


# ---------------------------------------------------------------------------------------- IDS / AKD
def arcface_or_none():
    try:
        return build_identity(("arcface",))[0]
    except KeepError:
        return None


@pytest.mark.parametrize("name", ["dlib", "arcface"])
def test_identity_separates_same_person_from_different_people(carphone, astronaut, name):
    if name == "arcface" and arcface_or_none() is None:
        pytest.skip("ArcFace weights (recognition_arcface_ir_se50.pth) not available here")
    embed, used, _ = build_identity((name,))
    embeddings = [embed(f) for f in carphone]  # one person, three moments
    other = embed(astronaut)
    assert identity_similarity(embeddings[0], embeddings[0]) == pytest.approx(1.0)
    same_scores = [identity_similarity(embeddings[i], embeddings[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    other_scores = [identity_similarity(e, other) for e in embeddings]
    assert min(same_scores) > max(other_scores) + 0.05, (used, same_scores, other_scores)


def test_identity_unknown_or_unavailable_names(monkeypatch, tmp_path):
    with pytest.raises(KeepError, match="choose from"):
        build_identity("facenet")
    for var in ("KEEP_WEIGHTS_DIR", "KEEP_CACHE_DIR", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path))
    with pytest.raises(KeepError, match="ArcFace is unavailable.*recognition_arcface_ir_se50.pth"):
        build_identity(("arcface",))
    embed, name, skipped = build_identity(("arcface", "dlib"))  # falls back, saying why
    assert "dlib" in name and "recognition_arcface_ir_se50.pth" in skipped["arcface"]


def test_arcface_network_loads_its_layout_strictly(tmp_path, astronaut):
    from keep.metrics.arcface import ArcFaceIdentity, ArcFaceIRSE50

    torch.manual_seed(0)
    net = ArcFaceIRSE50()
    assert sum(p.numel() for p in net.parameters()) == 43_797_696  # IR-SE50 with a 512-D head
    path = tmp_path / "arcface.pth"
    torch.save(net.state_dict(), path)
    embed = ArcFaceIdentity(weights=str(path))
    embedding = embed(astronaut)
    assert embedding.shape == (512,) and np.linalg.norm(embedding) == pytest.approx(1.0)
    assert ArcFaceIdentity.crop(astronaut).shape == (112, 112, 3)
    state = net.state_dict()
    state.pop("output_layer.3.weight")
    torch.save(state, path)
    with pytest.raises(KeepError, match="do not fit IR-SE50"):
        ArcFaceIdentity(weights=str(path))


def test_akd_identical_zero_and_follows_a_shift(astronaut):
    landmarks = DlibLandmarks68()
    points = landmarks(astronaut)
    assert points.shape == (68, 2)
    assert akd(landmarks(astronaut.copy()), points) == 0.0
    shifted = np.roll(astronaut, 6, axis=1)  # face moves 6 px right inside the same box
    distance = akd(landmarks(shifted), points)
    assert 3.0 < distance < 9.0, distance
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)  # coordinates back at 512
    assert akd(landmarks(small), points) < 8.0


# ---------------------------------------------------------------------------------------------- TWE
def test_warping_error_static_zero_flicker_positive():
    from keep.flow import build_flow

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8), (0, 0), 2)
    clip = np.stack([np.roll(base, t, axis=1) for t in range(4)])  # moves 1 px per frame
    flows, valid = consistent_flows(clip, build_flow("dis"))
    assert flows.shape == (3, 2, 64, 64) and valid.float().mean() > 0.5
    assert (
        warping_error(np.repeat(base[None], 4, 0), *consistent_flows(np.repeat(base[None], 4, 0), build_flow("dis")))
        < 1e-8
    )
    flicker = np.clip(clip + rng.normal(0, 10, clip.shape), 0, 255).astype(np.uint8)
    assert warping_error(flicker, flows, valid) > 5 * warping_error(clip, flows, valid)
    assert np.isnan(warping_error(clip[:1], flows[:0], valid[:0]))


def test_fluctuation_is_population_std():
    assert fluctuation([1.0, 3.0]) == 1.0
    assert fluctuation([0.5] * 5) == 0.0
