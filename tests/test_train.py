"""Trainer tests on CPU with the tiny released-recipe configs (configs/tiny/released/): every stage, what each
stage trains, exact and safe resume, determinism, train.py's conventions, 2-process DDP."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from keep.config import load_config
from keep.errors import KeepError
from keep.precision import autocast_dtype
from keep.train import TrainConfig, Trainer
from keep.train.schedules import lr_at

REPO = Path(__file__).resolve().parent.parent
STAGE_CONFIGS = {
    "vqgan": "configs/tiny/released/stage1_vqgan.yml",
    "kalman": "configs/tiny/released/stage2_kalman.yml",
    "cft_cfa": "configs/tiny/released/stage3_cft_cfa.yml",
}
ENV = {**os.environ, "KEEP_OFFLINE": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: see conftest.one_thread


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """Two synthetic 'aligned face' clips of 6 frames (moving gradient + disc), `clips` layout."""
    root = tmp_path_factory.mktemp("clips")
    yy, xx = np.mgrid[0:80, 0:80]
    for c in range(2):
        (root / f"clip{c}").mkdir()
        for t in range(6):
            img = np.stack([(xx * 3 + t * 5) % 256, (yy * 3 + c * 40) % 256, (xx + yy) % 256], -1).astype(np.uint8)
            cv2.circle(img, (30 + 2 * t, 40), 12, (255, 200, 150), -1)
            cv2.imwrite(str(root / f"clip{c}" / f"{t:04d}.png"), img)
    return root


def tiny_config(stage: str, tmp_path: Path, data: Path | None, *extra: str) -> TrainConfig:
    """A tiny released-recipe stage from random weights, on `data` (a clips folder) or the shipped clip."""
    sets = [f"root={tmp_path}", "model.pretrained=null", "log.every=1", "log.tensorboard=false", "log.val_items=1"]
    if data is not None:
        sets += ["data.source=clips", f"data.path={data}", "data.frame_range=[0,-1]"]
        sets += ["val.source=clips", f"val.path={data}", "val.frame_range=[0,-1]"]
    if stage != "vqgan":
        sets += ["data.clip_length=3", "val.clip_length=3"]
    return load_config(TrainConfig, REPO / STAGE_CONFIGS[stage], sets + list(extra))


def read_metrics(run: Path) -> dict[int, dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in lines if "train/loss" in r}


def changed_modules(before: dict, after: dict) -> set[str]:
    return {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}


# ------------------------------------------------------------------------------------------ stages
@pytest.mark.parametrize("stage", list(STAGE_CONFIGS))
def test_each_released_stage_trains_on_generated_clips(stage, tmp_path, clip_folder):
    cfg = tiny_config(stage, tmp_path, clip_folder, "train.total_steps=3", "train.disc_start=1")
    Trainer(cfg).fit()
    run = tmp_path / cfg.name
    metrics = read_metrics(run)
    assert sorted(metrics) == [1, 2, 3] and all(np.isfinite(m["train/loss"]) for m in metrics.values())
    assert (run / "models" / "net_g_latest.pth").is_file() and (run / "training_states" / "latest.state").is_file()
    assert (run / "config.yml").is_file() and list((run / "samples").glob("*.png"))
    validation = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if "val/psnr" in ln]
    assert [v["step"] for v in validation] == [0, 3]
    assert ("val/temporal" in validation[-1]) == (stage != "vqgan")
    if stage != "kalman":
        assert "train/gan" in metrics[3] and "train/d_loss" in metrics[3] and "train/gan" not in metrics[1]
    from keep import load_network

    assert load_network(str(run / "models" / "net_g_latest.pth")).config.img_size == 64


def _validation(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if "val/psnr" in ln]


# Stages I and III shortened by a third (schedules alike), stage II as shipped: a full chain (1 thread) reached
# stage I's held-out 22.0 dB at step 100 of 150, and stage III's steadiness needs stage II's full length.
SHORTER = {
    "vqgan": ["train.total_steps=100", "train.disc_start=60"],
    "kalman": [],
    "cft_cfa": ["train.total_steps=40", "train.disc_start=20"],
}


def test_tiny_released_twins_train_chained_on_the_shipped_clip(tmp_path):
    """The three tiny twins, I -> II -> III, each from the previous one's net_g_latest.pth (I and III shortened)."""
    previous = None
    for stage, opt in STAGE_CONFIGS.items():
        cfg = load_config(TrainConfig, REPO / opt)
        sets = [f"root={tmp_path}", "log.tensorboard=false", *SHORTER[stage]]
        if previous is not None:
            assert cfg.model.pretrained == f"experiments/{previous}/models/net_g_latest.pth"
            sets.append(f"model.pretrained={tmp_path / previous / 'models' / 'net_g_latest.pth'}")
        done = _train_subprocess("-opt", opt, "--threads", "1", "--set", *sets)
        assert done.returncode == 0, done.stderr[-2000:]
        first, last = _validation(tmp_path / cfg.name)[0], _validation(tmp_path / cfg.name)[-1]
        if stage == "vqgan":  # reconstruction learns from random weights
            assert last["val/psnr"] > first["val/psnr"] + 8, (first, last)
        elif stage == "kalman":  # restoration of degraded held-out clips learns from stage I
            assert last["val/psnr"] > first["val/psnr"] + 3, (first, last)
        else:  # CFT / CFA: the held-out clips get steadier, no worse
            assert last["val/temporal"] < 0.9 * first["val/temporal"], (first, last)  # measured -18%
            assert last["val/psnr"] > first["val/psnr"] - 0.5, (first, last)
        previous = cfg.name


