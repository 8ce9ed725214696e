"""The pipeline's parts on their own (docs/inference.md, speed at 1080p): batched tracks, track states through
gaps, batched detection, the Real-ESRGAN background upsampler, face upsampling and boxes."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_network import tiny

from keep.archs.rrdbnet import RRDBNet
from keep.background import BicubicUpsampler, RealESRGANUpsampler, build_upsampler, load_rrdbnet
from keep.face.align import (
    align_face,
    crop_corners,
    draw_box,
    estimate_affine,
    feathered_mask,
    paste_face,
    template,
)
from keep.face.detectors import Detection
from keep.flow import build_flow
from keep.pipeline.faces import FaceStage
from keep.pipeline.items import FaceFrame, FramePool, FrameRef, Job
from keep.pipeline.options import RunOptions
from keep.pipeline.restore import RestoreStage
from keep.pipeline.stage import FreeSlots
from keep.restorer import Restorer
from keep.streaming import StreamingRestorer
from keep.video import open_input

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: see conftest.one_thread


def frames(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, 64, 64, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------------ batched tracks
@pytest.mark.parametrize("gain_context", [0, 2])
def test_batched_tracks_equal_each_track_alone(gain_context):
    """Three tracks over three windows (one joins late, one window shorter): per track, the codes of that
    track restored alone and the output within 1e-3."""
    model = Restorer(tiny(), build_flow("dis"))
    clips = {0: frames(9, 1), 1: frames(9, 2), 7: frames(5, 3)}  # track 7 appears in the second window
    windows = [  # (track -> (first, last)) per window
        {0: (0, 4), 1: (0, 4)},
        {0: (4, 7), 1: (4, 7), 7: (0, 3)},
        {0: (7, 9), 1: (7, 9), 7: (3, 5)},
    ]
    batched = StreamingRestorer(model, gain_context=gain_context)
    alone = {track: StreamingRestorer(model, gain_context=gain_context) for track in clips}
    calls = []
    original = model.network.run
    counted = lambda lq, *a, **k: calls.append(lq.shape[0]) or original(lq, *a, **k)  # noqa: E731
    for window in windows:
        model.network.run = counted
        results = batched.step({t: clips[t][a:b] for t, (a, b) in window.items()})
        model.network.run = original
        assert results.keys() == window.keys()
        for track, (a, b) in window.items():
            reference = alone[track].step({track: clips[track][a:b]})[track]
            assert torch.equal(results[track].idx, reference.idx)
            torch.testing.assert_close(results[track].out, reference.out, atol=1e-3, rtol=0)
    # window 1: one call for 2 tracks; window 2: 0 and 1 continue, 7 starts -> 2 calls; window 3: one call
    assert calls == [2, 2, 1, 3]


@pytest.mark.parametrize("mode", ["reset", "released"])
def test_batched_tracks_without_carry(mode):
    """`reset` and `released` batch tracks too; `released` pads a short window to the full one from the
    track's previous window (reflection circle), so windows of unequal length share one call."""
    model = Restorer(tiny(), build_flow("dis"))
    clips = {0: frames(6, 1), 1: frames(5, 2)}
    streams = StreamingRestorer(model, window=3, mode=mode)
    calls = []
    original = model.network.run
    model.network.run = lambda lq, *a, **k: calls.append(tuple(lq.shape[:2])) or original(lq, *a, **k)
    streams.step({0: clips[0][:3], 1: clips[1][:3]})
    second = streams.step({0: clips[0][3:], 1: clips[1][3:]})
    model.network.run = original
    assert second[1].out.shape[0] == 2  # padding outputs dropped
    alone = model.run(clips[0][None, 3:]).out[0]
    torch.testing.assert_close(second[0].out, alone, atol=1e-3, rtol=0)  # a fresh clip: no state carried
    if mode == "released":
        assert calls == [(2, 3), (2, 3)]
        padded = model.run(clips[1][None, [3, 4, 2]]).out[0, :2]  # frames 3, 4 and then 2 (previous window)
        torch.testing.assert_close(second[1].out, padded, atol=1e-3, rtol=0)
    else:
        assert calls == [(2, 3), (1, 3), (1, 2)]


