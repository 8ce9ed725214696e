"""Clip sampling of the training data: frame interval and reversal (docs/training.md), seeded per item."""

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from keep.data.datasets import DataConfig, FaceClipDataset
from keep.data.degradations import DegradationConfig
from keep.errors import KeepError

REPO = Path(__file__).resolve().parent.parent
OFF = DegradationConfig(scale=1, blur_prob=0, noise_prob=0, noise2_prob=0, codec_prob=0)


@pytest.fixture(scope="module")
def numbered_clips(tmp_path_factory):
    """Two clips (30 and 12 frames) whose frame i is a flat image of value 8 * i."""
    root = tmp_path_factory.mktemp("numbered")
    for name, frames in (("a", 30), ("b", 12)):
        (root / name).mkdir()
        for i in range(frames):
            cv2.imwrite(str(root / name / f"{i:04d}.png"), np.full((16, 16, 3), 8 * i, np.uint8))
    return root


def dataset(root, seed=0, **kw) -> FaceClipDataset:
    cfg = DataConfig(source="clips", path=str(root), gt_size=16, clip_length=4, hflip=False, degradation=OFF, **kw)
    return FaceClipDataset(cfg, seed=seed)


def test_intervals_and_reversal_are_drawn_per_item_and_seeded(numbered_clips):
    data = dataset(numbered_clips, intervals=(1, 2, 3, 4, 5, 6), random_reverse=True)
    keys = [(epoch, index) for epoch in range(4) for index in range(len(data))]
    orders = {key: data[key]["frame_index"].numpy() for key in keys}
    steps = Counter(int(np.diff(o)[0]) for o in orders.values())
    assert all(len(set(np.diff(o))) == 1 for o in orders.values())  # one interval per clip
    assert {abs(s) for s in steps} == {1, 2, 3, 4, 5, 6} and min(steps) < 0 < max(steps)  # both directions
    assert 0.3 < sum(c for s, c in steps.items() if s < 0) / len(keys) < 0.7
    for key, order in orders.items():  # the frames are those frames, in that order
        gt = data[key]["gt"][:, 0, 0, 0].numpy()
        assert np.allclose((gt + 1) * 127.5, 8 * order), key
    again = dataset(numbered_clips, intervals=(1, 2, 3, 4, 5, 6), random_reverse=True)
    assert all(np.array_equal(again[key]["frame_index"].numpy(), order) for key, order in orders.items())
    other = dataset(numbered_clips, seed=1, intervals=(1, 2, 3, 4, 5, 6), random_reverse=True)
    assert any(not np.array_equal(other[key]["frame_index"].numpy(), order) for key, order in orders.items())


def test_intervals_never_leave_the_clip(numbered_clips):
    data = dataset(numbered_clips, intervals=(1, 6))
    for epoch in range(6):
        for index in range(len(data)):
            order = data[(epoch, index)]["frame_index"].numpy()
            clip = data.starts[index][0]
            assert order.min() >= 0 and order.max() < (30 if clip == 0 else 12)
            if clip == 1:  # 12 frames: 4 frames at interval 6 span 19, so only interval 1 fits
                assert list(np.diff(order)) == [1, 1, 1]


def test_default_sampling_is_consecutive_and_forward(numbered_clips):
    data = dataset(numbered_clips)
    assert all(list(np.diff(data[(e, i)]["frame_index"].numpy())) == [1, 1, 1] for e in range(3) for i in range(5))
    with pytest.raises(KeepError, match=r"'intervals\[0\]' must be >= 1, got 0"):
        dataset(numbered_clips, intervals=(0,))


def test_data_paths_that_hold_no_training_data_say_what_they_are(numbered_clips, tmp_path):
    """An empty folder is not "video not found"; a folder given as a video, a file given as a
    folder, and folders without frames each get their own message naming the key."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_frames" / "clip").mkdir(parents=True)
    (tmp_path / "no_frames" / "notes.txt").write_text("not a frame")
    cases = [
        ("video", tmp_path / "empty", "data.path .*empty is an empty folder: no videos or frames"),
        ("clips", tmp_path / "empty", "is an empty folder"),
        ("video", numbered_clips, "is a folder, and data.source 'video' reads one video file.*'clips'"),
        ("clips", tmp_path / "no_frames" / "notes.txt", "is a file, and data.source 'clips' reads a folder"),
        ("clips", tmp_path / "no_frames", "holds no frames for data.source 'clips'"),
        ("images", tmp_path / "no_frames", "holds no frames for data.source 'images'"),
        ("clips", tmp_path / "missing", "data.path .*missing does not exist"),
    ]
    for source, path, message in cases:
        with pytest.raises(KeepError, match=message):
            FaceClipDataset(DataConfig(source=source, path=str(path), clip_length=1))
    with pytest.raises(KeepError, match="val.path"):
        FaceClipDataset(DataConfig(path=str(tmp_path / "empty")), section="val")


def test_the_default_data_path_is_the_sample_clip_in_the_repository():
    path = REPO / DataConfig().path
    assert path.is_file(), f"DataConfig's default path {path} is not in the repository"


# retinaface_mobilenet's five points in frame 0 of the sample (176 x 144): eyes, nose tip, mouth corners
SAMPLE_LANDMARKS = np.array([[80.69, 58.52], [101.44, 56.86], [93.02, 70.04], [83.58, 79.83], [101.72, 78.56]])


def test_a_portrait_phone_clip_is_prepared_for_training_upright(tmp_path):
    """A phone stores a portrait clip sideways with a rotation for players to apply. Training data is read
    as inference reads it (keep.video.open_input), so the clip comes out upright: aligned by
    scripts/prepare_vfhq.py and as a `video` source of the training data."""
    import importlib.util

    import footage

    from keep.data.datasets import square_resize
    from keep.face.align import align_face, estimate_affine
    from keep.image import read_image

    upright = [f[:, 40:136] for f in footage.sample_frames(2)]  # 96 x 144, portrait, a face
    raw, notes = tmp_path / "raw", tmp_path / "notes"
    raw.mkdir()
    notes.mkdir()
    phone = footage.write_clip(raw / "phone.mp4", [footage.stored(f, 3, False) for f in upright], rotation=(-90, False))
    marks = SAMPLE_LANDMARKS - [40, 0]  # VFHQ's annotation layout, in the upright frame's coordinates
    (notes / "phone.txt").write_text(
        "".join(f"{t} 0 0 96 144 " + " ".join(map(str, marks.ravel())) + "\n" for t in (0, 1))
    )
    spec = importlib.util.spec_from_file_location("prepare_vfhq", REPO / "scripts" / "prepare_vfhq.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    args = ["--input", str(raw), "--annotations", str(notes), "--out", str(tmp_path / "aligned"), "--size", "64"]
    assert prepare.main([*args, "--threads", "1"]) == 0
    aligned = read_image(tmp_path / "aligned" / "phone" / "00000000.png")
    expected = align_face(upright[0], estimate_affine(marks, 64), 64)
    assert np.abs(aligned.astype(int) - expected).mean() < 6  # H.264's loss only (read sideways: 44)

    cfg = DataConfig(source="video", path=str(phone), gt_size=64, clip_length=1, hflip=False, degradation=OFF)
    gt = (FaceClipDataset(cfg)[0]["gt"][0].permute(1, 2, 0).numpy() + 1) * 127.5
    assert np.abs(gt - square_resize(upright[0], 64)).mean() < 6  # (read sideways: 45)
