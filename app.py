"""Restore the faces of a video in the browser: a Gradio page (Gradio 5 or 6) over the pipeline inference.py runs.

    python app.py                                   # http://127.0.0.1:7860 with the current release "keep"
    python app.py --model preset:tiny               # random weights: an offline try of the page
    KEEP_APP_AUTH=me:secret python app.py --device cuda --host 0.0.0.0 --port 8080 --max_seconds 600

One job at a time on the device (Gradio's queue; every other request waits with its place shown), one
progress bar counting restored frames (it says when the model loads: the first job only, and after a cancel,
which stops the model's workers), a cancel button. The restore function is also an API endpoint:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    video, before_after, faces, summary = client.predict(
        handle_file("clip.mp4"), upscale=2, api_name="/restore")                 # video: its path here
    client.predict(handle_file("clip.mp4"), faces="photo", photo=handle_file("person.jpg"),
                   api_name="/restore")                     # only the person in the photo (or faces="largest", ...)

(That is Gradio 6; under Gradio 5 the video goes in as {"video": handle_file("clip.mp4")} and comes back as
a dict whose "video" is its path.) Errors come as HTML, as Gradio's do (`&lt;` for `<`).

Uploads and outputs stay in the app's own temporary folder: the upload of a request that fails or is
refused is removed when the request ends; a session's are removed when its tab closes (an API client's
when a job starts an hour after its last one), all of them when the app stops; one that no request uses
goes with Gradio's hourly cache sweep. The example clips (assets/*.mp4) and Gradio's copies of them stay.
An upload larger than `--max_upload_mb` is refused while it arrives. Nothing is read from or written to a
path a request names.
Beyond this machine (`--host 0.0.0.0`), ask for a login: `KEEP_APP_AUTH=user:password` or `--auth_file`
(lines `user:password`); API clients pass it as `Client(url, auth=(user, password))`. See keep/webapp.py.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import gradio as gr

from keep.archs.keep_arch import PRESETS
from keep.cli import add_device_argument, add_threads_argument, run_main
from keep.devices import resolve_device
from keep.errors import KeepError
from keep.pipeline import PipelineOptions
from keep.pipeline.choice import parse_faces
from keep.precision import reuse_freed_memory
from keep.threads import set_threads
from keep.webapp import (
    AUTH_ENV,
    LIMITS,
    SESSION_TTL_S,
    Jobs,
    Limits,
    is_local,
    keep_models,
    page_text,
    read_logins,
    summary_markdown,
)
from keep.weights import REGISTRY, WeightsUnavailable, resolve_weights

REPO = Path(__file__).resolve().parent
EXAMPLES = REPO / "assets"
CLIPS = sorted(EXAMPLES.glob("*.mp4"))  # the page's examples

log = logging.getLogger("app")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="Restore the faces of a video in the browser with KEEP.")
    p.add_argument(
        "--model", default="keep", help="the model selected first: registry name, checkpoint path or preset:NAME"
    )
    add_device_argument(p, default="auto")
    add_threads_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument(
        "--auth_file",
        help="ask for a login: a file of user:password lines (default $KEEP_APP_AUTH_FILE; or one login in "
        "$KEEP_APP_AUTH); never a password on the command line",
    )
    for limit in LIMITS:
        p.add_argument(
            limit.flag, type=type(limit.default), help=f"{limit.what} (default ${limit.env}, else {limit.default})"
        )
    return p


def limits_from_args(args: argparse.Namespace):
    """`Limits` from the flags, else the environment, else the defaults; KeepError for a value that is no number."""

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

    if model.startswith("preset:"):
        if model.split(":", 1)[1] not in PRESETS:
            raise KeepError(f"unknown preset '{model}'; choose one of {', '.join(f'preset:{n}' for n in PRESETS)}")
    elif model not in keep_models() and not Path(model).is_file():
        raise KeepError(f"--model {model}: no such file, and not a release name ({', '.join(keep_models())})")


def handlers(jobs, base, models: list[str]) -> tuple:
    """The page's events: restore (also the `/restore` API), cancel (`/cancel`) and the end of a session."""

    def failure(message: str) -> gr.Error:
        """One toast, the whole message as written (escaped: the toast reads HTML), until the user closes it."""
        return gr.Error(page_text(message), duration=None, print_exception=False)

    def restore(
        video, model, fidelity, upscale, background, face_upsample, draw_box, faces, track_ids, request: gr.Request,
        photo=None,  # a default: the API's `photo` is optional
        progress=gr.Progress(),  # noqa: B008 - how Gradio passes its progress bar
    ):  # fmt: skip
        """Restore the chosen faces of the video (faces: all | largest | track ids | photo); returns the video, a
        before/after frame, the faces, the summary."""
        if not video:
            raise failure("Upload a video first.")
        upload = Path(video)
        uploads = [upload] if not photo else [upload, Path(photo)]
        if faces == "photo" and not photo:
            jobs.discard(upload)
            raise failure("Upload a photo of the person first (or choose other faces).")

        def report(done: int, total: int | None, what: str) -> None:
            progress((done, total), desc=what, unit="frames")

        try:
            if model not in models:
                raise KeepError(f"unknown model '{model}'; choose one of {', '.join(models)}")
            options = dataclasses.replace(
                base, model=model, fidelity=float(fidelity), upscale=int(upscale), face_upsample=bool(face_upsample),
                bg_upsampler="realesrgan" if background else "bicubic", draw_box=bool(draw_box),
                faces=faces_option(faces, track_ids, photo),
            )  # fmt: skip
            result = jobs.run(request.session_hash or "anonymous", upload, options, report)
        except KeepError as exc:  # the user's input: the message, with the uploads' names instead of their server paths
            for path in uploads:
                jobs.discard(path)  # refused before it became a job (a job removes its own uploads)
            message = str(exc)
            for path in uploads:
                message = message.replace(str(path.parent) + os.sep, "")
            log.info("%s: %s", upload.name, message)
            raise failure(message) from None
        except Exception as exc:  # a bug: one line in the page, the traceback in the app's log
            for path in uploads:
                jobs.discard(path)
            log.exception("internal failure")
            message = f"internal failure ({type(exc).__name__}: {exc}); the app's log has the traceback"
            raise failure(message) from None
        faces = [(str(path), caption) for path, caption in result.faces]
        markdown = summary_markdown(result.summary, result.notes)
        return str(result.video), (str(result.before), str(result.after)), faces, markdown

    def cancel(request: gr.Request) -> str:
        """Stop this page's job (a queued one leaves the queue); says so on the page."""
        if jobs.cancel(request.session_hash or "anonymous"):
            return "Cancelled: the job stops at its next frame."
        return "Cancelled."

    def end_session(request: gr.Request) -> None:
        jobs.end_session(request.session_hash)

    return restore, cancel, end_session


