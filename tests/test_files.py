"""keep.paths: the one way a final file is written (whole or not at all, a refused write as one line naming
the file) and the one lock (naming its holder; released however its holder ends)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from keep.errors import KeepError
from keep.paths import FileLock, partials_in, stale_partials, write_atomically

REPO = Path(__file__).resolve().parent.parent


def test_text_bytes_and_torch_payloads_replace_the_file_whole(tmp_path):
    path = tmp_path / "state.pth"
    write_atomically(path, "old")
    write_atomically(path, lambda f: torch.save({"step": 3, "w": torch.arange(4)}, f), previous=tmp_path / "prev")
    assert torch.load(path, weights_only=True)["step"] == 3 and (tmp_path / "prev").read_text() == "old"
    write_atomically(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "prev", "state.pth"]  # no partial file left


def test_a_failing_writer_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def broken(file):
        file.write(b"half")
        raise ConnectionResetError("the download broke")  # an OSError that is not the file's: raised as it is

    with pytest.raises(ConnectionResetError, match="the download broke"):
        write_atomically(path, broken)

    def interrupted(file):
        file.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_refused_write_is_one_keep_error_naming_the_file(tmp_path):
    """A file size limit (EFBIG, as a full disk's ENOSPC) in a child process: torch.save's own error would be
    "unexpected pos ..."; the message says the system's reason and names the file; nothing is left."""
    code = (
        "import resource, sys, torch\n"
        "from keep.errors import KeepError\n"
        "from keep.paths import write_atomically\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "try:\n"
        f"    write_atomically({str(tmp_path / 'big.pth')!r}, lambda f: torch.save(torch.zeros(100000), f))\n"
        "except KeepError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    expected = f"cannot write {tmp_path / 'big.pth'}: File too large (free some space, or write elsewhere)"
    assert done.stdout.strip() == expected, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_held_lock_names_its_holder_and_a_released_one_is_gone(tmp_path):
    first, second = FileLock(tmp_path / ".run.lock"), FileLock(tmp_path / ".run.lock")
    assert first.acquire(wait=False) and not second.acquire(wait=False)
    with pytest.raises(KeepError, match=rf"busy \(process {os.getpid()} on "):
        with second.held("busy"):
            pass
    first.release()
    assert not (tmp_path / ".run.lock").exists()
    with second.held("busy"):
        assert (tmp_path / ".run.lock").exists()
    assert list(tmp_path.iterdir()) == []


def test_partials_are_found_by_name_and_nothing_else(tmp_path):
    names = [".latest.123-0badcafe.partial.state", ".frames.9-00c0ffee.partial", ".clip.partial.mp4"]
    others = ["latest.state", ".run.lock", ".clip.x.123-0badcafe.partial.mp4"]
    for name in names + others:
        (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p in partials_in(tmp_path)) == sorted(names[:2] + others[2:])
    assert [p.name for p in stale_partials(tmp_path / "clip.mp4")] == [".clip.partial.mp4"]
    assert [p.name for p in stale_partials(tmp_path / "latest.state")] == [names[0]]
