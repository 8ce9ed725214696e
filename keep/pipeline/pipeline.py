"""`Pipeline`: the models built once, then one video (or frames folder, or image) at a time.

    with Pipeline(BuildOptions(model="keep")) as pipeline:                 # what is built once
        summary = pipeline.run("clip.mp4", "results/", RunOptions())         # results/clip.mp4 + clip_summary.json
        summary = pipeline.run("clip.mp4", "x2/", RunOptions(upscale=2, fidelity=0.5))  # what each run chooses

`BuildOptions` (network, device, precision, flow, detector, mask, upsamplers, workers) are the pipeline's: a change
needs a new `Pipeline`. `RunOptions` (faces, fidelity, upscale, tracker thresholds, crf, files written, ...) are
each run's: they travel with the input's `Job` to every stage, and nothing is loaded again
(keep.pipeline.options; a `PipelineOptions` is both, and either call takes its part).

Per input: open it (its header: upright size, frame rate; a file that cannot be read fails here, before any
model is loaded), build the stages if not yet built (the network in this process, the other stages in their
workers: `runner`), give the stages a frame pool sized for the input, stream every frame through
decode -> faces -> restore -> compose -> encode into partial files of the run's own, write the summary
(frames, faces, per-track frame counts, skipped small faces, seconds per stage, the files written) and move the
finished files into place. An output file this program did not write is not replaced without `overwrite`.
The progress bar counts restored frames.

`--faces largest` and `--faces PHOTO` need whole tracks before the choice is known: a survey pass runs first
(decode -> faces -> survey, its own runner, built on first use: `survey_groups`), recording every face; the
restoring pass then replays those records instead of detecting again, and the network sees only the chosen
tracks (keep.pipeline.choice, keep.pipeline.survey; docs/inference.md, "Restoring chosen faces").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..devices import resolve_precision
from ..errors import KeepError
from ..model import load_model
from ..paths import FileLock, move_into_place, new_run_token, partial_path, remove_partials, write_atomically
from ..restorer import Restorer
from ..video.io import open_input
from .choice import FacePlan, choose, describe, face_choice
from .compose import ComposeSpec
from .decode import DecodeSpec
from .encode import EncodeJob, EncodeSpec
from .faces import FacesSpec
from .inputs import Input, Outputs, check_outputs, make_output_folder, outputs_of
from .items import FramePool, Job
from .options import STAGES, BuildOptions, RunOptions, stage_groups, survey_groups
from .restore import RestoreSpec
from .runner import Runner
from .stage import merge_stats
from .survey import SurveyJob, SurveySpec

log = logging.getLogger(__name__)


def stage_specs(options: BuildOptions, model: Restorer) -> dict:
    """Each stage's built-once settings, taken from the options (a worker receives only these, not the options;
    each input's settings come with its `Job`)."""
    return {
        "decode": DecodeSpec(),
        "faces": FacesSpec(detector=options.detector, device=options.device, detect_size=options.detect_size),
        "restore": RestoreSpec(model, window=options.window),
        "compose": ComposeSpec(
            size=model.config.img_size, mask=options.mask, device=options.device, bg_upsampler=options.bg_upsampler,
            bg_tile=options.bg_tile, face_upsample=options.face_upsample,
        ),
        "encode": EncodeSpec(),
        "survey": SurveySpec(),
    }  # fmt: skip