FACES = ("all", "largest", "track ids", "photo")  # the page's "Faces" choices (the API's `faces`)


def faces_option(faces: str, track_ids: str, photo: str | None) -> str:
    """The page's Faces choice as `PipelineOptions.faces`: all, largest, the ids typed (0,2) or the photo's path."""

    if faces not in FACES:
        raise KeepError(f"unknown faces '{faces}'; choose one of {', '.join(FACES)}")
    if faces == "track ids":
        if not str(track_ids or "").strip():
            raise KeepError("type the track ids to restore (such as 0,2: the gallery and Draw box show them)")

        if parse_faces(track_ids).kind != "ids":  # ids only: a path typed here is not an upload
            raise KeepError(f"'{track_ids}' are not track ids; write them as 0,2")
        return str(track_ids)
    return str(photo) if faces == "photo" else faces


def background_note() -> str:
    """What "Background enhancement" does here: Real-ESRGAN, or the pipeline's bicubic fallback (said before a run)."""

    try:
        resolve_weights("realesrgan_x2plus", download=False)
        return "Real-ESRGAN x2plus on the background, as in CodeFormer (slow on a CPU)"
    except WeightsUnavailable:
        entry = REGISTRY["realesrgan_x2plus"]
        return f"Real-ESRGAN: {entry.filename} is not on this machine, so bicubic unless it can be downloaded"


def faces_controls() -> tuple:
    """The "Faces" control: all, largest, track ids (typed), or a photo of the person uploaded beside the video."""

    with gr.Group():
        faces = gr.Radio(
            list(FACES), value="all", label="Faces", elem_id="faces-choice",
            info="which faces to restore; the others stay as they are",
        )  # fmt: skip
        with gr.Row():
            track_ids = gr.Textbox(
                "", label="Track ids", placeholder="0,2", elem_id="track-ids",
                info="for 'track ids': the ids the gallery and Draw box show",
            )  # fmt: skip
            photo = gr.Image(
                type="filepath", format="png", sources=["upload"], label="Photo of the person", elem_id="faces-photo",
                height=140,
            )  # fmt: skip
    return faces, track_ids, photo


# The page's own scripts. A new run first empties the last run's results and messages (in the browser, at once).
CLEAR_RESULTS_JS = "() => [null, null, [], '', '']"
# The video box's "Video not playable" toast comes on top of Restore's error for a file that is no video, and is
# wrong for a video FFmpeg reads but the browser cannot play (HEVC, AVI, ...): closed as it opens, so one toast
# says what went wrong, in the words of the Restore button's error.
CLOSE_UNPLAYABLE_JS = """() => {
  new MutationObserver(() => {
    for (const toast of document.querySelectorAll("[data-testid=toast-body]")) {
      if (toast.textContent.includes("Video not playable")) toast.querySelector("[data-testid=toast-close]")?.click();
    }
  }).observe(document.body, {childList: true, subtree: true});
}"""