def test_track_state_lives_while_the_tracker_keeps_the_track():
    model = Restorer(tiny(), build_flow("dis"))
    pool = FramePool(4, 96, 96)
    pool.frames[:] = np.random.default_rng(0).integers(0, 255, pool.frames.shape, dtype=np.uint8)
    landmarks = template(64) + 16
    stage = RestoreStage(model, window=2)
    stage.start(Job(Path("clip.mp4"), pool, None, RunOptions()), FreeSlots(len(pool)))

    def push(index: int, faces: dict, live: set) -> list:
        return stage.push(FaceFrame(index, index % 4, index, faces, frozenset(live)))

    push(0, {3: landmarks}, {3})
    out = push(1, {3: landmarks}, {3})
    assert [len(f.faces) for f in out] == [1, 1] and 3 in stage.streams
    push(2, {}, {3})  # a window without the face, but the tracker still keeps track 3: state kept
    push(3, {}, {3})
    assert 3 in stage.streams
    push(4, {3: landmarks}, {3})
    push(5, {}, set())  # the tracker dropped it after frame 4
    push(6, {}, set())
    push(7, {}, set())
    assert 3 not in stage.streams
    assert stage.stats()["restored_frames"] == {3: 3}


# ------------------------------------------------------------------------------------------ detection
class BatchDetector:
    name = "fake"

    def __init__(self):
        self.batches = []

    def __call__(self, rgb):
        raise AssertionError("detect_batch should be used")

    def detect_batch(self, rgbs):
        self.batches.append(len(rgbs))
        box = np.array([10.0, 10.0, 60.0, 60.0])
        big = Detection(box, 0.9, template(64) * 50 / 64 + 10)
        small = Detection(box / 10, 0.9, template(64) / 64)
        return [[big, small] for _ in rgbs]


def test_face_stage_uses_detect_batch_and_counts_small_faces():
    detector = BatchDetector()
    pool = FramePool(32, 80, 80)
    stage = FaceStage(detector, batch=4)
    stage.start(
        Job(Path("clip.mp4"), pool, None, RunOptions(min_face=16, max_gap=2, smooth_sigma=0)), FreeSlots(len(pool))
    )
    out = [f for i in range(10) for f in stage.push(FrameRef(i, i, i))] + stage.finish()
    assert detector.batches == [4, 4, 2]
    assert [f.index for f in out] == list(range(10)) and all(list(f.faces) == [0] for f in out)
    assert stage.stats()["small_faces_skipped"] == 10


# ------------------------------------------------------------------------------------------ background
def test_rrdbnet_has_the_released_x2plus_layout():
    state = RRDBNet(scale=2).state_dict()
    assert len([k for k in state if k.endswith("weight")]) == 1 + 23 * 15 + 5
    assert state["conv_first.weight"].shape == (64, 12, 3, 3)  # pixel-unshuffled input
    assert state["body.22.rdb3.conv5.weight"].shape == (64, 64 + 4 * 32, 3, 3)
    assert state["conv_last.weight"].shape == (3, 64, 3, 3)


def test_tiled_upsampler_equals_untiled():
    torch.manual_seed(0)
    network = RRDBNet(num_block=2)  # stand-in weights
    x = torch.rand(1, 3, 50, 70)
    whole = RealESRGANUpsampler(network).upsample(x)
    tiled = RealESRGANUpsampler(network, tile=24, tile_pad=10).upsample(x)
    assert whole.shape == (1, 3, 100, 140)
    assert (whole - tiled).abs().max() < 1e-3


def test_realesrgan_loads_params_ema_and_scales(tmp_path):
    torch.manual_seed(0)
    network = RRDBNet()
    torch.save({"params_ema": network.state_dict()}, tmp_path / "x2.pth")
    loaded = load_rrdbnet(str(tmp_path / "x2.pth"))
    original, restored = network.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys() and all(torch.equal(original[k], restored[k]) for k in original)
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(Exception, match="not a Real-ESRGAN"):
        load_rrdbnet(str(tmp_path / "bad.pth"))
    small = RealESRGANUpsampler(RRDBNet(num_block=1))
    rgb = np.random.default_rng(0).integers(0, 255, (15, 21, 3), dtype=np.uint8)  # odd size
    assert small(rgb, 2).shape == (30, 42, 3) and small(rgb, 1).shape == (15, 21, 3)
    assert small(rgb, 3).shape == (45, 63, 3)


def test_realesrgan_without_weights_falls_back_to_bicubic(caplog):
    with caplog.at_level(logging.WARNING):
        upsampler = build_upsampler("realesrgan")
    assert isinstance(upsampler, BicubicUpsampler)
    lines = [r.getMessage() for r in caplog.records if "realesrgan" in r.getMessage()]
    assert len(lines) == 1 and "RealESRGAN_x2plus.pth" in lines[0] and "bicubic" in lines[0]


# ------------------------------------------------------------------------------------------ paste
SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "carphone_sample.mp4"
CARPHONE_LANDMARKS = [[80.69, 58.52], [101.44, 56.86], [93.02, 70.04], [83.58, 79.83], [101.72, 78.56]]  # frame 0


