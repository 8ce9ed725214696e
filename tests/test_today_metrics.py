"""Metrics of today's face-video tables (DVFace Tables 1-2): each against an independent computation.

DISTS, MUSIQ and NIQE against `pyiqa` itself, FVD against `cd-fvd`, both loaded with the same random
stand-in weights (the real files cannot be downloaded here); E*warp and VIDD against direct numpy
computations; E*warp and VIDD on real footage (the carphone clips).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from keep.errors import KeepError
from keep.metrics.ewarp import ewarp, ewarp_error, ewarp_flows, occlusion_mask
from keep.metrics.fvd import I3D, clip_windows, frechet_distance, i3d_features
from keep.metrics.identity import vidd

pytestmark = pytest.mark.usefixtures("one_thread")
pyiqa = pytest.importorskip("pyiqa", reason="optional: pip install --no-deps pyiqa -r requirements-metrics.txt")


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty weights folder and caches: the metric files the test writes are the only ones found."""
    for var in ("KEEP_WEIGHTS_DIR", "KEEP_CACHE_DIR", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path))
    monkeypatch.setenv("KEEP_OFFLINE", "1")
    return tmp_path


def photos(size: int = 64) -> torch.Tensor:
    """Two real photos and a blurred copy of the first, `(3, 3, size, size)` RGB in [0, 1]."""
    astronaut = cv2.resize(skimage.data.astronaut()[20:260, 80:320], (size, size), interpolation=cv2.INTER_AREA)
    coffee = cv2.resize(skimage.data.coffee()[:, 100:500], (size, size), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    return torch.from_numpy(np.stack([astronaut, coffee, blurred])).permute(0, 3, 1, 2).float() / 255


# ------------------------------------------------------------------------------------------ DISTS / pyiqa
def test_dists_equals_pyiqa_with_the_same_weights(weights_dir, monkeypatch):
    from types import SimpleNamespace

    import pyiqa.archs.dists_arch as dists_arch
    from torchvision.models.vgg import cfgs, make_layers

    from keep.metrics.iqa import build_iqa

    torch.manual_seed(0)
    features = make_layers(cfgs["D"])  # VGG16's convolutions, random: the stand-in backbone
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, weights_dir / "vgg16-397923af.pth")
    monkeypatch.setattr(dists_arch, "models", SimpleNamespace(vgg16=lambda weights: SimpleNamespace(features=features)))
    dists_file = weights_dir / "DISTS_weights-f5e65c96.pth"
    torch.save({"alpha": torch.rand(1, 1475, 1, 1) * 0.2, "beta": torch.rand(1, 1475, 1, 1) * 0.2}, dists_file)
    ours, _ = build_iqa("dists")
    reference = pyiqa.create_metric("dists", device="cpu", pretrained_model_path=str(dists_file))
    x = photos()
    ref = x[[0, 0, 1]]
    with torch.no_grad():
        got, expected = ours(x, ref), reference(x, ref).flatten()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)  # pyiqa prints 4 decimals
    assert abs(got[0]) < 1e-5 and got[1] > 1e-3 and got[2] > 1e-3  # identical images: 0


@pytest.mark.parametrize("name", ["musiq", "niqe"])
def test_no_reference_metric_equals_pyiqa_with_the_same_weights(weights_dir, name):
    import scipy.io

    from keep.metrics.iqa import PYIQA_METRICS, build_iqa
    from keep.weights import REGISTRY

    options, registry_name, _ = PYIQA_METRICS[name]
    path = weights_dir / REGISTRY[registry_name].filename
    rng = np.random.default_rng(0)
    if name == "niqe":  # NIQE's pristine Gaussian: 36 features, a positive-definite covariance
        a = rng.normal(size=(36, 36))
        scipy.io.savemat(path, {"mu_prisparam": rng.normal(size=(1, 36)), "cov_prisparam": a @ a.T / 36 + np.eye(36)})
    else:
        torch.manual_seed(0)
        torch.save(pyiqa.archs.build_network({**options, "pretrained": False}).state_dict(), path)
    ours, _ = build_iqa(name)
    reference = pyiqa.create_metric(name, device="cpu", pretrained_model_path=str(path))
    x = photos(96)
    with torch.no_grad():
        got, expected = ours(x).flatten(), reference(x).flatten()
    torch.testing.assert_close(got.double(), expected.double(), atol=1e-4, rtol=0)


def test_missing_metric_files_are_one_line_each(weights_dir):
    from keep.metrics.iqa import build_iqa

    missing = {"dists": "vgg16-397923af.pth", "musiq": "musiq_koniq_ckpt-e95806b9.pth", "clipiqa": "RN50.pt"}
    for name, file in (missing | {"liqe": "liqe_koniq.pt"}).items():
        with pytest.raises(KeepError, match=f"{file}.*https://.*put it in") as info:
            build_iqa(name)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------- FVD