def page_look() -> tuple[dict, dict]:
    """(Blocks keywords, launch keywords) of the page's theme and script: Gradio 6 takes them in `launch`, 5 in
    `Blocks`."""

    look = {
        "theme": gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["monospace"]),
        "js": CLOSE_UNPLAYABLE_JS,
    }
    if int(gr.__version__.split(".")[0]) >= 6:
        return {}, look
    warnings.filterwarnings("ignore", ".*Gradio 6.0", DeprecationWarning)  # 5.x announces 6's place for them
    return look, {}


def build_page(jobs, base, models: list[str], blocks_look: dict):
    """The Gradio Blocks page: inputs, outputs, the restore and cancel events."""

    esrgan = background_note()
    with gr.Blocks(title="KEEP", delete_cache=(600, SESSION_TTL_S), **blocks_look) as page:
        gr.Markdown(
            "# KEEP: restore the faces of a video\n"
            "Every face is detected, tracked and restored with its history carried over the whole track "
            "(Kalman-Inspired Feature Propagation, ECCV 2024); the output keeps the source's frame rate and audio."
        )
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="input-video")
                gr.Markdown(f"Videos {jobs.limits.describe()}.", elem_id="limits")
                gr.Examples([[str(p)] for p in CLIPS], inputs=[video], elem_id="examples")
                model = gr.Dropdown(
                    models, value=base.model, label="Model", info="preset:tiny: random weights", elem_id="model"
                )
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
                faces, track_ids, photo = faces_controls()
                with gr.Row():
                    run = gr.Button("Restore", variant="primary", elem_id="restore-button")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
                status = gr.Markdown("", elem_id="status")
            with gr.Column():
                restored = gr.Video(label="Restored", interactive=False, elem_id="output-video")
                compare = gr.ImageSlider(label="Before / after", type="filepath", interactive=False)
        with gr.Row():
            with gr.Column():  # half the page: a gallery's columns are at most its pictures, each a square
                gallery = gr.Gallery(label="Faces of each track, before and after", columns=6, elem_id="faces")
            with gr.Column():
                summary = gr.Markdown(label="summary", elem_id="summary")
        inputs = [video, model, fidelity, upscale, background, face_upsample, draw_box, faces, track_ids, photo]
        events(page, jobs, base, models, run, stop, inputs, [restored, compare, gallery, summary], status)
    return page


def events(page, jobs, base, models: list[str], run, stop, inputs: list, results: list, status) -> None:
    """Restore: the results and the status emptied, then the job (one progress bar, on the restored video; also
    the `/restore` API); Cancel (`/cancel`): says so in the status; the end of a session."""
    restore, cancel, end_session = handlers(jobs, base, models)
    run.click(None, None, [*results, status], js=CLEAR_RESULTS_JS, queue=False)  # in the browser, at once
    job = run.click(
        restore, inputs, results, api_name="restore", concurrency_limit=1, concurrency_id="device",
        show_progress_on=results[0],
    )  # fmt: skip
    # The flag stops the job at its next restored frame; `cancels` tells the page at once.
    stop.click(cancel, None, status, cancels=[job], api_name="cancel", concurrency_limit=None)
    page.unload(end_session)


def _main(args: argparse.Namespace) -> int:
    limits = limits_from_args(args)
    logins = read_logins(args.auth_file)
    check_model(args.model)
    device = resolve_device(args.device)
    set_threads(args.threads)
    base = PipelineOptions(model=args.model, device=str(device))
    if device.type == "cpu":
        reuse_freed_memory()  # as inference.py: the network reuses freed heap memory (docs/speed.md)
    models = keep_models() + ["preset:tiny"] + ([] if args.model in keep_models() + ["preset:tiny"] else [args.model])
    root = Path(tempfile.mkdtemp(prefix="keep-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root)  # uploads land here; outputs inside it are served without a copy
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no call home
    jobs = Jobs(root, limits, examples=CLIPS)
    blocks_look, launch_look = page_look()
    try:
        page = build_page(jobs, base, models, blocks_look)
        page.queue(default_concurrency_limit=1)
        if not logins and not is_local(args.host):
            print(
                f"warning: listening on {args.host}:{args.port} without a login: anyone who can reach this port "
                f"can use this machine (set {AUTH_ENV}=user:password or --auth_file FILE)",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        try:
            page.launch(
                server_name=args.host, server_port=args.port, allowed_paths=[str(EXAMPLES)], show_error=True,
                ssr_mode=False, inbrowser=False, max_file_size=limits.max_upload_bytes, auth=logins or None,
                auth_message="KEEP: log in with the user and password whoever runs this app gave you", **launch_look,
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
