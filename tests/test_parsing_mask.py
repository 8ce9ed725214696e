"""Paste-back masks: face parsing when available, feathered square otherwise."""

import logging

import numpy as np
import pytest
import torch

from keep.errors import KeepError
from keep.face.align import feathered_mask
from keep.face.parsing import FeatherMask, ParsingMask, build_masker, labels_to_mask


def disk_labels(size=128):
    """Labels: skin disk in the middle, hair band on top, background elsewhere."""
    yy, xx = np.mgrid[0:size, 0:size]
    labels = np.zeros((size, size), np.uint8)
    labels[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = 1  # skin
    labels[: size // 6] = 17  # hair
    return labels


def test_labels_to_mask_keeps_face_drops_hair_and_edges():
    labels = disk_labels()
    mask = labels_to_mask(labels, feathered_mask(128))
    assert mask[64, 64] > 0.99  # face centre
    assert mask[5, 64] == 0 and mask[64, 5] == 0  # hair and the crop border: exactly the input
    assert mask[110, 110] < 0.01  # background
    assert mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1


def test_parsing_mask_runs_a_network_on_the_restored_face():
    calls = []

    def fake_parsenet(x):
        calls.append(tuple(x.shape))
        logits = torch.zeros(1, 19, 512, 512)
        labels = torch.from_numpy(disk_labels(512)).long()
        logits.scatter_(1, labels[None, None], 1.0)
        return logits, x

    masker = ParsingMask(fake_parsenet, size=64)
    face = np.full((64, 64, 3), 128, np.uint8)
    mask = masker(face)
    assert calls == [(1, 3, 512, 512)] and mask.shape == (64, 64)
    assert mask[32, 32] > 0.99 and mask[2, 32] == 0


def test_auto_falls_back_to_feather_offline(caplog):
    with caplog.at_level(logging.INFO):
        masker = build_masker("auto", 64)
    assert isinstance(masker, FeatherMask) and "feathered" in caplog.text
    np.testing.assert_array_equal(masker(np.zeros((64, 64, 3), np.uint8)), feathered_mask(64))


def test_explicit_parsenet_and_unknown_names_are_clear_errors():
    with pytest.raises(KeepError, match="facexlib|parsing_parsenet.pth"):
        build_masker("parsenet", 64)
    with pytest.raises(KeepError, match="auto, parsenet, feather"):
        build_masker("bisenet", 64)