def test_stage_two_step_changes_exactly_lq_encoder_transformer_and_kalman(tmp_path, clip_folder):
    trainer = Trainer(tiny_config("kalman", tmp_path, clip_folder, "train.total_steps=1", "val=null"))
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    trainer.fit()
    after = trainer.network.state_dict()
    assert changed_modules(before, after) == {"lq_encoder", "transformer", "kalman"}
    for name in ("lq_encoder", "transformer", "kalman"):  # every tensor of them learns (no dead branch)
        unchanged = [k for k in before if k.startswith(name + ".") and torch.equal(before[k], after[k])]
        assert not unchanged, unchanged


def test_stage_three_step_changes_only_cft_cfa_and_discriminator(tmp_path, clip_folder):
    trainer = Trainer(tiny_config("cft_cfa", tmp_path, clip_folder, "train.total_steps=2", "train.disc_start=0"))
    trainer.val = None
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    disc_before = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    trainer.fit()
    assert changed_modules(before, trainer.network.state_dict()) == {"cft", "cfa"}
    assert all(not torch.equal(disc_before[k], v) for k, v in trainer.disc.state_dict().items())


def test_the_trainers_flow_runs_in_float32_under_a_bf16_autocast(tmp_path, clip_folder):
    """One precision rule for flow in training and inference (keep.flow.clip_flows): the autocast of the
    trainer's step (configs/keep.yml trains in bf16) does not reach the estimator, whose flows stay exact
    float32. The step stops at its first flow call: what the estimator saw is the test, not a bf16 step."""

    class FlowCalled(Exception):
        pass

    cfg = tiny_config("kalman", tmp_path, clip_folder, "train.total_steps=1", "train.precision=bf16", "val=null")
    trainer = Trainer(cfg)
    kernel, seen = torch.ones(2, 3, 1, 1), []

    def flow(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        seen.append((target.dtype, autocast_dtype("cpu"), F.conv2d(target - source, kernel).dtype))
        raise FlowCalled

    trainer.tools.flow = flow
    with pytest.raises(FlowCalled):
        trainer.train_step(next(iter(trainer.loader())))
    assert seen == [(torch.float32, None, torch.float32)]  # under the step's bf16 autocast: bf16 conv


def test_trainable_follows_the_stage_unless_overridden(tmp_path, clip_folder):
    trainer = Trainer(tiny_config("cft_cfa", tmp_path, clip_folder, "name=a", "val=null"))
    assert {n.split(".")[0] for n, p in trainer.network.named_parameters() if p.requires_grad} == {"cft", "cfa"}
    trainer = Trainer(tiny_config("cft_cfa", tmp_path, clip_folder, "name=b", "val=null", "train.trainable=[cfa]"))
    assert {n.split(".")[0] for n, p in trainer.network.named_parameters() if p.requires_grad} == {"cfa"}


def test_config_errors_are_clear(tmp_path, clip_folder):
    with pytest.raises(KeepError, match="unknown config key 'train.learning_rate'"):
        tiny_config("vqgan", tmp_path, clip_folder, "train.learning_rate=1")
    with pytest.raises(KeepError, match="unknown train.stage 'temporal'.*vqgan"):
        Trainer(tiny_config("vqgan", tmp_path, clip_folder, "train.stage=temporal"))
    with pytest.raises(KeepError, match="loss.codebook is not computed by stage 'cft_cfa'"):
        Trainer(tiny_config("cft_cfa", tmp_path, clip_folder, "loss.codebook=1"))
    with pytest.raises(KeepError, match="stage 'kalman' needs clips"):
        Trainer(tiny_config("kalman", tmp_path, clip_folder, "data.clip_length=1"))
    with pytest.raises(KeepError, match="unknown submodule 'codebook'"):
        Trainer(tiny_config("vqgan", tmp_path, clip_folder, "train.trainable=[codebook]"))


def test_multistep_schedule_halves_at_milestones():
    rates = [lr_at(s, base=2e-4, total=500, schedule="multistep", milestones=(200, 400), gamma=0.5) for s in (0, 199)]
    assert rates == [2e-4, 2e-4]
    assert lr_at(200, base=2e-4, total=500, schedule="multistep", milestones=(200, 400)) == 1e-4
    assert lr_at(450, base=2e-4, total=500, schedule="multistep", milestones=(200, 400)) == 5e-5


def test_validation_needs_no_dev_packages(tmp_path, clip_folder, monkeypatch):
    """PSNR / SSIM come from keep.metrics: validation runs with scikit-image (dev only) unimportable."""
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    trainer = Trainer(tiny_config("kalman", tmp_path, clip_folder, "train.total_steps=1"))
    values = trainer.validate()
    assert 0 < values["val/psnr"] < 60 and 0 < values["val/ssim"] <= 1 and values["val/temporal"] > 0


def test_nan_stops_with_message_and_last_good_checkpoint(tmp_path, clip_folder):
    trainer = Trainer(tiny_config("vqgan", tmp_path, clip_folder, "train.total_steps=5", "val=null"))
    forward, calls = trainer.forward.forward, {"n": 0}

    def poisoned(batch):
        calls["n"] += 1
        res = forward(batch)
        if calls["n"] == 3:
            res.terms["l1"] = res.terms["l1"] * float("nan")
        return res

    trainer.forward.forward = poisoned
    with pytest.raises(KeepError, match="not finite at step 3.*last good"):
        trainer.fit()
    saved = torch.load(tmp_path / trainer.cfg.name / "models" / "net_g_last_good.pth", weights_only=True)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ resume
def _train_subprocess(*args: str, wait: bool = True, env: dict | None = None):
    command, env = [sys.executable, "train.py", *args], {**ENV, **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not (path.is_file() and path.stat().st_size) and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, f"the run ended before {path} appeared: {process.stderr.read()[-2000:]}"


def _no_partial_files(run: Path) -> bool:
    return not [p for p in run.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


def test_stopped_and_killed_runs_resume_bit_identical_and_one_run_per_folder(tmp_path, clip_folder):
    """Real train.py processes at the default thread count (train.deterministic in the tiny configs): two
    uninterrupted runs (a, b), one SIGKILLed (c) and one SIGTERMed (d) after their first checkpoint, both
    resumed: the same losses and bit-identical weights. While `a` runs, a second training under its name
    (with --auto_resume and another learning rate) is refused in one line naming `a`'s process; `a` goes on."""
    sets = [f"root={tmp_path}", "model.pretrained=null", "data.source=clips", f"data.path={clip_folder}"]
    sets += ["data.frame_range=[0,-1]", "val=null", "log.every=1", "log.tensorboard=false", "log.save_every=3"]
    sets += ["train.total_steps=8", "train.disc_start=2", "train.ema_decay=0.9", "data.batch_size=2"]
    opt = STAGE_CONFIGS["vqgan"]
    # Idle OpenMP threads sleep instead of spinning: the same results, 2x faster when other jobs hold the cores.
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    runs = {name: _train_subprocess("-opt", opt, "--set", *sets, "--set", f"name={name}", wait=False, env=env)
            for name in "acd"}  # fmt: skip
    _wait_for(tmp_path / ".a.lock", runs["a"])  # a holds its run folder: pause it there
    runs["a"].send_signal(signal.SIGSTOP)
    # each right after its first checkpoint (step 3), mid-run: c killed, d stopped as docker, systemd, Slurm and
    # Kubernetes stop a job
    waiting, deadline = {"c": signal.SIGKILL, "d": signal.SIGTERM}, time.time() + 240
    while waiting and time.time() < deadline:
        for name in list(waiting):
            if (tmp_path / name / "training_states" / "latest.state").is_file():
                runs[name].send_signal(waiting.pop(name))
        time.sleep(0.005)
    assert not waiting, f"no checkpoint from {list(waiting)}"
    second = _train_subprocess("-opt", opt, "--set", *sets, "name=a", "train.lr=0.5", "--auto_resume", env=env)
    runs["a"].send_signal(signal.SIGCONT)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr[-2000:]
    assert f"run folder {tmp_path / 'a'} is in use by another training (process {runs['a'].pid} on " in second.stderr
    assert runs["c"].wait(timeout=240) == -signal.SIGKILL
    stopped = runs["d"].communicate(timeout=240)[1].decode().strip().splitlines()
    assert runs["d"].returncode == 130, stopped[-20:]
    assert runs["a"].wait(timeout=300) == 0, runs["a"].stderr.read()[-2000:]
    states = tmp_path / "d" / "training_states"
    step = torch.load(states / "latest.state", weights_only=True)["step"]
    assert stopped[-1] == (f"interrupted by SIGTERM: training state saved at step {step} in {states}; "
                           "--auto_resume continues from it")  # fmt: skip
    assert 3 <= step < 8 and max(read_metrics(tmp_path / "d")) == step and _no_partial_files(tmp_path / "d")
    assert not (tmp_path / "c" / "models" / "net_g_8.pth").exists()
    done = _train_subprocess("-opt", opt, "--set", *sets, "--set", "name=b", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in "cd":
        resumed = _train_subprocess("-opt", opt, "--set", *sets, "--set", f"name={name}", "--auto_resume", env=env)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert resumed.stdout.startswith("--auto_resume: continuing from step ")
    assert f"continuing from step {step} ({states / 'latest.state'})" in resumed.stdout

    configs = {name: yaml.safe_load((tmp_path / name / "config.yml").read_text()) for name in "ab"}
    assert configs["a"]["train"] == configs["b"]["train"]  # the refused run changed nothing
    metrics = {name: read_metrics(tmp_path / name) for name in "abcd"}
    assert sorted(metrics["a"]) == list(range(1, 9))
    assert metrics["a"] == metrics["b"] == metrics["c"] == metrics["d"]  # every loss, bit for bit
    final = {name: torch.load(tmp_path / name / "models/net_g_latest.pth", weights_only=True) for name in "abcd"}
    for key in ("state_dict", "ema"):
        for name in "bcd":
            assert all(torch.equal(v, final[name][key][k]) for k, v in final["a"][key].items()), (name, key)


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_state(tmp_path, clip_folder):
    """The resumed run's final save fails (a file size limit: EFBIG, as a full disk's ENOSPC): exit 2, one
    `error:` line naming the file, no partial file, and the step-3 state and checkpoint still whole."""
    import resource

    sets = ["--set", f"root={tmp_path}", "name=full", "val=null", "log.tensorboard=false", "log.save_every=0"]
    base = ["-opt", STAGE_CONFIGS["vqgan"], "--threads", "1", *sets, "data.batch_size=1"]
    assert _train_subprocess(*base, "train.total_steps=3").returncode == 0
    run = tmp_path / "full"
    limit = (run / "models" / "net_g_latest.pth").stat().st_size // 2  # the logs and config.yml still fit

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "train.py", *base, "train.total_steps=5", "--auto_resume"]
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=small_files)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: cannot write {run / 'models'}/net_g_5.pth: File too large")
    assert _no_partial_files(run)
    assert torch.load(run / "training_states" / "latest.state", weights_only=True)["step"] == 3
    assert torch.load(run / "models" / "net_g_latest.pth", weights_only=True)["step"] == 3


def test_ctrl_c_ends_the_step_saves_it_and_auto_resume_says_where_it_starts(tmp_path, clip_folder, capsys):
    """SIGINT part-way through step 3 (in this process): the step ends, its state is saved, and the run stops
    with `Interrupted` naming the step. --auto_resume says where it starts (step 0 in a new folder, then 3),
    and uses no folder that holds files a run does not write."""
    from keep.errors import Interrupted

    cfg = tiny_config("vqgan", tmp_path, clip_folder, "train.total_steps=6", "val=null", "log.save_every=0")
    run = tmp_path / cfg.name
    trainer = Trainer(cfg, auto_resume=True)
    assert f"--auto_resume: no training state in {run}; starting from step 0" in capsys.readouterr().out
    step = trainer.train_step

    def interrupted(batch):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return step(batch)

    trainer.train_step = interrupted
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match=r"^by SIGINT: training state saved at step 3 in "):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is before  # the trainer's handler is gone, the one before it back
    resumed = Trainer(cfg, auto_resume=True)
    resumed.close()  # (fit would release the run folder at its end)
    assert resumed.step == 3
    said = f"--auto_resume: continuing from step 3 ({run / 'training_states' / 'latest.state'})"
    assert said in capsys.readouterr().out
    with pytest.raises(KeepError, match="exists: pass --auto_resume"):
        Trainer(cfg)
    (run / "notes.txt").write_text("someone's")
    with pytest.raises(KeepError, match=r"holds files a training run does not write \(notes.txt\)"):
        Trainer(cfg, auto_resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [cfg.name]  # no lock left behind


def _interrupt_at(monkeypatch, step: int) -> None:
    original = Trainer.train_step

    def dying(self, batch):
        if self.step == step:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying)


def test_empty_latest_state_falls_back_to_the_previous_one(tmp_path, clip_folder, monkeypatch, caplog):
    """A clip stage with GAN and EMA: the resumed run loses one save interval and still ends bit-identical."""
    common = ("train.total_steps=6", "train.disc_start=1", "log.save_every=2", "log.val_at_start=false", "val=null")
    full = Trainer(tiny_config("cft_cfa", tmp_path, clip_folder, "name=full", *common))
    full.fit()
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 5)
        with pytest.raises(KeyboardInterrupt):
            Trainer(tiny_config("cft_cfa", tmp_path, clip_folder, "name=cut", *common)).fit()
    states = tmp_path / "cut" / "training_states"
    assert torch.load(states / "previous.state", weights_only=True)["step"] == 2
    (states / "latest.state").write_bytes(b"")  # the step-4 state is lost
    resumed = Trainer(tiny_config("cft_cfa", tmp_path, clip_folder, "name=cut", *common), auto_resume=True)
    assert resumed.step == 2 and "latest.state cannot be used" in caplog.text
    resumed.fit()
    a, b = full.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert all(torch.equal(v, resumed.disc.state_dict()[k]) for k, v in full.disc.state_dict().items())
    assert read_metrics(tmp_path / "full") == read_metrics(tmp_path / "cut")


