"""README.md's "Using it" commands run as pasted, in order, from a fresh folder with no data.

Issue 19 item 9: the block named folders nothing had created (``runs/dnn/last.pt``,
``runs/my.toml``) and a recipe that needs a data folder. Now its first block (between the
``offline-sequence`` markers) is a sequence in which each command's inputs were written by an
earlier one, and this test runs it through the real ``fewstep`` entry point, one subprocess per
line, in an empty folder, with no data root and no network. To keep it short, training commands
get ``--set train.epochs=1`` and small ``data.*_limit`` values appended (and a smaller validation
hold-out where the recipe has one), ``convert`` fewer calibration batches; nothing else changes.
The lines that need data or GPUs are in a second block; they are only parsed here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import fewstep
from fewstep.cli import build_parser

ROOT = Path(fewstep.__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- offline-sequence -->", "<!-- /offline-sequence -->"

#: Appended to every ``train`` / ``quickstart`` line (the last ``--set`` of a key wins).
FAST_TRAIN = ["--set", "train.epochs=1", "--set", "data.train_limit=160", "--set", "data.test_limit=64",
              "--no-progress"]
FAST_VAL_SIZE = 32  # replaces a recipe's data.val_size (300 of the 160 samples above would not fit)
FAST_CONVERT = ["--calib-batches", "2", "--energy-samples", "16"]


def readme_blocks() -> list[tuple[int, str]]:
    """Every ```bash block of README.md as ``(offset, body)``."""
    text = README.read_text()
    return [(m.start(), m.group(1)) for m in re.finditer(r"```bash\n(.*?)```", text, re.S)]


def offline_sequence() -> list[list[str]]:
    """The commands of the block between the ``offline-sequence`` markers, as argument lists
    (comments and blank lines dropped)."""
    text = README.read_text()
    assert START in text and END in text, f"README.md lost its {START} ... {END} markers"
    block = text[text.index(START) + len(START):text.index(END)]
    body = re.search(r"```bash\n(.*?)```", block, re.S)
    assert body, "no ```bash block between the offline-sequence markers"
    commands = [shlex.split(line, comments=True) for line in body.group(1).splitlines()]
    return [words for words in commands if words]


def test_the_offline_sequence_comes_first_and_covers_the_first_hour():
    """It is the first block after the setup lines, and it still shows what a new user needs:
    train, convert the DNN it trained, the anytime sweep, resume and overwrite."""
    text = README.read_text()
    using = text.index("## Using it")
    first_after = next(offset for offset, _ in readme_blocks() if offset > using)
    assert text.index(START) < first_after < text.index(END)
    lines = [shlex.join(words) for words in offline_sequence()]
    assert all(line.startswith("fewstep ") for line in lines), lines
    joined = "\n".join(lines)
    for needed in ("fewstep recipes", "fewstep train ", "fewstep convert ", "--cutoff", "--resume", "--overwrite"):
        assert needed in joined, f"the offline sequence no longer shows {needed!r}"
    assert "--data-root" not in joined and "cuda" not in joined


def test_every_readme_command_parses():
    """Every ``fewstep ...`` line of every README block (also the data and GPU ones, which are
    not run) is accepted by the real parser; ``torchrun ... -m fewstep ARGS`` is parsed from ARGS."""
    parser = build_parser()
    seen = 0
    for _, body in readme_blocks():
        for line in body.splitlines():
            words = shlex.split(line, comments=True)
            if "-m" in words and "fewstep" in words[words.index("-m") + 1:words.index("-m") + 2]:
                words = words[words.index("-m") + 1:]
            if not words or words[0] != "fewstep":
                continue
            try:
                parser.parse_args(words[1:])
            except SystemExit as exc:  # argparse reports to stderr and exits 2
                pytest.fail(f"README command does not parse ({exc.code}): {line.strip()}")
            seen += 1
    assert seen >= len(offline_sequence()) + 3


