"""Synthesise the LQ half of a test set once, so every method sees identical inputs (issue #5).

    python scripts/make_test_set.py --root datasets/vfhq_test [--seed 0] [--set crf=[25,25]]

Reads `<root>/GT/<clip>/*.png` (aligned faces, e.g. 512) and writes `<root>/LQ/<clip>/*.png` (x4
smaller, same file names) with the training degradation pipeline (`keep.data.degrade_clip`, KEEP_SPEC
section 9: blur, noise, downsampling, noise, H.264). Each clip's generator is seeded from `--seed` and
the clip's name (not its position in the listing), so adding or removing clips leaves the others'
inputs unchanged, and re-running reproduces them bit for bit. Existing LQ clips are kept unless
`--overwrite`. `--set key=value` overrides `DegradationConfig` fields (keep/data/degradations.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keep.config import load_config, save_config  # noqa: E402
from keep.data.degradations import DegradationConfig, degrade_clip  # noqa: E402
from keep.errors import KeepError  # noqa: E402
from keep.evaluation.data import list_clips  # noqa: E402
from keep.image import list_images, read_image, write_image  # noqa: E402


def clip_seed(name: str, seed: int) -> int:
    """A 64-bit seed from the clip name and the global seed (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")


def make_lq(root: Path, *, seed: int = 0, params: DegradationConfig, overwrite: bool = False) -> list[str]:
    """Write LQ frames for every GT clip of `root`; returns the clips written."""
    written = []
    for name in list_clips(root):
        lq_dir = root / "LQ" / name
        if lq_dir.is_dir() and list_images(lq_dir) and not overwrite:
            continue
        files = list_images(root / "GT" / name)
        gt = [read_image(p) for p in files]
        if len({f.shape for f in gt}) != 1:
            raise KeepError(f"clip {name}: GT frames of different sizes")
        height, width = gt[0].shape[:2]
        if height % params.scale or width % params.scale:
            raise KeepError(f"clip {name}: GT size {width}x{height} is not divisible by {params.scale}")
        lq_dir.mkdir(parents=True, exist_ok=True)
        lq = degrade_clip(np.stack(gt), np.random.default_rng(clip_seed(name, seed)), params)
        for path, frame in zip(files, lq, strict=True):
            write_image(lq_dir / f"{path.stem}.png", frame)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="test set root holding GT/<clip>/*.png")
    parser.add_argument("--seed", type=int, default=0, help="global seed; each clip's seed also uses its name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="DegradationConfig override, e.g. --set crf=[25,25] (repeatable)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="rewrite LQ clips that exist")
    args = parser.parse_args(argv)
    try:
        params = load_config(DegradationConfig, None, args.overrides)
        root = Path(args.root)
        written = make_lq(root, seed=args.seed, params=params, overwrite=args.overwrite)
        (root / "LQ").mkdir(parents=True, exist_ok=True)
        save_config(params, root / "LQ" / "degradation.yml")
        (root / "LQ" / "seed.json").write_text(json.dumps({"seed": args.seed, "clip_seed": "sha256(f'{seed}:{clip}')"}))
    except KeepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote LQ for {len(written)} clips under {root / 'LQ'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
