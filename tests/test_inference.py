"""End-to-end `inference.py` on real and generated clips, and their bad inputs (all: test_entry_points.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from footage import SAMPLE, far_from_faces, noise_frames, sample_frames, write_clip

from inference import main
from keep.video import open_input, probe, write_image

REPO = Path(__file__).resolve().parent.parent
TINY = ["--model", "preset:tiny", "--detector", "dlib", "--flow", "dis", "--set", "overlap=threads"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: see conftest.one_thread


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_carphone_end_to_end(shared_dir, tmp_path):
    source = shared_dir / "media" / "carphone_pristine.mp4"
    # crf 0: lossless H.264, and the frame goes to the encoder as decoded, so away from faces nothing differs
    assert main(["-i", str(source), "-o", str(tmp_path), *TINY, "crf=0", "save_faces=true"]) == 0
    output = tmp_path / "carphone_pristine.mp4"
    src, out = probe(source), probe(output)
    for key in ("frames", "fps", "width", "height"):
        assert out[key] == src[key], key
    assert out["duration"] == pytest.approx(src["duration"], abs=0.05)
    summary = json.loads((tmp_path / "carphone_pristine_summary.json").read_text())
    assert summary["tracks"] >= 1 and summary["longest_track_coverage"] >= 0.95
    far = far_from_faces(tmp_path / "carphone_pristine_faces.jsonl", (144, 176))
    reference, restored = decode(source), decode(output)  # the input itself, decoded as the output is
    diff = [np.abs(a.astype(int) - b.astype(int)).max(-1) for a, b in zip(reference, restored, strict=True)]
    assert sum(m.sum() for m in far) > 100_000  # enough background (about 1/3 of the pixels) to mean something
    assert all((d[m] == 0).all() for d, m in zip(diff, far, strict=True))  # bit-exact away from faces
    assert (
        np.concatenate([d[~m] for d, m in zip(diff, far, strict=True)]).mean() > 5
    )  # the random network changed faces


def test_generated_clip_with_audio_upscale_and_frames(tmp_path):
    clip = tmp_path / "talk.mp4"
    write_clip(clip, sample_frames(12), audio=[("aac", "und")])
    options = ("--upscale", "2", "--save_frames", "--set", "preset=veryfast")
    args = ["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, *options]
    assert main(args) == 0
    assert b" subme=2 " in (tmp_path / "out" / "talk.mp4").read_bytes()  # x264's settings: veryfast reached it
    src, out = probe(clip), probe(tmp_path / "out" / "talk.mp4")
    assert out["frames"] == src["frames"] == 12 and out["fps"] == src["fps"]
    assert (out["width"], out["height"]) == (2 * src["width"], 2 * src["height"])
    assert out["audio"] == ["aac"] and out["duration"] == pytest.approx(src["duration"], abs=0.1)
    assert len(list((tmp_path / "out" / "talk" / "frames").glob("*.png"))) == 12


def test_no_face_gives_the_input_back(tmp_path, capsys):
    clip = write_clip(tmp_path / "noface.mp4", noise_frames(6, 64, 80))
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, "--set", "crf=0"]) == 0  # --set: lossless
    assert "no face" in capsys.readouterr().err
    after = decode(tmp_path / "out" / "noface.mp4")  # the decoded input, bit for bit
    assert len(after) == 6 and (np.stack(after) == np.stack(decode(clip))).all()


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
    clip = write_clip(tmp_path / "one.mp4", sample_frames(1))
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY]) == 0
    assert probe(tmp_path / "out" / "one.mp4")["frames"] == 1


def test_truncated_video_restores_what_decodes(tmp_path):
    clip = write_clip(tmp_path / "clip.mkv", noise_frames(20, 64, 80))
    data = clip.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    assert main(["-i", str(tmp_path / "cut.mkv"), "-o", str(tmp_path / "out"), *TINY]) == 0
    assert 0 < probe(tmp_path / "out" / "cut.mkv")["frames"] < 20  # a Matroska input gives a Matroska output


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("junk", "cannot open video"),
        ("unwritable", "cannot create output folder"),
        ("overwrite", "would write into the input"),
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
        "detector": ["-i", str(image), "-o", str(tmp_path / "o"), "--model", "preset:tiny", "--set", "detector=nope"],
    }[case]
    before = image.read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert image.read_bytes() == before  # the input is never overwritten


def test_the_command_line_keeps_what_users_reach_for_and_the_rest_is_set_keys():
    """At most 19 options (18, and --faces), every option that names a choice lists them; the flags of earlier
    versions are refused with their new spelling (their subprocess cases are in test_entry_points.py)."""
    from inference import FORMER_FLAGS, build_parser, former_flag

    options = {a.dest: a for a in build_parser()._actions if a.option_strings and a.dest != "help"}
    assert len(options) <= 19  # the 18 flags a user reaches for, and --faces
    assert all(options[name].choices for name in ("precision", "detector", "flow", "bg_upsampler"))
    assert set(options["precision"].choices) == {"auto", "fp32", "tf32", "bf16", "fp16"}
    assert not {flag[2:] for flag in FORMER_FLAGS} & set(options)  # a former flag is never an option again
    assert former_flag(["-i", "x", "--overlap=off"]) == "--overlap is now --set overlap=VALUE (inference.py --help)"
    assert former_flag(["-i", "x", "--precision", "fp16"]) is None


def test_no_arguments_prints_usage():
    result = subprocess.run([sys.executable, "inference.py"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower() and "Traceback" not in result.stderr


@pytest.mark.slow
def test_released_configuration_end_to_end(tmp_path):
    clip = write_clip(tmp_path / "two.mp4", sample_frames(2), audio=[("aac", "und")])
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


# ------------------------------------------------------------------------------------------ overlapped stages
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny network with fixed weights, so that separate runs restore identically."""
    import keep

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    keep.save_checkpoint(path, keep.load_network("preset:tiny"))
    return path


