"""Colour end to end (docs/inference.md, "Colour"): outside the faces the output is the input as a player
decodes both, in its own matrix, range, depth, HDR side data and field order; the networks see 8-bit SDR
RGB. End to end through `inference.py` subprocesses on carphone footage, plus the conversions themselves.

Codec noise: the clips are restored at crf 0. For H.264 that is lossless, the codec adds no noise, so away
from the faces the output must equal the input exactly, as a player decodes both and as stored; the writer
before (BT.601 limited range, untagged) misses that by 1.7 levels on average on the BT.709 clip (5 at the 99th
percentile; carphone is pale: saturated colours err more) and by 9 on the full-range clip's Y'. x265 has no
lossless crf: for the 10-bit clips the bound is a mean under 4 and a 99th percentile of at most 16 10-bit
levels away from the faces (x265 at crf 18, `ultrafast`, gives about 1-2 and 6-8 on these clips; a wrong
transfer or matrix is off by tens to hundreds).
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from footage import (
    BT709_HD,
    FULL_RANGE,
    HDR_PARAMS,
    HLG,
    PQ,
    far_from_faces,
    field_orders,
    player_frames,
    sample_frames,
    write_clip,
)

from keep.pipeline.items import FramePool
from keep.video import colour as C
from keep.video import open_input
from keep.video.io import rgb_to_yuv420p

REPO = Path(__file__).resolve().parent.parent
RUN = ["--model", "preset:tiny", "--detector", "dlib", "--flow", "dis", "--threads", "1"]
EXACT, NOISE_10 = (0, 0), (4.0, 16)  # (mean, 99th percentile) of |output - input| away from faces


def differences(a: list[np.ndarray], b: list[np.ndarray], where: list[np.ndarray], unit: float = 1) -> np.ndarray:
    """|a - b| (in `unit`s, each channel) at the pixels `where` of every frame."""
    return np.concatenate([(np.abs(x.astype(np.float64) - y) / unit)[w] for x, y, w in zip(a, b, where, strict=True)])


def within(diff: np.ndarray, bound: tuple[float, float]) -> bool:
    return diff.mean() <= bound[0] and np.percentile(diff, 99) <= bound[1]


def frames_of(size: tuple[int, int], count: int = 4) -> list[np.ndarray]:
    """Carphone frames scaled to `size` (width, height) keeping their aspect (cropped to the centre)."""
    width, height = size
    out = []
    for rgb in sample_frames(count):
        scale = max(width / rgb.shape[1], height / rgb.shape[0])
        big = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
        top, left = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
        out.append(np.ascontiguousarray(big[top : top + height, left : left + width]))
    return out


def tags(path: Path) -> tuple[int, int, int, int, str]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        name = frame.format.name.replace("yuvj", "yuv")
        return frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc, name


# -------------------------------------------------------------------------------------------- end to end
X264_HDR = {"x264-params": HDR_PARAMS.replace("log-level=error:", "").replace("master-display", "mastering-display")
            .replace("max-cll", "cll")}  # fmt: skip


class Restored:
    """One `inference.py` run (a subprocess under a timeout, as a user runs it) over a folder of the clips
    below, at crf 0, with `--save_frames` and the face log: one start and one model load for all of them."""

    def __init__(self, folder: Path):
        self.inputs, self.out = folder / "in", folder / "out"
        if (folder / "stderr.txt").is_file():  # another test worker ran it
            self.stderr = (folder / "stderr.txt").read_text()
            return
        self.inputs.mkdir(exist_ok=True)
        hevc = {"codec": "libx265", "options": {"x265-params": HDR_PARAMS, "preset": "ultrafast"}}
        write_clip(self.inputs / "bt709_hd.mp4", frames_of((1280, 720)), colour=BT709_HD)
        write_clip(self.inputs / "full_range.mp4", frames_of((352, 288)), colour=FULL_RANGE)
        write_clip(self.inputs / "hlg.mp4", frames_of((320, 256)), colour=HLG, **hevc)
        write_clip(self.inputs / "pq.mkv", frames_of((320, 256)), colour=PQ, **hevc)
        write_clip(self.inputs / "tv.mkv", frames_of((352, 288)), field_order="bb")
        write_clip(self.inputs / "tv_hlg.mkv", frames_of((352, 288)), field_order="tt", colour=HLG, options=X264_HDR)
        env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_DEBUG": "", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, str(REPO / "inference.py"), "-i", str(self.inputs), "-o", str(self.out), *RUN,
                   "--save_frames", "--set", "save_faces=true", "crf=0", "preset=ultrafast"]  # fmt: skip
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        self.stderr = result.stderr
        (folder / "stderr.txt").write_text(result.stderr)

    def clip(self, name: str) -> tuple[Path, Path, dict]:
        """(input, output, summary) of one clip."""
        stem = Path(name).stem
        return self.inputs / name, self.out / name, json.loads((self.out / f"{stem}_summary.json").read_text())

    def faces(self, name: str, shape: tuple[int, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per frame, the pixels near a face (its crop's box, the face log's corners, + 4 px) and the others."""
        near = [~far for far in far_from_faces(self.out / f"{Path(name).stem}_faces.jsonl", shape)]
        return near, [~n for n in near]

    def warnings(self, name: str) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("warning:") and name in line]