def test_frechet_distance_equals_cd_fvd():
    from cdfvd.fvd import cdfvd
    from cdfvd.utils.metric_utils import FeatureStats

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 8)), rng.normal(0.3, 1.2, size=(30, 8))
    stats = []
    for feats in (real, fake):
        s = FeatureStats(capture_mean_cov=True)
        s.append(feats.astype(np.float32))
        stats.append(s)
    expected = cdfvd.compute_fvd_from_stats(None, fake_stats=stats[1], real_stats=stats[0])
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-4)
    assert abs(frechet_distance(real, real)) < 1e-8
    assert frechet_distance(real, real + 0.5) > frechet_distance(real, real + 0.1) > 0
    assert np.isnan(frechet_distance(real[:1], fake))


def test_clip_windows_are_non_overlapping_16_frames():
    clip = np.arange(40)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    windows = clip_windows(clip)
    assert windows.shape == (2, 16, 2, 2, 3) and windows[1, 0, 0, 0, 0] == 16
    assert clip_windows(clip[:15]).shape[0] == 0


@pytest.mark.slow
def test_fvd_equals_cd_fvd_zero_on_itself_and_grows_with_degradation(shared_dir, tmp_path):
    """Our I3D + FVD vs cd-fvd's `i3d` FVD with the same random weights, on real footage (~2 min)."""
    import av
    from cdfvd.fvd import cdfvd
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

    torch.manual_seed(0)
    reference_net = InceptionI3d(400, in_channels=3)
    path = tmp_path / "i3d.pt"
    torch.save(reference_net.state_dict(), path)
    with av.open(str(shared_dir / "media" / "carphone_pristine.mp4")) as container:
        frames = np.stack(
            [f.to_ndarray(format="rgb24") for _, f in zip(range(32), container.decode(video=0), strict=False)]
        )
    real = clip_windows(frames)  # 2 windows of 16
    degraded = np.stack([np.stack([cv2.GaussianBlur(f, (0, 0), 3.0) for f in w]) for w in real])
    net = I3D(bn_eps=1e-5)  # the TATS / cd-fvd copy's batch-norm epsilon
    net.load_state_dict(torch.load(path, weights_only=True))
    net.eval()
    feats_real, feats_degraded = i3d_features(real, net), i3d_features(degraded, net)
    ours = frechet_distance(feats_real, feats_degraded)
    expected = cdfvd("i3d", ckpt_path=str(path), device="cpu").compute_fvd(real, degraded)
    assert ours == pytest.approx(expected, rel=1e-3)
    assert abs(frechet_distance(feats_real, feats_real)) < 1e-6 * max(ours, 1.0)
    assert ours > 0


