"""Restore the faces of a video in the browser (issue 18): a Gradio page over the pipeline inference.py runs.

    python app.py                                   # http://127.0.0.1:7860 with the current release "keep"
    python app.py --model preset:tiny               # random weights: an offline try of the page
    python app.py --device cuda --host 0.0.0.0 --port 8080 --max_seconds 600

One job at a time on the device (Gradio's queue; every other request waits with its place shown), a
progress bar counting restored frames, a cancel button. The restore function is also an API endpoint:

    from gradio_client import Client, handle_file
    video, before_after, faces, summary = Client("http://127.0.0.1:7860/").predict(
        {"video": handle_file("clip.mp4")}, upscale=2, api_name="/restore")      # video["video"]: its path here

Uploads and outputs stay in the app's own temporary folder: a session's are removed when its tab closes
(an API client's when a job starts an hour after its last one), all of them when the app stops. Nothing
is read from or written to a path a request names. See keep/webapp.py.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from keep.cli import add_device_argument, add_threads_argument, run_main
from keep.threads import passive_openmp_waits

passive_openmp_waits()  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

REPO = Path(__file__).resolve().parent
EXAMPLES = REPO / "assets"

log = logging.getLogger("app")


def build_parser() -> argparse.ArgumentParser:
    from keep.webapp import LIMITS

    p = argparse.ArgumentParser(prog="app.py", description="Restore the faces of a video in the browser with KEEP.")
    p.add_argument(
        "--model", default="keep", help="the model selected first: registry name, checkpoint path or preset:NAME"
    )
    add_device_argument(p, default="auto")
    add_threads_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    for limit in LIMITS:
        p.add_argument(
            limit.flag, type=type(limit.default), help=f"{limit.what} (default ${limit.env}, else {limit.default})"
        )
    return p


def limits_from_args(args: argparse.Namespace):
    """`Limits` from the flags, else the environment, else the defaults; KeepError for a value that is no number."""
    from keep.errors import KeepError
    from keep.webapp import LIMITS, Limits

    values = {}
    for limit in LIMITS:
        value = getattr(args, limit.name)
        if value is None:
            try:
                value = type(limit.default)(os.environ.get(limit.env, limit.default))
            except ValueError:
                raise KeepError(f"{limit.env}={os.environ[limit.env]!r} is not a number") from None
        values[limit.name] = value
    return Limits(**values)


def check_model(model: str) -> None:
    """KeepError unless `--model` names a preset, a registered release or an existing file."""
    from keep.archs.keep_arch import PRESETS
    from keep.errors import KeepError
    from keep.webapp import keep_models

    if model.startswith("preset:"):
        if model.split(":", 1)[1] not in PRESETS:
            raise KeepError(f"unknown preset '{model}'; choose one of {', '.join(f'preset:{n}' for n in PRESETS)}")
    elif model not in keep_models() and not Path(model).is_file():
        raise KeepError(f"--model {model}: no such file, and not a release name ({', '.join(keep_models())})")


def handlers(jobs, base, models: list[str]) -> tuple:
    """The page's events: restore (also the `/restore` API), cancel (`/cancel`) and the end of a session."""
    import dataclasses

    import gradio as gr

    from keep.errors import KeepError
    from keep.webapp import summary_markdown

    def restore(
        video, model, fidelity, upscale, background, face_upsample, draw_box,
        request: gr.Request, progress=gr.Progress(),  # noqa: B008 - how Gradio passes its progress bar
    ):  # fmt: skip
        """Restore every face of the video; returns the video, a before/after frame, the faces, the summary."""
        if not video:
            raise gr.Error("Upload a video first.", print_exception=False)

        def report(done: int, total: int | None, what: str) -> None:
            progress((done, total), desc=what, unit="frames")

        try:
            if model not in models:
                raise KeepError(f"unknown model '{model}'; choose one of {', '.join(models)}")
            options = dataclasses.replace(
                base, model=model, fidelity=float(fidelity), upscale=int(upscale), face_upsample=bool(face_upsample),
                bg_upsampler="realesrgan" if background else "bicubic", draw_box=bool(draw_box),
            )  # fmt: skip
            result = jobs.run(request.session_hash or "anonymous", Path(video), options, report)
        except KeepError as exc:  # the user's input: the message, with the upload's name instead of its server path
            message = str(exc).replace(str(Path(video).parent) + os.sep, "")
            log.info("%s: %s", Path(video).name, message)
            raise gr.Error(message, duration=None, print_exception=False) from None
        except Exception as exc:  # a bug: one line in the page, the traceback in the app's log
            log.exception("internal failure")
            message = f"internal failure ({type(exc).__name__}: {exc}); the app's log has the traceback"
            raise gr.Error(message, duration=None, print_exception=False) from None
        faces = [(str(path), caption) for path, caption in result.faces]
        markdown = summary_markdown(result.summary, result.notes)
        return str(result.video), (str(result.before), str(result.after)), faces, markdown

    def cancel(request: gr.Request) -> None:
        jobs.cancel(request.session_hash or "anonymous")

    def end_session(request: gr.Request) -> None:
        jobs.end_session(request.session_hash)

    return restore, cancel, end_session


