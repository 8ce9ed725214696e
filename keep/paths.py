"""Files a run writes: never into what it reads, never a part of one, one writer at a time.

    check_output_outside_inputs(out, [input_file, input_folder])   # no run writes into its inputs
    write_atomically(path, text)                                    # str, bytes, or a writer:
    write_atomically(path, lambda f: torch.save(state, f))          # ... called with the open file
    move_into_place(partial_path(path, token), path)                # a file another writer made there
    with FileLock(folder / ".name.lock").held(f"another run writes {folder}"): ...
    with removed_if_left_empty(outdir): ...                          # a run that never started leaves nothing

Every final file goes through a hidden partial file of its writer's own beside it
(`.<stem>.<token>.partial<suffix>`: the same folder, so the rename is atomic; the run's token, so two
writers never share one), written completely (flushed to disk with `fsync`) and then renamed over the final
name: a reader, or a run killed at any moment, sees the old file or the whole new one, never a part. On any
failure, an interrupt included, the partial file is removed. A write the system refuses (a full disk ENOSPC,
a quota EDQUOT, a file size limit EFBIG, a read-only file system EROFS, a permission) is one `KeepError`
naming the file and the system's reason (`write_error`): the previous file stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import KeepError

Writer = Callable[[BinaryIO], object]  # writes a payload into an open binary file: torch.save(obj, f), ...


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


# ------------------------------------------------------------------------------------------ atomic writes
def new_run_token() -> str:
    """A name for one run's files, unique among concurrent runs (the process id and 32 random bits)."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def partial_path(path: Path, token: str | None = None) -> Path:
    """Where a writer with `token` (default: a new one) writes `path` until it is complete: hidden, beside it,
    with the same suffix (encoders pick the format from it)."""
    return path.with_name(f".{path.stem}.{token or new_run_token()}.partial{path.suffix}")


def stale_partials(path: Path) -> list[Path]:
    """The partial files (or folders) of `path` that writers killed before they finished left behind (and
    `.<stem>.partial<suffix>`, the name of versions before run tokens). Remove them only while holding the
    lock that every writer of `path` holds, or they may be another writer's file in progress."""
    name = re.compile(rf"\.{re.escape(path.stem)}(\.\d+-[0-9a-f]{{8}})?\.partial{re.escape(path.suffix)}")
    try:
        return [p for p in path.parent.iterdir() if name.fullmatch(p.name)]
    except OSError:  # no folder yet: nothing left behind
        return []


def partials_in(folder: Path) -> list[Path]:
    """Every partial file (or folder) directly inside `folder`, whatever it was to become (see `stale_partials`:
    only for a folder whose writers all hold one lock)."""
    name = re.compile(r"\..*\.\d+-[0-9a-f]{8}\.partial(\.[^.]+)?")
    try:
        return [p for p in folder.iterdir() if name.fullmatch(p.name)]
    except OSError:
        return []


def write_error(path: Path, exc: OSError) -> KeepError:
    """A write that failed for a reason outside the program (a full disk, a quota, a size limit, a read-only
    file system, a folder gone) as the one line a user reads: the file it concerns and the system's reason."""
    hint = " (free some space, or write elsewhere)" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return KeepError(f"cannot write {path}: {exc.strerror or exc}{hint}")


