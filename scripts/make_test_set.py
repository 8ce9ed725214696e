"""Synthesise the LQ half of a test set once, so every method sees identical inputs (docs/benchmark.md).

    python scripts/make_test_set.py --root datasets/vfhq_easy --protocol vfhq_easy   # KEEP's test set
    python scripts/make_test_set.py --root datasets/vfhq_test [--seed 0] [--set crf=[25,25] noise_prob=0]

Reads `<root>/GT/<clip>/*.png` (aligned faces, e.g. 512) and writes `<root>/LQ/<clip>/*.png` (x4
smaller, same file names) with the degradation pipeline (`keep.data.degrade_clip`, docs/training.md
"Data and degradations": blur, noise, downsampling, noise, H.264). `--protocol` names the parameters
(`keep.evaluation.protocols`: `vfhq_easy` = the released test set's blur 5-10, noise 0-10, CRF 18-25;
`training` = this project's training defaults); `--set key=value` overrides `DegradationConfig`
fields on top. Each clip's generator is seeded from `--seed` and the clip's name (not its position in
the listing), so adding or removing clips leaves the others' inputs unchanged, and re-running
reproduces them bit for bit. Existing LQ clips are kept unless `--overwrite`.

DicFace's VFHQ-Test release (GT frame folders, `<clip>.txt` landmark files, the clip list; docs/benchmark.md)
is aligned into `<root>/GT` first with `--dicface_gt DIR --dicface_landmarks DIR [--dicface_list FILE]`
(`keep.evaluation.dicface`); its LQ frames too with `--dicface_lq DIR`, otherwise LQ is synthesised:

    python scripts/make_test_set.py --root datasets/dvface_vfhq --protocol dicface \
        --dicface_gt release/GT --dicface_landmarks release/landmarks --dicface_list release/vfhq_test.txt
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keep.cli import add_set_argument, add_threads_argument, run_main
from keep.config import apply_overrides, from_dict, read_yaml_mapping, save_config, to_dict
from keep.data.degradations import DegradationConfig, degrade_clip
from keep.errors import KeepError
from keep.evaluation.data import list_clips
from keep.evaluation.dicface import align_release
from keep.evaluation.protocols import PROTOCOLS, get_protocol
from keep.image import list_images, read_image, write_image
from keep.paths import (
    check_output_outside_inputs,
    move_into_place,
    partial_path,
    remove_partials,
    stale_partials,
    write_atomically,
)
from keep.threads import set_threads


def clip_seed(name: str, seed: int) -> int:
    """A 64-bit seed from the clip name and the global seed (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")


def make_lq(root: Path, *, seed: int = 0, params: DegradationConfig, overwrite: bool = False) -> list[str]:
    """Write LQ frames for every GT clip of `root`; returns the clips written.

    A clip is written into a hidden partial folder of its own (`keep.paths.partial_path`) and renamed when
    complete, so an interrupted run never leaves a half-written clip that a later run would take for a
    finished one."""
    written = []
    for name in list_clips(root):
        lq_dir = root / "LQ" / name
        if lq_dir.is_dir() and list_images(lq_dir) and not overwrite:
            continue
        files = list_images(root / "GT" / name)
        if not files:
            raise KeepError(f"clip {name}: no images in {root / 'GT' / name}")
        gt = [read_image(p) for p in files]
        if len({f.shape for f in gt}) != 1:
            raise KeepError(f"clip {name}: GT frames of different sizes")
        height, width = gt[0].shape[:2]
        if height % params.scale or width % params.scale:
            raise KeepError(f"clip {name}: GT size {width}x{height} is not divisible by {params.scale}")
        lq = degrade_clip(np.stack(gt), np.random.default_rng(clip_seed(name, seed)), params)
        remove_partials(stale_partials(lq_dir))  # left by runs that were killed
        partial = partial_path(lq_dir)
        try:
            partial.mkdir(parents=True)
            for path, frame in zip(files, lq, strict=True):
                write_image(partial / f"{path.stem}.png", frame)
            move_into_place(partial, lq_dir)  # --overwrite: the old clip goes only once the new one is complete
        finally:
            remove_partials([partial])
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="test set root holding GT/<clip>/*.png")
    parser.add_argument(
        "--protocol",
        default="training",
        choices=sorted(PROTOCOLS),
        help="degradation parameters: vfhq_easy (KEEP's published test set) or training (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="global seed; each clip's seed also uses its name")
    parser.add_argument("--overwrite", action="store_true", help="rewrite LQ clips that exist")
    parser.add_argument("--dicface_gt", help="DicFace release: GT frame folders <clip>/*.png, aligned into GT/")
    parser.add_argument("--dicface_landmarks", help="DicFace release: folder of <clip>.txt (10 numbers per frame)")
    parser.add_argument("--dicface_list", help="DicFace release: clip list, lines '<clip path>/<frames>'")
    parser.add_argument("--dicface_lq", help="DicFace release: LQ frame folders, aligned into LQ/ (no synthesis)")
    add_set_argument(parser)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: _main(args))


