"""Paths a run writes: never into what it reads (issue 10)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import KeepError


def check_output_outside_inputs(output: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """KeepError when `output` (a file or folder a run will write) is, or lies inside, one of `inputs`
    (files or folders the run reads; None entries are skipped): no run writes into its own inputs."""
    out = Path(output).expanduser().resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).expanduser().resolve()
        if out == source or (source.is_dir() and out.is_relative_to(source)):
            raise KeepError(f"output {output} would write into the input {item}; choose another output location")
