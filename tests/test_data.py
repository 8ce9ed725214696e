"""Clip sampling of the training data: frame interval and reversal (docs/training.md), seeded per item."""

from collections import Counter

import cv2
import numpy as np
import pytest

from keep.data.datasets import DataConfig, FaceClipDataset
from keep.data.degradations import DegradationConfig
from keep.errors import KeepError

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
    """Issue 19: an empty folder is not "video not found"; a folder given as a video, a file given as a
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
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / DataConfig().path
    assert path.is_file(), f"DataConfig's default path {path} is not in the repository"