def _entry_point() -> list[str]:
    """The ``fewstep`` console script beside this Python (what a user types), else ``python -m fewstep``."""
    script = Path(sys.executable).with_name("fewstep")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fewstep"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "FEWSTEP_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "FEWSTEP_DATA": str(tmp_path / "no-data-here")}  # no data root: nothing may be read from one
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[key] = "http://127.0.0.1:9"  # no network: a download would fail at once
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return env


def _speed_up(words: list[str]) -> list[str]:
    """``words`` (``fewstep ...``) with the overrides that make it quick appended."""
    args = words[1:]
    command = args[0]
    if command in ("train", "quickstart"):
        from fewstep.cli import QUICKSTART_RECIPE
        from fewstep.config import load_recipe

        parsed = build_parser().parse_args(args)
        recipe = load_recipe(QUICKSTART_RECIPE if command == "quickstart" else parsed.recipe, parsed.overrides)
        extra = list(FAST_TRAIN)
        if recipe.data.val_size:
            extra += ["--set", f"data.val_size={FAST_VAL_SIZE}"]
        return args + extra
    if command == "convert":
        return args + FAST_CONVERT
    return args


def _inputs(args: list[str]) -> list[str]:
    """The files a command reads that an earlier command must have written: checkpoint
    arguments and ``train.init_checkpoint`` values."""
    found = [a for a in args if a.endswith(".pt") and not a.startswith("-") and "=" not in a]
    found += [a.split("=", 1)[1] for a in args if a.startswith("train.init_checkpoint=")]
    return found


@pytest.mark.slow
def test_the_offline_sequence_runs_as_pasted(tmp_path):
    """Each line, in order, in an empty folder: its input files exist beforehand, it exits 0, and
    it writes what it is for (a run's ``last.pt`` and ``report.json``, the converted checkpoint,
    ``eval_report.json`` with the sweep, and says so)."""
    work = tmp_path / "fresh-clone"
    work.mkdir()
    parser = build_parser()
    for words in offline_sequence():
        line = shlex.join(words)
        args = _speed_up(words)
        for path in _inputs(args):
            assert (work / path).is_file(), f"{line}: needs {path}, which no earlier README command wrote"
        r = subprocess.run([*_entry_point(), *args], cwd=work, env=_env(tmp_path), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{line} (run as {shlex.join(args)}) failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr
        parsed = parser.parse_args(args)
        if parsed.command in ("train", "quickstart"):
            from fewstep.cli import QUICKSTART_RECIPE

            name = QUICKSTART_RECIPE if parsed.command == "quickstart" else parsed.recipe
            out = work / (parsed.out or Path("runs") / name)
            assert (out / "last.pt").is_file() and (out / "report.json").is_file(), f"{line}: no run in {out}"
            if parsed.resume:
                assert "resumed from" in r.stdout, r.stdout[-3000:]
        elif parsed.command == "convert":
            out = work / (parsed.out or parsed.checkpoint.parent / f"convert-t{parsed.timesteps}")
            assert (out / "report.json").is_file(), f"{line}: no conversion report in {out}"
            assert (out / f"converted-dist-t{parsed.timesteps}.pt").is_file(), sorted(p.name for p in out.iterdir())
        elif parsed.command == "eval":
            out = work / (parsed.out or parsed.checkpoint.parent)
            report = json.loads((out / "eval_report.json").read_text())
            assert len(report["accuracy_per_step"]) >= 1
            assert f"wrote {Path(parsed.out or parsed.checkpoint.parent) / 'eval_report.json'}" in r.stdout, r.stdout
            if parsed.cutoff or parsed.margin:
                assert report["cutoff"]["operating_point"] is not None, line  # eps chosen on the val hold-out
                assert (out / "cutoff.png").is_file()
            if parsed.margin:
                assert "margin" in report["cutoff"], line
        elif parsed.command == "recipes":
            assert "offline" in r.stdout
    assert not (tmp_path / "no-data-here").exists()  # nothing looked for (or made) a data folder
