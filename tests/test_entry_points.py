"""Every entry point, every bad input: one `error:` line, exit status 2, no traceback, no write into
an input (the convention is keep/cli.py's).

One table row per case: (entry point, arguments, expectation). Each case runs as its own process
(`tests/entry_point_runner.py` forks it from an interpreter that has already imported torch, so a
case costs milliseconds, not the ~3 s of a fresh interpreter; `KEEP_ENTRY_POINTS_FRESH=1` runs every
case as a fresh `python script.py ...` instead). Cases fail before any expensive work: tiny presets,
`KEEP_OFFLINE=1`, inputs of a few 64 px frames. `{in}` in an argument is the folder of inputs,
`{out}` the case's own output folder. Rows marked "ok" are inputs that must be accepted.

What counts as the error line: a line starting with `error: ` (keep.cli) or argparse's
`<prog>: error: ` (a malformed option; argparse also exits with 2). It must be the only such line and
the last line of stderr; logging before it is fine; "Traceback" and "unrecognized arguments" (a flag
the convention requires but the entry point lacks) fail the case.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import footage
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
TINY_TRAIN = "configs/tiny/released/stage1_vqgan.yml"
ERROR_LINE = re.compile(r"^(error: |[\w.\- ]+: error: )")  # argparse's prog: a script, or python -m benchmarks X


@dataclass(frozen=True)
class Case:
    script: str  # relative to the repository
    args: tuple[str, ...]
    match: str | None = None  # a substring the error line must contain (case-insensitive); None: any
    ok: bool = False  # an input that must be accepted (exit 0) rather than refused

    @property
    def id(self) -> str:
        text = " ".join(self.args).replace("{in}/", "").replace("{out}", "OUT")
        return f"{Path(self.script).stem}: {text}"[:90]


def bad(script: str, *args: str, match: str | None = None) -> Case:
    return Case(script, tuple(args), match)


def good(script: str, *args: str) -> Case:
    return Case(script, tuple(args), ok=True)


INF = ("inference.py", "--model", "preset:tiny", "--flow", "dis", "--detector", "dlib")
# footage as cameras make it, through the quick settings (the default overlap: tests/test_no_hang.py)
FOOTAGE = ("--model", "preset:tiny", "--flow", "dis", "--set", "overlap=threads", "preset=ultrafast")
TRAIN = ("train.py", "-opt", TINY_TRAIN)
TEST = ("test.py", "--model", "preset:tiny", "--no_progress", "--set", "results_dir={out}")
MAKE = "scripts/make_test_set.py"
PREP = "scripts/prepare_vfhq.py"
PREVIEW = "scripts/preview_degradations.py"
# the lab: `python -m benchmarks COMMAND ...` (the folder runs as its __main__.py)
LAB = "benchmarks"
BPIPE = (LAB, "pipeline", "--model", "preset:tiny", "--flow", "dis", "--detector", "dlib")
BCOMPOSE = (LAB, "compose", "--size", "128x96", "--frames", "2", "--crop", "64")
BSPEED = (LAB, "speed", "--weights", "preset:tiny", "--frames", "1", "--window", "1")
BPROFILE = (LAB, "profile", "--weights", "preset:tiny")
CONTENTION = (LAB, "contention", "--seconds", "1")
BDETECT = (LAB, "detect", "--frames", "1", "--repeats", "1", "--size", "64x64")

CASES: list[Case] = [
    # inference.py
    bad(*INF, "-i", "{in}/missing.mp4", "-o", "{out}", match="missing.mp4"),
    bad(*INF, "-i", "{in}/corrupt.mp4", "-o", "{out}", match="corrupt.mp4"),
    bad(*INF, "-i", "{in}/empty", "-o", "{out}", match="empty"),
    bad(*INF, "-i", "{in}/gray", "-o", "{in}/gray", "--has_aligned", match="input"),  # output into the input
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--has_aligned", "--model", "{in}/random_state.pth"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--has_aligned", "--model", "{in}/codeformer.pth"),
    # checkpoints as users bring them: a bare state dict of no known configuration, a folder
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--has_aligned", "--model", "{in}/odd_state.pth", match="closest"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--has_aligned", "--model", "{in}/set", match="is a folder"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--set", "nosuch.key=1", match="nosuch"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--window", "0", match="window"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--window", "abc", match="window"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--device", "cuda", match="cuda"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--device", "tpu", match="tpu"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--threads", "0", match="threads"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--set", "preset=warp9", match="preset"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--set", "detect_size=-1", match="detect_size"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--set", "detect_size=big", match="detect_size"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--set", "container=avi", match="container"),
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--model", "keep", match="--model preset:tiny"),  # no weights, offline
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--fp16", match="--fp16 is now --precision fp16"),  # former flags
    bad(*INF, "-i", "{in}/gray", "-o", "{out}", "--crf", "20", match="--crf is now --set crf="),
    bad(*INF, "-i", "{in}/unknown_codec.mkv", "-o", "{out}", match="no decoder"),
    good("inference.py", "-i", "{in}/phone.mp4", "-o", "{out}", *FOOTAGE),  # stored sideways, with a rotation
    good("inference.py", "-i", "{in}/vfr.mp4", "-o", "{out}", *FOOTAGE),  # variable frame rate (failed at 68% before)
    good("inference.py", "-i", "{in}/vfr.mkv", "-o", "{out}", *FOOTAGE),
    good("inference.py", "-i", "{in}/tracks.mkv", "-o", "{out}", *FOOTAGE, "--set", "container=mp4"),  # PCM, subtitles
    good("inference.py", "-i", "{in}/capture.ts", "-o", "{out}", *FOOTAGE),  # frame size changes mid-stream
    good("inference.py", "-i", "{in}/resized", "-o", "{out}", *FOOTAGE),  # a folder with one frame of another size
    # app.py: refused before the server starts (uploads are checked in the page: tests/test_app.py)
    bad("app.py", "--model", "{in}/missing.pth", match="missing.pth"),
    bad("app.py", "--model", "preset:huge", match="preset"),
    bad("app.py", "--device", "tpu", match="tpu"),
    bad("app.py", "--threads", "0", match="threads"),
    bad("app.py", "--max_frames", "0", match="max_frames"),
    bad("app.py", "--max_seconds", "soon", match="max_seconds"),
    bad("app.py", "--max_upload_mb", "0", match="max_upload_mb"),
    bad("app.py", "--auth_file", "{in}/missing_logins.txt", match="missing_logins.txt"),
    # train.py (all overrides in one --set: the runs go to {out})
    bad("train.py", "-opt", "{in}/missing.yml", match="missing.yml"),
    bad(*TRAIN, "--set", "root={out}", "nosuch.key=1", match="nosuch"),
    bad(*TRAIN, "--set", "root={out}", "train.lr=abc", match="train.lr"),
    bad(*TRAIN, "--set", "root={out}", "data.path={in}/missing.mp4", match="missing.mp4"),
    bad(*TRAIN, "--set", "root={out}", "data.path={in}/corrupt.mp4", match="corrupt.mp4"),
    bad(*TRAIN, "--set", "root={out}", "data.path={in}/empty", match="empty folder: no videos or frames"),
    bad(*TRAIN, "--set", "root={out}", "data.path={in}/audio.m4a", match="no video stream"),  # a sound file
    # a config that is not YAML text, numbers out of range, a run name that is a path; the
    # table checks that nothing was written ({out} holds no run folder)
    bad("train.py", "-opt", "{in}/binary.yml", match="binary.yml: not UTF-8 text"),
    bad("train.py", "-opt", "{in}/unsafe.yml", match="tags that build Python objects are refused"),
    bad("train.py", "-opt", "{in}/folder.yml", match="is a folder"),
    bad(*TRAIN, "--set", "root={out}", "train.lr=-1", match="'train.lr' must be > 0"),
    bad(*TRAIN, "--set", "root={out}", "data.batch_size=0", match="'data.batch_size' must be >= 1"),
    bad(*TRAIN, "--set", "root={out}", "train.total_steps=0", match="'train.total_steps' must be >= 1"),
    bad(*TRAIN, "--set", "root={out}", "train.total_steps=-5", match="'train.total_steps' must be >= 1"),
    bad(*TRAIN, "--set", "root={out}", "name=../..", match="plain folder name"),
    bad(*TRAIN, "--set", "root={out}", "name=a/b", match="plain folder name"),
    bad(*TRAIN, "--set", "root={out}", "model.pretrained={in}/random_state.pth"),
    bad(*TRAIN, "--set", "root={out}", "model.pretrained={in}/set", match="is a folder"),
    bad(*TRAIN, "--set", "root={out}", "model.config.cft_weight=0.5", match="fidelity"),
    bad(*TRAIN, "--set", "root={out}", "train.device=cuda", match="cuda"),
    bad(*TRAIN, "--set", "root={out}", "train.device=tpu", match="tpu"),
    bad(*TRAIN, "--set", "root={out}", "--threads", "0", match="threads"),
    # test.py
    bad("test.py", "-opt", "{in}/missing.yml", match="missing.yml"),
    bad(*TEST, "data.root={in}/set", "nosuch.key=1", match="nosuch"),
    bad(*TEST, "data.root={in}/set", "model.window=abc", match="model.window"),
    bad(*TEST, "data.root={in}/missing", match="GT"),
    bad(*TEST, "data.root={in}/set_empty", match="no frames"),
    bad(*TEST, "data.root={in}/set_badlq", match="LQ frames are"),
    bad(*TEST, "data.root={in}/set", "results_dir={in}/set/GT", "--name", "clip", match="input"),
    bad(*TEST, "data.root={in}/set", "--model", "{in}/missing.pth", match="missing.pth"),
    bad(*TEST, "data.root={in}/set", "--model", "{in}/random_state.pth", match="checkpoint"),
    bad(*TEST, "data.root={in}/set", "--model", "{in}/codeformer.pth", match="checkpoint"),
    bad(*TEST, "data.root={in}/set", "--device", "cuda", match="cuda"),
    bad(*TEST, "data.root={in}/set", "--device", "tpu", match="tpu"),
    bad(*TEST, "data.root={in}/set", "--threads", "0", match="threads"),
    good(*TEST, "data.root={in}/set_gray", "methods=[bicubic]"),  # grayscale frames are accepted
    bad("test.py", "-opt", "{in}/binary.yml", match="binary.yml: not UTF-8 text"),
    bad("test.py", "-opt", "{in}/unsafe.yml", match="tags that build Python objects are refused"),
    bad("test.py", "-opt", "{in}/folder.yml", match="is a folder"),
    bad(*TEST, "data.root={in}/set", "--name", "../escaped", match="plain folder name"),
    bad(*TEST, "data.root={in}/set", "model.window=0", match="'model.window' must be >= 1"),
    bad(*TEST, "data.root={in}/set", "model.fidelity=1.5", match="'model.fidelity' must be between 0 and 1"),
    bad(*TEST, "data.root={in}/set", "--model", "{in}/odd_state.safetensors", match="keep.save_checkpoint"),
    good(*TEST, "data.root={in}/set", "methods=[keep]", "model.flow=dis", "--model", "{in}/tiny.safetensors"),
    # scripts/make_test_set.py
    bad(MAKE, "--root", "{in}/missing", match="GT"),
    bad(MAKE, "--root", "{in}/set_empty", match="no images"),
    bad(MAKE, "--root", "{in}/set_odd", match="divisible"),
    bad(MAKE, "--root", "{in}/set_corrupt", match="cannot read image"),
    bad(MAKE, "--root", "{in}/set", "--set", "nosuch=1", match="nosuch"),
    bad(MAKE, "--root", "{in}/set", "--set", "crf=abc", match="crf"),
    bad(MAKE, "--root", "{in}/set", "--set", "crf=[10, 60]", match="'crf[1]' must be between 0 and 51"),
    bad(MAKE, "--root", "{in}/set", "--set", "crf=!!python/object/apply:os.system [ls]", match="refused"),
    bad(MAKE, "--root", "{in}/set", "--protocol", "vfhq_hard", match="protocol"),
    bad(MAKE, "--root", "{in}/set", "--threads", "0", match="threads"),
    good(MAKE, "--root", "{out}/gray_copy", "--protocol", "vfhq_easy"),  # grayscale GT (copied to {out})
    # scripts/prepare_vfhq.py
    bad(PREP, "--input", "{in}/missing", "--out", "{out}", match="missing"),
    bad(PREP, "--input", "{in}/empty", "--out", "{out}", match="empty"),
    bad(PREP, "--input", "{in}/clips_corrupt", "--out", "{out}", match="corrupt.mp4"),
    bad(PREP, "--input", "{in}/clips_corrupt", "--out", "{in}/clips_corrupt", match="input"),
    bad(PREP, "--input", "{in}/clips_corrupt", "--out", "{out}", "--threads", "0", match="threads"),
    # scripts/preview_degradations.py
    bad(PREVIEW, "--input", "{in}/missing.mp4", "--out", "{out}/p.png", match="missing.mp4"),
    bad(PREVIEW, "--input", "{in}/corrupt.mp4", "--out", "{out}/p.png", match="corrupt.mp4"),
    bad(PREVIEW, "--input", "{in}/empty", "--out", "{out}/p.png", match="empty"),
    bad(PREVIEW, "--input", "{in}/gray", "--out", "{in}/gray/p.png", match="input"),
    bad(PREVIEW, "--input", "{in}/gray", "--out", "{out}/p.png", "--set", "nosuch=1", match="nosuch"),
    bad(PREVIEW, "--input", "{in}/gray", "--out", "{out}/p.png", "--set", "crf=abc", match="crf"),
    bad(PREVIEW, "--input", "{in}/gray", "--out", "{out}/p.png", "--threads", "0", match="threads"),
    bad(PREVIEW, "--input", "{in}/gray", "--out", "{out}/p.png", "--opt", "{in}/binary.yml", match="not UTF-8"),
    bad(PREVIEW, "--input", "{in}/audio.m4a", "--out", "{out}/p.png", match="no video stream"),
]

LAB_CASES: list[Case] = [  # the lab's commands: run with -m lab
    bad(LAB, "nosuch", match="unknown command"),
    # pipeline
    bad(*BPIPE, "-i", "{in}/missing.mp4", match="missing.mp4"),
    bad(*BPIPE, "-i", "{in}/corrupt.mp4", match="corrupt.mp4"),
    bad(*BPIPE, "-i", "{in}/gray", "--model", "{in}/random_state.pth", match="checkpoint"),
    bad(*BPIPE, "-i", "{in}/gray", "--device", "cuda", match="cuda"),
    bad(*BPIPE, "-i", "{in}/gray", "--device", "tpu", match="tpu"),
    bad(*BPIPE, "-i", "{in}/gray", "--threads", "0", match="threads"),
    bad(*BPIPE, "-i", "{in}/gray", "--set", "nosuch=1", match="nosuch"),  # the keys of inference.py's --set
    bad(*BPIPE, "-i", "{in}/gray", "--set", "overlap=threads", match="--modes"),
    # compose
    bad(*BCOMPOSE, "--size", "wide", match="size"),
    bad(*BCOMPOSE, "--frames", "0", match="frames"),
    bad(*BCOMPOSE, "--preset", "warp9", match="preset"),
    bad(*BCOMPOSE, "--threads", "0", match="threads"),
    good(*BCOMPOSE, "--preset", "ultrafast", "--json", "{out}/compose.json"),
    # speed
    bad(*BSPEED, "--device", "cuda", match="cuda"),
    bad(*BSPEED, "--device", "tpu", match="tpu"),
    bad(*BSPEED, "--threads", "0", match="threads"),
    bad(*BSPEED, "--flow_batch", "0", match="--flow_batch"),
    bad(*BSPEED, "--flow", "farneback", match="--flow"),
    bad(LAB, "speed", "--weights", "{in}/missing.pth", "--frames", "1", match="missing.pth"),
    bad(LAB, "speed", "--weights", "{in}/random_state.pth", "--frames", "1", match="checkpoint"),
    # profile (the options of speed that say what runs, and its own)
    bad(*BPROFILE, "--window", "0", match="--window"),
    bad(*BPROFILE, "--top", "0", match="--top"),
    bad(*BPROFILE, "--device", "cuda", match="cuda"),
    # detect
    bad(*BDETECT, "--device", "cuda", match="cuda"),
    bad(*BDETECT, "--device", "tpu", match="tpu"),
    bad(*BDETECT, "--threads", "0", match="threads"),
    bad(*BDETECT, "--size", "big", match="size"),
    bad(*BDETECT, "--detect_sizes", "0,-1", match="detect_sizes"),
    bad(*BDETECT, "--frames", "0", match="frames"),
    # contention
    bad(*CONTENTION, "--threads", "0", match="threads"),
    bad(LAB, "contention", "--seconds", "0", match="seconds"),
    bad(*CONTENTION, "--compare", "0", match="compare"),
]


# ------------------------------------------------------------------------------------------ inputs
def _frames(folder: Path, count: int, height: int, width: int, *, gray: bool = False, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for t in range(count):
        shape = (height, width) if gray else (height, width, 3)
        cv2.imwrite(str(folder / f"{t:05d}.png"), rng.integers(0, 256, shape, dtype=np.uint8))


def write_checkpoints(root: Path) -> None:
    """Tiny networks as files: ours in safetensors, and the bare state dict of a configuration no preset has."""
    from safetensors.torch import save_file

    import keep
    from keep.archs.keep_arch import KEEP, PRESETS

    torch.manual_seed(0)
    keep.save_checkpoint(root / "tiny.safetensors", keep.load_network("preset:tiny"))
    odd = KEEP(dataclasses.replace(PRESETS["tiny"], nf=48, norm_groups=16)).state_dict()
    torch.save(odd, root / "odd_state.pth")
    save_file({k: v.contiguous() for k, v in odd.items()}, str(root / "odd_state.safetensors"))


def make_inputs(root: Path) -> None:
    """Every input a case reads: missing paths are simply not created."""
    rng = np.random.default_rng(0)
    noise = footage.noise_frames(40)
    footage.write_clip(root / "phone.mp4", [footage.stored(f, 3, False) for f in noise[:3]], rotation=(-90, False))
    for suffix in (".mp4", ".mkv"):
        footage.write_clip(root / f"vfr{suffix}", noise, times=footage.vfr_times(40), audio=[("aac", "eng")])
    footage.write_clip(root / "tracks.mkv", noise[:3], audio=[("aac", "eng"), ("pcm_u8", "fra")],
                       subtitles=[(0.0, 0.05, "Hi")])  # fmt: skip
    footage.ts_with_size_change(root / "capture.ts", noise[:3], footage.noise_frames(3, 96, 128))
    _frames(root / "resized", 3, 48, 64)
    cv2.imwrite(str(root / "resized" / "00001.png"), rng.integers(0, 256, (40, 64, 3), dtype=np.uint8))
    footage.unknown_codec_clip(root / "unknown_codec.mkv")
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
    (root / "empty").mkdir()
    _frames(root / "gray", 3, 64, 64, gray=True)
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4)}, root / "random_state.pth")
    codeformer = {  # the layout of another face restorer's checkpoint (CodeFormer-like keys)
        "params_ema": {
            "encoder.conv_in.weight": torch.zeros(64, 3, 3, 3),
            "quantize.embedding.weight": torch.zeros(1024, 256),
            "ft_layers.0.self_attn.in_proj_weight": torch.zeros(1536, 512),
        }
    }
    torch.save(codeformer, root / "codeformer.pth")
    write_checkpoints(root)
    sets = (("set", 64, 16, False), ("set_gray", 64, 16, True), ("set_badlq", 64, 15, False))
    for name, gt_size, lq_size, gray in sets:
        _frames(root / name / "GT" / "clip", 3, gt_size, gt_size, gray=gray)
        _frames(root / name / "LQ" / "clip", 3, lq_size, lq_size, gray=gray, seed=1)
    (root / "set_empty" / "GT" / "clip").mkdir(parents=True)
    _frames(root / "set_odd" / "GT" / "clip", 2, 63, 61)
    _frames(root / "set_corrupt" / "GT" / "clip", 1, 64, 64)
    (root / "set_corrupt" / "GT" / "clip" / "00000.png").write_bytes(b"\x89PNG not really")
    (root / "clips_corrupt").mkdir()
    (root / "clips_corrupt" / "corrupt.mp4").write_bytes((root / "corrupt.mp4").read_bytes())
    (root / "binary.yml").write_bytes(bytes(range(256)))  # not UTF-8 from byte 0x80 on
    (root / "unsafe.yml").write_text("name: !!python/object/apply:os.system ['echo unsafe']\n")
    (root / "folder.yml").mkdir()
    _audio_only(root / "audio.m4a")


def _audio_only(path: Path) -> None:
    """A tenth of a second of silence in AAC: a media file without a video stream."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(2):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------------------------ running