class Pipeline:
    """The models and stage workers built once from `BuildOptions` (a `PipelineOptions` gives its built-once part),
    then `run` per input with that run's `RunOptions`."""

    def __init__(self, options: BuildOptions):
        self.options = BuildOptions.of(options)
        self.precision = resolve_precision(self.options.precision, self.options.device)
        self.model: Restorer | None = None
        self.runner: Runner | None = None
        self.survey_runner: Runner | None = None  # the survey pass's (decode -> faces -> survey), on first use
        self.built: dict = {}  # the stages built in this process, by spec: both runners' (one detector, not two)
        self.builds = 0  # times the network was loaded (the first run, and after `close`)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def build(self, *, survey: bool = False) -> None:
        """Load the network and start the stage workers (the first run does it if it was not done before);
        survey: also the survey pass's (started on first use, then kept with the others)."""
        opts = self.options
        if self.model is None:
            self.model = load_model(
                opts.model, device=opts.device, flow=opts.flow, precision=self.precision, cuda_graphs=opts.cuda_graphs
            )  # the fidelity is each input's (`RunOptions`, set by the restore stage)
            self.builds += 1
        if self.runner is None:  # also after a failed run, which stopped the workers
            self.runner = self._runner(stage_groups(opts))
        if survey and self.survey_runner is None:
            self.survey_runner = self._runner(survey_groups(opts))

    def _runner(self, grouping: tuple) -> Runner:
        specs = stage_specs(self.options, self.model)
        groups = [(name, [specs[stage] for stage in stages]) for name, stages in grouping]
        opts = self.options
        return Runner(groups, mode=opts.overlap, window=opts.window, device=opts.device, built=self.built)

    def close(self) -> None:
        for runner in (self.runner, self.survey_runner):
            if runner is not None:
                runner.close()
        self.runner = self.survey_runner = None
        self.built.clear()

    def run(
        self,
        source: str | Path | Input,
        outdir: str | Path,
        settings: RunOptions,
        *,
        progress: bool = True,
        on_restored: Callable[[int], None] | None = None,
        on_surveyed: Callable[[int], None] | None = None,
    ) -> dict:
        """Restore one input into `outdir` with `settings` (`RunOptions`, or a `PipelineOptions`: its per-run part);
        returns its summary (also written as JSON beside the output). KeepError if another
        run is writing the same output now (its lock is held).

        progress: show a bar counting restored frames (on a terminal); on_restored: called with the number of frames
        restored so far, after each one; on_surveyed: the same for the survey pass (`--faces largest | PHOTO`).
        """
        settings = RunOptions.of(settings)
        item = source if isinstance(source, Input) else Input(Path(source), _kind(Path(source)))
        outdir = Path(outdir)
        check_outputs([item], None, outdir, save_frames=settings.save_frames, save_faces=settings.save_faces,
                      container=settings.container)  # fmt: skip
        face_choice(settings.faces, self.options)  # a photo without a face fails before anything is written (cached)
        make_output_folder(outdir)
        out = outputs_of(item, outdir, settings.container)
        with FileLock(out.lock).held(f"another run is writing {out.main}"):
            return self.restore(item, out, settings, progress=progress, on_restored=on_restored,
                                on_surveyed=on_surveyed)  # fmt: skip

    def restore(
        self,
        item: Input,
        out: Outputs,
        settings: RunOptions,
        *,
        progress: bool = True,
        on_restored: Callable[[int], None] | None = None,
        on_surveyed: Callable[[int], None] | None = None,
    ) -> dict:
        """`run` for outputs already checked (`check_outputs`, `restore_inputs` checks all of a batch at once)
        whose folder exists, under the outputs' lock. Refuses to replace a file this program did not write
        (`Outputs.check_replaceable`) unless `settings.overwrite`.

        Every file is written to a partial file (folder) of this run's own; once all are complete the summary,
        which names them, is written, and they are moved into place, the output last. After a failure or an
        interrupt the partial files are removed: a file named like an output is always complete."""
        opts = settings
        out.check_replaceable(overwrite=opts.overwrite, save_faces=opts.save_faces, save_frames=opts.save_frames)
        remove_partials(out.stale_partials())  # left by killed runs; none is writing them now (the lock)
        choice, reference = face_choice(opts.faces, self.options)
        reader = open_input(item.source, fps=opts.fps)  # the one open of the input in this process
        try:
            self.build(survey=choice.needs_survey)
        except BaseException:
            reader.close()
            raise
        start = time.perf_counter()  # the summary's seconds: the input's, without loading the models
        token = new_run_token()
        partials = {path: partial_path(path, token) for path in out.written(save_faces=opts.save_faces,
                                                                            save_frames=opts.save_frames)}  # fmt: skip
        try:
            stats, chosen, reader = self._passes(item, out, settings, reader, partials, (choice, reference), progress,
                                                 on_restored, on_surveyed)  # fmt: skip
            summary = self._summary(item, out, settings, reader, stats, chosen, time.perf_counter() - start)
            write_atomically(out.summary, json.dumps(summary, indent=2))  # the record: it names every file
            for path, partial in reversed(partials.items()):  # the output last: it is finished once there
                move_into_place(partial, path)
        except BaseException:
            remove_partials(partials.values())
            with contextlib.suppress(OSError):  # OUTDIR/<stem>/, made for the frames, if nothing else is in it
                if out.frames_dir in partials:
                    out.frames_dir.parent.rmdir()
            raise
        return summary

    def _passes(
        self,
        item: Input,
        out: Outputs,
        settings: RunOptions,
        reader,
        partials: dict[Path, Path],
        chosen: tuple,
        progress: bool,
        on_restored,
        on_surveyed,
    ) -> tuple[dict, dict, object]:
        """The survey pass where the choice of faces needs one (`--faces largest | PHOTO`), then the restoring
        pass: the stats of both, the choice described for the summary, and the restoring pass's reader."""
        choice, reference = chosen
        plan = None if choice.kind == "all" else FacePlan(choice.ids)  # track ids: known before the first frame
        survey = selection = records = None
        try:
            if choice.needs_survey:
                records = _records_file()
                job = SurveyJob(records, reference is not None)
                survey = self._survey(item, settings, reader, job, progress, on_surveyed)
                selection = choose(choice, survey["survey"], reference, settings.identity_threshold)
                live = {track: survey["survey"][track]["live"] for track in selection.chosen}
                plan = FacePlan(selection.chosen, records, live)
                reader = open_input(item.source, fps=settings.fps)  # the restoring pass decodes again
            stats = self._restore_pass(item, out, settings, reader, plan, partials, progress, on_restored)
        finally:
            if records is not None:
                records.unlink(missing_ok=True)
        if survey is not None:  # both passes' seconds; what only the survey counted
            stats = merge_stats({"timings": survey["timings"]}, stats)
            stats["small_faces_skipped"] = survey["small_faces_skipped"]
        return stats, describe(choice, stats, survey, selection, reference, settings.identity_threshold), reader

    def _restore_pass(
        self,
        item: Input,
        out: Outputs,
        settings: RunOptions,
        reader,
        plan: FacePlan | None,
        partials: dict[Path, Path],
        progress: bool,
        on_restored,
    ) -> dict:
        """Every frame through the restoring stages into the partial files."""
        pool = self._pool(self.runner, reader, settings)
        job = Job(item.source, pool, self._encode_job(item, out, settings, reader, partials), settings, faces=plan)
        if self.runner.source_in_process:
            job.reader = reader  # the decode stage reads on from it
        else:
            reader.close()
        stats = self._stream(self.runner, job, item.stem, reader.num_frames, progress, on_restored)
        if stats["frames"] == 0:
            stopped = f" ({stats['stopped']})" if stats["stopped"] else ""
            raise KeepError(f"no frame could be decoded from {item.source}{stopped}")
        return stats

    def _survey(
        self, item: Input, settings: RunOptions, reader, survey: SurveyJob, progress: bool, on_surveyed
    ) -> dict:
        """The survey pass over the input (decode -> faces -> survey); what it counted, `survey` per track."""
        runner = self.survey_runner
        job = Job(item.source, self._pool(runner, reader, settings), None, settings, survey=survey)
        if runner.source_in_process:
            job.reader = reader
        try:
            return self._stream(runner, job, f"{item.stem} (faces)", reader.num_frames, progress, on_surveyed)
        finally:
            reader.close()

    def _stream(self, runner: Runner, job: Job, name: str, frames: int | None, progress: bool, on_frame) -> dict:
        """Every frame through `runner`'s stages, with the progress bar; stats of every stage."""
        bar = tqdm(
            total=frames, unit="frame", desc=name, dynamic_ncols=True, leave=False,
            disable=None if progress else True,  # None: no bar when stderr is not a terminal (logs, pipes)
        )  # fmt: skip
        done = [0]

        def advance(count: int) -> None:
            bar.update(count)
            done[0] += count
            if on_frame is not None:
                on_frame(done[0])

        try:
            return runner.run(job, advance)
        except BaseException:
            if runner.stopped:  # its workers are stopped: so are the other runner's; the next run starts new ones
                self.close()
            raise
        finally:
            bar.close()

    def _pool(self, runner: Runner, reader, settings: RunOptions) -> FramePool:
        shared = runner.mode == "processes"
        size = runner.pool_size(settings)
        return FramePool(size, reader.height, reader.width, colour=reader.colour, shared=shared)

    def _encode_job(
        self, item: Input, out: Outputs, settings: RunOptions, reader, partials: dict[Path, Path]
    ) -> EncodeJob:
        """What the encoder writes for `item` (each file into its partial: `partials`, final -> partial): the
        output at --upscale, the source's other streams, frames, faces."""
        opts, u = settings, settings.upscale
        return EncodeJob(
            partial=partials[out.main], output=out.main, kind=reader.kind, width=reader.width * u,
            height=reader.height * u, fps=reader.fps, time_base=reader.time_base, sample_aspect=reader.sample_aspect,
            crf=opts.crf, preset=opts.preset, streams_from=item.source if reader.kind == "video" else None,
            frames_dir=partials.get(out.frames_dir), faces_log=partials.get(out.faces_log),
        )  # fmt: skip

    def _summary(
        self, item: Input, out: Outputs, settings: RunOptions, reader, stats: dict, chosen: dict, elapsed: float
    ) -> dict:
        frames, info = stats["frames"], self.runner.info
        tracks = {track: counts[0] for track, counts in sorted(stats["found_tracks"].items())}
        for line in chosen.pop("lines"):
            log.info("%s: %s", item.stem, line)
        if stats["small_faces_skipped"]:
            log.info(
                "%s: %d faces smaller than --min_face %g px skipped",
                item.stem, stats["small_faces_skipped"], settings.min_face,
            )  # fmt: skip
        if stats["short_tracks"]:
            log.info(
                "%s: %d tracks detected in fewer than --set min_track=%d frames not restored: %s", item.stem,
                len(stats["short_tracks"]), settings.min_track,
                ", ".join(f"track {t} ({n} frames)" for t, n in stats["short_tracks"].items()),
            )  # fmt: skip
        timings = stats["timings"]
        return {
            "input": str(item.source),
            "output": str(out.main),
            "faces_log": str(out.faces_log) if settings.save_faces else None,
            "frames_dir": str(out.frames_dir) if settings.save_frames else None,
            "frames": frames,
            "faces": stats["faces"],  # faces restored
            "frames_with_face": stats["frames_with_face"],
            "tracks": len(tracks),  # every track found, restored or not (`choice`)
            "track_frames": tracks,
            "longest_track_coverage": max(tracks.values(), default=0) / frames,
            "small_faces_skipped": stats["small_faces_skipped"],
            "min_face": settings.min_face,
            "short_tracks": {int(t): n for t, n in stats["short_tracks"].items()},  # {id: frames detected}: left alone
            "min_track": settings.min_track,
            **chosen,  # `choice` (--faces: what was restored, and why) and `track_list` (each track)
            "detector": stats["detector"],  # what `--detector auto` chose (None: --has_aligned, nothing detected)
            "flow": info["flow"],  # what `--flow auto` chose (keep.flow.choose_auto)
            "mask": info["mask"],
            "background": info["background"],
            "precision": self.precision,  # what `--precision auto` chose on this device
            "overlap": self.options.overlap,
            "stage_groups": {name: list(stages) for name, stages in stage_groups(self.options)},
            "seconds": round(elapsed, 3),
            "frames_per_second": round(frames / elapsed, 3),
            "stopped": stats["stopped"],
            # frames scaled to the first frame's size; the turn that made the stored frames upright
            "resized_frames": stats["resized_frames"],
            "resized": stats["resized"],
            "rotation": 90 * getattr(reader, "turns", 0),  # degrees counter-clockwise
            "mirrored": getattr(reader, "mirror", False),
            "exif_turned": stats["exif_turned"],  # images (a photo, frames) turned upright by their EXIF orientation
            "sample_aspect": str(reader.sample_aspect) if reader.sample_aspect else None,
            # the input's start time (s), taken off every stream, and its timestamp jumps made continuous
            "start_time": stats["start_time"],
            "timestamp_jumps": stats["timestamp_jumps"],
            "streams": stats["streams"],  # the input's other streams: kept (how) and not kept (why)
            # the input's colour and the output's (codec, tags, depth, HDR side data), and what could not be kept
            "colour": stats["colour"],
            "timings": {stage: round(timings.get(stage, 0.0), 4) for stage in STAGES},
            # seconds each stage group spent blocked on its queues (overlapped runs): which one binds
            "waits": {k.removeprefix("wait "): round(v, 4) for k, v in timings.items() if k.startswith("wait ")},
        }


def _records_file() -> Path:
    """A new, empty file for a survey's face records, in the temporary folder (removed after the input)."""
    handle, name = tempfile.mkstemp(prefix="keep-faces-", suffix=".records")
    os.close(handle)
    return Path(name)


def _kind(path: Path) -> str:
    from ..image import is_image

    if path.is_dir():
        return "frames"
    return "image" if is_image(path) else "video"
