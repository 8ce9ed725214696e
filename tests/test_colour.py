"""Colour end to end (docs/inference.md, "Colour"): outside the faces the output is the input as a player
decodes both, in its own matrix, range, depth, HDR side data and field order; the networks see 8-bit SDR
RGB. End to end through `inference.py` subprocesses on carphone footage, plus the conversions themselves.

Codec noise: the 8-bit clips are restored at crf 0 (lossless H.264), where the codec adds none, so away
from the faces the output must equal the input exactly, as a player decodes both and as stored; the writer
before (BT.601 limited range, untagged) misses that by 1.7 levels on average on the BT.709 clip (5 at the 99th
percentile; carphone is pale: saturated colours err more) and by 9 on the full-range clip's Y'. The 10-bit
clips are restored at crf 18 (x265 has no lossless crf): the bound is mean under 4 and 99th percentile at most
16 10-bit levels away from the faces (x265 at crf 18, `ultrafast`, gives about 1-2 and 6-8 on these clips).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from footage import BT709_HD, FULL_RANGE, HDR_PARAMS, HLG, PQ, field_orders, player_frames, sample_frames, write_clip

from keep.pipeline.items import FramePool
from keep.video import colour as C
from keep.video import open_input
from keep.video.io import rgb_to_yuv420p

REPO = Path(__file__).resolve().parent.parent
RUN = ["--model", "preset:tiny", "--detector", "dlib", "--flow", "dis", "--threads", "1"]
EXACT, NOISE_10 = (0, 0), (4.0, 16)  # (mean, 99th percentile) of |output - input| away from faces


def restore(clip: Path, out: Path, *settings: str, timeout: int = 300) -> tuple[dict, str]:
    """`inference.py` on `clip` as a user runs it (a subprocess under a timeout): its summary and stderr."""
    env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_DEBUG": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "inference.py"), "-i", str(clip), "-o", str(out), *RUN, "--set",
               "save_faces=true", "preset=ultrafast", *settings]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / f"{clip.stem}_summary.json").read_text()), result.stderr


def face_boxes(faces_log: Path, shape: tuple[int, int], margin: int = 4) -> list[np.ndarray]:
    """Per frame, True inside every face crop's box (grown by `margin`): the summary's face corners."""
    masks = []
    for line in faces_log.read_text().splitlines():
        near = np.zeros(shape, bool)
        for face in json.loads(line)["faces"]:
            corners = np.array(face["corners"])
            left, top = np.floor(corners.min(0)).astype(int) - margin
            right, bottom = np.ceil(corners.max(0)).astype(int) + margin
            near[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
        masks.append(near)
    return masks


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
@pytest.mark.parametrize("case", ["bt709_hd", "full_range"])
def test_background_is_the_input_as_a_player_decodes_it(case, tmp_path):
    """A BT.709 1280x720 clip and a full-range (pc) BT.601 clip: the output carries the input's tags, and away
    from the faces it is the input (lossless: exactly), as a player decodes both and as stored (Y'). The old
    writer (BT.601 limited range, untagged) fails the bound: in the player's RGB for the HD clip (players
    decode untagged HD as BT.709), in the stored values for the full-range one (squeezed into 16-235)."""
    colour, size = {"bt709_hd": (BT709_HD, (1280, 720)), "full_range": (FULL_RANGE, (352, 288))}[case]
    clip = write_clip(tmp_path / f"{case}.mp4", frames_of(size), colour=colour)
    summary, _ = restore(clip, tmp_path / "out", "crf=0")
    output = tmp_path / "out" / clip.name
    assert tags(output) == tags(clip) == tuple(colour[k] for k in ("colorspace", "color_range", "color_primaries",
                                                                   "color_trc", "pix_fmt"))  # fmt: skip
    assert summary["faces"] == 4 and summary["colour"]["output"]["matrix"] == C.MATRICES[colour["colorspace"]]
    near = face_boxes(tmp_path / "out" / f"{case}_faces.jsonl", size[::-1])
    far = [~n for n in near]
    shown, restored = player_frames(clip), player_frames(output)
    assert within(differences(shown, restored, far), EXACT)
    assert differences(shown, restored, near).mean() > 5  # the (random) network changed the faces
    stored, rewritten = (np.stack([f.planes[0] for f in open_input(p)]) for p in (clip, output))
    assert within(differences(list(stored), list(rewritten), far), EXACT)
    # what the writer did before: the frames as RGB, to BT.601 limited range, untagged
    old = [rgb_to_yuv420p(rgb) for rgb in shown]
    if case == "bt709_hd":
        player = [av.VideoFrame.from_ndarray(y, format="yuv420p").reformat(format="rgb24", src_colorspace="ITU709")
                  for y in old]  # fmt: skip
        assert not within(differences(shown, [f.to_ndarray() for f in player], far), EXACT)
    else:
        assert not within(differences(list(stored), [y[: size[1]] for y in old], far), EXACT)


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_hdr_keeps_depth_tags_and_side_data(transfer, tmp_path):
    """HLG (MP4) and PQ (Matroska) 10-bit HEVC with a mastering display and content light levels: 10-bit HEVC
    out with the same transfer, primaries, matrix, range and side data; the face restored, the background the
    input's within 10-bit codec noise. Worker processes (the default): 16-bit planes in shared memory."""
    colour, suffix = (HLG, ".mp4") if transfer == "hlg" else (PQ, ".mkv")
    clip = write_clip(tmp_path / f"{transfer}{suffix}", frames_of((320, 256)), codec="libx265", colour=colour,
                      options={"x265-params": HDR_PARAMS, "preset": "ultrafast"})  # fmt: skip
    extra = ["--save_frames"] if transfer == "hlg" else []
    summary, stderr = restore(clip, tmp_path / "out", *extra)
    output = tmp_path / "out" / clip.name
    assert "warning" not in stderr and summary["colour"]["fallback"] is None
    assert tags(output) == tags(clip) == (9, 1, 9, colour["color_trc"], "yuv420p10le")
    with av.open(str(clip)) as source, av.open(str(output)) as result:
        stream = result.streams.video[0]
        assert stream.codec_context.name == "hevc" and stream.codec_context.profile == "Main 10"
        if suffix == ".mp4":
            assert stream.codec_context.codec_tag == "hvc1"
        kinds = (av.sidedata.sidedata.Type.MASTERING_DISPLAY_METADATA, av.sidedata.sidedata.Type.CONTENT_LIGHT_LEVEL)
        side = [
            {d.type: bytes(d) for d in next(c.decode(video=0)).side_data if d.type in kinds} for c in (source, result)
        ]
        assert len(side[0]) == 2 and side[0] == side[1]
    assert summary["colour"]["output"] | {"codec": None} == summary["colour"]["input"] | {"codec": None}
    near = face_boxes(tmp_path / "out" / f"{transfer}_faces.jsonl", (256, 320))
    far = [~n for n in near]
    shown, restored = player_frames(clip), player_frames(output)  # 16-bit R'G'B': 64 per 10-bit level
    assert shown[0].dtype == restored[0].dtype == np.uint16
    assert within(differences(shown, restored, far, unit=64), NOISE_10)
    assert differences(shown, restored, near, unit=64).mean() > 20
    if extra:  # --save_frames: 16-bit PNGs of what a player shows
        png = cv2.imread(str(tmp_path / "out" / transfer / "frames" / "000000.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and np.abs(png[..., ::-1].astype(int) - restored[0]).max() <= 1


@pytest.mark.parametrize("order, colour", [("bb", None), ("tt", HLG)])
def test_interlaced_keeps_its_field_order(order, colour, tmp_path):
    """Interlaced input is encoded interlaced, its field order kept (what players deinterlace by). 8-bit bottom
    field first; 10-bit HLG top field first takes the documented fallback (H.264 High 10: x265 would code fields
    as separate pictures): one warning line, the summary's `colour.fallback`, tags and side data kept."""
    options = {"x264-params": HDR_PARAMS.replace("log-level=error:", "").replace("master-display", "mastering-display")
               .replace("max-cll", "cll")} if colour else {}  # fmt: skip
    clip = write_clip(tmp_path / "tv.mkv", frames_of((352, 288)), field_order=order, colour=colour, options=options)
    summary, stderr = restore(clip, tmp_path / "out")
    output = tmp_path / "out" / "tv.mkv"
    assert field_orders(clip) == field_orders(output) == [order] * 4
    assert summary["colour"]["output"]["field_order"] == order and summary["faces"] == 4
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    if colour is None:
        assert warnings == [] and summary["colour"]["fallback"] is None
    else:
        assert len(warnings) == 1 and "H.264 High 10" in warnings[0] and "interlaced" in warnings[0]
        assert "H.264 High 10" in summary["colour"]["fallback"]
        assert tags(output) == tags(clip) == (9, 1, 9, 18, "yuv420p10le")
        with av.open(str(output)) as container:
            frame = next(container.decode(video=0))
            assert {d.type.name for d in frame.side_data} >= {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"}


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


@pytest.mark.parametrize("kind", ["bt709", "hlg", "pq"])
def test_the_networks_view_round_trips(kind):
    """A carphone frame taken as the networks' view, converted into the input's colour (what a restored face
    becomes) and viewed again: within rounding (4:4:4 10-bit: mean under 0.2, 99th percentile 1 level)."""
    colour = {
        "bt709": C.Colour("yuv444p10le", 1, 1, 1, 1, 1),
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
