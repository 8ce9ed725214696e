"""Restore every face in videos, folders of frames or images with KEEP.

    python inference.py -i assets/carphone_sample.mp4 -o results/demo
    python inference.py -i clip.mov -o out --upscale 2 --bg_upsampler realesrgan --device cuda --precision bf16
    python inference.py -i videos/ -o out                                   # a folder: one output each
    python inference.py -i interview.mp4 -o out --faces person.jpg          # only the person in the photo
    python inference.py -i clip.mp4 -o out --set crf=20 preset=veryfast     # any option by its --set key
    torchrun --nproc_per_node 4 inference.py -i videos/ -o out              # shared over 4 GPUs
    python inference.py -i videos/ -o out --set engine=ray                  # over a Ray cluster, video by video

Writes OUTDIR/<input stem>.mp4 (.mkv for .mkv/.webm inputs, or `--set container=mkv`; .png for one image)
and OUTDIR/<input stem>_summary.json; inputs whose output is finished are skipped unless --overwrite.
The flags are what a user of CodeFormer or KEEP reaches for; every other setting is a `--set` key (the
fields of `keep.pipeline.PipelineOptions`, tabled in docs/inference.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import argparse
import logging
import sys
from pathlib import Path

from keep.background import UPSAMPLERS
from keep.cli import add_device_argument, add_set_argument, add_threads_argument, error, run_main
from keep.config import load_config
from keep.devices import PRECISION_CHOICES
from keep.distributed import torchrun_place
from keep.face.detectors import DETECTORS
from keep.flow import FLOW_ESTIMATORS
from keep.paths import removed_if_left_empty
from keep.pipeline import PipelineOptions, collect_inputs, prepare_process, restore_inputs
from keep.pipeline.choice import face_choice

# Flags of earlier versions -> their spelling now (the tuning knobs became `--set` keys): refused, naming the new one.
FORMER_FLAGS = {"--fp16": "--precision fp16", "--bf16": "--precision bf16", "--tf32": "--precision tf32",
                "--no_cuda_graphs": "--set cuda_graphs=false", "--save_faces": "--set save_faces=true"} | {
    f"--{key}": f"--set {key}=VALUE" for key in ("detect_size", "mask", "bg_tile", "gain_context", "crf", "preset",
                                                "min_face", "max_gap", "smooth_sigma", "fps", "overlap")}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    d = PipelineOptions()
    p = argparse.ArgumentParser(
        prog="inference.py",
        description="Restore every face in a video with KEEP; faces stay stable over time.",
        epilog="Every other setting: --set KEY=VALUE (crf, preset, overlap, fps, mask, min_face, ...; "
        "docs/inference.md lists them).",
    )
    p.add_argument("-i", "--input", required=True, help="video, folder of frames, image, or a folder of videos")
    p.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    p.add_argument("--model", help=f"checkpoint path, registry name or preset:NAME (default {d.model})")
    p.add_argument(
        "--faces", help="which faces to restore: all (default), largest, track ids (0,2: the summary's and "
        "--draw_box's), or a photo of the person; the others are left as they are",
    )  # fmt: skip
    add_device_argument(p)
    p.add_argument("--precision", choices=PRECISION_CHOICES, help="the network's; auto: fp16 on CUDA, else fp32")
    p.add_argument("--fidelity", type=float, help="0..1: 0 quality, 1 fidelity to the input (CodeFormer's -w)")
    p.add_argument("--upscale", type=int, help="output resolution factor (default 1)")
    p.add_argument("--bg_upsampler", choices=UPSAMPLERS, help=f"background upsampler (default {d.bg_upsampler})")
    p.add_argument("--face_upsample", action="store_true", default=None, help="upsample restored faces too")
    p.add_argument("--draw_box", action="store_true", default=None, help="outline every restored face")
    p.add_argument("--has_aligned", action="store_true", default=None, help="input frames are aligned face crops")
    p.add_argument("--save_frames", action="store_true", default=None, help="also write OUTDIR/<stem>/frames/")
    p.add_argument("--detector", choices=("auto", *DETECTORS), help="face detector (default auto)")
    p.add_argument("--flow", choices=("auto", *FLOW_ESTIMATORS), help="optical flow (default auto)")
    p.add_argument("--window", type=int, help=f"frames per network call, state carried (default {d.window})")
    p.add_argument("--overwrite", action="store_true", default=None, help="redo inputs whose output exists")
    add_threads_argument(p)
    add_set_argument(p)
    return p


FLAGS = ("model", "faces", "device", "precision", "fidelity", "upscale", "bg_upsampler", "face_upsample", "draw_box",
         "has_aligned", "save_frames", "detector", "flow", "window", "overwrite")  # fmt: skip


def former_flag(argv: list[str]) -> str | None:
    """The error line for the first flag of an earlier version in `argv`, or None."""
    for arg in argv:
        flag = arg.partition("=")[0]
        if flag in FORMER_FLAGS:
            return f"{flag} is now {FORMER_FLAGS[flag]} (inference.py --help)"
    return None


def options_from_args(args: argparse.Namespace):
    """PipelineOptions: the defaults, then the flags given, then `--set` (keep.config.load_config)."""
    return load_config(PipelineOptions, None, args.overrides, flags={name: getattr(args, name) for name in FLAGS})


def _main(args: argparse.Namespace) -> int:
    options = options_from_args(args)  # every value checked here, before anything is loaded
    if options.engine == "local":  # Ray workers ready their own processes, on the cluster's devices
        prepare_process(options, args.threads)
    inputs = collect_inputs(args.input)  # every output is checked before any model is loaded
    face_choice(options.faces, options)  # a photo without a face: one error line before anything is written
    items, folder, rank = inputs.items, inputs.folder, torchrun_place().rank
    if inputs.skipped_line() and rank == 0:
        print(inputs.skipped_line(), flush=True)
    with removed_if_left_empty(args.output):  # a run that restores nothing leaves no empty folder behind
        result = restore_inputs(
            items, Path(args.output), options, folder=folder, keep_going=folder is not None, threads=args.threads
        )
    if folder is not None and rank == 0:
        print(
            f"{len(items)} inputs: {len(result.done)} restored, {len(result.skipped)} skipped (output exists), "
            f"{len(result.failed)} failed",
            flush=True,
        )
    elif folder is None and result.skipped:
        print(f"skipped: {result.skipped[0]} exists (--overwrite redoes it)", flush=True)
    return 2 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    if former := former_flag(argv):
        return error(former)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (every other setting is a --set key)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
