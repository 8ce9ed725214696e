"""`run_benchmark(cfg)`: every method over every clip of a test set, metrics, and the report files.

results/<name>/
    config.yml          the resolved configuration
    per_frame.csv       method, clip, frame, psnr, ssim, lpips, ids, akd
    per_clip.csv        method, clip, frames, frame means, std_ids, std_akd, twe
    results.json        per-clip rows, the table's values and the metric notes
    table.md            the paper's columns (KEEP_SPEC section 11) + TWE, one row per method
    plots/<clip>.png    per-frame IDS / AKD over time, one line per method
    images/<method>/<clip>/<frame>.png   restored frames (save_images: true)
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from ..config import save_config
from ..errors import KeepError
from ..image import write_image
from .config import BenchmarkConfig
from .data import list_clips, load_clip
from .evaluator import FRAME_METRICS, Evaluator
from .methods import METHODS, check_methods
from .report import markdown_table, plot_clip, summarize, write_csv, write_json

log = logging.getLogger(__name__)


def _load_network(cfg: BenchmarkConfig):
    from ..model import load_model

    try:
        return load_model(cfg.model.source, device=cfg.device, flow=cfg.model.flow, cft_weight=cfg.model.fidelity)
    except (ValueError, TypeError) as exc:
        raise KeepError(f"cannot build the network from {cfg.model.source!r}: {exc}") from None


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Run the benchmark described by `cfg`; returns {"table": markdown, "summary": ..., "dir": Path}."""
    check_methods(cfg.methods)
    clips = list_clips(cfg.data.root, cfg.data.clips)
    out_dir = Path(cfg.results_dir) / cfg.name
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yml")

    model = _load_network(cfg) if any(METHODS[m][1] for m in cfg.methods) else None
    evaluator = Evaluator(cfg.metrics, device=cfg.device)
    frame_rows: list[dict] = []
    clip_rows: list[dict] = []
    total_frames = 0
    for clip_name in clips:
        clip = load_clip(cfg.data.root, clip_name, max_frames=cfg.data.max_frames)
        height, width = clip.gt.shape[1:3]
        size = model.config.img_size if model is not None else height
        if (height, width) != (size, size):
            raise KeepError(
                f"clip {clip_name}: GT frames are {width}x{height}, the network restores {size}x{size} faces"
            )
        total_frames += len(clip.gt)
        ref = evaluator.reference(clip.gt)
        per_method = {}
        for method in cfg.methods:
            run, _ = METHODS[method]
            with tqdm(total=len(clip.lq), desc=f"{clip_name} {method}", disable=not cfg.progress, leave=False) as bar:
                out = run(clip.lq, size, model, cfg.model, bar)
            if cfg.save_images:
                for frame_name, frame in zip(clip.frame_names, out, strict=True):
                    folder = out_dir / "images" / method / clip_name
                    folder.mkdir(parents=True, exist_ok=True)
                    write_image(folder / f"{frame_name}.png", frame)
            values = evaluator.frames(out, clip.gt, ref)
            per_method[method] = values
            for t, frame_name in enumerate(clip.frame_names):
                frame_rows.append(
                    {"method": method, "clip": clip_name, "frame": frame_name}
                    | {k: float(values[k][t]) for k in FRAME_METRICS}
                )
            clip_rows.append(
                {"method": method, "clip": clip_name, "frames": len(out)} | evaluator.clip(out, values, ref)
            )
        plot_clip(out_dir / "plots" / f"{clip_name}.png", clip_name, per_method)

    summary = summarize(clip_rows, cfg.methods)
    header = [
        f"# Benchmark `{cfg.name}`",
        "",
        f"Test set `{cfg.data.root}`: {len(clips)} clips, {total_frames} frames. "
        + (
            f"Network: `{cfg.model.source}` ({cfg.model.stream_mode} streaming, window {cfg.model.window}, "
            f"flow {getattr(model.flow, 'name', cfg.model.flow)}, fidelity {cfg.model.fidelity}, "
            f"{cfg.model.precision}) on {cfg.device}. "
            "Network input: LQ upsampled x4 bicubic to the network's size (= the `bicubic` row). "
            if model is not None
            else "No network run. "
        )
        + "Values: mean over the frames of a clip, then over clips; std = over the frames of a clip, "
        "then averaged over clips.",
    ]
    notes = {
        "psnr/ssim": "RGB, [0, 255], no border crop; SSIM 11x11 Gaussian window (sigma 1.5), channel mean",
        **{k: evaluator.notes.get(k, "") for k in ("lpips", "ids", "akd", "twe")},
    }
    table = markdown_table(summary, header, notes)
    (out_dir / "table.md").write_text(table)
    write_csv(out_dir / "per_frame.csv", frame_rows)
    write_csv(out_dir / "per_clip.csv", clip_rows)
    write_json(out_dir / "results.json", {"summary": summary, "clips": clip_rows, "notes": notes})
    return {"table": table, "summary": summary, "dir": out_dir, "notes": notes}
