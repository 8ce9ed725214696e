"""What every entry point shares (inference.py, train.py, test.py, app.py, scripts/): one convention for
errors and for the flags every one of them takes. Library helpers live in library modules:
`keep.devices`, `keep.threads`, `keep.paths`; flags are layered onto configs by `keep.config.load_config`.

    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # first thing, before torch loads (keep/threads.py)

    import argparse  # then the script's imports, as usual
    from keep.cli import add_device_argument, add_set_argument, add_threads_argument, run_main

    def main(argv=None) -> int:
        parser = argparse.ArgumentParser(...)
        add_device_argument(parser); add_threads_argument(parser); add_set_argument(parser)
        return run_main(lambda: _main(parser.parse_args(argv)))

Exit codes: 0 done; 2 the user's input cannot be used (bad file, bad option, bad config key, a device
that is not there, weights that cannot be had), printed as one `error: ...` line, never a traceback
(argparse uses 2 for bad options too); 130 interrupted (Ctrl-C, or SIGTERM, which docker, systemd, Slurm
and Kubernetes send to stop a job: handled as Ctrl-C, so a run removes what it had not finished), printed
as one `interrupted ...` line; 1 an unexpected internal failure, printed as one line (`KEEP_DEBUG=1` shows
its traceback).

Option names are spelled with underscores (`--save_frames`, `--no_progress`), as the configs' keys.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator

from .errors import Interrupted, KeepError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def error(message: str) -> int:
    """Print the one `error:` line and return the usage exit code."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def run_main(body: Callable[[], int | None]) -> int:
    """Run an entry point's body with the project's error convention (see the module docstring)."""
    try:
        with sigterm_as_sigint():
            return body() or EXIT_OK
    except KeepError as exc:
        return error(str(exc))
    except KeyboardInterrupt as exc:
        said = f" {exc}" if isinstance(exc, Interrupted) and str(exc) else ""
        print(f"interrupted{said}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("error: out of memory (try a smaller --window or batch, or another device)", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("KEEP_DEBUG"):
            traceback.print_exc()
        print(
            f"error: internal failure ({type(exc).__name__}: {exc}); KEEP_DEBUG=1 shows the traceback",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_INTERNAL


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """Within the block (in the main thread), SIGTERM raises `Interrupted` as Ctrl-C raises KeyboardInterrupt,
    so that a stopped job cleans up as an interrupted one does. Only the first SIGTERM: a launcher that passes
    the signal on to processes that got it already (torchrun, Slurm) does not interrupt the clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def interrupt(signum: int, frame) -> None:
        if not received:
            received.append(signum)
            raise Interrupted(f"by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """`--device cpu | cuda | cuda:N | mps | auto` (checked by `keep.devices.resolve_device`: N is open-ended)."""
    shown = "the config's" if default is None else default
    parser.add_argument("--device", default=default, help=f"cpu | cuda | cuda:N | mps | auto (default {shown})")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch and OpenCV (default: keep.threads.default_threads)",
    )


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """`--set a.b=1 c=2 --set d=3`: repeatable, several items each; all of them apply, in order."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys (dotted, value parsed as YAML); repeatable",
    )
