"""Where the time goes in `inference.py`: frames/s per stage and peak RSS for one video (issue #3).

    python scripts/benchmark_pipeline.py -i ../shared/media/carphone_pristine.mp4 --model preset:tiny
    python scripts/benchmark_pipeline.py -i clip.mp4 --model keep --device cuda --frames 60

Stages: decode, detect, track_align (tracking, smoothing, alignment), flow, network, paste, encode.
`--frames N` restores only the first N frames (the released network takes seconds per frame on CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keep.errors import KeepError  # noqa: E402
from keep.pipeline import STAGES, Pipeline, PipelineOptions  # noqa: E402


def first_frames(source: Path, count: int, folder: Path) -> Path:
    """The first `count` frames of `source` as a clip (audio not needed for timing)."""
    from keep.video import VideoWriter, open_input

    reader = open_input(source)
    clip = folder / f"{source.stem}.mp4"
    writer = VideoWriter(clip, width=reader.width, height=reader.height, fps=reader.fps, crf=0)
    for frame, _ in zip(reader, range(count), strict=False):
        writer.write(frame.rgb)
    writer.close()
    return clip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-i", "--input", required=True)
    p.add_argument("--model", default="keep")
    p.add_argument("--detector", default="auto")
    p.add_argument("--flow", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--frames", type=int, default=0, help="only the first N frames (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    options = PipelineOptions(
        model=args.model, detector=args.detector, flow=args.flow, device=args.device,
        precision=args.precision, window=args.window,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.input)
        try:
            if args.frames:
                source = first_frames(source, args.frames, Path(tmp))
            start = time.perf_counter()
            pipeline = Pipeline(options)
            load_s = time.perf_counter() - start
            summary = pipeline.run(source, Path(tmp) / "out")
        except KeepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    frames = summary["frames"]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = {stage: summary["timings"][stage] for stage in STAGES}
    print(f"\n{args.input}: {frames} frames, {summary['faces']} faces, {summary['tracks']} tracks")
    print(f"model {args.model} on {args.device} ({args.precision}), detector {summary['detector']}, flow {args.flow}")
    print(f"{'stage':<12} {'seconds':>9} {'frames/s':>10} {'share':>7}")
    total = sum(rows.values())
    for stage, seconds in rows.items():
        fps = frames / seconds if seconds > 0 else float("inf")
        print(f"{stage:<12} {seconds:9.2f} {fps:10.2f} {seconds / total:7.1%}")
    print(f"{'all stages':<12} {total:9.2f} {frames / total:10.2f}")
    print(f"end to end {summary['seconds']:.2f} s ({summary['frames_per_second']:.2f} frames/s), load {load_s:.1f} s")
    print(f"peak RSS {peak_rss_mib:.0f} MiB")
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB ({torch.cuda.get_device_name()})")
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "peak_rss_mib": peak_rss_mib, "load_s": load_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
