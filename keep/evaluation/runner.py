"""`run_benchmark(cfg)`: every method over every clip of a test set, metrics, and the report files.

results/<name>/
    config.yml          the resolved configuration
    per_frame.csv       method, clip, frame, psnr, ssim, lpips, ids, akd
    per_clip.csv        method, clip, frames, frame means, std_ids, std_akd, twe
    results.json        per-clip rows, the table's values and the metric notes
    table.md            the paper's columns (docs/benchmark.md) + TWE, one row per method
    plots/<clip>.png    per-frame IDS / AKD over time, one line per method
    images/<method>/<clip>/<frame>.png   restored frames (save_images: true)

Everything is checked before any network is built (methods, streaming mode, device, every clip's
files), and the run is written into `<results_dir>/.<name>.<run>.partial/` and moved into place when it
is complete: a failed or interrupted run (Ctrl-C, SIGTERM) never leaves a half run, nor removes the
previous one. One run per name at a time (`<results_dir>/.<name>.lock`: another is refused, naming the
process). A folder that already holds a run is refused unless `overwrite: true` (test.py `--overwrite`),
which replaces that run's files (only the files listed above; anything else in the folder stays).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import save_config
from ..devices import resolve_device
from ..errors import KeepError
from ..image import write_image
from ..metrics.fvd import frechet_distance
from ..model import load_model
from ..paths import (
    FileLock,
    check_output_outside_inputs,
    partial_path,
    remove_partials,
    stale_partials,
    write_error,
)
from ..streaming import MODES
from .config import BenchmarkConfig
from .data import clip_files, list_clips, load_clip, load_lq_clip, lq_without_gt
from .evaluator import FRAME_METRICS, TODAY_FRAME_METRICS, Evaluator
from .methods import METHODS, check_methods
from .report import TABLES, markdown_table, plot_clip, published_rows, summarize, write_csv, write_json

log = logging.getLogger(__name__)

RUN_FILES = ("config.yml", "table.md", "per_frame.csv", "per_clip.csv", "results.json", "plots", "images")


def _load_network(cfg: BenchmarkConfig, device):
    m = cfg.model
    return load_model(m.source, device=device, flow=m.flow, precision=m.precision, fidelity=m.fidelity)


def check_inputs(cfg: BenchmarkConfig) -> list[str]:
    """Everything that can be checked before a network is built; returns the clip names."""
    check_methods(cfg.methods)
    if cfg.model.stream_mode not in MODES:
        raise KeepError(f"unknown model.stream_mode '{cfg.model.stream_mode}'; choose one of {list(MODES)}")
    if cfg.metrics.published:
        published_rows(cfg.metrics.published)  # an unknown data set is an error before anything runs
    clips = list_clips(cfg.data.root, cfg.data.clips, folder="GT" if cfg.data.gt else "LQ")  # real footage: LQ only
    for name in clips if cfg.data.gt else ():
        clip_files(cfg.data.root, name, max_frames=cfg.data.max_frames)
    out_dir = Path(cfg.results_dir) / cfg.name
    check_output_outside_inputs(out_dir, [cfg.data.root])
    _check_previous_run(out_dir, cfg.overwrite)
    if _unscored(cfg):
        log.warning("warning: %s", _unscored(cfg))
    return clips


def _unscored(cfg: BenchmarkConfig) -> str:
    """The LQ clips a run over the whole test set leaves out, in words (the table's notes say it too)."""
    clips = lq_without_gt(cfg.data.root) if cfg.data.gt and not cfg.data.clips else []
    return f"{len(clips)} LQ clip(s) without ground truth (GT/<clip>), not scored: {', '.join(clips)}" if clips else ""


def _check_previous_run(out_dir: Path, overwrite: bool) -> None:
    previous = [f for f in RUN_FILES if (out_dir / f).exists()]
    if previous and not overwrite:
        raise KeepError(
            f"{out_dir} already holds a run ({', '.join(previous)}); pass --overwrite (overwrite: true) to "
            "replace it, or --name another"
        )


def _publish(staging: Path, out_dir: Path) -> None:
    """Replace the previous run's files in `out_dir` with the complete run in `staging`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        old = out_dir / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for item in staging.iterdir():
        item.rename(out_dir / item.name)
    staging.rmdir()


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Run the benchmark described by `cfg`; returns {"table": markdown, "summary": ..., "dir": Path}."""
    clips = check_inputs(cfg)
    device = resolve_device(cfg.device)
    out_dir = Path(cfg.results_dir) / cfg.name
    model = _load_network(cfg, device) if any(METHODS[m][1] for m in cfg.methods) else None
    evaluator = Evaluator(cfg.metrics, device=device)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(out_dir.parent, exc) from None
    with FileLock(out_dir.parent / f".{cfg.name}.lock").held(f"another test.py run is writing {out_dir}"):
        _check_previous_run(out_dir, cfg.overwrite)  # again: a run under this name may have ended meanwhile
        remove_partials(stale_partials(out_dir))  # left by runs that were killed
        staging = partial_path(out_dir)
        staging.mkdir()
        try:
            table, summary, notes = _run(cfg, clips, model, evaluator, staging)
            _publish(staging, out_dir)
        finally:
            remove_partials([staging])
    return {"table": table, "summary": summary, "dir": out_dir, "notes": notes}


def _run(cfg: BenchmarkConfig, clips: list[str], model, evaluator: Evaluator, out_dir: Path):
    """Every method over every clip; writes the report files into `out_dir`."""
    save_config(cfg, out_dir / "config.yml")
    frame_rows: list[dict] = []
    clip_rows: list[dict] = []
    total_frames = 0
    frame_keys = FRAME_METRICS + (TODAY_FRAME_METRICS if cfg.metrics.table == "dvface" else ())
    fvd_real: list = []  # I3D features of the GT windows, then of each method's
    fvd_fake: dict[str, list] = {m: [] for m in cfg.methods}
    for clip_name in clips:
        clip = _load(cfg, clip_name)
        size = _size(clip, model)
        total_frames += len(clip.lq)
        ref = evaluator.reference(clip.gt)
        if clip.gt is not None and cfg.metrics.table == "dvface":
            fvd_real.append(evaluator.fvd_features(clip.gt))
        per_method = {}
        for method in cfg.methods:
            run, _ = METHODS[method]
            start = time.perf_counter()
            with tqdm(total=len(clip.lq), desc=f"{clip_name} {method}", disable=not cfg.progress, leave=False) as bar:
                out = run(clip.lq, size, model, cfg.model, bar)
            seconds = time.perf_counter() - start
            if cfg.save_images:
                for frame_name, frame in zip(clip.frame_names, out, strict=True):
                    folder = out_dir / "images" / method / clip_name
                    folder.mkdir(parents=True, exist_ok=True)
                    write_image(folder / f"{frame_name}.png", frame)
            values = evaluator.frames(out, clip.gt, ref)
            per_method[method] = values
            if clip.gt is not None and cfg.metrics.table == "dvface":
                fvd_fake[method].append(evaluator.fvd_features(out))
            for t, frame_name in enumerate(clip.frame_names):
                frame_rows.append(
                    {"method": method, "clip": clip_name, "frame": frame_name}
                    | {k: float(values[k][t]) for k in frame_keys}
                )
            row = {"method": method, "clip": clip_name, "frames": len(out)} | evaluator.clip(out, values, ref)
            if cfg.metrics.table == "dvface":
                row["runtime"] = seconds
            clip_rows.append(row)
        plot_clip(out_dir / "plots" / f"{clip_name}.png", clip_name, per_method)

    columns = TABLES[cfg.metrics.table]
    summary = summarize(clip_rows, cfg.methods, columns)
    for name in evaluator.failed:  # not an average over the clips it happened to work on
        for values in summary.values():
            values[name] = float("nan")
    if cfg.metrics.table == "dvface":
        _set_level(summary, cfg, model, fvd_real, fvd_fake)
    header = _header(cfg, len(clips), total_frames, model)
    notes = {
        "psnr/ssim": "RGB, [0, 255], no border crop; SSIM 11x11 Gaussian window (sigma 1.5), channel mean",
        **{k: evaluator.notes.get(k, "") for k in ("lpips", "ids", "akd", "twe")},
    }
    unscored = _unscored(cfg)
    if unscored:
        notes["skipped"] = unscored
    published = None
    if cfg.metrics.table == "dvface":
        notes |= _today_notes(cfg, evaluator)
        if cfg.metrics.published:
            published, source = published_rows(cfg.metrics.published)
            notes["published"] = f"rows marked (published), {cfg.metrics.published}: {source}"
    table = markdown_table(summary, header, notes, columns, published)
    (out_dir / "table.md").write_text(table)
    write_csv(out_dir / "per_frame.csv", frame_rows)
    write_csv(out_dir / "per_clip.csv", clip_rows)
    write_json(out_dir / "results.json", {"summary": summary, "clips": clip_rows, "notes": notes})
    return table, summary, notes


def _load(cfg: BenchmarkConfig, name: str):
    if cfg.data.gt:
        return load_clip(cfg.data.root, name, max_frames=cfg.data.max_frames)
    return load_lq_clip(cfg.data.root, name, max_frames=cfg.data.max_frames)


def _size(clip, model) -> int:
    """The restored size: the network's; GT must have it (sets without GT: x4 the LQ when no network)."""
    if clip.gt is None:
        return model.config.img_size if model is not None else 4 * clip.lq.shape[1]
    height, width = clip.gt.shape[1:3]
    size = model.config.img_size if model is not None else height
    if (height, width) != (size, size):
        raise KeepError(f"clip {clip.name}: GT frames are {width}x{height}, the network restores {size}x{size} faces")
    return size


def _set_level(summary: dict, cfg: BenchmarkConfig, model, fvd_real: list, fvd_fake: dict[str, list]) -> None:
    """Set-level columns: FVD (restored set vs GT set), parameters of the network the method runs."""
    params = sum(p.numel() for p in model.network.parameters()) if model is not None else float("nan")
    for method in cfg.methods:
        feats = [f for f in fvd_fake[method] if f is not None and len(f)]
        real = [f for f in fvd_real if f is not None and len(f)]
        summary[method]["fvd"] = (
            frechet_distance(np.concatenate(real), np.concatenate(feats)) if feats else float("nan")
        )
        summary[method]["params"] = float(params) if METHODS[method][1] else float("nan")


def _today_notes(cfg: BenchmarkConfig, evaluator: Evaluator) -> dict[str, str]:
    notes = {k: evaluator.notes.get(k, "") for k in (*TODAY_FRAME_METRICS, "ewarp", "vidd", "fvd", "dover")}
    notes["akd/512"] = "AKD (pixels at 512) / 512, the normalisation the published values (0.002-0.013) fit"
    notes["params/runtime"] = (
        "parameters of the restoring network (bicubic: none); wall-clock seconds per clip for the method alone"
    )
    if not cfg.data.gt:
        notes["no ground truth"] = "real footage: full-reference columns and FVD are n/a; E*warp on the output's flow"
    return notes


def _header(cfg: BenchmarkConfig, clips: int, frames: int, model) -> list[str]:
    """The table's title and the sentence that says what was run."""
    m = cfg.model
    network = (
        f"Network: `{m.source}` ({m.stream_mode} streaming, window {m.window}, "
        f"flow {getattr(model.flow, 'name', m.flow)}, fidelity {model.fidelity}, {model.precision}) on {model.device}. "
        "Network input: LQ upsampled x4 bicubic to the network's size (= the `bicubic` row). "
        if model is not None
        else "No network run. "
    )
    return [
        f"# Benchmark `{cfg.name}`",
        "",
        f"Test set `{cfg.data.root}`: {clips} clips, {frames} frames. {network}"
        "Values: mean over the frames of a clip, then over clips; std = over the frames of a clip, "
        "then averaged over clips.",
    ]