def background_note() -> str:
    """What "Background enhancement" does here: Real-ESRGAN, or the pipeline's bicubic fallback (said before a run)."""
    from keep.weights import REGISTRY, WeightsUnavailable, resolve_weights

    try:
        resolve_weights("realesrgan_x2plus", download=False)
        return "Real-ESRGAN x2plus on the background, as in CodeFormer (slow on a CPU)"
    except WeightsUnavailable:
        entry = REGISTRY["realesrgan_x2plus"]
        return f"Real-ESRGAN: {entry.filename} is not on this machine, so bicubic unless it can be downloaded"


def build_page(jobs, base, models: list[str]):
    """The Gradio Blocks page: inputs, outputs, the restore and cancel events."""
    import warnings

    import gradio as gr

    from keep.webapp import SESSION_TTL_S

    restore, cancel, end_session = handlers(jobs, base, models)
    esrgan = background_note()
    warnings.filterwarnings("ignore", ".*Gradio 6.0", DeprecationWarning)  # requirements.txt keeps Gradio 5
    system_fonts = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["monospace"])
    with gr.Blocks(title="KEEP", theme=system_fonts, delete_cache=(600, SESSION_TTL_S)) as page:
        gr.Markdown(
            "# KEEP: restore the faces of a video\n"
            "Every face is detected, tracked and restored with its history carried over the whole track "
            "(Kalman-Inspired Feature Propagation, ECCV 2024); the output keeps the source's frame rate and audio."
        )
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="input-video")
                gr.Examples([[str(p)] for p in sorted(EXAMPLES.glob("*.mp4"))], inputs=[video])
                model = gr.Dropdown(models, value=base.model, label="Model", info="preset:tiny: random weights")
                fidelity = gr.Slider(
                    0, 1, value=base.fidelity, step=0.05, label="Fidelity",
                    info="0: trust the learned face prior, 1: the input (every release's setting)",
                )  # fmt: skip
                upscale = gr.Radio([1, 2, 4], value=base.upscale, label="Upscale")
                background = gr.Checkbox(False, label="Background enhancement", info=esrgan)
                face_upsample = gr.Checkbox(
                    False, label="Face upsample", info="Real-ESRGAN on the faces at upscale > 1"
                )
                draw_box = gr.Checkbox(False, label="Draw box", info="outline every restored face with its track id")
                with gr.Row():
                    run = gr.Button("Restore", variant="primary", elem_id="restore-button")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
            with gr.Column():
                restored = gr.Video(label="Restored", interactive=False, elem_id="output-video")
                compare = gr.ImageSlider(label="Before / after", type="filepath", interactive=False)
        with gr.Row():
            with gr.Column():  # half the page: a gallery's columns are at most its pictures, each a square
                faces = gr.Gallery(label="Faces of each track, before and after", columns=6, elem_id="faces")
            with gr.Column():
                summary = gr.Markdown(label="summary", elem_id="summary")
        inputs = [video, model, fidelity, upscale, background, face_upsample, draw_box]
        job = run.click(
            restore, inputs, [restored, compare, faces, summary], api_name="restore",
            concurrency_limit=1, concurrency_id="device",
        )  # fmt: skip
        # The flag stops the job at its next restored frame; `cancels` tells the page at once.
        stop.click(cancel, None, None, cancels=[job], api_name="cancel", concurrency_limit=None)
        page.unload(end_session)
    return page


def _main(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from keep.devices import resolve_device
    from keep.errors import KeepError
    from keep.pipeline import PipelineOptions
    from keep.threads import set_threads
    from keep.webapp import Jobs, keep_models

    limits = limits_from_args(args)
    check_model(args.model)
    device = resolve_device(args.device)
    set_threads(args.threads)
    base = PipelineOptions(model=args.model, device=str(device))
    base.check()
    if device.type == "cpu":
        from keep.precision import reuse_freed_memory

        reuse_freed_memory()  # as inference.py: the network reuses freed heap memory (docs/speed.md)
    models = keep_models() + ["preset:tiny"] + ([] if args.model in keep_models() + ["preset:tiny"] else [args.model])
    root = Path(tempfile.mkdtemp(prefix="keep-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root)  # uploads land here; outputs inside it are served without a copy
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no call home
    jobs = Jobs(root, limits)
    try:
        page = build_page(jobs, base, models)
        page.queue(default_concurrency_limit=1)
        try:
            page.launch(
                server_name=args.host, server_port=args.port, allowed_paths=[str(EXAMPLES)], show_error=True,
                ssr_mode=False, inbrowser=False,
            )  # fmt: skip
        except OSError as exc:
            raise KeepError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    finally:
        jobs.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests to itself
    return run_main(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
