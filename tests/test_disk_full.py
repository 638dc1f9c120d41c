"""Issue 19 item 7, part 1: a disk that fills up while a checkpoint or report is written.

The write fails with ``ENOSPC`` (a full disk or tmpfs), ``EDQUOT`` (a quota) or ``EFBIG`` (a file
larger than ``ulimit -f``); in every case the temporary file is removed, the previous ``last.pt``
(and ``report.json``) stay whole and loadable, and ``fewstep train`` ends with one line, no
traceback: what it was writing, that the previous checkpoint (epoch N) is intact, and the command
that resumes once there is room. Two real mechanisms, no mocks:

* a child process with ``RLIMIT_FSIZE`` set low and ``SIGXFSZ`` ignored, so its writes past the
  limit fail with ``EFBIG`` (any POSIX system, any user);
* a real, small tmpfs (``mount -t tmpfs -o size=...``) where writes fail with ``ENOSPC``; these
  tests need root and a kernel that lets this process mount, and are skipped (saying which) otherwise.

The CLI runs are ``python -m fewstep.cli`` subprocesses on a tiny offline quickstart recipe.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fewstep.atomic import TEMP_MARK, DiskFullError, no_space_cause, write_json_atomic
from fewstep.cli import main
from fewstep.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["train.epochs=2", "data.train_limit=192", "data.test_limit=64", "model.options.channels=[4, 8]",
            "model.options.hidden=16", "train.seed=5"]
ENV = {**os.environ, "FEWSTEP_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
       "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

posix_only = pytest.mark.skipif(sys.platform == "win32",
                                reason="RLIMIT_FSIZE and SIGXFSZ are POSIX")


def _train_args(out: Path, settings: list[str] = SETTINGS) -> list[str]:
    args = ["train", "quickstart", "--out", str(out), "--device", "cpu", "--no-progress"]
    for s in settings:
        args += ["--set", s]
    return args


def _file_size_limit(nbytes: int) -> Callable[[], None]:
    """For ``preexec_fn``: files the child writes may not grow past ``nbytes`` (writes then fail
    with EFBIG instead of the process being killed by SIGXFSZ)."""

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return limit


def _cli(args: list[str], *, limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m fewstep.cli ARGS`` in a subprocess, optionally under a file-size limit."""
    return subprocess.run([sys.executable, "-m", "fewstep.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=timeout, preexec_fn=None if limit is None else _file_size_limit(limit))


def _train_in_process(out: Path, settings: list[str] = SETTINGS, stop_after_epoch: int | None = None) -> None:
    from fewstep.config import load_recipe
    from fewstep.train import train

    train(load_recipe("quickstart", settings), out, device="cpu", progress=False, stop_after_epoch=stop_after_epoch,
          log=lambda s: None)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_MARK in p.name)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one line on stderr, and no traceback."""
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-4000:]
    return lines[0]


def _resume_from_advice(line: str, capsys: pytest.CaptureFixture) -> None:
    """Run the command the error line gives (in this process, through the CLI's ``main``)."""
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[:3] == ["fewstep", "train", "quickstart"] and command[-1] == "--resume", command
    capsys.readouterr()
    assert main(command[1:]) == 0, capsys.readouterr().err


# ------------------------------------------------------------------------- finding the cause


def test_no_space_cause_is_found_through_the_exception_chain():
    """``torch.save`` turns a failed write into a RuntimeError whose context is the OSError."""
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None
    except RuntimeError as exc:
        wrapped = exc
    assert no_space_cause(wrapped) is full
    assert no_space_cause(OSError(errno.EFBIG, "File too large")).errno == errno.EFBIG
    assert no_space_cause(OSError(errno.EACCES, "Permission denied")) is None
    assert no_space_cause(ValueError("x")) is None
    err = DiskFullError("/runs/x/last.pt", full)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename == "/runs/x/last.pt"
    assert str(err) == "/runs/x/last.pt: no space left to write it (No space left on device, ENOSPC)"


# ------------------------------------------------------------------------- RLIMIT_FSIZE: EFBIG


@posix_only
def test_writers_past_the_file_size_limit_keep_the_old_file(tmp_path: Path):
    """save_checkpoint (torch.save's RuntimeError) and write_json_atomic, in a child limited to 64 kB."""
    code = f"""
import json, torch
from pathlib import Path
from fewstep.atomic import DiskFullError, write_json_atomic
from fewstep.train.checkpoint import save_checkpoint
d = Path({str(tmp_path)!r})
save_checkpoint({{"epoch": 1, "w": torch.zeros(100)}}, d / "last.pt")
save_checkpoint({{"epoch": 2, "w": torch.zeros(100)}}, d / "last.pt")
write_json_atomic({{"old": True}}, d / "report.json")
out = {{}}
for name, write in [("ckpt", lambda: save_checkpoint({{"epoch": 3, "w": torch.zeros(100_000)}}, d / "last.pt")),
                    ("json", lambda: write_json_atomic({{"x": "y" * 100_000}}, d / "report.json"))]:
    try:
        write()
        out[name] = "written"
    except DiskFullError as exc:
        out[name] = [exc.errno, str(exc)]
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120,
                       preexec_fn=_file_size_limit(64 * 1024))
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ckpt"] == [errno.EFBIG, f"{tmp_path / 'last.pt'}: no space left to write it (File too large, EFBIG)"]
    assert result["json"][0] == errno.EFBIG and result["json"][1].startswith(f"{tmp_path / 'report.json'}: ")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2  # the previous checkpoint, whole
    assert load_checkpoint(tmp_path / "last.pt.prev")["epoch"] == 1
    assert json.loads((tmp_path / "report.json").read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.prev", "report.json"]  # no temp


@posix_only
def test_train_cli_checkpoint_past_the_limit_says_so_and_keeps_epoch_1(tmp_path: Path, capsys):
    """Epoch 1 is saved; the run resumed under a file-size limit of half a checkpoint trains epoch 2,
    fails to save it (EFBIG) and says so in one line; the advised command then finishes the run."""
    out = tmp_path / "run"
    _train_in_process(out, stop_after_epoch=1)
    before = (out / "last.pt").read_bytes()

    r = _cli([*_train_args(out), "--resume"], limit=len(before) // 2)
    line = _one_error_line(r)
    assert "epoch 2/2:" in r.stdout, r.stdout  # it trained epoch 2 and failed writing it
    ckpt = out / "last.pt"
    assert line.startswith(f"fewstep: error: no space left on the disk while writing {ckpt} (File too large); "), line
    assert f"the previous checkpoint {ckpt} (epoch 1) is intact: free some space, then continue with: " in line, line
    assert (out / "last.pt").read_bytes() == before and load_checkpoint(ckpt)["epoch"] == 1
    assert _temps(out) == [] and not (out / ".lock").exists()

    _resume_from_advice(line, capsys)
    assert load_checkpoint(ckpt)["epoch"] == 2
    assert json.loads((out / "report.json").read_text())["epochs"] == 2


@posix_only
def test_train_cli_report_past_the_limit_says_so_and_keeps_the_old_report(tmp_path: Path, capsys):
    """A finished run resumed (it only rewrites report.json and the plots) under a 1 kB limit."""
    out = tmp_path / "run"
    one_epoch = ["train.epochs=1", *SETTINGS[1:]]
    _train_in_process(out, one_epoch)
    report = (out / "report.json").read_bytes()

    r = _cli([*_train_args(out, one_epoch), "--resume"], limit=1024)
    line = _one_error_line(r)
    assert line.startswith(f"fewstep: error: no space left on the disk while writing {out / 'report.json'} "), line
    assert f"the previous checkpoint {out / 'last.pt'} (epoch 1) is intact" in line and line.endswith("--resume"), line
    assert (out / "report.json").read_bytes() == report and _temps(out) == []
    _resume_from_advice(line, capsys)


# ------------------------------------------------------------------------- a real small tmpfs: ENOSPC


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``mount(size_bytes)`` mounts a fresh tmpfs of that size and returns it; all are unmounted after."""
    if not sys.platform.startswith("linux"):
        pytest.skip("tmpfs is Linux's")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the EFBIG tests cover a full disk without it)")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command")
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _fill(folder: Path) -> None:
    """Write a filler file until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_atomic_write_on_a_full_tmpfs_keeps_the_old_file(small_tmpfs):
    disk = small_tmpfs(256 * 1024)
    dest = disk / "report.json"
    write_json_atomic({"old": True}, dest)
    _fill(disk)
    with pytest.raises(DiskFullError) as info:
        write_json_atomic({"x": "y" * 100_000}, dest)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"{dest}: no space left to write it (No space left on device, ENOSPC)"
    assert json.loads(dest.read_text()) == {"old": True}
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "report.json"]


def test_train_cli_on_a_tmpfs_that_fills_at_epoch_2(small_tmpfs, tmp_path: Path, capsys):
    """A tmpfs with room for one checkpoint and a half: epoch 1's fits, epoch 2's temporary file
    (beside epoch 1's checkpoint) does not. After remounting it larger, the advised command resumes."""
    probe = tmp_path / "probe"
    _train_in_process(probe, stop_after_epoch=1)
    size = (probe / "last.pt").stat().st_size
    page = 4096
    disk = small_tmpfs((size + size // 2) // page * page + 2 * page)  # + a page for .lock
    out = disk / "run"

    r = _cli(_train_args(out))
    line = _one_error_line(r)
    ckpt = out / "last.pt"
    assert "epoch 2/2:" in r.stdout, r.stdout
    assert line.startswith(f"fewstep: error: no space left on the disk while writing {ckpt} "
                           "(No space left on device); "), line
    assert f"the previous checkpoint {ckpt} (epoch 1) is intact" in line and line.endswith("--resume"), line
    assert load_checkpoint(ckpt)["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]  # no temporary file, no lock

    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # space freed
    _resume_from_advice(line, capsys)
    assert load_checkpoint(ckpt)["epoch"] == 2 and (out / "report.json").is_file()