class Runner:
    """Feeds cases to tests/entry_point_runner.py (or runs fresh interpreters)."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.fresh = os.environ.get("KEEP_ENTRY_POINTS_FRESH", "") not in ("", "0")
        self.server = None
        if not self.fresh:
            self.server = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "entry_point_runner.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=env,
            )
            assert json.loads(self.server.stdout.readline()) == {"ready": True}

    def run(self, script: str, args: list[str], out: Path, timeout: int = 60) -> tuple[int, str, str]:
        stdout, stderr = out.parent / f"{out.name}.stdout", out.parent / f"{out.name}.stderr"
        if self.fresh:
            result = subprocess.run(
                [sys.executable, str(REPO / script), *args], cwd=REPO, env=self.env, capture_output=True, text=True
            )
            return result.returncode, result.stdout, result.stderr
        case = {"script": str(REPO / script), "args": args, "cwd": str(REPO), "env": self.env}
        case |= {"stdout": str(stdout), "stderr": str(stderr), "timeout": timeout}
        self.server.stdin.write(json.dumps(case) + "\n")
        self.server.stdin.flush()
        rc = json.loads(self.server.stdout.readline())["rc"]
        return rc, stdout.read_text(), stderr.read_text()

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=30)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("entry_point_inputs")
    make_inputs(root)
    return root


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env |= {"KEEP_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO), "KEEP_DEBUG": ""}
    env |= {"CUDA_VISIBLE_DEVICES": ""}  # `--device cuda` is a device that is not there, on any machine
    cache = tmp_path_factory.mktemp("no_weights")  # no pretrained file at hand, on any machine
    env |= {"KEEP_WEIGHTS_DIR": str(cache), "KEEP_CACHE_DIR": str(cache), "TORCH_HOME": str(cache)}
    instance = Runner(env)
    yield instance
    instance.close()


@pytest.mark.parametrize(
    "case", [*CASES, *(pytest.param(c, marks=pytest.mark.lab) for c in LAB_CASES)], ids=lambda c: c.id
)
def test_entry_point_bad_input(case: Case, inputs: Path, runner: Runner, tmp_path: Path):
    out = tmp_path / "out"
    if case.ok and "{out}/gray_copy" in case.args:  # make_test_set writes LQ/ into its root: give it a copy
        for kind in ("GT",):
            _frames(out / "gray_copy" / kind / "clip", 3, 64, 64, gray=True)
    args = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in case.args]
    before = snapshot(inputs)
    rc, stdout, stderr = runner.run(case.script, args, tmp_path / "case")
    report = f"exit {rc}\n--- stderr ---\n{stderr[-3000:]}\n--- stdout ---\n{stdout[-1000:]}"
    assert "Traceback" not in stderr, report
    assert "unrecognized arguments" not in stderr, report  # a flag the convention requires is missing
    error_lines = [line for line in stderr.splitlines() if ERROR_LINE.match(line)]
    if case.ok:
        assert rc == 0 and not error_lines, report
        if case.script == "inference.py":  # a complete output: the video and, written after it, its summary
            videos = [p for p in out.iterdir() if p.suffix in (".mp4", ".mkv")]
            assert len(list(out.glob("*_summary.json"))) == 1 and len(videos) == 1, report
    else:
        assert rc == 2, report
        assert len(error_lines) == 1, report
        assert stderr.strip().splitlines()[-1] == error_lines[0], report  # the error is the last word
        if case.match:
            assert case.match.lower() in error_lines[0].lower(), report
        left = sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []
        assert not left, f"refused, yet wrote {left[:5]}\n{report}"  # bad input is refused before any write
        if case.script == "inference.py":  # nor is an output folder left behind that it made
            assert not out.exists(), f"refused, yet made {out}\n{report}"
    assert snapshot(inputs) == before, "an input was written to"


# ------------------------------------------------------------------------------------------ threads
PROBE = (
    "import json, os{first}\n"
    "import keep\n"
    "from keep.threads import cpu_cores, default_threads, passive_openmp_waits\n"
    "passive = passive_openmp_waits()  # as an entry point does, first thing\n"
    "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), passive, default_threads(), cpu_cores()]))\n"
)


@pytest.mark.parametrize(
    "env_policy, torch_first, expected_policy, passive",
    [
        (None, False, "PASSIVE", True),  # asked before torch loads OpenMP
        ("ACTIVE", False, "ACTIVE", False),  # the user's choice wins
        ("passive", False, "passive", True),
        (None, True, None, False),  # torch (and OpenMP) loaded first: too late to choose, left alone
    ],
)
def test_thread_policy_in_a_fresh_interpreter(env_policy, torch_first, expected_policy, passive):
    """Passive OpenMP waits: all cores by default; otherwise the cores the load average leaves."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"PYTHONPATH": str(REPO)}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    code = PROBE.format(first="\nimport torch" if torch_first else "")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    policy, is_passive, threads, cores = json.loads(result.stdout.strip().splitlines()[-1])
    assert (policy, is_passive) == (expected_policy, passive)
    if passive:
        assert threads == cores
    else:
        assert 1 <= threads <= max(1, cores - int(os.getloadavg()[0] + 0.5)) + 1  # the load may move meanwhile