def full_frame_paste(background, face, matrix, mask, upscale):
    """paste_face as first written: the face and mask warped over the whole frame, blended in float32."""
    scaled = matrix.copy()
    scaled[:, :2] /= upscale
    inverse, size = cv2.invertAffineTransform(scaled), background.shape[1::-1]
    alpha = cv2.warpAffine(mask.astype(np.float32), inverse, size, flags=cv2.INTER_LINEAR, borderValue=0)
    warped = cv2.warpAffine(face, inverse, size, flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float32)
    base = background.astype(np.float32)
    return np.rint(base + alpha[..., None] * (warped - base)).astype(np.uint8), alpha


@pytest.mark.parametrize("upscale", [1, 2])
@pytest.mark.parametrize("mask_kind", ["feather", "irregular"])
@pytest.mark.parametrize("place", ["inside", "past_the_edge"])
def test_paste_in_the_face_box_equals_the_full_frame_paste(upscale, mask_kind, place):
    """On a real frame (the carphone sample at 5x, a 512 px crop as the released network's): the paste
    restricted to the face's box equals the full-frame computation within 1 grey level on under 1% of the
    face's pixels, and every pixel the full-frame mask leaves at 0 is the background's, bit for bit."""
    frame = next(iter(open_input(SAMPLE))).rgb
    frame = cv2.resize(frame, (frame.shape[1] * 5, frame.shape[0] * 5), interpolation=cv2.INTER_CUBIC)
    landmarks = np.array(CARPHONE_LANDMARKS) * 5 - ([400, 0] if place == "past_the_edge" else [0, 0])
    matrix = estimate_affine(landmarks, 512)
    face = 255 - align_face(frame, matrix, 512)  # inverted: the largest changes, the most rounding at stake
    mask = feathered_mask(512)
    if mask_kind == "irregular":  # a parsing-like mask: a soft ellipse with a hole, times the square
        blob = cv2.ellipse(np.zeros((512, 512), np.float32), (256, 300), (170, 220), 15, 0, 360, 1.0, -1)
        blob = cv2.circle(blob, (200, 250), 30, 0.0, -1)
        mask = cv2.GaussianBlur(blob, (0, 0), 8) * mask
    background = frame if upscale == 1 else cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    out = paste_face(background, face, matrix, mask=mask, upscale=upscale)
    reference, alpha = full_frame_paste(background, face, matrix, mask, upscale)
    diff = np.abs(out.astype(int) - reference).max(axis=-1)  # (H, W): the largest over the channels
    assert diff.max() <= 1 and (diff > 0).sum() < 0.01 * (alpha > 0).sum()
    assert (out[alpha == 0] == background[alpha == 0]).all() and (alpha > 0).any()
    assert (out[alpha > 0.5] != background[alpha > 0.5]).any()  # the face was pasted


