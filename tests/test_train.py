"""Trainer tests on CPU with the tiny network: every stage, exact resume, NaN stop, 2-process DDP."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from keep.config import load_config
from keep.errors import KeepError
from keep.train import TrainConfig, Trainer

REPO = Path(__file__).resolve().parent.parent
STAGE_CONFIGS = {
    "vqgan": "configs/tiny/stage1_vqgan.yml",
    "transformer": "configs/tiny/stage2_transformer.yml",
    "temporal": "configs/tiny/stage3_temporal.yml",
}


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


def tiny_config(stage: str, tmp_path: Path, data: str, *extra: str) -> TrainConfig:
    sets = [f"root={tmp_path}", "log.every=1", "log.tensorboard=false", "log.val_items=1", "data.batch_size=2"]
    if data != "video":
        sets += [
            "data.source=clips",
            f"data.path={data}",
            "data.frame_range=[0,-1]",
            "val.source=clips",
            f"val.path={data}",
            "val.frame_range=[0,-1]",
        ]
    if stage == "temporal":
        sets += ["data.clip_length=3", "val.clip_length=3", "data.batch_size=1"]
    return load_config(TrainConfig, REPO / STAGE_CONFIGS[stage], sets + list(extra))


def read_metrics(run: Path) -> dict[int, dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in lines if "train/loss" in r}


@pytest.mark.parametrize("stage", ["vqgan", "transformer", "temporal"])
def test_each_stage_trains_on_generated_clips(stage, tmp_path, clip_folder):
    cfg = tiny_config(stage, tmp_path, str(clip_folder), "train.total_steps=3", "train.disc_start=1")
    Trainer(cfg).fit()
    run = tmp_path / cfg.name
    metrics = read_metrics(run)
    assert sorted(metrics) == [1, 2, 3] and all(np.isfinite(m["train/loss"]) for m in metrics.values())
    assert (run / "models" / "net_g_latest.pth").is_file() and (run / "training_states" / "latest.state").is_file()
    assert (run / "config.yml").is_file() and list((run / "samples").glob("*.png"))
    from keep import load_network

    restored = load_network(str(run / "models" / "net_g_latest.pth"))
    assert restored.config.img_size == 64


def test_frozen_modules_do_not_change(tmp_path, clip_folder):
    cfg = tiny_config("transformer", tmp_path, str(clip_folder), "train.total_steps=2")
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    for name in ("quantizer.", "decoder.", "hq_encoder.", "kalman.", "cfa."):
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(name)), name
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("lq_encoder."))


def test_stages_on_real_carphone_frames(tmp_path, shared_dir):
    video = shared_dir / "media" / "carphone_pristine.mp4"
    for stage in ("vqgan", "temporal"):
        cfg = tiny_config(stage, tmp_path, "video", "train.total_steps=2", f"data.path={video}", f"val.path={video}")
        Trainer(cfg).fit()
        assert sorted(read_metrics(tmp_path / cfg.name)) == [1, 2]


@pytest.mark.parametrize("stage", ["vqgan", "temporal"])
def test_killed_and_resumed_run_matches_uninterrupted(stage, tmp_path, clip_folder, monkeypatch):
    common = ("train.total_steps=6", "train.disc_start=2", "train.ema_decay=0.9", "log.val_at_start=false")
    full = tiny_config(stage, tmp_path, str(clip_folder), "name=full", *common)
    Trainer(full).fit()
    killed = tiny_config(stage, tmp_path, str(clip_folder), "name=killed", "log.save_every=3", *common)
    original = Trainer.train_step

    def dying(self, batch):
        if self.step == 4:  # one step after the checkpoint at 3: that progress is lost
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        Trainer(killed).fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = Trainer(killed, auto_resume=True)
    assert resumed.step == 3
    resumed.fit()
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "killed")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        for key, value in a[step].items():
            assert b[step][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (step, key)
    final_a = torch.load(tmp_path / "full/models/net_g_latest.pth", weights_only=False)
    final_b = torch.load(tmp_path / "killed/models/net_g_latest.pth", weights_only=False)
    for k, v in final_a["ema"].items():
        assert torch.allclose(v, final_b["ema"][k], atol=1e-6), k


def test_nan_stops_with_message_and_last_good_checkpoint(tmp_path, clip_folder, monkeypatch):
    cfg = tiny_config("vqgan", tmp_path, str(clip_folder), "train.total_steps=5")
    import keep.train.trainer as trainer_module

    step = trainer_module.STAGE_STEPS["vqgan"]
    calls = {"n": 0}

    def poisoned(model, batch, w, tools):
        calls["n"] += 1
        res = step(model, batch, w, tools)
        if calls["n"] == 3:
            res.terms["l1"] = res.terms["l1"] * float("nan")
        return res

    trainer = Trainer(cfg)
    trainer.step_fn = poisoned
    with pytest.raises(KeepError, match="not finite at step 3.*last good"):
        trainer.fit()
    saved = torch.load(tmp_path / cfg.name / "models" / "net_g_last_good.pth", weights_only=False)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_config_errors_are_clear(tmp_path, clip_folder):
    with pytest.raises(KeepError, match="unknown config key 'train.learning_rate'"):
        tiny_config("vqgan", tmp_path, str(clip_folder), "train.learning_rate=1")
    with pytest.raises(KeepError, match="unknown submodule 'codebook'"):
        Trainer(tiny_config("vqgan", tmp_path, str(clip_folder), "train.trainable=[codebook]"))
    env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_WEIGHTS_DIR": str(tmp_path), "TORCH_HOME": str(tmp_path)}
    env["KEEP_CACHE_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "train.py", "-opt", STAGE_CONFIGS["vqgan"], "--set", f"root={tmp_path}", "loss.perceptual=1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "vgg16-397923af.pth" in result.stderr and "Traceback" not in result.stderr


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    sys.path.insert(0, {repo!r})
    torch.set_num_threads(1)
    from keep.config import load_config
    from keep.train import Trainer, TrainConfig
    cfg = load_config(TrainConfig, {config!r}, {sets!r})
    trainer = Trainer(cfg)
    trainer.fit()
    torch.save(trainer.model.state_dict(), {out!r} + f"/rank{{os.environ['RANK']}}.pt")
    """
)


