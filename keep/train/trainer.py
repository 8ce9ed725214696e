"""The one trainer of all three stages (`train.py -opt configs/<stage>.yml`). The loop is `Trainer.fit`.

Run folder (BasicSR layout): `<root>/<name>/` with `config.yml` (resolved), `models/net_g_<step>.pth`
and `net_g_latest.pth` (keep checkpoints: config + weights + EMA), `training_states/latest.state`
(optimizers, scaler, discriminator, step, torch RNG), `metrics.jsonl`, `tb_logger/`, `samples/`.

Exact resume: the data of a step is a pure function of (seed, step) (`StepBatchSampler`), every other
random state lives in `latest.state`, so `--auto_resume` continues a killed run as if uninterrupted.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..archs.keep_arch import KEEP, PRESETS
from ..checkpoint import config_from_dict, save_checkpoint
from ..config import save_config, to_dict
from ..data.datasets import FaceClipDataset, StepBatchSampler
from ..errors import KeepError
from ..losses import adaptive_weight, build_discriminator, gan_losses, temporal_feature_loss
from ..precision import autocast
from .config import STAGES, TrainConfig
from .schedules import lr_at
from .stages import STAGE_STEPS, Tools
from .utils import EMA, MetricsLogger, average_gradients, broadcast_module, init_distributed, mean_across_ranks


def build_model(cfg: TrainConfig) -> tuple[KEEP, dict[str, torch.Tensor] | None]:
    """The network to train, and the GMFlow weights its pretrained checkpoint carries (or None): they
    travel on into every checkpoint of the run, so a fine-tuned released model keeps its own flow."""
    section = cfg.model
    flow_state = None
    if section.pretrained:
        from ..model import load_checkpoint

        model, flow_state = load_checkpoint(section.pretrained, use_ema=True, **section.config)
    else:
        if section.preset not in PRESETS:
            raise KeepError(f"unknown model.preset '{section.preset}'; choose one of {sorted(PRESETS)}")
        from dataclasses import asdict

        model = KEEP(config_from_dict({**asdict(PRESETS[section.preset]), **section.config}))
    if section.init_lq_from_hq:
        model.lq_encoder.load_state_dict(model.hq_encoder.state_dict())
    return model, flow_state


def _atomic_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    def __init__(self, cfg: TrainConfig, *, auto_resume: bool = False):
        t = cfg.train
        if t.stage not in STAGES:
            raise KeepError(f"unknown train.stage '{t.stage}'; choose one of {list(STAGES)}")
        self.cfg = cfg
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if t.device == "auto" else t.device
        if self.device.startswith("cuda") and "LOCAL_RANK" in os.environ:
            self.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        self.rank, self.world = init_distributed(self.device)
        self.run_dir = Path(cfg.root) / cfg.name
        torch.manual_seed(t.seed)  # weight initialisation; its state is saved with the training state

        self.model, self.flow_state = build_model(cfg)
        self.model.to(self.device)
        if cfg.data.gt_size != self.model.config.img_size:
            raise KeepError(f"data.gt_size {cfg.data.gt_size} != model img_size {self.model.config.img_size}")
        if t.stage == "temporal" and cfg.loss.temporal_scale not in self.model.cfa_scales:
            raise KeepError(f"loss.temporal_scale {cfg.loss.temporal_scale} is not a CFA scale {self.model.cfa_scales}")
        children = dict(self.model.named_children())
        for name in t.trainable:
            if name not in children:
                raise KeepError(f"train.trainable: unknown submodule '{name}'; choose from {sorted(children)}")
        self.model.requires_grad_(False)
        for name in t.trainable:
            children[name].requires_grad_(True)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise KeepError("train.trainable selects no parameters")
        broadcast_module(self.model)
        self.ema = EMA(self.model, decay=t.ema_decay) if t.ema_decay > 0 else None
        self.opt = torch.optim.Adam(self.params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
        self.scaler = torch.amp.GradScaler(enabled=t.precision == "fp16" and self.device.startswith("cuda"))

        w = cfg.loss
        self.disc: nn.Module | None = None
        if w.gan > 0:
            self.disc = build_discriminator(t.disc, nf=t.disc_nf, layers=t.disc_layers).to(self.device)
            broadcast_module(self.disc)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=t.disc_lr, betas=t.betas)
            self.d_loss_fn, self.g_loss_fn = gan_losses(w.gan_type)
        self.tools = Tools()
        if w.perceptual > 0:
            from ..losses import LPIPSLoss

            self.tools.perceptual = LPIPSLoss(net=w.perceptual_net).to(self.device)
        if t.stage == "temporal":
            from ..flow import build_flow

            self.tools.flow_fn = build_flow(t.flow, device=self.device, gmflow_state=self.flow_state)
        self.step_fn = STAGE_STEPS[t.stage]

        self.data = FaceClipDataset(cfg.data, seed=t.seed)
        self.val = FaceClipDataset(cfg.val, seed=t.seed + 1) if cfg.val is not None else None
        self.step = 0
        state_path = self.run_dir / "training_states" / "latest.state"
        if auto_resume and state_path.is_file():
            self.load_state(state_path)
        elif self.rank == 0 and self.run_dir.exists() and any(self.run_dir.iterdir()) and not auto_resume:
            raise KeepError(f"run folder {self.run_dir} exists: pass --auto_resume, or choose another name")
        self.logger = MetricsLogger(self.run_dir, enabled=self.rank == 0, tensorboard=cfg.log.tensorboard)
        self.logger.truncate_after(self.step)
        if self.rank == 0:
            save_config(cfg, self.run_dir / "config.yml")

    # ------------------------------------------------------------------------------- state
    def save(self, tag: str | None = None) -> None:
        """Model checkpoint (+ EMA) and training state, both atomic; rank 0 writes."""
        if self.rank != 0:
            return
        extra = {"step": self.step, "train_config": to_dict(self.cfg)}
        ema = self.ema.model if self.ema else None
        models = self.run_dir / "models"
        for name in [f"net_g_{tag or self.step}.pth", "net_g_latest.pth"]:
            save_checkpoint(models / name, self.model, ema=ema, flow_state=self.flow_state, **extra)
        state = {
            "step": self.step,
            "opt": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "model": self.model.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "disc": self.disc.state_dict() if self.disc else None,
            "disc_opt": self.disc_opt.state_dict() if self.disc else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        _atomic_save(state, self.run_dir / "training_states" / "latest.state")

    def load_state(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
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
        return torch.utils.data.DataLoader(self.data, batch_sampler=sampler, num_workers=self.cfg.data.num_workers)

    def fit(self) -> None:
        t, log = self.cfg.train, self.cfg.log
        if self.val is not None and log.val_at_start and self.step == 0:
            self.validate()
        self.model.train()
        for batch in self.loader():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            for group in self.opt.param_groups:
                group["lr"] = lr_at(
                    self.step, base=t.lr, total=t.total_steps, schedule=t.schedule, warmup=t.warmup_steps
                )
            values = self.train_step(batch)
            self.step += 1
            if self.step % log.every == 0 or self.step == t.total_steps:
                values = {k: mean_across_ranks(v) for k, v in values.items()}
                self.logger.log(self.step, values)
            if log.val_every and self.step % log.val_every == 0 and self.step != t.total_steps:
                self.validate()
            if log.save_every and self.step % log.save_every == 0 and self.step != t.total_steps:
                self.save()
        if self.val is not None:
            self.validate()
        self.save()
        self.logger.close()

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step of the generator (and of the discriminator when the GAN is on)."""
        t, w = self.cfg.train, self.cfg.loss
        gan_on = self.disc is not None and self.step >= t.disc_start
        with autocast(self.device, t.precision):
            res = self.step_fn(self.model, batch, w, self.tools)
            terms = dict(res.terms)
            if gan_on:
                g_loss = self.g_loss_fn(self.disc(res.fake))
                last = self.model.decoder.blocks[-1].weight
                weight = torch.ones(())
                if w.adaptive_gan_weight and last.requires_grad and res.rec.requires_grad:
                    weight = adaptive_weight(res.rec, g_loss, last)
                terms["gan"] = w.gan * weight * g_loss
        loss = sum(terms.values())
        values = {f"train/{k}": float(v.detach()) for k, v in terms.items()}
        values["train/loss"] = float(loss.detach())
        if not math.isfinite(values["train/loss"]):
            self.save(tag="last_good")  # weights are still those before this step
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            raise KeepError(
                f"loss is not finite at step {self.step + 1} ({', '.join(bad)}); stopped. The last good state "
                f"is saved in {self.run_dir / 'models' / 'net_g_last_good.pth'} and training_states/latest.state"
            )
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients(self.params)
        self.scaler.unscale_(self.opt)
        if t.grad_clip > 0:
            values["train/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip))
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        values["train/lr"] = self.opt.param_groups[0]["lr"]
        if gan_on:
            with autocast(self.device, t.precision):
                d_loss = self.d_loss_fn(self.disc(res.real.detach()), self.disc(res.fake.detach().float()))
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            average_gradients(list(self.disc.parameters()))
            self.disc_opt.step()
            values["train/d_loss"] = float(d_loss.detach())
        return values

    # ------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR / SSIM (on [0, 255], RGB) of the (EMA) network on the first `log.val_items` held-out items."""
        from skimage.metrics import structural_similarity

        model = self.ema.model if self.ema else self.model
        model.eval()
        psnrs, ssims, grid, temporal = [], [], [], []
        for index in range(min(self.cfg.log.val_items, len(self.val))):
            item = self.val[(0, index)]
            gt, lq = item["gt"][None].to(self.device), item["lq"][None].to(self.device)
            if self.cfg.train.stage == "vqgan":
                z, _ = model.hq_encoder(gt[:, 0])
                out = model.decoder(model.quantizer(z)[0])[:, None]
            elif self.cfg.train.stage == "transformer":
                out = model.run(lq[0][:, None]).out.transpose(0, 1)
            else:  # flows from the GT frames, as in training; val/temporal = the training loss unweighted
                flows = self.tools.flow_fn(gt[0, 1:], gt[0, :-1]).float()[None]
                res = model.run(lq, flows, keep_features=True)
                out = res.out
                temporal.append(float(temporal_feature_loss(res.features[self.cfg.loss.temporal_scale], flows)))
            to_u8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().permute(0, 1, 3, 4, 2).cpu().numpy()  # noqa: E731
            out_u8, gt_u8, lq_u8 = to_u8(out)[0], to_u8(gt)[0], to_u8(lq)[0]
            for o, g in zip(out_u8, gt_u8, strict=True):
                mse = np.mean((o - g) ** 2)
                psnrs.append(10 * np.log10(255.0**2 / max(mse, 1e-10)))
                ssims.append(structural_similarity(o, g, channel_axis=2, data_range=255))
            grid.append(np.concatenate([lq_u8[0], out_u8[0], gt_u8[0]], axis=1))
        self.model.train()
        values = {"val/psnr": float(np.mean(psnrs)), "val/ssim": float(np.mean(ssims))}
        if temporal:
            values["val/temporal"] = float(np.mean(temporal))
        self.logger.log(self.step, values)
        if self.rank == 0 and grid:
            import cv2

            path = self.run_dir / "samples" / f"val_{self.step:08d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.concatenate(grid, axis=0).astype(np.uint8)[..., ::-1])
        return values