def test_paste_of_an_upsampled_face_matches_the_plain_paste():
    """A face upsampled k times pasted with k x the matrix lands where the plain face does."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    matrix = estimate_affine(template(64) * 0.9 + [40, 20], 64)
    face = np.full((64, 64, 3), 200, np.uint8)
    plain = paste_face(background, face, matrix, mask=feathered_mask(64), upscale=2)
    big = paste_face(background, np.full((128, 128, 3), 200, np.uint8), matrix * 2, mask=feathered_mask(128), upscale=2)
    assert np.abs(plain.astype(int) - big).mean() < 1.0
    outside = np.ones(plain.shape[:2], bool)
    (left, top), (right, bottom) = (crop_corners(matrix, 64) * 2).min(0), (crop_corners(matrix, 64) * 2).max(0)
    outside[int(top) : int(bottom) + 1, int(left) : int(right) + 1] = False
    assert (plain[outside] == background[outside]).all() and (big[outside] == background[outside]).all()


def test_draw_box_outlines_the_crop():
    image = np.zeros((100, 120, 3), np.uint8)
    corners = np.array([[20.0, 20.0], [80.0, 20.0], [80.0, 80.0], [20.0, 80.0]])
    draw_box(image, corners, track=2)
    assert image[20, 50].any() and image[50, 80].any() and not image[50, 50].any()


def test_cpu_workers_give_way_to_the_restore_stage():
    """With the network on the CPU the worker processes run at a lower priority than the restore stage
    (the critical path); threads and GPU runs keep equal priority."""
    import os

    from keep.pipeline.compose import ComposeSpec
    from keep.pipeline.decode import DecodeSpec
    from keep.pipeline.faces import FacesSpec
    from keep.pipeline.runner import Runner
    from keep.pipeline.workers import WORKER_NICENESS, worker_niceness

    assert worker_niceness("cpu") == WORKER_NICENESS > 0
    assert worker_niceness("cuda") == 0
    groups = [
        ("front", [DecodeSpec(), FacesSpec(detector="retinaface_mobilenet", device="cpu", detect_size=0)]),
        ("main", []),
        ("back", [ComposeSpec(size=64, mask="feather", device="cpu", bg_upsampler="bicubic", bg_tile=0,
                              face_upsample=False)]),
    ]  # fmt: skip
    runner = Runner(groups, mode="processes", window=4, device="cpu")
    try:
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        for worker in runner.workers.values():
            assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(ours + WORKER_NICENESS, 19)
    finally:
        runner.close()


def test_opencv_threads_follow_torch_and_the_writer_takes_a_thread_count(tmp_path, one_thread):
    """OpenCV's threads follow torch's budget (keep.threads.set_threads); VideoWriter passes a thread count to
    libx264 (0: x264's automatic frame threads, what the pipeline uses: docs/inference.md, encode stage)."""
    from fractions import Fraction

    from keep.threads import set_threads
    from keep.video import VideoWriter

    cv_threads = cv2.getNumThreads()
    try:
        assert set_threads(1) == 1 and cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(cv_threads)
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    for threads in (1, 0):
        path = tmp_path / f"t{threads}.mp4"
        writer = VideoWriter(path, width=80, height=64, fps=Fraction(25), threads=threads)
        for n in range(3):
            writer.write(rgb, n)
        writer.close()
        assert (b" threads=1 " in path.read_bytes()) == (threads == 1)  # x264's settings, stored in the stream
        assert len(list(open_input(path))) == 3


# ------------------------------------------------------------------------------------------ settings
def test_the_apps_kept_pipeline_takes_each_runs_settings_and_is_built_again_only_for_its_own(tmp_path):
    """keep.webapp.Jobs keeps its pipeline: a job that changes only what its run chooses (`RunOptions`: fidelity,
    upscale) runs on the same network and stage workers, and its output changes as asked (fidelity 0 restores
    other faces, upscale 2 doubles the size, the first settings again give the first output bit for bit); one
    that changes what the pipeline is built from (`BuildOptions`: the detector, the flow) needs a new one."""
    from dataclasses import replace

    from footage import sample_frames, write_clip

    import keep
    from keep.pipeline import PipelineOptions
    from keep.webapp import Jobs, Limits

    root = tmp_path / "app"
    (root / "upload").mkdir(parents=True)
    clip = write_clip(root / "upload" / "clip.mp4", sample_frames(3))  # the face of the sample, 176x144
    keep.save_checkpoint(tmp_path / "tiny.pth", tiny())  # its CFT is no identity: the fidelity changes faces
    jobs = Jobs(root, Limits(max_frames=100, max_pixels=10**6, max_seconds=60))
    base = PipelineOptions(
        model=str(tmp_path / "tiny.pth"), detector="dlib", flow="dis", mask="feather", overlap="threads"
    )

    def restored(options: PipelineOptions) -> np.ndarray:
        result = jobs.run("session", clip, options, lambda done, total, what: None)
        return np.stack([frame.rgb for frame in open_input(result.video)])

    try:
        first = restored(base)
        pipeline, model, runner = jobs.pipeline, jobs.pipeline.model, jobs.pipeline.runner
        workers = dict(runner.workers)
        quality = restored(replace(base, fidelity=0.0))
        doubled = restored(replace(base, upscale=2))
        again = restored(base)
        assert jobs.pipeline is pipeline and pipeline.model is model and pipeline.runner is runner
        assert runner.workers == workers and all(worker.is_alive() for worker in workers.values())
        assert jobs.builds == 1 and pipeline.builds == 1
        assert first.shape == quality.shape == (3, 144, 176, 3) and np.abs(quality.astype(int) - first).max() > 8
        assert doubled.shape == (3, 288, 352, 3)
        assert np.array_equal(again, first)  # nothing of a run's settings stays behind
        per_run = dict(faces="0", draw_box=True, crf=30, preset="veryfast", min_face=8.0, max_gap=2, gain_context=2)
        assert jobs._kept(replace(base, **per_run)) is pipeline
        for built_once in (dict(detector="auto"), dict(flow="gmflow"), dict(face_upsample=True), dict(window=8)):
            assert jobs._kept(replace(base, **built_once)) is None, built_once  # `_pipeline` builds a new one
    finally:
        jobs.close()