# ---------------------------------------------------------------------------------------------- E*warp
def numpy_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Bilinear sample of `image` (C, H, W) at p + flow(p), zeros outside: the textbook definition."""
    _, height, width = image.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = xs + flow[0], ys + flow[1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    out = np.zeros_like(image, dtype=np.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = image[:, np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
            out += np.where(inside, weight, 0.0) * values
    return out


def test_ewarp_equals_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (40, 48, 3)).astype(np.uint8), (0, 0), 1.5)
    clip = np.stack([np.roll(base, 2 * t, axis=1) for t in range(3)])
    clip[2, 10:20, 10:20] = 255  # something appears: occluded / inconsistent there
    smooth = np.stack([cv2.GaussianBlur(rng.normal(0, 3, (40, 48)), (0, 0), 4) for _ in range(4)]).reshape(2, 2, 40, 48)
    forward = torch.from_numpy(smooth).float()
    forward[:, 0] += 2.0  # about the true motion: frame t+1 is frame t moved 2 px right
    backward = -forward.clone()
    backward[:, :, 5:15, 30:40] += 3.0  # a patch of inconsistent flow: excluded as occluded
    valid = (~occlusion_mask(forward, backward)).float()
    got = ewarp_error(clip, forward, valid, scale=1.0)
    expected_pairs = []
    for t in range(2):
        f, b = forward[t].double().numpy(), backward[t].double().numpy()
        b_at = numpy_warp(b, f)
        mismatch = ((f + b_at) ** 2).sum(0) > 0.01 * ((f**2).sum(0) + (b_at**2).sum(0)) + 0.5
        du, dv = np.zeros_like(f), np.zeros_like(f)
        du[:, :, :-1], dv[:, :-1, :] = f[:, :, :-1] - f[:, :, 1:], f[:, :-1, :] - f[:, 1:, :]
        boundary = (du**2 + dv**2).sum(0) > 0.01 * (f**2).sum(0) + 0.002
        keep = ~(mismatch | boundary)
        frame, following = (clip[t].transpose(2, 0, 1) / 255.0, clip[t + 1].transpose(2, 0, 1) / 255.0)
        diff = ((frame - numpy_warp(following, f)) ** 2).sum(0)
        expected_pairs.append(diff[keep].sum() / keep.sum())
    assert 0.2 < valid.mean() < 0.99  # both kinds of pixels are there
    assert got == pytest.approx(np.mean(expected_pairs), rel=1e-4)


def test_ewarp_static_clip_is_zero_flicker_raises_it():
    from keep.flow import build_flow

    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8), (0, 0), 2)
    static = np.repeat(base[None], 4, 0)
    assert ewarp(static, build_flow("dis")) < 1e-10
    flicker = np.clip(static + rng.normal(0, 8, static.shape), 0, 255).astype(np.uint8)
    forward, valid = ewarp_flows(static, build_flow("dis"))  # the flow of the clean clip (the GT)
    assert ewarp_error(flicker, forward, valid) > 1e-4
    assert np.isnan(ewarp(static[:1], build_flow("dis")))


# ------------------------------------------------------------------------------------------------ VIDD
def test_vidd_equals_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    embeddings = [rng.normal(size=128) * rng.uniform(0.5, 2) for _ in range(5)]
    expected = np.mean(
        [
            np.sqrt(np.sum((a / np.sqrt(a @ a) - b / np.sqrt(b @ b)) ** 2))
            for a, b in zip(embeddings[:-1], embeddings[1:], strict=True)
        ]
    )
    assert vidd(embeddings) == pytest.approx(expected, rel=1e-12)
    assert vidd([embeddings[0]] * 3) == 0.0 and np.isnan(vidd(embeddings[:1]))


# ----------------------------------------------------------------------------------------- real footage
def read_clip(path, frames: int) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack(
            [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), container.decode(video=0), strict=False)]
        )


def test_carphone_ewarp_and_vidd_rank_pristine_distorted_shuffled(shared_dir):
    """The pristine clip is steadiest, the codec-distorted one less, a frame-shuffled one least: E*warp with
    the pristine clip's flow (a test set's GT), at full size; VIDD with the offline dlib embedding.
    At the half size of STAR/DOVE's script the blurrier distorted clip scores *below* the pristine one
    (measured: 1.70 vs 1.94 x 1e-3, 12 frames, DIS): E*warp rewards smoothing (docs/benchmark.md)."""
    from keep.flow import build_flow
    from keep.metrics.identity import build_identity

    media = shared_dir / "media"
    pristine, distorted = (
        read_clip(media / "carphone_pristine.mp4", 12),
        read_clip(media / "carphone_distorted.mp4", 12),
    )
    order = np.random.default_rng(0).permutation(12)
    shuffled = pristine[order]
    forward, valid = ewarp_flows(pristine, build_flow("dis"), scale=1.0)
    errors = [ewarp_error(clip, forward, valid, scale=1.0) for clip in (pristine, distorted, shuffled)]
    assert errors[0] < errors[1] < errors[2], errors
    forward, valid = ewarp_flows(pristine, build_flow("dis"))  # half size: shuffled is still far worst
    half = [ewarp_error(clip, forward, valid) for clip in (pristine, distorted, shuffled)]
    assert max(half[:2]) * 3 < half[2], half

    # VIDD on faces aligned as a test set aligns them: one similarity per frame from the pristine frame's
    # landmarks (dlib), applied to both clips; 24 frames, so that the shuffled clip jumps between poses
    import dlib

    from keep.face.align import align_face, estimate_affine
    from keep.face.dlib_models import dlib_model_path

    pristine, distorted = (
        read_clip(media / "carphone_pristine.mp4", 24),
        read_clip(media / "carphone_distorted.mp4", 24),
    )
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))
    matrices = []
    for frame in pristine:
        pts = np.array([[q.x, q.y] for q in predictor(frame, detector(frame, 1)[0]).parts()], np.float32)
        five = np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
        matrices.append(estimate_affine(five, 256))
    embed = build_identity("dlib")[0]
    emb_p = [embed(align_face(f, m, 256)) for f, m in zip(pristine, matrices, strict=True)]
    emb_d = [embed(align_face(f, m, 256)) for f, m in zip(distorted, matrices, strict=True)]
    order = np.random.default_rng(0).permutation(24)
    scores = [vidd(emb_p), vidd(emb_d), vidd([emb_p[i] for i in order])]
    assert scores[0] < scores[1] < scores[2], scores


# ------------------------------------------------------------------------------------- the dvface table
REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
MODELS = ("dists", "clipiqa", "musiq", "niqe", "maniqa", "liqe", "fvd", "dover")


def tiny_set(root, *, gt: bool = True, frames: int = 4) -> None:
    """Two clips of a real face (scikit-image's astronaut) panning: GT 64 px and LQ 16 px (or LQ only)."""
    face = cv2.resize(skimage.data.astronaut()[20:260, 80:320], (72, 72), interpolation=cv2.INTER_AREA)
    for clip, step in (("clip_a", 1), ("clip_b", -1)):
        for t in range(frames):
            crop = np.ascontiguousarray(face[4:68, 4 + step * t : 68 + step * t, ::-1])
            for folder, image in (("GT", crop), ("LQ", cv2.resize(crop, (16, 16), interpolation=cv2.INTER_AREA))):
                if folder == "GT" and not gt:
                    continue
                (root / folder / clip).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / folder / clip / f"{t:05d}.png"), image)


