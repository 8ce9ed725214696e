"""Alignment, paste-back, tracking, smoothing and the offline dlib detector (issue #3)."""

from __future__ import annotations

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
