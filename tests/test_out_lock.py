"""Issue 19 item 7, part 2: two runs writing into the same ``--out`` at once.

The first ``fewstep train`` holds an exclusive lock on ``<out>/.lock`` (``flock``) for the whole
run; a second one into the same folder (even with ``--overwrite``) stops at once with one line
naming the folder and the holder's PID, and touches nothing, so the first finishes with a whole
``last.pt`` and ``report.json``. The kernel drops the lock when its holder dies (``kill -9``); the
``O_EXCL`` + PID fallback (platforms without ``fcntl``) takes over a lock file whose process is gone.
CLI runs are real ``python -m fewstep.cli`` subprocesses on a tiny offline quickstart recipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fewstep.atomic import TEMP_MARK
from fewstep.errors import FewstepError
from fewstep.runlock import LOCK_NAME, RunLock, RunLockedError, run_lock
from fewstep.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
SETTINGS = [f"train.epochs={EPOCHS}", "data.train_limit=192", "data.test_limit=64", "model.options.channels=[4, 8]",
            "model.options.hidden=16", "train.seed=3"]
ENV = {**os.environ, "FEWSTEP_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
#: A process that holds the lock on argv[1] (argv[2]: "flock" or "excl") until it is killed.
HOLDER = """
import sys, time
from fewstep.runlock import run_lock
with run_lock(sys.argv[1], use_flock=sys.argv[2] == "flock"):
    print("locked", flush=True)
    time.sleep(600)
"""

needs_fcntl = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def _train_cmd(out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "fewstep.cli", "train", "quickstart", "--out", str(out), "--device", "cpu",
           "--no-progress"]
    for s in SETTINGS:
        cmd += ["--set", s]
    return [*cmd, *extra]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; any still running at the end is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def _holder(procs: list[subprocess.Popen], folder: Path, mechanism: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mechanism], stdout=subprocess.PIPE, text=True,
                         env=ENV)
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def _wait_for_lock(proc: subprocess.Popen, folder: Path, timeout: float = 120.0) -> None:
    """Until ``folder/.lock`` names ``proc`` (it writes its PID only once it holds the lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first run ended before it was seen holding the lock"
        try:
            if (folder / LOCK_NAME).read_text().split() == [str(proc.pid)]:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{folder / LOCK_NAME} did not name PID {proc.pid} within {timeout} s")


@needs_fcntl
def test_a_second_run_into_the_same_out_stops_at_once_and_the_first_finishes_whole(tmp_path: Path, procs):
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                             cwd=ROOT)
    procs.append(first)
    _wait_for_lock(first, out)

    t0 = time.monotonic()
    second = subprocess.run(_train_cmd(out, "--overwrite"), capture_output=True, text=True, env=ENV, cwd=ROOT,
                            timeout=120)
    seconds = time.monotonic() - t0
    still_running = first.poll() is None

    assert second.returncode == 1, (second.stdout, second.stderr)
    assert second.stderr.splitlines() == [
        f"fewstep: error: {out} is in use by another fewstep run (PID {first.pid}, lock file {out / LOCK_NAME}); "
        "wait for it to finish, or choose another --out"], second.stderr
    assert "epoch" not in second.stdout, second.stdout  # it trained nothing
    assert still_running, "the first run ended before the second was refused: the test proves nothing"
    assert seconds < 30, f"the second run took {seconds:.1f} s to give up (it should not load torch first)"

    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, (stdout[-2000:], stderr[-3000:])
    assert [line.split(":")[0] for line in stdout.splitlines() if line.startswith("epoch ")] == [
        f"epoch {k}/{EPOCHS}" for k in range(1, EPOCHS + 1)]  # one run's epochs, none twice
    state = load_checkpoint(out / "last.pt")
    report = json.loads((out / "report.json").read_text())
    assert state["epoch"] == EPOCHS and len(state["history"]) == EPOCHS
    assert report["epochs"] == EPOCHS and [h["epoch"] for h in report["history"]] == list(range(1, EPOCHS + 1))
    assert report["history"] == json.loads(json.dumps(state["history"]))  # the same run wrote both
    assert not (out / LOCK_NAME).exists() and not [p for p in out.iterdir() if TEMP_MARK in p.name]


@needs_fcntl
def test_the_lock_dies_with_a_killed_holder(tmp_path: Path, procs):
    folder = tmp_path / "run"
    holder = _holder(procs, folder, "flock")
    with pytest.raises(RunLockedError) as info:
        RunLock(folder).acquire()
    assert info.value.pid == holder.pid and str(folder) in str(info.value)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_NAME).read_text().split() == [str(holder.pid)]  # left behind by kill -9: no matter
    with run_lock(folder):
        assert (folder / LOCK_NAME).read_text().split() == [str(os.getpid())]
    assert not (folder / LOCK_NAME).exists()


def test_the_exclusive_file_fallback_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path, procs):
    folder = tmp_path / "run"
    holder = _holder(procs, folder, "excl")
    with pytest.raises(RunLockedError) as info:
        RunLock(folder, use_flock=False).acquire()
    assert info.value.pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_NAME).read_text().split()[0] == str(holder.pid)  # stale now
    with run_lock(folder, use_flock=False):
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunLockedError):  # a second lock, even from this process, is refused
            RunLock(folder, use_flock=False).acquire()
    assert not (folder / LOCK_NAME).exists()


@pytest.mark.parametrize("use_flock", [None, False])
def test_release_leaves_the_folder_as_it_was(tmp_path: Path, use_flock):
    """The lock file goes; folders the lock created (the folder and missing parents) go too while
    empty (a run refused before it wrote anything leaves nothing), a folder that was there stays."""
    new, old = tmp_path / "a" / "b" / "new", tmp_path / "old"
    old.mkdir()
    for folder in (new, old):
        with run_lock(folder, use_flock=use_flock):
            assert (folder / LOCK_NAME).is_file()
    assert not (tmp_path / "a").exists() and sorted(old.iterdir()) == []
    with run_lock(new, use_flock=use_flock):
        (new / "last.pt").write_bytes(b"x")
    assert sorted(p.name for p in new.iterdir()) == ["last.pt"]
    (tmp_path / "a" / "other").mkdir()
    new2 = tmp_path / "a" / "b2" / "run"
    with run_lock(new2, use_flock=use_flock):
        pass
    assert not (tmp_path / "a" / "b2").exists() and (tmp_path / "a" / "other").is_dir()


def test_an_out_that_is_a_file_is_one_clear_error(tmp_path: Path):
    out = tmp_path / "run"
    out.write_text("not a folder")
    with pytest.raises(FewstepError, match="is a file, not a folder"):
        RunLock(out).acquire()
    r = subprocess.run(_train_cmd(out), capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"fewstep: error: {out}: is a file, not a folder (--out names the folder a run writes into)"], r.stderr
    assert out.read_text() == "not a folder"


@needs_fcntl
def test_convert_into_a_folder_in_use_stops_at_once(tmp_path: Path, procs):
    """``fewstep convert`` holds the same lock on its output folder (default ``convert-t<T>/``)."""
    ckpt = tmp_path / "run" / "last.pt"
    out = tmp_path / "run" / "convert-t2"
    holder = _holder(procs, out, "flock")
    r = subprocess.run([sys.executable, "-m", "fewstep.cli", "convert", str(ckpt), "--device", "cpu"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"fewstep: error: {out} is in use by another fewstep run (PID {holder.pid}, lock file {out / LOCK_NAME}); "
        "wait for it to finish, or choose another --out"], r.stderr
