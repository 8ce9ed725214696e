"""Training states: what a resumed run needs beyond the data, which is a function of the step alone.

`<run>/training_states/latest.state` and `previous.state` (the save before it) hold tensors and plain
Python data only, and are read with `torch.load(..., weights_only=True)`: a pickle placed there cannot
run code (issue 10). A latest state that is empty, truncated, foreign or malicious is skipped with a
warning and the previous one is used: a resumed run loses at most one save interval.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import KeepError

log = logging.getLogger(__name__)

LATEST, PREVIOUS = "latest.state", "previous.state"


def save_training_state(folder: Path, state: dict[str, Any]) -> None:
    """Write `state` as the latest state; the one it replaces becomes `previous.state`.

    The new file is complete on disk (fsync) before any rename, so a kill at any moment leaves at
    least one readable state."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (LATEST + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if (folder / LATEST).is_file():
        os.replace(folder / LATEST, folder / PREVIOUS)
    os.replace(tmp, folder / LATEST)


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
