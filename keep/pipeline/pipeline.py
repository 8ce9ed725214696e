"""`Pipeline`: the models built once, then one video (or frames folder, or image) at a time.

    with Pipeline(PipelineOptions(model="keep")) as pipeline:
        summary = pipeline.run("clip.mp4", "results/")      # writes results/clip.mp4 + clip_summary.json

Per video: read the header, give the stages a frame pool sized for it, stream every frame through
decode -> detect/track -> align/restore -> paste -> encode (see `runner`), rename the finished output
into place and write the summary (frames, faces, per-track frame counts, skipped small faces, seconds
per stage). The progress bar counts restored frames.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..errors import KeepError
from ..model import load_model
from ..video.io import open_input
from .encode import EncodeJob
from .inputs import (
    Input,
    check_outputs,
    make_output_folder,
    new_run_token,
    outputs_of,
    write_atomically,
    write_error,
)
from .items import StageTimer
from .options import STAGES, PipelineOptions
from .restore import RestoreStage
from .runner import InlineRunner, build_runner, new_pool
from .workers import BackJob, FrontJob

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, options: PipelineOptions):
        options.check()
        self.options = options
        self.model = load_model(
            options.model, device=options.device, flow=options.flow, precision=options.precision,
            fidelity=options.fidelity, cuda_graphs=options.cuda_graphs,
        )  # fmt: skip
        self.size = self.model.config.img_size
        self.timer = StageTimer()
        self.restore = RestoreStage(
            self.model, window=options.window, gain_context=options.gain_context, timer=self.timer,
            restore=options.restore,
        )  # fmt: skip
        self.runner = build_runner(options, self.size)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def run(
        self,
        source: str | Path | Input,
        outdir: str | Path,
        *,
        progress: bool = True,
        on_restored: Callable[[int], None] | None = None,
    ) -> dict:
        """Restore one input into `outdir`; returns its summary (also written as JSON for videos).

        progress: show a bar counting restored frames (on a terminal); on_restored: called with the number of frames
        restored so far, after each one.
        """
        opts = self.options
        start = time.perf_counter()
        item = source if isinstance(source, Input) else Input(Path(source), _kind(Path(source)))
        outdir = Path(outdir)
        out = outputs_of(item, outdir, opts.container)
        check_outputs([item], None, outdir, save_frames=opts.save_frames, save_faces=opts.save_faces,
                      container=opts.container)  # fmt: skip
        reader = open_input(item.source, fps=opts.fps)  # the header: upright size, frame rate, frame count
        reader.close()
        make_output_folder(outdir)
        if self.runner is None:  # the previous run failed and stopped the workers
            self.runner = build_runner(opts, self.size)
        runner = self.runner
        pool = new_pool(runner, runner.info["held"], reader.height, reader.width)
        partial = out.partial(new_run_token())
        encode = self._encode_job(item, out, reader, partial)
        self.timer.seconds.clear()
        self.restore.start(pool)
        bar = tqdm(
            total=reader.num_frames, unit="frame", desc=item.stem, dynamic_ncols=True, leave=False,
            disable=None if progress else True,  # None: no bar when stderr is not a terminal (logs, pipes)
        )  # fmt: skip
        try:
            jobs = FrontJob(item.source, opts.fps, pool), BackJob(encode, pool)
            restored = [0]

            def advance(count: int) -> None:
                bar.update(count)
                restored[0] += count
                if on_restored is not None:
                    on_restored(restored[0])

            front, back = runner.run(*jobs, self.restore, advance)
        except BaseException:
            if not isinstance(runner, InlineRunner):
                self.runner = None  # its workers are stopped; the next run starts new ones
            partial.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
        try:
            if back["frames"] == 0:
                stopped = f" ({front['stopped']})" if front["stopped"] else ""
                raise KeepError(f"no frame could be decoded from {item.source}{stopped}")
            partial.replace(out.main)  # atomic: the output is complete or absent, never a part of one
        except OSError as exc:
            raise write_error(out.main, exc) from None
        finally:
            partial.unlink(missing_ok=True)
        summary = self._summary(item, out.main, reader, front, back, time.perf_counter() - start)
        if reader.kind != "image":  # written after the output is in place: it marks the output finished
            write_atomically(out.summary, json.dumps(summary, indent=2))
        return summary

    def _encode_job(self, item: Input, out, reader, partial: Path) -> EncodeJob:
        """What the encoder writes for `item`: the output at --upscale, the source's other streams, frames, faces."""
        opts, u = self.options, self.options.upscale
        return EncodeJob(
            partial=partial, output=out.main, kind=reader.kind, width=reader.width * u, height=reader.height * u,
            fps=reader.fps, time_base=reader.time_base, sample_aspect=reader.sample_aspect, crf=opts.crf,
            preset=opts.preset, streams_from=item.source if reader.kind == "video" else None,
            frames_dir=out.frames_dir if opts.save_frames else None,
            faces_log=out.faces_log if opts.save_faces else None,
        )  # fmt: skip

    def _summary(self, item: Input, output: Path, reader, front: dict, back: dict, elapsed: float) -> dict:
        restore = self.restore.stats()
        tracks, frames = restore["track_frames"], back["frames"]
        for track, count in tracks.items():
            first, last = restore["track_spans"][track]
            log.info("%s: track %d: a face in %d of %d frames (%d-%d)", item.stem, track, count, frames, first, last)
        if front["small_faces_skipped"]:
            log.info(
                "%s: %d faces smaller than --min_face %g px skipped",
                item.stem, front["small_faces_skipped"], self.options.min_face,
            )  # fmt: skip
        timings = {**front["timings"], **back["timings"], **self.timer.seconds}
        return {
            "input": str(item.source),
            "output": str(output),
            "frames": frames,
            "faces": back["faces"],
            "frames_with_face": back["frames_with_face"],
            "tracks": len(tracks),
            "track_frames": tracks,
            "longest_track_coverage": max(tracks.values(), default=0) / frames,
            "small_faces_skipped": front["small_faces_skipped"],
            "min_face": self.options.min_face,
            "detector": front["detector"],
            "flow": getattr(self.model.flow, "name", None),  # what `--flow auto` chose (keep.flow.choose_auto)
            "mask": self.runner.info.get("mask") if self.runner else None,
            "background": self.runner.info.get("background") if self.runner else None,
            "overlap": self.options.overlap,
            "seconds": round(elapsed, 3),
            "frames_per_second": round(frames / elapsed, 3),
            "stopped": front["stopped"],
            # issue 19: frames scaled to the first frame's size; the turn that made the stored frames upright
            "resized_frames": front["resized_frames"],
            "resized": front["resized"],
            "rotation": 90 * getattr(reader, "turns", 0),  # degrees counter-clockwise
            "mirrored": getattr(reader, "mirror", False),
            "sample_aspect": str(reader.sample_aspect) if reader.sample_aspect else None,
            "streams": back["streams"],  # the input's other streams: kept (how) and not kept (why)
            "timings": {stage: round(timings.get(stage, 0.0), 4) for stage in STAGES},
            # seconds each stage group spent blocked on its queues (overlapped runs): which one binds
            "waits": {k.removeprefix("wait "): round(v, 4) for k, v in timings.items() if k.startswith("wait ")},
        }


def _kind(path: Path) -> str:
    from ..image import is_image

    if path.is_dir():
        return "frames"
    return "image" if is_image(path) else "video"