def test_overlapped_processes_equal_stages_one_after_another(tiny_weights, tmp_path, caplog):
    """The default (stages in worker processes) writes what running the stages in turn writes, and so does the
    GPU's grouping (detection in the main process, docs/inference.md) forced on the CPU; the summary and log count the
    frames of every track."""
    caplog.set_level("INFO")
    clip = write_clip(tmp_path / "talk.mp4", sample_frames(23))
    base = ["-i", str(clip), "--model", str(tiny_weights), "--detector", "dlib", "--flow", "dis", "--window", "8"]
    assert main([*base, "-o", str(tmp_path / "a"), "--set", "crf=0", "overlap=processes"]) == 0
    assert main([*base, "-o", str(tmp_path / "b"), "--set", "crf=0", "overlap=off"]) == 0
    assert main([*base, "-o", str(tmp_path / "c"), "--set", "crf=0", "overlap=threads", "stage_groups=gpu"]) == 0
    a, b, c = (decode(tmp_path / run / "talk.mp4") for run in "abc")
    assert len(a) == 23 and all((x == y).all() and (x == z).all() for x, y, z in zip(a, b, c, strict=True))
    gpu = json.loads((tmp_path / "c" / "talk_summary.json").read_text())["stage_groups"]
    assert gpu == {"front": ["decode"], "main": ["faces", "restore"], "back": ["compose", "encode"]}
    summary = json.loads((tmp_path / "a" / "talk_summary.json").read_text())
    assert summary["track_frames"] == {"0": 23} and summary["small_faces_skipped"] == 0
    assert summary["timings"]["network"] > 0 and summary["timings"]["detect"] > 0
    assert "talk: track 0: a face in 23 of 23 frames (0-22)" in caplog.text


