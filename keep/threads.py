"""What every entry point shares (inference.py, train.py, test.py, scripts/): one convention for
errors, devices, CPU threads and `--set` overrides (issue 10).

    def main(argv=None) -> int:
        parser = argparse.ArgumentParser(...)
        add_device_argument(parser); add_threads_argument(parser); add_set_argument(parser)
        return run_main(lambda: _main(parser.parse_args(argv)))

Exit codes: 0 done; 2 the user's input cannot be used (bad file, bad option, bad config key, a device
that is not there, weights that cannot be had), printed as one `error: ...` line, never a traceback
(argparse uses 2 for bad options too); 130 interrupted; 1 an unexpected internal failure, printed as
one line (`KEEP_DEBUG=1` shows its traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable

from .errors import KeepError

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
        return body() or EXIT_OK
    except KeepError as exc:
        return error(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
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


# ------------------------------------------------------------------------------------------ devices
def resolve_device(name: str):
    """`cpu`, `cuda`, `cuda:N`, `mps` or `auto` -> a `torch.device` that exists here, else KeepError."""
    import torch

    name = str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise KeepError(f"unknown device '{name}'; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KeepError(f"device '{name}' asked for, but no CUDA GPU is available here; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise KeepError(f"device '{name}' does not exist: this machine has {count} CUDA device(s)")
        return device
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise KeepError("device 'mps' asked for, but Metal is not available here; use --device cpu")
        return device
    raise KeepError(f"device '{name}' is not supported; use cpu, cuda, cuda:N or auto")


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", default=default, help=f"cpu | cuda | cuda:N | auto (default {default})")


# ------------------------------------------------------------------------------------------ threads
_PASSIVE_WAITS: bool | None = None  # set by passive_openmp_waits() (keep/__init__.py, before torch loads)


def passive_openmp_waits() -> bool:
    """Ask OpenMP to let idle threads sleep (`OMP_WAIT_POLICY=PASSIVE`) unless the user chose a policy;
    returns whether passive waiting is in effect. Must run before torch loads its OpenMP runtime,
    which reads the variable once: `keep/__init__.py` calls it before importing anything of torch.

    Why (issue 10): torch's OpenMP threads spin while they wait for each other at the end of every
    parallel region. With another process on one of the cores, the spinning threads take the CPU
    from the one they wait for; the tiny network ran ~15x slower with 2 threads than with 1 on a
    loaded 2-core machine, and ~1.3x faster with 2 threads than with 1 once idle threads sleep
    (docs/speed.md, `scripts/benchmark_contention.py`).
    """
    global _PASSIVE_WAITS
    if _PASSIVE_WAITS is None:
        chosen = os.environ.get("OMP_WAIT_POLICY")
        if chosen is None and "torch" not in sys.modules:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            _PASSIVE_WAITS = True
        else:  # the user's choice, or torch (and its OpenMP) loaded before this package: no say left
            _PASSIVE_WAITS = (chosen or "").strip().upper() == "PASSIVE"
    return _PASSIVE_WAITS


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Intra-op threads for this run.

    With passive OpenMP waits (the normal case, `passive_openmp_waits`): every core this process
    may use; a thread that finds its core busy then delays the others by its share of the core, not
    by a whole scheduler time slice, and the busy/quiet speed ratio stays near the share of the
    cores left (measured in docs/speed.md). Without them (torch imported before `keep` with no
    `OMP_WAIT_POLICY`, or a user's ACTIVE): only the cores not already busy (1-minute load
    average), at least 1, since spinning threads on a shared core slow the network ~15-60x.
    """
    cores = cpu_cores()
    if passive_openmp_waits():
        return cores
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads and OpenCV's (`None`: `default_threads()`); returns the number set."""
    import cv2
    import torch

    if threads is not None and threads < 1:
        raise KeepError(f"--threads must be >= 1, got {threads}")
    count = threads or default_threads()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)  # OpenCV's warps, resizes and DIS flow: the same budget as torch's
    logging.getLogger(__name__).debug(
        "torch threads: %d (OpenMP waits %s)", count, "passive" if passive_openmp_waits() else "active"
    )
    return count


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: the cores not busy with other work, at least 1)",
    )


# ------------------------------------------------------------------------------------------ --set
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


# ------------------------------------------------------------------------------------------ paths
def check_output_outside_inputs(output, inputs) -> None:
    """KeepError when `output` (a file or folder a run will write) is, or lies inside, one of `inputs`
    (files or folders the run reads): no run writes into its own inputs."""
    from pathlib import Path

    out = Path(output).expanduser().resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).expanduser().resolve()
        if out == source or (source.is_dir() and out.is_relative_to(source)):
            raise KeepError(f"output {output} would write into the input {item}; choose another output location")