@pytest.fixture(scope="module")
def restored(tmp_path_factory) -> Restored:
    """The run, once per test session: test workers (pytest-xdist) share it through their common temporary
    folder, the first to come makes it while the others wait on its lock."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "colour_run"
    folder.mkdir(exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return Restored(folder)


@pytest.mark.parametrize("name", ["bt709_hd.mp4", "full_range.mp4"])
def test_background_is_the_input_as_a_player_decodes_it(name, restored):
    """A BT.709 1280x720 clip and a full-range (pc) BT.601 clip: the output carries the input's tags, and away
    from the faces it is the input (lossless: exactly), as a player decodes both and as stored (Y'). The old
    writer (BT.601 limited range, untagged) fails the bound: in the player's RGB for the HD clip (players
    decode untagged HD as BT.709), in the stored values for the full-range one (squeezed into 16-235)."""
    clip, output, summary = restored.clip(name)
    colour = BT709_HD if name.startswith("bt709") else FULL_RANGE
    expected = tuple(colour[k] for k in ("colorspace", "color_range", "color_primaries", "color_trc", "pix_fmt"))
    assert tags(output) == tags(clip) == expected and restored.warnings(name) == []
    assert summary["faces"] == 4 and summary["colour"]["output"]["matrix"] == C.MATRICES[colour["colorspace"]]
    shown, result = player_frames(clip), player_frames(output)
    near, far = restored.faces(name, shown[0].shape[:2])
    assert within(differences(shown, result, far), EXACT)
    assert differences(shown, result, near).mean() > 5  # the (random) network changed the faces
    stored, rewritten = ([f.planes[0] for f in open_input(p)] for p in (clip, output))
    assert within(differences(stored, rewritten, far), EXACT)
    old = [rgb_to_yuv420p(rgb) for rgb in shown]  # what the writer did before: RGB to BT.601 limited, untagged
    if name.startswith("bt709"):
        player = [av.VideoFrame.from_ndarray(y, format="yuv420p").reformat(format="rgb24", src_colorspace="ITU709")
                  for y in old]  # fmt: skip
        assert not within(differences(shown, [f.to_ndarray() for f in player], far), EXACT)
    else:
        assert not within(differences(stored, [y[: len(stored[0])] for y in old], far), EXACT)


@pytest.mark.parametrize("name", ["hlg.mp4", "pq.mkv"])
def test_hdr_keeps_depth_tags_and_side_data(name, restored):
    """HLG (MP4) and PQ (Matroska) 10-bit HEVC with a mastering display and content light levels: 10-bit HEVC
    out with the same transfer, primaries, matrix, range and side data; the face restored, the background the
    input's within 10-bit codec noise; `--save_frames` writes 16-bit PNGs. Worker processes (the default):
    16-bit planes in shared memory."""
    clip, output, summary = restored.clip(name)
    assert restored.warnings(name) == [] and summary["colour"]["fallback"] is None
    assert tags(output) == tags(clip) == (9, 1, 9, (HLG if name.startswith("hlg") else PQ)["color_trc"], "yuv420p10le")
    assert summary["colour"]["output"] | {"codec": None} == summary["colour"]["input"] | {"codec": None}
    with av.open(str(clip)) as source, av.open(str(output)) as result:
        stream = result.streams.video[0]
        assert stream.codec_context.name == "hevc" and stream.codec_context.profile == "Main 10"
        assert stream.codec_context.codec_tag == "hvc1" or name.endswith(".mkv")  # MP4: the tag Apple's players need
        first = [next(c.decode(video=0)) for c in (source, result)]
    kinds = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")
    side = [{d.type.name: bytes(d) for d in C.side_data(frame) if d.type.name in kinds} for frame in first]
    assert len(side[0]) == 2 and side[0] == side[1]
    shown, result = player_frames(clip), player_frames(output)  # 16-bit R'G'B': 64 per 10-bit level
    assert shown[0].dtype == result[0].dtype == np.uint16
    near, far = restored.faces(name, (256, 320))
    assert within(differences(shown, result, far, unit=64), NOISE_10)
    assert differences(shown, result, near, unit=64).mean() > 20
    png = cv2.imread(str(restored.out / Path(name).stem / "frames" / "000000.png"), cv2.IMREAD_UNCHANGED)
    # before encoding, as FFmpeg's scaler shows the planes (it sites a decoded frame's chroma as the decoder says,
    # these frames' as centred: 0.5 level apart on average)
    assert png.dtype == np.uint16 and within(differences([png[..., ::-1]], shown[:1], far[:1], unit=64), NOISE_10)


@pytest.mark.parametrize("name", ["tv.mkv", "tv_hlg.mkv"])
def test_interlaced_keeps_its_field_order(name, restored):
    """Interlaced input is encoded interlaced, its field order kept (what players deinterlace by). 8-bit bottom
    field first; 10-bit HLG top field first takes the documented fallback (H.264 High 10: x265 would code fields
    as separate pictures): one warning line, the summary's `colour.fallback`, tags and side data kept."""
    clip, output, summary = restored.clip(name)
    order = "bb" if name == "tv.mkv" else "tt"
    assert field_orders(clip) == field_orders(output) == [order] * 4
    assert summary["colour"]["output"]["field_order"] == order and summary["faces"] == 4
    warnings = restored.warnings(name)
    if order == "bb":
        assert warnings == [] and summary["colour"]["fallback"] is None
        return
    assert len(warnings) == 1 and "H.264 High 10" in warnings[0] and "interlaced" in warnings[0]
    assert "H.264 High 10" in summary["colour"]["fallback"]
    assert tags(output) == tags(clip) == (9, 1, 9, 18, "yuv420p10le")
    with av.open(str(output)) as container:
        frame = next(container.decode(video=0))
        assert {d.type.name for d in C.side_data(frame)} >= {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"}


# ------------------------------------------------------------------------------------------- conversions
def test_transfer_functions_and_their_reference_points():
    """PQ: BT.2408's reference white, 203 cd/m2, at 58% signal; HLG: 75% signal is reference white on the
    nominal 1000 cd/m2 display; every conversion is inverted by its counterpart."""
    signal = np.linspace(0, 1, 1001)
    assert C.nits_to_pq(np.array(203.0)) == pytest.approx(0.58, abs=0.005)
    assert C.to_light(np.array(0.75), "hlg") == pytest.approx(1.0, abs=0.01)
    for kind in ("pq", "hlg", "sdr"):
        assert np.abs(C.from_light(C.to_light(signal, kind), kind) - signal).max() < 1e-5
    light = np.linspace(0, 40, 1001)
    assert np.abs(C.expand(C.compress(light)) - light).max() < 1e-6 * 40 / (1 - 0.999)
    assert (np.diff(C.compress(light)) > 0).all() and C.compress(light).max() < 1


@pytest.mark.parametrize("kind", ["bt709", "bt2020", "hlg", "pq"])
def test_the_networks_view_round_trips(kind):
    """A carphone frame taken as the networks' view, converted into the input's colour (what a restored face
    becomes) and viewed again: within rounding (4:4:4 10-bit: mean under 0.2, 99th percentile 1 level)."""
    colour = {
        "bt709": C.Colour("yuv444p10le", 1, 1, 1, 1, 1),
        "bt2020": C.Colour("yuv444p10le", 9, 1, 9, 14, 9),  # SDR in BT.2020: through light, no compression
        "hlg": C.Colour("yuv444p10le", 9, 1, 9, C.HLG, 9),
        "pq": C.Colour("yuv444p10le", 9, 1, 9, C.PQ, 9),
    }[kind]
    rgb = sample_frames(1)[0]
    back = C.view(C.planes_from_view(rgb, colour), colour).astype(int)
    diff = np.abs(back - rgb)
    assert diff.mean() < 0.2 and np.percentile(diff, 99) <= 1


def test_sdr_view_and_planes_agree_with_ffmpeg():
    """The conversions the paste uses match FFmpeg's scaler (what the reader and players use) within 1 level:
    BT.709 limited range and BT.601 full range; `rgb_to_yuv420p` for HD frames too."""
    rgb = frames_of((1280, 720), 1)[0]
    for colour, scaler in ((C.Colour("yuv444p", 1, 1, 1, 1, 1), ("ITU709", "MPEG")),
                           (C.Colour("yuv444p", 5, 2, 5, 6, 5), ("ITU601", "JPEG"))):  # fmt: skip
        ours = np.stack(C.planes_from_view(rgb, colour), axis=-1).astype(int)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        theirs = frame.reformat(format="yuv444p", dst_colorspace=scaler[0], dst_color_range=scaler[1])
        assert np.abs(ours - theirs.to_ndarray().transpose(1, 2, 0)).max() <= 1
        back = av.VideoFrame.from_ndarray(theirs.to_ndarray(), format="yuv444p").reformat(
            format="rgb24", src_colorspace=scaler[0], src_color_range=scaler[1], dst_color_range="JPEG"
        )
        assert np.abs(C.view([*theirs.to_ndarray()], colour).astype(int) - back.to_ndarray()).max() <= 1
    fast = rgb_to_yuv420p(rgb, C.BT709)[:720].astype(int)
    assert np.abs(fast - C.planes_from_view(rgb, C.Colour("yuv420p", 1, 1, 1, 1, 1))[0]).max() <= 1


def test_output_tags_follow_what_players_assume():
    """Untagged input stays untagged where players assume its matrix at the output's size, and is tagged where
    they would assume another (an SD clip at --upscale 4); RGB frames: BT.601 untagged below HD, BT.709 tagged."""
    sd = C.Colour("yuv420p", matrix_in_use=C.BT601)
    assert sd.for_output(352, 288).matrix == C.UNSPECIFIED
    assert sd.for_output(1408, 1152).matrix == C.BT601
    assert C.SRGB.for_output(176, 144).matrix == C.UNSPECIFIED and C.SRGB.for_output(176, 144).format == "yuv420p"
    hd = C.SRGB.for_output(1280, 720)
    assert (hd.matrix, hd.primaries, hd.transfer, hd.matrix_in_use) == (C.BT709,) * 4
    assert C.SRGB.for_output(175, 143).format == "yuv444p"
    odd = C.Colour("yuv444p10le", 9, 1, 9, C.HLG, 9)  # a 4:2:0 input of odd size, held in 4:4:4
    assert odd.for_output(175, 143).format == "yuv444p10le" and odd.for_output(350, 286).format == "yuv420p10le"


def test_odd_sizes_and_deep_frames_in_the_pool(tmp_path):
    """An odd-sized 4:2:0 video is held in 4:4:4 (what its output is encoded in); a 10-bit frame pool keeps its
    16-bit planes through pickling (as worker processes receive it), beside the 8-bit view."""
    frames = [f[:143, :175] for f in frames_of((176, 144), 2)]
    clip = tmp_path / "odd.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 175, 143, "yuv420p"
        for n, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    reader = open_input(clip)
    assert reader.colour.format == "yuv444p" and reader.colour.source == "yuv420p"
    first = next(iter(reader))
    assert [p.shape for p in first.planes] == [(143, 175)] * 3 and first.rgb.shape == (143, 175, 3)
    deep = C.Colour("yuv420p10le", 9, 1, 9, C.HLG, 9)
    pool = FramePool(2, 6, 8, colour=deep, shared=True)
    pool.planes(1)[2][...] = 1023
    pool[1][...] = 7
    copy = pickle.loads(pickle.dumps(pool))
    assert [(p.shape, p.dtype) for p in copy.planes(1)] == [
        ((6, 8), np.uint16),
        ((3, 4), np.uint16),
        ((3, 4), np.uint16),
    ]
    assert (copy.planes(1)[2] == 1023).all() and (copy[1] == 7).all() and copy.colour == deep


def test_the_encoder_follows_the_depth_and_names_what_it_cannot_keep():
    """8 bits: H.264; deeper: HEVC with x265's HDR parameters from the side data; interlaced 10-bit: H.264 High
    10 with x264's spelling of them, said in `fallback`; per-scene metadata (HDR10+, Dolby Vision) named."""
    from keep.video.encoding import choose_encoding

    hdr = C.HdrMetadata((0.68, 0.32, 0.265, 0.69, 0.15, 0.06, 0.3127, 0.329, 0.0001, 1000.0), (1000, 400))
    hlg = C.Colour("yuv420p10le", 9, 1, 9, C.HLG, 9, hdr=hdr)
    assert choose_encoding(C.Colour("yuv420p", 1, 1, 1, 1, 1), 64, 48, crf=18, preset="fast").codec == "libx264"
    hevc = choose_encoding(hlg, 64, 48, crf=18, preset="fast")
    assert hevc.codec == "libx265" and hevc.fallback is None and hevc.colour.format == "yuv420p10le"
    assert HDR_PARAMS.split(":", 1)[1] in hevc.options["x265-params"]  # the same display and light levels
    fields = choose_encoding(replace(hlg, field_order="tt"), 64, 48, crf=18, preset="fast")
    assert fields.codec == "libx264" and "interlaced" in fields.fallback
    assert fields.options["x264-params"] == X264_HDR["x264-params"]
    dolby = replace(hlg, hdr=replace(hdr, dynamic=("Dolby Vision",)))
    assert "Dolby Vision metadata is not written" in choose_encoding(dolby, 64, 48, crf=18, preset="fast").fallback