def test_deterministic_resume_reuses_the_runs_thread_count(tmp_path, clip_folder):
    cfg = tiny_config("vqgan", tmp_path, clip_folder, "train.total_steps=1", "val=null")
    Trainer(cfg).fit()  # at one thread (fixture one_thread)
    torch.set_num_threads(2)
    Trainer(cfg, auto_resume=True)
    assert torch.get_num_threads() == 1


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _malicious(path: Path, marker: Path) -> None:
    torch.save({"step": 3, "model": _Payload(marker)}, path)
    pickle.loads(pickle.dumps(_Payload(marker.with_suffix(".check"))))  # the payload does work when unpickled
    assert marker.with_suffix(".check").is_file()


def test_malicious_training_state_and_pretrained_run_no_code(tmp_path, clip_folder):
    marker = tmp_path / "marker"
    cfg = tiny_config("vqgan", tmp_path, clip_folder, "train.total_steps=1", "val=null")
    Trainer(cfg).fit()
    states = tmp_path / cfg.name / "training_states"
    _malicious(states / "latest.state", marker)
    with pytest.raises(KeepError, match="no usable training state.*latest.state.*UnpicklingError"):
        Trainer(cfg, auto_resume=True)
    assert not marker.exists()

    _malicious(tmp_path / "evil.pth", marker)
    done = _train_subprocess(
        "-opt", STAGE_CONFIGS["kalman"], "--set", f"root={tmp_path}", f"model.pretrained={tmp_path / 'evil.pth'}"
    )
    assert done.returncode == 2 and "cannot read checkpoint" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ train.py
