"""The one trainer of every stage (`train.py -opt configs/released/<stage>.yml`). The loop is `Trainer.fit`.

Run folder (BasicSR layout): `<root>/<name>/` with `config.yml` (resolved), `models/net_g_<step>.pth`
and `net_g_latest.pth` (keep checkpoints: config + weights + EMA), `training_states/latest.state` and
`previous.state` (`keep.train.state`), `metrics.jsonl`, `tb_logger/`, `samples/`; one training at a time
holds it (`keep.train.state.lock_run_folder`). Ctrl-C or SIGTERM ends the step and saves it first.

What a step computes is the stage's record (`keep.train.stages.STAGES`): its training forward is an
`nn.Module` around the network, wrapped in DistributedDataParallel under torchrun, as is the
discriminator. Exact resume: the data of a step is a pure function of (seed, step) (`StepBatchSampler`);
every other random state lives in the training state, so `--auto_resume` continues a killed run as if
uninterrupted (bit for bit with `train.deterministic`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..archs.keep_arch import KEEP
from ..checkpoint import save_checkpoint
from ..config import save_config, to_dict
from ..data.datasets import FaceClipDataset, StepBatchSampler
from ..devices import resolve_device
from ..distributed import start_process_group, torchrun_place
from ..errors import Interrupted, KeepError
from ..flow import build_flow
from ..image import to_uint8, write_image
from ..losses import CLIP_LAYOUT, LPIPSLoss, adaptive_weight, build_discriminator, gan_losses
from ..metrics.psnr_ssim import psnr, ssim
from ..model import load_checkpoint
from ..precision import autocast
from .config import TrainConfig
from .schedules import lr_at
from .stages import LOSS_WEIGHTS, STAGES, Tools
from .state import lock_run_folder, resume_point, save_training_state
from .utils import (
    EMA,
    MetricsLogger,
    StopSignals,
    agree_on_error,
    any_rank,
    deterministic_algorithms,
    ignore_stop_signals,
    mean_across_ranks,
    wrap_ddp,
)


def build_model(cfg: TrainConfig) -> tuple[KEEP, dict[str, torch.Tensor] | None]:
    """The network to train (`model.pretrained`, else `model.preset`, with `model.config` on top), and the
    GMFlow weights its pretrained checkpoint carries (or None): they travel on into every checkpoint of
    the run, so a fine-tuned released model keeps its own flow."""
    section = cfg.model
    source = section.pretrained or f"preset:{section.preset}"
    model, flow_state = load_checkpoint(source, use_ema=True, **section.config)  # files read weights-only
    if section.init_lq_from_hq:
        model.lq_encoder.load_state_dict(model.hq_encoder.state_dict())
    return model, flow_state


def check_config(cfg: TrainConfig) -> None:
    """Errors a run would otherwise meet later (or never notice): unknown stage, losses it cannot compute."""
    t = cfg.train
    if t.stage not in STAGES:
        raise KeepError(f"unknown train.stage '{t.stage}'; choose one of {list(STAGES)}")
    stage = STAGES[t.stage]
    for name in LOSS_WEIGHTS:
        if getattr(cfg.loss, name) > 0 and name not in stage.losses:
            raise KeepError(f"loss.{name} is not computed by stage '{stage.name}' (it computes {list(stage.losses)})")
    for section, data in (("data", cfg.data), ("val", cfg.val)):
        if data is not None and data.clip_length < stage.min_frames:
            raise KeepError(f"stage '{stage.name}' needs clips: set {section}.clip_length >= {stage.min_frames}")
    if cfg.loss.gan > 0 and t.disc not in CLIP_LAYOUT:
        raise KeepError(f"unknown train.disc '{t.disc}'; choose one of {list(CLIP_LAYOUT)}")


class Trainer:
    def __init__(self, cfg: TrainConfig, *, auto_resume: bool = False):
        check_config(cfg)
        t = cfg.train
        if t.deterministic:  # read when cuBLAS starts: before anything runs on a GPU
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.cfg, self.stage = cfg, STAGES[t.stage]
        self.device = torchrun_place().device_of(resolve_device(t.device))  # cuda -> cuda:LOCAL_RANK
        place = start_process_group(self.device)
        self.rank, self.world = place.rank, place.world
        self.run_dir = Path(cfg.root) / cfg.name
        self.lock = lock_run_folder(self.run_dir, rank=self.rank)  # one training per run folder
        try:
            self._build(auto_resume)
        except BaseException:
            self.close()
            raise

    def _build(self, auto_resume: bool) -> None:
        """Everything the loop needs, from the resumed state if there is one."""
        cfg, t, w = self.cfg, self.cfg.train, self.cfg.loss
        found = resume_point(self.run_dir, auto_resume=auto_resume, rank=self.rank)
        if found is not None and t.deterministic:
            self._reuse_threads(found[0])
        # the data first: a wrong path or file is reported before any weights load (no torch RNG used)
        self.data = FaceClipDataset(cfg.data, seed=t.seed)
        self.val = FaceClipDataset(cfg.val, seed=t.seed + 1, section="val") if cfg.val is not None else None
        torch.manual_seed(t.seed)  # weight initialisation; its state is saved with the training state

        self.network, self.flow_state = build_model(cfg)
        self.network.to(self.device)
        if cfg.data.gt_size != self.network.config.img_size:
            raise KeepError(f"data.gt_size {cfg.data.gt_size} != model img_size {self.network.config.img_size}")
        if w.temporal > 0 and w.temporal_scale not in self.network.cfa_scales:
            raise KeepError(f"loss.temporal_scale {w.temporal_scale} is not a CFA scale {self.network.cfa_scales}")
        self.params = self._select_trainable(t.trainable if t.trainable is not None else self.stage.trainable)
        self.tools = Tools()
        if w.perceptual > 0:
            self.tools.perceptual = LPIPSLoss(net=w.perceptual_net).to(self.device)
        if self.stage.needs_flow:
            self.tools.flow = build_flow(t.flow, device=self.device, gmflow_state=self.flow_state)
        # The stage's training forward, under DDP when distributed (DDP also broadcasts rank 0's weights).
        self.forward = wrap_ddp(self.stage.forward(self.network, losses=w, tools=self.tools), self.device)
        self.ema = EMA(self.network, decay=t.ema_decay) if t.ema_decay > 0 else None
        self.opt = torch.optim.Adam(self.params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        self.scaler = torch.amp.GradScaler(enabled=t.precision == "fp16" and self.device.type == "cuda")
        self.disc = None
        if w.gan > 0:
            self.disc = build_discriminator(t.disc, nf=t.disc_nf, layers=t.disc_layers).to(self.device)
            self.disc_forward = wrap_ddp(self.disc, self.device)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=t.disc_lr, betas=t.betas)
            self.d_loss_fn, self.g_loss_fn = gan_losses(w.gan_type)

        self.step = 0
        if found is not None:
            self.load_state(*found)
        self.logger = MetricsLogger(self.run_dir, enabled=self.rank == 0, tensorboard=cfg.log.tensorboard)
        self.logger.truncate_after(self.step)
        if self.rank == 0:
            save_config(cfg, self.run_dir / "config.yml")

    def close(self) -> None:
        """Release the run folder (done when `fit` ends, however it ends)."""
        if getattr(self, "logger", None) is not None:
            self.logger.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _select_trainable(self, names: tuple[str, ...]) -> list[torch.nn.Parameter]:
        children = dict(self.network.named_children())
        for name in names:
            if name not in children:
                raise KeepError(f"train.trainable: unknown submodule '{name}'; choose from {sorted(children)}")
        self.network.requires_grad_(False)
        for name in names:
            children[name].requires_grad_(True)
        params = [p for p in self.network.parameters() if p.requires_grad]
        if not params:
            raise KeepError("train.trainable selects no parameters")
        return params

    def _reuse_threads(self, state: dict) -> None:
        """Deterministic runs resume with the thread count they started with: CPU kernels split their
        reductions by thread, so another count gives other sums (docs/training.md)."""
        recorded = state.get("threads")
        if recorded and recorded != torch.get_num_threads():
            print(f"note: resuming with the run's {recorded} CPU threads (train.deterministic)", flush=True)
            torch.set_num_threads(recorded)

    # ------------------------------------------------------------------------------- state
    def save(self, tag: str | None = None) -> None:
        """Model checkpoint (+ EMA) and training state: rank 0 writes, and every rank learns whether it could
        before going on (a full disk: the same KeepError on every rank; the files written before stay whole)."""
        error = None
        if self.rank == 0:
            try:
                self._write_state(tag)
            except KeepError as exc:
                error = str(exc)
        agree_on_error(error)

    def _write_state(self, tag: str | None) -> None:
        extra = {"step": self.step, "train_config": to_dict(self.cfg)}
        ema = self.ema.model if self.ema else None
        for name in [f"net_g_{tag or self.step}.pth", "net_g_latest.pth"]:
            save_checkpoint(self.run_dir / "models" / name, self.network, ema=ema, flow_state=self.flow_state, **extra)
        state = {
            "step": self.step,
            "threads": torch.get_num_threads(),
            "opt": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "model": self.network.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "disc": self.disc.state_dict() if self.disc else None,
            "disc_opt": self.disc_opt.state_dict() if self.disc else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        save_training_state(self.run_dir / "training_states", state)

    def load_state(self, state: dict, path: Path) -> None:
        try:
            self.network.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema and state["ema"] is not None:
                self.ema.model.load_state_dict(state["ema"])
            if self.disc and state["disc"] is not None:
                self.disc.load_state_dict(state["disc"])
                self.disc_opt.load_state_dict(state["disc_opt"])
            torch.set_rng_state(state["torch_rng"])
            if state["cuda_rng"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise KeepError(f"training state {path} does not match this configuration: {exc}") from None
        self.step = state["step"]

    # ------------------------------------------------------------------------------- loop
    def loader(self) -> torch.utils.data.DataLoader:
        sampler = StepBatchSampler(
            len(self.data),
            batch_size=self.cfg.data.batch_size,
            seed=self.cfg.train.seed,
            start_step=self.step,
            total_steps=self.cfg.train.total_steps,
            rank=self.rank,
            world=self.world,
        )
        return torch.utils.data.DataLoader(
            self.data, batch_sampler=sampler, num_workers=self.cfg.data.num_workers, worker_init_fn=ignore_stop_signals
        )

    def fit(self) -> None:
        """Train to `train.total_steps`. Ctrl-C or SIGTERM: the step ends, its state is saved, and `Interrupted`
        says where (`--auto_resume` continues from it, as if uninterrupted); the run folder is released."""
        t, log = self.cfg.train, self.cfg.log
        try:
            with deterministic_algorithms(t.deterministic), StopSignals() as stop:
                if self.val is not None and log.val_at_start and self.step == 0:
                    self.validate()
                self.forward.train()
                for batch in self.loader():
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    self.set_learning_rates()
                    values = self.train_step(batch)
                    self.step += 1
                    if self.step % log.every == 0 or self.step == t.total_steps:
                        self.logger.log(self.step, {k: mean_across_ranks(v) for k, v in values.items()})
                    if self.step == t.total_steps:
                        break
                    if log.val_every and self.step % log.val_every == 0:
                        self.validate()
                    saved = log.save_every and self.step % log.save_every == 0
                    if saved:
                        self.save()
                    if stop.requested():
                        self._stop(stop, saved)
                if self.val is not None:
                    self.validate()
                self.save()
        finally:
            self.close()

    def set_learning_rates(self) -> None:
        """The schedule's rates for this step (a pure function of the step: `keep.train.schedules`)."""
        t = self.cfg.train
        scale = lr_at(
            self.step, base=1.0, total=t.total_steps, schedule=t.schedule, warmup=t.warmup_steps,
            milestones=t.milestones, gamma=t.gamma,
        )  # fmt: skip
        for group in self.opt.param_groups:
            group["lr"] = t.lr * scale
        if self.disc is not None:
            for group in self.disc_opt.param_groups:
                group["lr"] = t.disc_lr * scale

    def _stop(self, stop: StopSignals, saved: bool) -> None:
        """Every rank at the same step: save (unless just saved) and end the run with `Interrupted`."""
        if not saved:
            self.save()
        received = f"by {stop.received}" if stop.received else "by a signal to another process"
        raise Interrupted(
            f"{received}: training state saved at step {self.step} in {self.run_dir / 'training_states'}; "
            "--auto_resume continues from it"
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step of the generator (and of the discriminator when the GAN is on)."""
        t, w = self.cfg.train, self.cfg.loss
        gan_on = self.disc is not None and self.step >= t.disc_start
        with autocast(self.device, t.precision):
            res = self.forward(batch)
            terms = dict(res.terms)
            if gan_on:
                self.disc.requires_grad_(False)  # the generator's GAN term trains the generator only
                g_loss = self.g_loss_fn(self.disc(self._disc_input(res.fake)))
                weight = torch.ones((), device=g_loss.device)
                last = self.network.decoder.blocks[-1].weight
                if w.adaptive_gan_weight and last.requires_grad and res.rec.requires_grad:
                    weight = adaptive_weight(res.rec, g_loss, last, reduce=mean_across_ranks)
                terms["gan"] = w.gan * weight * g_loss
        loss = sum(terms.values())
        values = {f"train/{k}": float(v.detach()) for k, v in terms.items()}
        values["train/loss"] = float(loss.detach())
        if any_rank(not math.isfinite(values["train/loss"])):  # all ranks stop (and save) together
            self.save(tag="last_good")  # weights are still those before this step
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            raise KeepError(
                f"loss is not finite at step {self.step + 1} ({', '.join(bad)}); stopped. The last good state "
                f"is saved in {self.run_dir / 'models' / 'net_g_last_good.pth'} and training_states/latest.state"
            )
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # under DDP: gradients all-reduced bucket by bucket meanwhile
        self.scaler.unscale_(self.opt)
        if t.grad_clip > 0:
            values["train/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip))
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.network)
        values["train/lr"] = self.opt.param_groups[0]["lr"]
        if gan_on:
            self.disc.requires_grad_(True)
            both = torch.cat([res.real, res.fake.detach().to(res.real.dtype)])  # one forward: one gradient sync
            with autocast(self.device, t.precision):
                real_logits, fake_logits = self.disc_forward(self._disc_input(both)).chunk(2)
                d_loss = self.d_loss_fn(real_logits, fake_logits)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            values["train/d_loss"] = float(d_loss.detach())
        return values

    def _disc_input(self, clip: torch.Tensor) -> torch.Tensor:
        return rearrange(clip, CLIP_LAYOUT[self.cfg.train.disc])

    # ------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR / SSIM (`keep.metrics`: RGB, 0-255, no border crop) of the (EMA) network on the first
        `log.val_items` held-out items, plus the stage's own metrics; rank 0 only."""
        if self.rank != 0 or self.val is None:
            return {}
        network = self.ema.model if self.ema else self.network
        network.eval()
        scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
        grid = []
        for index in range(min(self.cfg.log.val_items, len(self.val))):
            item = {k: v.to(self.device) for k, v in self.val[(0, index)].items()}
            out, extra = self.stage.restore(network, item, self.cfg.loss, self.tools)
            out_u8, gt_u8, lq_u8 = to_uint8(out), to_uint8(item["gt"]), to_uint8(item["lq"])
            for o, g in zip(out_u8, gt_u8, strict=True):
                scores["psnr"].append(psnr(o, g))
                scores["ssim"].append(ssim(o, g))
            for key, value in extra.items():
                scores.setdefault(key, []).append(value)
            grid.append(np.concatenate([lq_u8[0], out_u8[0], gt_u8[0]], axis=1))
        self.network.train()
        values = {f"val/{k}": float(np.mean(v)) for k, v in scores.items()}
        self.logger.log(self.step, values)
        if grid:
            (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
            write_image(self.run_dir / "samples" / f"val_{self.step:08d}.png", np.concatenate(grid, axis=0))
        return values
