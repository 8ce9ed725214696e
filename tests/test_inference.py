"""End-to-end `inference.py` on real and generated clips, and every bad input of issue #3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_video_io import SAMPLE, make_clip, noise_frames

from inference import main
from keep.video import VideoWriter, open_input, probe, write_image

REPO = Path(__file__).resolve().parent.parent
TINY = ["--model", "preset:tiny", "--detector", "dlib", "--flow", "dis"]


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny network is latency-bound: one thread is several times faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def far_from_faces(faces_log: Path, shape: tuple[int, int], margin: int = 4) -> list[np.ndarray]:
    """Per frame, a boolean mask of the pixels at least `margin` px outside every face crop's box."""
    masks = []
    for line in faces_log.read_text().splitlines():
        far = np.ones(shape, bool)
        for face in json.loads(line)["faces"]:
            corners = np.array(face["corners"])
            left, top = np.floor(corners.min(0)).astype(int) - margin
            right, bottom = np.ceil(corners.max(0)).astype(int) + margin
            far[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = False
        masks.append(far)
    return masks


def test_carphone_end_to_end(shared_dir, tmp_path):
    source = shared_dir / "media" / "carphone_pristine.mp4"
    # crf 0: lossless H.264, so away from faces only the RGB <-> YUV 4:2:0 conversion differs
    assert main(["-i", str(source), "-o", str(tmp_path), *TINY, "--crf", "0", "--save_faces"]) == 0
    output = tmp_path / "carphone_pristine.mp4"
    src, out = probe(source), probe(output)
    for key in ("frames", "fps", "width", "height"):
        assert out[key] == src[key], key
    assert out["duration"] == pytest.approx(src["duration"], abs=0.05)
    summary = json.loads((tmp_path / "carphone_pristine_summary.json").read_text())
    assert summary["tracks"] >= 1 and summary["longest_track_coverage"] >= 0.95
    far = far_from_faces(tmp_path / "carphone_pristine_faces.jsonl", (144, 176))
    # reference: the decoded input sent through the same writer (same RGB -> YUV -> lossless path)
    reader = open_input(source)
    writer = VideoWriter(tmp_path / "ref.mp4", width=176, height=144, fps=reader.fps, time_base=reader.time_base, crf=0)
    for frame in reader:
        writer.write(frame.rgb, frame.pts)
    writer.close()
    reference, restored = decode(tmp_path / "ref.mp4"), decode(output)
    diff = [np.abs(a.astype(int) - b.astype(int)).max(-1) for a, b in zip(reference, restored, strict=True)]
    assert sum(m.sum() for m in far) > 100_000  # enough background (about 1/3 of the pixels) to mean something
    assert all((d[m] == 0).all() for d, m in zip(diff, far, strict=True))  # bit-exact away from faces
    assert (
        np.concatenate([d[~m] for d, m in zip(diff, far, strict=True)]).mean() > 5
    )  # the random network changed faces


def test_generated_clip_with_audio_upscale_and_frames(tmp_path):
    clip = tmp_path / "talk.mp4"
    make_clip(clip, [f.rgb for f, _ in zip(open_input(SAMPLE), range(12), strict=False)])
    args = ["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, "--upscale", "2", "--save_frames"]
    assert main(args) == 0
    src, out = probe(clip), probe(tmp_path / "out" / "talk.mp4")
    assert out["frames"] == src["frames"] == 12 and out["fps"] == src["fps"]
    assert (out["width"], out["height"]) == (2 * src["width"], 2 * src["height"])
    assert out["audio"] == ["aac"] and out["duration"] == pytest.approx(src["duration"], abs=0.1)
    assert len(list((tmp_path / "out" / "talk" / "frames").glob("*.png"))) == 12


def test_no_face_gives_the_input_back(tmp_path, capsys):
    clip = make_clip(tmp_path / "noface.mp4", noise_frames(6), audio=False)
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, "--crf", "0"]) == 0
    assert "no face" in capsys.readouterr().err
    reader = open_input(clip)  # reference: the input through the same lossless writer
    writer = VideoWriter(tmp_path / "ref.mp4", width=80, height=64, fps=reader.fps, time_base=reader.time_base, crf=0)
    for frame in reader:
        writer.write(frame.rgb, frame.pts)
    writer.close()
    after = decode(tmp_path / "out" / "noface.mp4")
    assert len(after) == 6 and (np.stack(after) == np.stack(decode(tmp_path / "ref.mp4"))).all()


