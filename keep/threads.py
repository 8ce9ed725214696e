"""CPU threads: OpenMP's wait policy, the cores this process may use, and the threads torch and OpenCV get
(measured in docs/speed.md).

Every entry point (inference.py, train.py, test.py, scripts/, `python -m benchmarks`) asks for passive
waits first thing, before its imports (one of which loads torch), `os.environ.setdefault("OMP_WAIT_POLICY",
"PASSIVE")`, and calls `set_threads(args.threads)` once its arguments are parsed. `passive_openmp_waits()` does
the same for a caller that has imported only this module so far, and says whether passive waits are in effect.
Importing `keep` (its `__init__`, `keep.errors`, `keep.cli` and this module) loads no torch and changes
nothing; the package's other modules import torch as usual.
"""

from __future__ import annotations

import logging
import os
import sys

from .errors import KeepError

_PASSIVE_WAITS: bool | None = None  # decided by the first passive_openmp_waits() call


def passive_openmp_waits() -> bool:
    """Ask OpenMP to let idle threads sleep (`OMP_WAIT_POLICY=PASSIVE`) unless the user chose a policy;
    returns whether passive waiting is in effect. Must run before torch loads its OpenMP runtime, which
    reads the variable once: the entry points call it before they import torch.

    Why: torch's OpenMP threads spin while they wait for each other at the end of every
    parallel region. With another process on one of the cores, the spinning threads take the CPU
    from the one they wait for; the tiny network ran ~15x slower with 2 threads than with 1 on a
    loaded 2-core machine, and ~1.3x faster with 2 threads than with 1 once idle threads sleep
    (docs/speed.md, `python -m benchmarks contention`).
    """
    global _PASSIVE_WAITS
    if _PASSIVE_WAITS is None:
        chosen = os.environ.get("OMP_WAIT_POLICY")
        if chosen is None and "torch" not in sys.modules:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            _PASSIVE_WAITS = True
        else:  # the user's choice, or torch (and its OpenMP) loaded before we were asked: no say left
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
    cores left (measured in docs/speed.md). Without them (torch imported before the entry point
    asked, with no `OMP_WAIT_POLICY`, or a user's ACTIVE): only the cores not already busy (1-minute
    load average), at least 1, since spinning threads on a shared core slow the network ~15-60x.
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
    import cv2  # here, not above: this module is imported before torch may load (passive_openmp_waits)
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
