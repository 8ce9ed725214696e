"""Restore every face in a video, a folder of frames or one image with KEEP (issue #3).

    python inference.py -i assets/carphone_sample.mp4 -o results/demo
    python inference.py -i clip.mov -o out --detector dlib --upscale 2 --device cuda --bf16

Writes OUTDIR/<input stem>.mp4 (or .png for one image) and OUTDIR/<input stem>_summary.json.
See docs/inference.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from keep.errors import KeepError


def build_parser() -> argparse.ArgumentParser:
    from keep.pipeline import PipelineOptions

    d = PipelineOptions()
    p = argparse.ArgumentParser(
        prog="inference.py", description="Restore every face in a video with KEEP; faces stay stable over time."
    )
    p.add_argument("-i", "--input", required=True, help="video file, folder of frames, or one image")
    p.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    p.add_argument("--model", default=d.model, help="checkpoint path, registry name ('keep') or preset:NAME")
    p.add_argument("--detector", default=d.detector, help="auto | retinaface_resnet50 | dlib")
    p.add_argument("--mask", default=d.mask, help="paste mask: auto | parsenet (facexlib) | feather")
    p.add_argument("--flow", default=d.flow, help="auto | gmflow | raft_large | raft_small | dis")
    p.add_argument(
        "--fidelity", type=float, default=d.fidelity, help="0..1: 0 quality, 1 fidelity to the input (CodeFormer's -w)"
    )
    p.add_argument("--upscale", type=int, default=d.upscale, help="output resolution factor (background bicubic)")
    p.add_argument("--has_aligned", action="store_true", help="input frames are aligned face crops")
    p.add_argument("--save_frames", action="store_true", help="also write OUTDIR/<stem>/frames/*.png")
    p.add_argument("--save_faces", action="store_true", help="also write per-frame face tracks (jsonl)")
    p.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="run the network in float16 (GPU)")
    precision.add_argument("--bf16", action="store_true", help="run the network in bfloat16")
    p.add_argument("--window", type=int, default=d.window, help="frames per network call (state carried)")
    p.add_argument("--gain_context", type=int, default=d.gain_context, help="earlier observations the gain sees")
    p.add_argument("--crf", type=int, default=d.crf, help="H.264 quality (0 lossless .. 51 worst)")
    p.add_argument("--min_face", type=float, default=d.min_face, help="skip faces smaller than this (pixels)")
    p.add_argument("--max_gap", type=int, default=d.max_gap, help="track gap interpolated (frames)")
    p.add_argument("--smooth_sigma", type=float, default=d.smooth_sigma, help="landmark smoothing (frames, 0 off)")
    p.add_argument("--fps", type=float, default=d.fps, help="frame rate for a folder of frames")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from keep.pipeline import Pipeline, PipelineOptions

    options = PipelineOptions(
        **{k: v for k, v in vars(args).items() if k not in ("input", "output", "fp16", "bf16")},
        precision="fp16" if args.fp16 else "bf16" if args.bf16 else "fp32",
    )
    if not 0 <= options.crf <= 51 or options.window < 1 or options.upscale < 1:
        print("error: need 0 <= --crf <= 51, --window >= 1, --upscale >= 1", file=sys.stderr)
        return 2
    if options.device == "cpu":
        from keep.precision import reuse_freed_memory

        reuse_freed_memory()  # large activations reuse freed heap memory: ~1.3x faster on CPU (docs/speed.md)
    try:
        summary = Pipeline(options).run(args.input, args.output)
    except KeepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if summary["stopped"]:
        print(f"warning: {summary['stopped']}; restored the {summary['frames']} frames that decoded", file=sys.stderr)
    if summary["faces"] == 0:
        print("warning: no face found anywhere; the output equals the input (re-encoded)", file=sys.stderr)
    print(
        f"done: {summary['frames']} frames, {summary['faces']} faces in {summary['tracks']} tracks "
        f"(detector {summary['detector']}), {summary['seconds']:.1f} s ({summary['frames_per_second']:.2f} frames/s)"
        f" -> {summary['output']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