def test_train_py_conventions(tmp_path, clip_folder):
    """Every --set applies; bad input and absent devices are one `error:` line with exit code 2."""
    base = ["-opt", STAGE_CONFIGS["vqgan"], "--threads", "1", "--set", f"root={tmp_path}", "name=sets", "val=null"]
    done = _train_subprocess(*base, "train.total_steps=1", "--set", "log.every=1", "data.batch_size=1")
    assert done.returncode == 0, done.stderr[-2000:]
    resolved = yaml.safe_load((tmp_path / "sets" / "config.yml").read_text())
    assert resolved["train"]["total_steps"] == 1 and resolved["log"]["every"] == 1
    assert resolved["data"]["batch_size"] == 1
    for extra, message in [
        (["--set", "train.learning_rate=1"], "unknown config key 'train.learning_rate'"),
        (["--set", "name=other", "loss.perceptual=1"], "vgg16-397923af.pth"),
    ] + ([] if torch.cuda.is_available() else [(["--set", "name=gpu", "--device", "cuda"], "no CUDA GPU")]):
        env_home = {"KEEP_WEIGHTS_DIR": str(tmp_path), "KEEP_CACHE_DIR": str(tmp_path), "TORCH_HOME": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "train.py", *base, *extra],
            cwd=REPO,
            env={**ENV, **env_home},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
        assert done.stderr.startswith("error:") and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------ DDP