def test_importing_keep_changes_nothing():
    """No import-time side effects: `import keep` loads no torch and sets no OpenMP policy, and the
    package's modules leave the policy to the entry points."""
    code = (
        "import os, sys\nimport keep\nassert 'torch' not in sys.modules, 'import keep loaded torch'\n"
        "import keep.pipeline, keep.train, keep.evaluation\nprint(os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "None"


# Every entry point asks for passive waits itself, first thing (keep/threads.py): every script included, and
# the lab's one entry point before any of its commands loads (`benchmarks COMMAND`: the folder's __main__.py).
ENTRY_POINTS = ["inference.py", "train.py", "test.py", "app.py"] + sorted(
    f"scripts/{p.name}" for p in (REPO / "scripts").glob("*.py")
)
LAB_COMMANDS = ["benchmarks speed", "benchmarks profile", "benchmarks pipeline", "benchmarks ddp"]
WATCH = """
import json, os, runpy, sys

class TorchImported(BaseException):
    pass

class Watch:  # the policy in force when the script first imports torch; the import itself is refused (cheap)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise TorchImported
        return None

sys.meta_path.insert(0, Watch())
policies, path, repo = {}, list(sys.path), os.getcwd()
for entry in sys.argv[1:]:
    script, *command = entry.split()
    os.environ.pop("OMP_WAIT_POLICY", None)
    sys.argv, sys.path[:] = [script, *command, "--help"], [os.path.dirname(os.path.abspath(script)), *path]
    try:
        runpy.run_path(script, run_name="__main__")
        when = "end"
    except TorchImported:
        when = "torch"
    except SystemExit:
        when = "end"
    policies[entry] = [when, os.environ.get("OMP_WAIT_POLICY")]
    for name, module in list(sys.modules.items()):  # the next script imports the project's modules afresh
        file = getattr(module, "__file__", None) or ""  # (not the packages of a virtual environment kept in the repo)
        if file.startswith(repo) and "site-packages" not in file:
            del sys.modules[name]
print(json.dumps(policies))
"""


@pytest.fixture(scope="module")
def policies_at_torch_import() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", WATCH, *ENTRY_POINTS, *LAB_COMMANDS],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", [*ENTRY_POINTS, *(pytest.param(c, marks=pytest.mark.lab) for c in LAB_COMMANDS)])
def test_entry_points_ask_for_passive_waits_before_torch_loads(script, policies_at_torch_import):
    when, policy = policies_at_torch_import[script]
    assert policy == "PASSIVE", (
        f"{script}: OMP_WAIT_POLICY={policy!r} when it {'imported torch' if when == 'torch' else 'ended'}"
    )