def test_upscale_with_realesrgan_fallback_face_upsample_and_boxes(tmp_path, caplog):
    caplog.set_level("INFO")
    clip = write_clip(tmp_path / "talk.mp4", sample_frames(4))
    args = ["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, "--upscale", "2", "--bg_upsampler", "realesrgan"]
    assert main([*args, "--face_upsample", "--draw_box", "--set", "save_faces=true"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "realesrgan unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "bicubic" in warnings[0]  # offline: no weights, one line
    out = decode(tmp_path / "out" / "talk.mp4")
    assert len(out) == 4 and out[0].shape == (288, 352, 3)
    records = [json.loads(line) for line in (tmp_path / "out" / "talk_faces.jsonl").read_text().splitlines()]
    corners = np.array(records[0]["faces"][0]["corners"]) * 2  # the box is drawn along the crop's edges
    (x, y) = np.rint(corners[0]).astype(int)
    edge = out[0][max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3].astype(int)
    assert (np.abs(edge - edge.mean((0, 1))) > 0).any()
    summary = json.loads((tmp_path / "out" / "talk_summary.json").read_text())
    assert summary["background"] == "bicubic"


def test_folder_of_videos_writes_one_output_each_and_skips_finished(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_clip(videos / "a.mp4", sample_frames(3))
    write_clip(videos / "b.mkv", noise_frames(2, 64, 80))
    (videos / "c").mkdir()
    for i, frame in enumerate(sample_frames(2, start=10)):
        write_image(videos / "c" / f"{i}.png", frame)
    (videos / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    assert main(["-i", str(videos), "-o", str(out), *TINY]) == 0
    outputs = {s: out / f"{s}.{'mkv' if s == 'b' else 'mp4'}" for s in "abc"}  # b.mkv: a Matroska output
    assert [probe(outputs[s])["frames"] for s in "abc"] == [3, 2, 2]
    assert "3 inputs: 3 restored, 0 skipped" in capsys.readouterr().out
    before = {s: outputs[s].stat().st_mtime_ns for s in "abc"}
    outputs["b"].unlink()
    assert main(["-i", str(videos), "-o", str(out), *TINY]) == 0
    assert "3 inputs: 1 restored, 2 skipped" in capsys.readouterr().out
    assert all(outputs[s].stat().st_mtime_ns == before[s] for s in "ac")
    assert main(["-i", str(videos), "-o", str(out), *TINY, "--overwrite"]) == 0
    assert "3 inputs: 3 restored, 0 skipped" in capsys.readouterr().out


def test_a_failing_input_in_a_folder_is_reported_and_the_others_go_on(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_clip(videos / "good.mp4", sample_frames(2))
    (videos / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    assert main(["-i", str(videos), "-o", str(tmp_path / "out"), *TINY]) == 2
    captured = capsys.readouterr()
    assert "1 restored, 0 skipped (output exists), 1 failed" in captured.out
    assert captured.err.count("error:") == 1 and "junk.mp4" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "out" / "good.mp4").is_file() and not (tmp_path / "out" / "junk.mp4").exists()


def test_torchrun_shards_a_folder_over_two_processes(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("one", "two", "three"):
        write_clip(videos / f"{name}.mp4", sample_frames(2))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(REPO / "inference.py"), "-i", str(videos), "-o", str(out), *TINY, "--device", "cpu"]
    env = {**__import__("os").environ, "KEEP_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    done = [line for line in result.stdout.splitlines() if line.startswith("done:")]
    assert sorted(line.rsplit("/", 1)[-1] for line in done) == ["one.mp4", "three.mp4", "two.mp4"]  # each once
    assert "3 inputs: 3 restored, 0 skipped (output exists), 0 failed" in result.stdout
    assert sorted(p.name for p in out.glob("*.mp4")) == ["one.mp4", "three.mp4", "two.mp4"]
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "3 inputs: 0 restored, 3 skipped" in again.stdout, again.stderr[-2000:]


def test_no_run_writes_into_its_inputs(tmp_path, capsys):
    """A frames folder named `frames` that an earlier --save_frames run wrote inside OUTDIR: never written into."""
    source = tmp_path / "frames"
    source.mkdir()
    for i, frame in enumerate(sample_frames(2)):
        write_image(source / f"{i}.png", frame)
    out = tmp_path / "out"
    assert main(["-i", str(source), "-o", str(out), *TINY, "--save_frames"]) == 0
    written = out / "frames" / "frames"  # OUTDIR/<stem>/frames
    before = {p.name: p.read_bytes() for p in written.iterdir()}
    capsys.readouterr()
    assert main(["-i", str(written), "-o", str(out), *TINY, "--save_frames", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "would write into the input" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in written.iterdir()} == before
    assert main(["-i", str(source), "-o", str(source / "sub"), *TINY]) == 2  # an output inside the input folder


DEVICES = [("cuda", "no CUDA GPU"), ("tpu", "unknown device"), ("meta", "not supported")]


@pytest.mark.parametrize("device, message", DEVICES)
def test_unavailable_devices_are_one_line(device, message, tmp_path, capsys):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["-i", str(SAMPLE), "-o", str(tmp_path), *TINY, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_inputs_are_checked_before_any_model_is_built(tmp_path, monkeypatch, capsys):
    import keep.pipeline.pipeline as pipeline_module

    built = []
    monkeypatch.setattr(pipeline_module, "load_model", lambda *a, **k: built.append(1))
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    for bad in ("missing.mp4", "junk.mp4"):
        assert main(["-i", str(tmp_path / bad), "-o", str(tmp_path / "o"), *TINY]) == 2
    assert built == [] and "does not exist" in capsys.readouterr().err
    assert main(["-i", str(SAMPLE), "-o", str(tmp_path / "o"), *TINY, "--threads", "0"]) == 2
    assert built == [] and "--threads must be >= 1" in capsys.readouterr().err


def test_a_stage_failure_stops_every_stage_with_one_line(tmp_path, capsys):
    """An unreadable frame in a frames folder: the decoder (in its worker process) fails; the run ends
    with one error line, exit 2, and leaves neither the output nor its partial file (a frame of another
    size is scaled instead: tests/test_footage.py)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = sample_frames(30)
    for i, frame in enumerate(frames):
        write_image(folder / f"{i:03d}.png", frame)
    (folder / "025.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    out = tmp_path / "out"
    args = ["-i", str(folder), "-o", str(out), "--model", "preset:tiny", "--detector", "dlib", "--flow", "dis"]
    assert main(args) == 2  # --overlap processes (default)
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "025.png" in err and "Traceback" not in err
    assert not out.exists()  # nothing written: not even the folder made for it is left


def test_an_unexpected_failure_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    from keep.pipeline.compose import ComposeStage

    def broken(self, *args, **kwargs):
        raise RuntimeError("paste exploded")

    monkeypatch.setattr(ComposeStage, "compose", broken)
    clip = write_clip(tmp_path / "talk.mp4", sample_frames(3))
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "paste exploded" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
