"""The run folder and its training states: what a resumed run needs beyond the data, which is a function of the
step alone.

One training at a time per run folder (`lock_run_folder`: a `flock` on `<root>/.<name>.lock`, taken by rank 0,
released by the system however the process ends); a new run refuses a folder that exists, `--auto_resume`
continues it (`resume_point`) and refuses a folder that holds files no training run writes.

`<run>/training_states/latest.state` and `previous.state` (the save before it) hold tensors and plain
Python data only, and are read with `torch.load(..., weights_only=True)`: a pickle placed there cannot
run code. A latest state that is empty, truncated, foreign or malicious is skipped with a
warning and the previous one is used: a resumed run loses at most one save interval.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import KeepError
from ..paths import FileLock, partials_in, remove_partials, write_atomically, write_error
from .utils import agree_on_error

log = logging.getLogger(__name__)

LATEST, PREVIOUS = "latest.state", "previous.state"
RUN_LAYOUT = ("config.yml", "models", "training_states", "metrics.jsonl", "tb_logger", "samples")  # what a run writes


class RunFolderLock(FileLock):
    """The lock of one run folder, `<root>/.<name>.lock`. Released, it also removes `<root>` if taking the
    lock made it and it is empty again (a run refused before it wrote anything leaves nothing behind)."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir.parent / f".{run_dir.name}.lock")
        self.made_root = not run_dir.parent.exists()
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(run_dir.parent, exc) from None

    def release(self) -> None:
        held = self.fd is not None
        super().release()
        if held and self.made_root:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only if empty


def lock_run_folder(run_dir: Path, *, rank: int) -> RunFolderLock | None:
    """Rank 0 takes the run folder's lock (and returns it: release it when the run ends); every rank raises the
    same KeepError, naming the folder and the other process, when another training holds it."""
    lock, error = None, None
    if rank == 0:
        try:
            lock = RunFolderLock(run_dir)
            if not lock.acquire(wait=False):
                error = (
                    f"run folder {run_dir} is in use by another training ({lock.holder()}); "
                    "wait for it to end, or choose another name"
                )
                lock = None
        except KeepError as exc:
            error = str(exc)
    agree_on_error(error)
    return lock


def resume_point(run_dir: Path, *, auto_resume: bool, rank: int) -> tuple[dict[str, Any], Path] | None:
    """The state a run continues from (None: it starts at step 0), said in one line by rank 0. A run without
    `auto_resume` needs a new folder; with it, a folder that holds only what a run writes. Partial files that
    killed saves left are removed first (the caller holds the folder's lock)."""
    error = None
    if rank == 0:
        for folder in (run_dir, run_dir / "models", run_dir / "training_states"):
            remove_partials(partials_in(folder) + list(folder.glob("*.tmp")))  # .tmp: earlier versions' partials
        entries = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) if run_dir.is_dir() else []
        foreign = [name for name in entries if name not in RUN_LAYOUT]
        if entries and not auto_resume:
            error = f"run folder {run_dir} exists: pass --auto_resume to continue it, or choose another name"
        elif foreign:
            error = (
                f"run folder {run_dir} holds files a training run does not write ({', '.join(foreign[:3])}): "
                "not used; choose another name"
            )
    agree_on_error(error)
    if not auto_resume:
        return None
    found = load_training_state(run_dir / "training_states")
    if rank == 0 and found is not None:
        print(f"--auto_resume: continuing from step {found[0]['step']} ({found[1]})", flush=True)
    elif rank == 0:
        print(f"--auto_resume: no training state in {run_dir}; starting from step 0", flush=True)
    return found


def save_training_state(folder: Path, state: dict[str, Any]) -> None:
    """Write `state` as the latest state; the one it replaces becomes `previous.state`.

    The new file is complete on disk (fsync) before any rename, so a kill at any moment leaves at least one
    readable state; a write that fails (a full disk) is one KeepError and leaves the states as they were
    (`keep.paths.write_atomically`)."""
    write_atomically(folder / LATEST, lambda f: torch.save(state, f), previous=folder / PREVIOUS)


def load_training_state(folder: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest readable state in `folder` and its path; None when there is none at all.

    KeepError when states exist but none can be read (nothing to resume from that is safe to use)."""
    tried = []
    for path in (folder / LATEST, folder / PREVIOUS):
        if not path.is_file():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not isinstance(state.get("step"), int):
                raise ValueError("not a training state (no step)")
        except pickle.UnpicklingError:  # weights_only refused it
            reason = "UnpicklingError: it holds Python objects other than tensors and plain data (could run code)"
        except Exception as exc:  # empty, truncated, foreign
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
            reason = f"{type(exc).__name__}: {first}"
        else:
            reason = None
        if reason is not None:
            tried.append(f"{path.name} ({reason})")
            log.warning("training state %s cannot be used (%s); trying the one before", path, reason[:200])
            continue
        if tried:
            log.warning("resuming from %s (step %d): at most one save interval is trained again", path, state["step"])
        return state, path
    if tried:
        raise KeepError(
            f"no usable training state in {folder}: {'; '.join(t[:200] for t in tried)}. "
            "Remove the folder to start over, or train under another name"
        )
    return None