class _Recorder:
    """A file's write side that remembers the OSError of a failed write: torch.save reports a failed write of
    its own as a RuntimeError ("unexpected pos ..."), from which the system's reason is gone."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


class _PayloadError(Exception):
    """A writer's own failure (not the file's: a download that broke), raised as it was (its `__cause__`)."""


def _write(file: BinaryIO, data: str | bytes | Writer) -> None:
    recorder = _Recorder(file)
    try:
        if isinstance(data, str):
            recorder.write(data.encode())
        elif isinstance(data, bytes | bytearray | memoryview):
            recorder.write(data)
        else:
            data(recorder)
    except Exception as exc:
        if recorder.error is not None:  # the file refused a write: that is what to say
            raise recorder.error from None
        raise _PayloadError from exc


def _sync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (where the system allows opening a folder: not on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(
    path: str | Path, data: str | bytes | Writer, *, fsync: bool = True, previous: Path | None = None
) -> None:
    """Write `path` whole or not at all (module docstring), its folder made if need be: `data` is text (UTF-8),
    bytes, or a function that writes into the open binary file (`lambda f: torch.save(state, f)`; its own
    errors are raised as they are).

    fsync: flush the file and the rename to the disk before returning (a power cut after the return keeps
        the new file); False for files that are cheap to make again.
    previous: keep the file that `path` held under this name (renamed once the new file is complete, so a
        kill at any moment leaves one of the two readable). KeepError if the file cannot be written."""
    path = Path(path)
    partial = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            _write(file, data)
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(partial, path)
    except _PayloadError as exc:
        raise exc.__cause__ from None
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        _remove(partial)
    if fsync:
        _sync_folder(path.parent)


def move_into_place(partial: Path, path: Path) -> None:
    """Rename a complete file (or folder) that another writer made at `partial` over `path` (a folder there is
    removed first); KeepError if it cannot be; `partial` is gone afterwards either way."""
    try:
        if partial.is_dir() and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(partial, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        _remove(partial)


def _remove(path: Path) -> None:
    """Remove a partial file or folder if it is there (nothing to say if it cannot be: it is hidden)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def remove_partials(paths: Iterable[Path]) -> None:
    for path in paths:
        _remove(path)


@contextlib.contextmanager
def removed_if_left_empty(folder: str | Path) -> Iterator[None]:
    """For the block: `folder` and those of its parents that do not exist yet are removed again when the block
    leaves them empty, however it ends (a run that never started leaves no empty output folder behind).
    Folders that existed before are never removed, and neither is one another writer put a file in."""
    folder = Path(folder).expanduser().absolute()
    new = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    finally:
        for path in new:
            try:
                path.rmdir()  # only ever an empty folder
            except FileNotFoundError:
                continue  # never made
            except OSError:
                break  # not empty: nor are its parents


# ------------------------------------------------------------------------------------------ locks
class FileLock:
    """An exclusive lock held by one process at a time: `flock` on the file `path`, which names its holder
    (process id and host) and is removed on release. The system releases a `flock` when its holder dies
    however it dies, so a lock left by a killed process never blocks the next run. Where `fcntl` is missing
    (Windows) it locks nothing.

        lock = FileLock(out.lock)
        if lock.acquire(wait=False) or lock.acquire(wait=True): ...; lock.release()
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, *, wait: bool) -> bool:
        """Take the lock (waiting for its holder when `wait`); False if another process holds it and not `wait`."""
        try:
            import fcntl
        except ImportError:
            return True
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise write_error(self.path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            # The holder before us removes the file before unlocking it: if we locked a removed file, a third
            # process may hold the new one, so try again on the file that is there now.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            opened = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
                self.fd = fd
                with contextlib.suppress(OSError):  # who holds it, for the message of the next one (`holder`)
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
                return True
            os.close(fd)

    def holder(self) -> str:
        """Who holds the lock, in words ("process 1234 on host"), as far as its file says."""
        try:
            pid, host = self.path.read_text().split()[:2]
        except (OSError, ValueError):
            return "another process"
        return f"process {pid} on {host}"

    @contextlib.contextmanager
    def held(self, busy: str) -> Iterator[FileLock]:
        """The lock for the block; KeepError `busy` (+ who holds it) if another process holds it now."""
        if not self.acquire(wait=False):
            raise KeepError(f"{busy} ({self.holder()})")
        try:
            yield self
        finally:
            self.release()

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing the file releases the lock
        self.fd = None

    def __del__(self) -> None:  # an object dropped without release (a failed constructor) frees its lock
        if getattr(self, "fd", None) is not None:
            with contextlib.suppress(Exception):
                self.release()
