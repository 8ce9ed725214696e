"""Restore every face in videos, folders of frames or images with KEEP (issues #3, #11).

    python inference.py -i assets/carphone_sample.mp4 -o results/demo
    python inference.py -i clip.mov -o out --upscale 2 --bg_upsampler realesrgan --device cuda --bf16
    python inference.py -i videos/ -o out                                   # a folder: one output each
    torchrun --nproc_per_node 4 inference.py -i videos/ -o out              # shared over 4 GPUs

Writes OUTDIR/<input stem>.mp4 (.mkv for .mkv/.webm inputs, or `--set container=mkv`; .png for one image)
and OUTDIR/<input stem>_summary.json; inputs whose output is finished are skipped unless --overwrite.
See docs/inference.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from keep.cli import add_device_argument, add_set_argument, add_threads_argument, run_main, set_threads


def build_parser() -> argparse.ArgumentParser:
    from keep.background import UPSAMPLERS
    from keep.pipeline import OVERLAP_MODES, PipelineOptions

    d = PipelineOptions()
    p = argparse.ArgumentParser(
        prog="inference.py", description="Restore every face in a video with KEEP; faces stay stable over time."
    )
    p.add_argument("-i", "--input", required=True, help="video, folder of frames, image, or a folder of videos")
    p.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    p.add_argument("--model", default=d.model, help="checkpoint path, registry name ('keep') or preset:NAME")
    p.add_argument("--detector", default=d.detector, help="auto | retinaface_resnet50 | retinaface_mobilenet | dlib")
    p.add_argument(
        "--detect_size",
        type=int,
        default=d.detect_size,
        help="retinaface_mobilenet: frames whose longer side exceeds this many pixels are detected on a copy "
        "shrunk by an integer factor k (faster; faces under about 24 k px are then missed); 0: full resolution",
    )
    p.add_argument("--mask", default=d.mask, help="paste mask: auto | parsenet (facexlib) | feather")
    p.add_argument("--flow", default=d.flow, help="auto | gmflow | raft_large | raft_small | dis")
    p.add_argument(
        "--fidelity", type=float, default=d.fidelity, help="0..1: 0 quality, 1 fidelity to the input (CodeFormer's -w)"
    )
    p.add_argument("--upscale", type=int, default=d.upscale, help="output resolution factor")
    p.add_argument("--bg_upsampler", default=d.bg_upsampler, choices=UPSAMPLERS, help="background upsampler")
    p.add_argument("--bg_tile", type=int, default=d.bg_tile, help="Real-ESRGAN tile size in pixels (0: no tiles)")
    p.add_argument("--face_upsample", action="store_true", help="upsample restored faces with Real-ESRGAN too")
    p.add_argument("--draw_box", action="store_true", help="outline every restored face with its track id")
    p.add_argument("--has_aligned", action="store_true", help="input frames are aligned face crops")
    p.add_argument("--save_frames", action="store_true", help="also write OUTDIR/<stem>/frames/*.png")
    p.add_argument("--save_faces", action="store_true", help="also write per-frame face tracks (jsonl)")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists (default: skip)")
    add_device_argument(p, default="auto")
    add_threads_argument(p)
    add_set_argument(p)
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="run the network in float16 (GPU)")
    precision.add_argument("--bf16", action="store_true", help="run the network in bfloat16")
    precision.add_argument("--tf32", action="store_true", help="GPU: float32 with TF32 tensor cores (default: exact)")
    p.add_argument(
        "--no_cuda_graphs", dest="cuda_graphs", action="store_false", help="GPU: run each frame's kernels eagerly"
    )
    p.add_argument("--window", type=int, default=d.window, help="frames per network call (state carried)")
    p.add_argument("--gain_context", type=int, default=d.gain_context, help="earlier observations the gain sees")
    p.add_argument("--crf", type=int, default=d.crf, help="H.264 quality (0 lossless .. 51 worst)")
    p.add_argument(
        "--preset", default=d.preset, help="x264 speed: ultrafast .. medium .. veryslow (faster: larger file, same crf)"
    )
    p.add_argument("--min_face", type=float, default=d.min_face, help="skip faces smaller than this (pixels)")
    p.add_argument("--max_gap", type=int, default=d.max_gap, help="track gap interpolated (frames)")
    p.add_argument("--smooth_sigma", type=float, default=d.smooth_sigma, help="landmark smoothing (frames, 0 off)")
    p.add_argument("--fps", type=float, default=d.fps, help="frame rate for a folder of frames")
    p.add_argument("--overlap", default=d.overlap, choices=OVERLAP_MODES, help="run the stages in processes | threads")
    return p


def options_from_args(args: argparse.Namespace):
    """PipelineOptions from the parsed command line: every option whose name is a field, then `--set`."""
    from keep.config import apply_overrides, from_dict
    from keep.pipeline import PipelineOptions

    fields = {f.name for f in dataclasses.fields(PipelineOptions)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["precision"] = "fp16" if args.fp16 else "bf16" if args.bf16 else "tf32" if args.tf32 else "fp32"
    return from_dict(PipelineOptions, apply_overrides(values, args.overrides))


def _main(args: argparse.Namespace) -> int:
    import os

    from keep.cli import resolve_device
    from keep.pipeline import collect_inputs, restore_inputs
    from keep.pipeline.inputs import check_outputs, make_output_folder
    from keep.video import open_input

    options = options_from_args(args)
    options.check()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(options.device)
    options.device = str(device)
    # Everything about the inputs and outputs is checked before any model is loaded.
    items, folder = collect_inputs(args.input)
    outdir = Path(args.output)
    check_outputs(
        items, folder, outdir, save_frames=options.save_frames, save_faces=options.save_faces,
        container=options.container,
    )  # fmt: skip
    if folder is None:
        open_input(items[0].source, fps=options.fps).close()  # an unreadable file fails now, not after setup
    make_output_folder(outdir)
    threads = args.threads
    if threads is None and world > 1 and device.type == "cpu":
        from keep.cli import default_threads

        threads = max(1, default_threads() // world)  # torchrun processes share the cores
    options.threads = set_threads(threads)
    if device.type == "cpu":
        from keep.precision import reuse_freed_memory

        reuse_freed_memory()  # large activations reuse freed heap memory: ~1.3x faster on CPU (docs/speed.md)
    result = restore_inputs(items, outdir, options, keep_going=folder is not None)
    if folder is not None and int(os.environ.get("RANK", "0")) == 0:
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