def test_ddp_two_processes_keep_identical_weights(tmp_path, clip_folder):
    sets = [
        f"root={tmp_path}",
        "name=ddp",
        "train.total_steps=3",
        "log.tensorboard=false",
        "data.batch_size=1",
        "data.source=clips",
        f"data.path={clip_folder}",
        "data.frame_range=[0,-1]",
        "val=null",
    ]
    script = tmp_path / "ddp.py"
    script.write_text(
        DDP_SCRIPT.format(repo=str(REPO), config=str(REPO / STAGE_CONFIGS["vqgan"]), sets=sets, out=str(tmp_path))
    )
    env = {**os.environ, "KEEP_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    start = Trainer(load_config(TrainConfig, REPO / STAGE_CONFIGS["vqgan"], [*sets[:1], "name=fresh", *sets[2:]])).model
    changed = [k for k in rank0 if not torch.equal(rank0[k], start.state_dict()[k])]
    assert changed, "no weight changed"
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is several times faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_released_models_gmflow_travels_through_fine_tuning(tmp_path, clip_folder, one_thread):
    """Fine-tuning a checkpoint that carries GMFlow (as the releases do): stage III's flows come from it
    (`train.flow: gmflow`) and every checkpoint of the run keeps it."""
    from keep import KEEP, PRESETS, save_checkpoint
    from keep.flow import GMFlow, GMFlowNet
    from keep.model import load_checkpoint

    torch.manual_seed(0)
    flow_state = GMFlowNet().state_dict()
    source = tmp_path / "released_like.pth"
    save_checkpoint(source, KEEP(PRESETS["tiny"]), flow_state=flow_state)
    cfg = tiny_config("temporal", tmp_path, str(clip_folder), "train.total_steps=1", "log.val_every=0",
                      f"model.pretrained={source}", "train.flow=gmflow")  # fmt: skip
    trainer = Trainer(cfg)
    assert isinstance(trainer.tools.flow_fn, GMFlow)
    trainer.fit()
    saved = load_checkpoint(tmp_path / cfg.name / "models" / "net_g_latest.pth").flow_state
    assert saved.keys() == flow_state.keys() and all(torch.equal(saved[k], flow_state[k]) for k in flow_state)
