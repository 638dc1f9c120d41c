"""fewstep.atomic: the one atomic writer (temporary file beside the target, fsync, rename)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fewstep.atomic import TEMP_MARK, atomic_path, write_atomic, write_json_atomic, write_npz_atomic


def test_writes_and_replaces(tmp_path):
    dest = tmp_path / "sub" / "r.json"
    write_json_atomic({"a": 1}, dest)
    assert json.loads(dest.read_text()) == {"a": 1}
    write_json_atomic({"a": 2}, dest)
    assert json.loads(dest.read_text()) == {"a": 2}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["r.json"]  # no temporary file left


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "c.bin"
    dest.write_bytes(b"old")

    def half_then_fail(fh):
        fh.write(b"new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(dest, half_then_fail)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.bin"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_npz_atomic(tmp_path / "a.npz", x=np.arange(3))
        with atomic_path(tmp_path / "tool", mode=0o777) as tmp:
            tmp.write_bytes(b"#!/bin/sh\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o640  # mkstemp alone would give 0600
    assert (tmp_path / "tool").stat().st_mode & 0o777 == 0o750
    with np.load(tmp_path / "a.npz") as z:
        assert z["x"].tolist() == [0, 1, 2]


def test_a_killed_writer_leaves_the_target_whole(tmp_path):
    """A child killed mid-write (SIGKILL: no clean-up runs) leaves the old file and a marked temp."""
    dest = tmp_path / "big.bin"
    dest.write_bytes(b"old")
    code = f"""
import os, signal
from fewstep.atomic import write_atomic
def w(fh):
    fh.write(b"x" * 1000); fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
write_atomic({str(dest)!r}, w)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == -9
    assert dest.read_bytes() == b"old"
    temps = [p.name for p in tmp_path.iterdir() if p.name != "big.bin"]
    assert len(temps) == 1 and TEMP_MARK in temps[0] and temps[0].startswith(".big.bin")
