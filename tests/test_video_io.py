"""Video / frame-folder / image I/O: timing, sizes, audio copy, bad input."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from footage import SAMPLE, noise_frames, write_clip

from keep.errors import KeepError
from keep.video import ImageFolderReader, VideoWriter, open_input, probe, to_rgb, write_image


def test_sample_asset_has_audio_and_is_small():
    info = probe(SAMPLE)
    assert info["audio"] == ["aac"] and info["frames"] >= 60 and SAMPLE.stat().st_size < 1_000_000


def test_roundtrip_keeps_timing_and_copies_audio(tmp_path):
    reader = open_input(SAMPLE)
    writer = VideoWriter(
        tmp_path / "out.mp4", width=reader.width, height=reader.height, fps=reader.fps,
        time_base=reader.time_base, streams_from=SAMPLE,
    )  # fmt: skip
    for frame in reader:
        writer.write(frame.rgb, frame.pts)
    writer.close()
    src, out = probe(SAMPLE), probe(tmp_path / "out.mp4")
    assert out["frames"] == src["frames"] and out["fps"] == src["fps"]
    assert (out["width"], out["height"]) == (src["width"], src["height"])
    assert out["audio"] == ["aac"]
    assert out["duration"] == pytest.approx(src["duration"], abs=0.05)


def test_odd_size_and_grayscale_frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):  # grayscale PNGs, odd size
        write_image(folder / f"{i:03d}.png", to_rgb(rng.integers(0, 256, (143, 175), dtype=np.uint8)))
    reader = open_input(folder, fps=10)
    assert isinstance(reader, ImageFolderReader) and (reader.width, reader.height) == (175, 143)
    writer = VideoWriter(tmp_path / "odd.mp4", width=175, height=143, fps=reader.fps)
    for frame in reader:
        assert frame.rgb.shape == (143, 175, 3)
        writer.write(frame.rgb)
    writer.close()
    info = probe(tmp_path / "odd.mp4")
    assert (info["width"], info["height"], info["frames"]) == (175, 143, 3) and info["fps"] == 10


def test_to_rgb_shapes():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_rgb(gray).shape == (3, 4, 3) and (to_rgb(gray)[:, :, 2] == gray).all()
    assert to_rgb(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)


def test_bad_inputs(tmp_path):
    with pytest.raises(KeepError, match="does not exist"):
        open_input(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(KeepError, match="cannot open video"):
        open_input(tmp_path / "junk.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeepError, match="no images"):
        open_input(tmp_path / "empty")


def test_truncated_video_decodes_what_it_can(tmp_path):
    clip = write_clip(tmp_path / "clip.mkv", noise_frames(20, 64, 80))
    data = clip.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    frames = list(open_input(tmp_path / "cut.mkv"))
    assert 0 < len(frames) < 20


def test_video_suffixes_header_only_close_and_abort(tmp_path):
    from keep.video import VIDEO_SUFFIXES, is_video

    assert is_video("a.MP4") and is_video(Path("x/y.mkv")) and not is_video("a.png") and ".webm" in VIDEO_SUFFIXES
    reader = open_input(SAMPLE)  # the header, without decoding
    assert (reader.width, reader.height) == (176, 144)
    reader.close()
    writer = VideoWriter(tmp_path / "cut.mp4", width=80, height=64, fps=Fraction(25), streams_from=SAMPLE)
    for frame in noise_frames(3, 64, 80):
        writer.write(frame)
    writer.abort()  # after a failure: closes without raising; the caller removes the file
    writer.abort()


# ------------------------------------------------------------------------------------- encode speed (docs/inference.md)
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))


def swscale_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """What VideoWriter fed x264 before its own yuv420p conversion: PyAV's RGB frame converted by swscale's default."""
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()


def yuv420p_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Back to RGB as our reader decodes (swscale, BT.601 limited range for untagged video)."""
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="rgb24")


@pytest.mark.parametrize("content", ["carphone", "noise"])
def test_rgb_to_yuv420p_is_the_bt601_conversion_swscale_did(content):
    """Same matrix and range as swscale's default: luma within 1 level; chroma the BT.601 chroma of each 2x2
    block's mean within 1 level (carphone frame 0: 0.17 levels from swscale's on average); decoded back to RGB
    at least as close to the input as swscale's (carphone: 45.9 against 44.9 dB)."""
    from keep.video.io import rgb_to_yuv420p

    rgb = next(iter(open_input(SAMPLE))).rgb if content == "carphone" else noise_frames(1, 144, 176)[0]
    height, width = rgb.shape[:2]
    ours, theirs = rgb_to_yuv420p(rgb), swscale_yuv420p(rgb)
    assert ours.shape == theirs.shape == (height * 3 // 2, width) and ours.dtype == np.uint8
    assert np.abs(ours[:height].astype(int) - theirs[:height]).max() <= 1
    block = rgb.astype(np.float64).reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    r, g, b = block[..., 0], block[..., 1], block[..., 2]
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    expected = np.concatenate([cb.reshape(-1), cr.reshape(-1)])
    assert np.abs(ours[height:].reshape(-1).astype(float) - expected).max() <= 1
    if content == "carphone":  # natural content: swscale filters chroma a little wider; mean difference small
        assert np.abs(ours[height:].astype(int) - theirs[height:]).mean() < 0.3
    assert psnr(yuv420p_to_rgb(ours), rgb) >= psnr(yuv420p_to_rgb(theirs), rgb) - 0.05


def test_writer_keeps_quality_and_tags_with_frame_threads_and_presets(tmp_path):
    """The sample re-encoded by VideoWriter is as close to its frames as PyAV's own RGB path with its default
    threading (VideoWriter's first encoder), with the same colour tags; x264 runs frame threads and the preset asked for
    (x264 records its settings in the stream: sliced_threads, subme 7 for medium, 2 for veryfast)."""
    frames = [f.rgb for f in open_input(SAMPLE)]
    reference = tmp_path / "reference.mp4"
    with av.open(str(reference), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.options = 176, 144, "yuv420p", {"crf": "18"}
        for n, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    for preset, subme in (("medium", 7), ("veryfast", 2)):
        path = tmp_path / f"{preset}.mp4"
        writer = VideoWriter(path, width=176, height=144, fps=Fraction(25), preset=preset)
        for n, rgb in enumerate(frames):
            writer.write(rgb, n)
        writer.close()
        data = path.read_bytes()
        assert b"sliced_threads=0" in data and f" subme={subme} ".encode() in data
        decoded = [f.rgb for f in open_input(path)]
        assert len(decoded) == len(frames)
        quality = np.mean([psnr(a, b) for a, b in zip(decoded, frames, strict=True)])
        if preset == "medium":
            before = np.mean([psnr(f.rgb, b) for f, b in zip(open_input(reference), frames, strict=True)])
            assert quality >= before - 0.1
            with av.open(str(path)) as ours, av.open(str(reference)) as theirs:
                tags = [
                    (c.color_range, c.colorspace, c.color_primaries, c.color_trc, c.pix_fmt)
                    for c in (ours.streams.video[0].codec_context, theirs.streams.video[0].codec_context)
                ]
            assert tags[0] == tags[1]
    with pytest.raises(KeepError, match="preset"):
        VideoWriter(tmp_path / "bad.mp4", width=176, height=144, fps=Fraction(25), preset="warp9")