def test_ddp_two_processes_match_one_process_over_the_combined_batch(tmp_path):
    """`python -m benchmarks ddp`: each tiny released stage (GAN on) in 2 gloo processes x 1 clip, against the
    same script in 1 process x 2 clips (spawned and threaded alike, so that nothing but DDP differs). In
    float64, so that rounding noise stays below Adam's epsilon (see the script's docstring): then the
    weights agree to 1e-8 after 2 steps, and every stage's weights moved."""

    def train(out: Path, *options: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "ddp", "--steps", "2", "--out", str(out), "--dtype", "float64"]
            + list(options),
            cwd=REPO,
            env={**ENV, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    from benchmarks.ddp import CONFIGS, stage_overrides

    stdout = train(tmp_path / "ddp")
    lines = [ln for ln in stdout.splitlines() if "collectives per step" in ln]
    assert len(lines) == 3
    for line in lines:  # "hand-written all-reduce N (...) -> DDP M (...)"
        before = int(line.split("hand-written all-reduce ")[1].split()[0])
        after = int(line.split("-> DDP ")[1].split()[0])
        assert 0 < after * 10 < before, line
    stdout = train(tmp_path / "single", "--processes", "1", "--batch_size", "2")
    assert stdout.count("1 process, 2 clips per step, no DDP") == 3, stdout
    for stage, config in CONFIGS.items():
        rank0, rank1 = (torch.load(tmp_path / "ddp" / f"{stage}_rank{r}.pt", weights_only=True) for r in (0, 1))
        single = torch.load(tmp_path / "single" / f"{stage}_rank0.pt", weights_only=True)
        dtype = torch.get_default_dtype()
        try:  # the initial weights, as the script's float64 run draws them
            torch.set_default_dtype(torch.float64)
            start = Trainer(load_config(TrainConfig, config, stage_overrides(tmp_path / "start", 2, 2)))
        finally:
            torch.set_default_dtype(dtype)
        assert changed_modules(start.network.state_dict(), single["network"]), stage
        for part in ("network", "disc"):
            if single[part] is None:
                continue
            assert all(torch.equal(v, rank1[part][k]) for k, v in rank0[part].items()), (stage, part)
            for key, value in rank0[part].items():
                diff = (value - single[part][key]).abs()
                assert diff.max() <= 1e-8, (stage, part, key, f"{int((diff > 1e-8).sum())}/{diff.numel()} differ")


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_after_one_save(tmp_path):
    """torchrun passes SIGTERM on to both (gloo) processes, which may get it at different steps: they agree on
    one step, rank 0 saves it, both say so, and the run folder is released."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"]
    command += ["-opt", STAGE_CONFIGS["vqgan"], "--threads", "1", "--set", f"root={tmp_path}", "name=ddp", "val=null"]
    command += ["log.every=1", "log.tensorboard=false", "log.save_every=0", "train.total_steps=500"]
    run = subprocess.Popen(command, cwd=REPO, env={**ENV, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics, deadline = tmp_path / "ddp" / "metrics.jsonl", time.time() + 300
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert run.poll() is None and time.time() < deadline, run.stderr.read()[-3000:]
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    step = torch.load(tmp_path / "ddp" / "training_states" / "latest.state", weights_only=True)["step"]
    said = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert said == [f"interrupted by SIGTERM: training state saved at step {step} in {tmp_path / 'ddp'}/"
                    "training_states; --auto_resume continues from it"] * 2, stderr[-3000:]  # fmt: skip
    assert max(read_metrics(tmp_path / "ddp")) == step and sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]


def test_a_released_models_gmflow_travels_through_fine_tuning(tmp_path, clip_folder):
    """Fine-tuning a checkpoint that carries GMFlow (as the releases do): stage III's flows come from it
    (`train.flow: gmflow`) and every checkpoint of the run keeps it."""
    from keep import KEEP, PRESETS, save_checkpoint
    from keep.flow import GMFlow, GMFlowNet
    from keep.model import load_checkpoint

    torch.manual_seed(0)
    flow_state = GMFlowNet().state_dict()
    source = tmp_path / "released_like.pth"
    save_checkpoint(source, KEEP(PRESETS["tiny"]), flow_state=flow_state)
    cfg = tiny_config("cft_cfa", tmp_path, clip_folder, "train.total_steps=1", "log.val_every=0",
                      f"model.pretrained={source}", "train.flow=gmflow")  # fmt: skip
    trainer = Trainer(cfg)
    assert isinstance(trainer.tools.flow, GMFlow)
    trainer.fit()
    saved = load_checkpoint(tmp_path / cfg.name / "models" / "net_g_latest.pth").flow_state
    assert saved.keys() == flow_state.keys() and all(torch.equal(saved[k], flow_state[k]) for k in flow_state)