def test_odd_sized_grayscale_frames_and_one_image(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    gray = next(iter(open_input(SAMPLE))).rgb.mean(-1).astype(np.uint8)[:143, :175]
    for i in range(2):
        write_image(folder / f"{i:02d}.png", np.repeat(gray[:, :, None], 3, axis=2))
    assert main(["-i", str(folder), "-o", str(tmp_path / "out"), *TINY]) == 0
    info = probe(tmp_path / "out" / "frames.mp4")
    assert (info["width"], info["height"], info["frames"]) == (175, 143, 2)
    assert main(["-i", str(folder / "00.png"), "-o", str(tmp_path / "img"), *TINY]) == 0
    assert (tmp_path / "img" / "00.png").is_file()


def test_one_frame_video(tmp_path):
    clip = make_clip(tmp_path / "one.mp4", [next(iter(open_input(SAMPLE))).rgb], audio=False)
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY]) == 0
    assert probe(tmp_path / "out" / "one.mp4")["frames"] == 1


def test_truncated_video_restores_what_decodes(tmp_path):
    clip = make_clip(tmp_path / "clip.mkv", noise_frames(20), audio=False)
    data = clip.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    assert main(["-i", str(tmp_path / "cut.mkv"), "-o", str(tmp_path / "out"), *TINY]) == 0
    assert 0 < probe(tmp_path / "out" / "cut.mp4")["frames"] < 20


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("junk", "cannot open video"),
        ("unwritable", "cannot create output folder"),
        ("overwrite", "overwrite the input"),
        ("weights", "KEEP-b76feb75.pth"),
        ("detector", "choose one of"),
    ],
)
def test_bad_input_is_a_clear_message(case, message, tmp_path, capsys):
    image = tmp_path / "face.png"
    write_image(image, next(iter(open_input(SAMPLE))).rgb)
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "file").write_text("a file, not a folder")
    args = {
        "missing": ["-i", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o"), *TINY],
        "junk": ["-i", str(tmp_path / "junk.mp4"), "-o", str(tmp_path / "o"), *TINY],
        "unwritable": ["-i", str(image), "-o", str(tmp_path / "file" / "sub"), *TINY],
        "overwrite": ["-i", str(image), "-o", str(tmp_path), *TINY],
        "weights": ["-i", str(image), "-o", str(tmp_path / "o"), "--model", "keep", "--detector", "dlib"],
        "detector": ["-i", str(image), "-o", str(tmp_path / "o"), "--model", "preset:tiny", "--detector", "nope"],
    }[case]
    before = image.read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert image.read_bytes() == before  # the input is never overwritten


def test_no_arguments_prints_usage():
    result = subprocess.run([sys.executable, "inference.py"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower() and "Traceback" not in result.stderr


@pytest.mark.slow
def test_released_configuration_end_to_end(tmp_path):
    clip = make_clip(tmp_path / "two.mp4", [f.rgb for f, _ in zip(open_input(SAMPLE), range(2), strict=False)])
    args = ["-i", str(clip), "-o", str(tmp_path / "out"), "--model", "preset:released", "--detector", "dlib"]
    assert main([*args, "--flow", "dis"]) == 0
    assert probe(tmp_path / "out" / "two.mp4")["frames"] == 2


def test_has_aligned_restores_whole_frames(tmp_path):
    from keep.face import align_face, build_detector, estimate_affine

    frame = next(iter(open_input(SAMPLE))).rgb
    (face,) = build_detector("dlib")(frame)
    crop = align_face(frame, estimate_affine(face.landmarks, 128), 128)  # resized to the network's 64
    folder = tmp_path / "aligned"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"{i}.png", crop)
    assert main(["-i", str(folder), "-o", str(tmp_path / "out"), *TINY, "--has_aligned"]) == 0
    restored = decode(tmp_path / "out" / "aligned.mp4")
    assert len(restored) == 3 and restored[0].shape == (128, 128, 3)
    assert np.abs(restored[0].astype(int) - crop).mean() > 5  # the (random) network changed the face