def test_the_package_never_imports_the_lab():
    """benchmarks/ imports keep, never the other way: the product runs without its lab (read from the source)."""
    import ast

    offenders = []
    for path in [*(REPO / "keep").rglob("*.py"), *REPO.glob("*.py"), *(REPO / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "benchmarks"]
    assert not offenders, offenders


def test_option_names_are_spelled_with_underscores():
    """One spelling convention across inference.py, train.py, test.py, app.py, scripts/ and benchmarks/
    (keep/cli.py): `--save_frames`, `--no_cuda_graphs`. Read from the parsers' source: no interpreter per script.
    `argparse.BooleanOptionalAction` is refused too, as it adds a hyphenated `--no-...` of its own."""
    import ast

    hyphenated = []
    lab = [str(p.relative_to(REPO)) for p in sorted((REPO / "benchmarks").glob("*.py"))]
    for script in [*ENTRY_POINTS, *lab, "keep/cli.py"]:
        tree = ast.parse((REPO / script).read_text(), script)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "BooleanOptionalAction":
                hyphenated.append(f"{script}:{node.lineno}: BooleanOptionalAction")
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
                continue
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("--") and "-" in arg.value[2:]:
                    hyphenated.append(f"{script}:{node.lineno}: {arg.value}")
    assert not hyphenated, hyphenated


def test_the_code_is_declared_apache_2():
    """LICENSE holds the Apache License 2.0 and setup.py says so (the released weights keep their own licences)."""
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    setup = (REPO / "setup.py").read_text()
    assert 'license="Apache-2.0"' in setup and "License :: OSI Approved :: Apache Software License" in setup


def test_no_issue_numbers_in_code_or_docs():
    """Code, configs and docs say what a thing does and why (or name its docs/ section), never an issue number."""
    pattern = re.compile(r"\bissues? #?\d+", re.IGNORECASE)
    folders = ("keep", "tests", "docs", "configs", "scripts", "benchmarks", "weights", ".ci")
    files = [p for p in REPO.iterdir() if p.is_file()] + [p for f in folders for p in (REPO / f).rglob("*")]
    offenders = []
    for path in files:
        name = str(path.relative_to(REPO))
        if path.suffix not in {".py", ".md", ".yml", ".yaml", ".txt", ".toml", ".sh", ""}:
            continue
        if path.is_file() and (match := pattern.search(path.read_text(errors="replace"))):
            offenders.append(f"{name}: {match.group()}")
    assert not offenders, offenders


def test_the_readme_layout_names_every_module_of_keep():
    """The README's layout map is complete: every module of keep/ and every package, by name."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") :].split("```")[1]
    names = [p.name for p in (REPO / "keep").glob("*.py") if p.name != "__init__.py"]
    names += [f"keep/{p.parent.name}/" for p in (REPO / "keep").glob("*/__init__.py")]
    assert [name for name in names if name not in layout] == []
