"""Writing benchmark results: per-frame CSV, per-clip CSV/JSON, the markdown table, per-clip plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import yaml

from ..errors import KeepError

# Table columns: (key in the per-clip summary, header, scale, decimals), the paper's order + TWE.
COLUMNS = (
    ("psnr", "PSNR", 1.0, 2),
    ("ssim", "SSIM", 1.0, 3),
    ("lpips", "LPIPS", 1.0, 3),
    ("ids", "IDS", 1.0, 3),
    ("akd", "AKD", 1.0, 2),
    ("std_ids", "std IDS x1e-2", 1e2, 2),
    ("std_akd", "std AKD", 1.0, 2),
    ("twe", "TWE x1e-3", 1e3, 3),
)


# The columns of today's face-video tables, in their order (DVFace, arXiv 2604.14560, Tables 1-2): header
# with the direction (up: higher is better), scale, decimals. AKD is the landmark distance divided by the
# face size (512): the published values (0.002-0.013) fit that normalisation; E*warp is shown x 10^3.
DVFACE_COLUMNS = (
    ("psnr", "PSNR ↑", 1.0, 2),
    ("ssim", "SSIM ↑", 1.0, 4),
    ("lpips", "LPIPS ↓", 1.0, 4),
    ("dists", "DISTS ↓", 1.0, 4),
    ("clipiqa", "CLIP-IQA ↑", 1.0, 4),
    ("musiq", "MUSIQ ↑", 1.0, 2),
    ("niqe", "NIQE ↓", 1.0, 2),
    ("maniqa", "MANIQA ↑", 1.0, 4),
    ("liqe", "LIQE ↑", 1.0, 2),
    ("akd", "AKD/512 ↓", 1.0 / 512, 4),
    ("fvd", "FVD ↓", 1.0, 2),
    ("dover", "DOVER ↑", 1.0, 4),
    ("ewarp", "E*warp x1e-3 ↓", 1e3, 2),
    ("vidd", "VIDD ↓", 1.0, 4),
    ("params", "Params (M)", 1e-6, 2),
    ("runtime", "Runtime (s/clip)", 1.0, 2),
)
TABLES = {"keep": COLUMNS, "dvface": DVFACE_COLUMNS}
PUBLISHED = Path(__file__).with_name("published.yml")


def published_rows(dataset: str) -> tuple[dict[str, dict[str, float]], str]:
    """The published rows of `dataset` ({method: {column key: value}}) and their source (published.yml)."""
    data = yaml.safe_load(PUBLISHED.read_text())
    if dataset not in data["datasets"]:
        raise KeepError(f"no published rows for '{dataset}'; choose one of {sorted(data['datasets'])}")
    rows = {f"{m} (published)": values for m, values in data["datasets"][dataset].items()}
    return rows, data["source"]


def summarize(clip_rows: list[dict], methods: tuple[str, ...], columns: tuple = COLUMNS) -> dict[str, dict[str, float]]:
    """Mean over clips of each per-clip value (clips weigh equally), NaN-aware, per method."""
    summary = {}
    for method in methods:
        rows = [r for r in clip_rows if r["method"] == method]
        summary[method] = {}
        for key, *_ in columns:
            values = np.array([r.get(key, np.nan) for r in rows], dtype=np.float64)
            finite_or_inf = values[~np.isnan(values)]
            summary[method][key] = float(np.mean(finite_or_inf)) if finite_or_inf.size else float("nan")
    return summary


def _fmt(value: float, scale: float, decimals: int) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value * scale:.{decimals}f}"


def markdown_table(
    summary: dict[str, dict[str, float]],
    header_lines: list[str],
    notes: dict[str, str],
    columns: tuple = COLUMNS,
    published: dict[str, dict[str, float]] | None = None,
) -> str:
    """The table: one row per method (n/a: not computed, the notes say why); `published` rows (values as
    printed in their paper, AKD already normalised, E*warp already x 10^3) follow, marked as such."""
    lines = [*header_lines, ""]
    lines.append("| method | " + " | ".join(h for _, h, _, _ in columns) + " |")
    lines.append("| --- " * (len(columns) + 1) + "|")
    for method, values in summary.items():
        cells = [_fmt(values.get(key, float("nan")), scale, decimals) for key, _, scale, decimals in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for method, values in (published or {}).items():
        cells = [str(values[key]) if key in values else "" for key, *_ in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Metrics:"]
    lines += [f"- {name}: {text}" for name, text in notes.items()]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _jsonable(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: dict) -> None:
    """Standard JSON: NaN -> null, inf -> "inf"."""
    path.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")


def plot_clip(path: Path, clip: str, per_frame: dict[str, dict[str, np.ndarray]]) -> None:
    """Per-frame IDS and AKD over time for one clip, one line per method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for method, values in per_frame.items():
        frames = np.arange(len(values["ids"]))
        axes[0].plot(frames, values["ids"], label=method)
        axes[1].plot(frames, values["akd"], label=method)
    axes[0].set_ylabel("IDS (higher is better)")
    axes[1].set_ylabel("AKD, px at 512 (lower is better)")
    axes[1].set_xlabel("frame")
    axes[0].set_title(f"{clip}: identity and landmark stability over time")
    axes[0].legend(loc="best", fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