def check_same_recipe(root: Path, params: DegradationConfig, record: dict) -> None:
    """KeepError when `root/LQ` was made with other parameters or another seed: kept clips and new
    ones would then mix two recipes under one `degradation.yml` (use --overwrite to remake all)."""
    old_params, old_record = root / "LQ" / "degradation.yml", root / "LQ" / "seed.json"
    if not old_params.is_file():
        return
    try:
        same = read_yaml_mapping(old_params) == to_dict(params)
        if old_record.is_file():
            same = same and json.loads(old_record.read_text()).get("seed") == record["seed"]
    except (KeepError, OSError, ValueError, AttributeError) as exc:
        raise KeepError(f"cannot read the record of {root / 'LQ'} ({exc}); pass --overwrite to remake it") from None
    if not same:
        raise KeepError(
            f"{root / 'LQ'} was made with other degradation parameters or another seed (see {old_params}); "
            "pass --overwrite to remake every clip with these, or choose another --root"
        )


def _main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    protocol = get_protocol(args.protocol)
    params = from_dict(DegradationConfig, apply_overrides(protocol.degradation, args.overrides))
    root = Path(args.root)
    if args.dicface_gt or args.dicface_landmarks:
        if not (args.dicface_gt and args.dicface_landmarks):
            raise KeepError("--dicface_gt and --dicface_landmarks go together (the release's frames and landmarks)")
        for out in (root / "GT", root / "LQ"):
            check_output_outside_inputs(out, [args.dicface_gt, args.dicface_landmarks, args.dicface_lq])
        clips = align_release(
            args.dicface_gt, args.dicface_landmarks, root, clip_list=args.dicface_list, lq=args.dicface_lq
        )
        print(f"aligned {len(clips)} clips of the DicFace release into {root / 'GT'}")
        if args.dicface_lq:
            (root / "LQ" / "source.json").write_text(
                json.dumps({"lq": "DicFace release", "from": args.dicface_lq}) + "\n"
            )
            print(f"aligned their LQ frames into {root / 'LQ'} (nothing synthesised)")
            return 0
    record = {"protocol": protocol.name, "seed": args.seed, "clip_seed": "sha256(f'{seed}:{clip}')"}
    list_clips(root)  # a missing or empty GT/ is reported before anything is written
    if not args.overwrite:
        check_same_recipe(root, params, record)
    written = make_lq(root, seed=args.seed, params=params, overwrite=args.overwrite)
    (root / "LQ").mkdir(parents=True, exist_ok=True)
    save_config(params, root / "LQ" / "degradation.yml")
    write_atomically(root / "LQ" / "seed.json", json.dumps(record) + "\n")
    print(f"wrote LQ for {len(written)} clips under {root / 'LQ'} (protocol {protocol.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