def run_test_py(tmp_path, *args: str):
    import os
    import subprocess
    import sys

    empty = tmp_path / "no_weights"
    empty.mkdir(exist_ok=True)
    env = os.environ | {"KEEP_OFFLINE": "1", "KEEP_WEIGHTS_DIR": str(empty), "KEEP_CACHE_DIR": str(empty)}
    env |= {"TORCH_HOME": str(empty), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "test.py"), "-opt", str(REPO / "configs" / "test_dvface.yml"), "--device"]
    command += ["cpu", "--no_progress", "--threads", "1", "--set", f"results_dir={tmp_path / 'results'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_dvface_table_with_every_metric_model_missing_still_completes(tmp_path):
    """test.py as a user runs it, offline with no metric file anywhere: the run completes, the columns it can
    compute are filled, each missing model leaves its column n/a and one note line, the published rows follow."""
    tiny_set(tmp_path / "set")
    done = run_test_py(
        tmp_path, "--set", f"data.root={tmp_path / 'set'}", "methods=[bicubic]", "metrics.identity=[dlib]"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "results" / "dvface_vfhq" / "table.md").read_text()
    header = "| method | PSNR ↑ | SSIM ↑ | LPIPS ↓ | DISTS ↓ | CLIP-IQA ↑ | MUSIQ ↑ | NIQE ↓ | MANIQA ↑ | LIQE ↑ |"
    assert table.startswith("# Benchmark") and header in table and "| E*warp x1e-3 ↓ | VIDD ↓ |" in table
    row = next(line for line in table.splitlines() if line.startswith("| bicubic |")).split("|")[2:-1]
    assert row[0].strip() != "n/a" and row[12].strip() != "n/a" and row[13].strip() != "n/a"  # PSNR, E*warp, VIDD
    assert all(row[i].strip() == "n/a" for i in (3, 4, 5, 6, 7, 8, 10, 11))  # DISTS ... LIQE, FVD, DOVER
    notes = [line for line in table.splitlines() if line.startswith("- ")]
    for model in MODELS:
        line = next(n for n in notes if n.startswith(f"- {model}: "))
        assert "unavailable" in line, line
    assert "| KEEP (published) | 28.58 | 0.8735 |" in table and "arXiv 2604.14560" in table
    assert "Traceback" not in done.stderr


def test_real_footage_protocol_no_reference_columns_only(tmp_path):
    """A set without ground truth (LQ clips only): full-reference columns n/a, E*warp (the output's flow) and
    VIDD computed, RFV-LQ's published rows beside. NIQE's parameters are there, but pyiqa's NIQE works on
    96-px blocks and cannot score these 64-px frames: its column is n/a with the reason, the run goes on."""
    import scipy.io

    tiny_set(tmp_path / "real", gt=False)
    (tmp_path / "no_weights").mkdir()
    a = np.random.default_rng(0).normal(size=(36, 36))
    niqe = {"mu_prisparam": np.zeros((1, 36)), "cov_prisparam": a @ a.T / 36 + np.eye(36)}
    scipy.io.savemat(tmp_path / "no_weights" / "niqe_modelparameters.mat", niqe)
    args = ["--set", f"data.root={tmp_path / 'real'}", "data.gt=false", "methods=[bicubic]", "metrics.identity=[dlib]"]
    done = run_test_py(tmp_path, *args, "--set", "metrics.published=rfv_lq", "--name", "real")
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "results" / "real" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| bicubic |")).split("|")[2:-1]
    assert [c.strip() for c in row[:3]] == ["n/a"] * 3 and row[12].strip() != "n/a" and row[13].strip() != "n/a"
    assert row[6].strip() == "n/a" and "- niqe: not computed: it failed on 64x64 frames" in table
    assert "| DVFace (published) |" in table and "real footage" in table
