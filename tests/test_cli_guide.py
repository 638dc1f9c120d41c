"""docs/guides/cli.md documents the real command line, and its examples run as written.

Issue 19 item 10: the guide never mentioned ``fewstep convert`` or eval's cutoff options, said
``fewstep quickstart`` trains the recipe ``quickstart`` (it trains ``quickstart-events``),
showed a ``--set model.options.width_mult`` example that the recipe's model refuses, and cited a
methods file outside the repository. These tests take the sub-commands and their options from
the real ``fewstep`` entry point (``fewstep --help``, ``fewstep COMMAND --help`` in
subprocesses) and check the guide against them:

* every sub-command has a ``## fewstep COMMAND`` section, and every option its ``--help`` lists
  is named in that section;
* every ``fewstep ...`` line of a ``bash`` block is accepted by the real parser, spells each
  option in full, and its ``--set`` overrides load (``fewstep.config.load_recipe``; overrides of
  the free ``model.options`` / ``data.options`` tables also build the model); lines that need a
  data folder say ``# needs``; every checkpoint a line reads was written by an earlier line;
* every link stays in the docs and its target exists; repository paths the page names exist.

The slow test runs every offline line, in page order, in an empty folder with no data root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

import fewstep
from fewstep.cli import QUICKSTART_RECIPE, build_parser

ROOT = Path(fewstep.__file__).resolve().parents[1]  # the fewstep under test (PYTHONPATH of the children)
DOCS = ROOT / "docs"
GUIDE = DOCS / "guides" / "cli.md"
NEEDS = "# needs"  # how a line that needs a data folder (or GPUs) is marked
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _entry_point() -> list[str]:
    """The ``fewstep`` console script beside this Python (what a user types), else ``python -m fewstep``."""
    script = Path(sys.executable).with_name("fewstep")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fewstep"]


def _env(tmp: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "FEWSTEP_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "COLUMNS": "100"}
    if tmp is not None:
        env["FEWSTEP_DATA"] = str(tmp / "no-data-here")  # no data root: nothing may be read from one
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            env[key] = "http://127.0.0.1:9"  # no network: a download would fail at once
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)
    return env


@cache
def fewstep_help(*command: str) -> str:
    """``fewstep [COMMAND] --help`` from the real entry point."""
    r = subprocess.run([*_entry_point(), *command, "--help"], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@cache
def subcommands() -> tuple[str, ...]:
    """The sub-commands ``fewstep --help`` lists (its ``{train,quickstart,...}``)."""
    m = re.search(r"\{([a-z,-]+)\}", fewstep_help())
    assert m, fewstep_help()
    return tuple(m.group(1).split(","))


@cache
def options_of(command: str) -> frozenset[str]:
    """Every ``--option`` ``fewstep COMMAND --help`` lists, but ``--help``."""
    return frozenset(OPTION.findall(fewstep_help(command))) - {"--help"}


def guide() -> str:
    return GUIDE.read_text()


def section(command: str) -> str:
    """The guide's ``## fewstep COMMAND`` section, up to the next ``## `` heading."""
    text = guide()
    m = re.search(rf"^## fewstep {re.escape(command)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"docs/guides/cli.md has no '## fewstep {command}' section"
    return m.group(1)


def mentioned(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


# ------------------------------------------------------------------ the commands of the bash blocks


@dataclass
class Line:
    text: str  # as on the page
    words: list[str]  # the arguments after ``fewstep``
    needs_data: bool  # marked ``# needs``


@dataclass
class Example:
    """A ``bash`` block line; ``copy`` for a ``cp SRC DST`` line, ``line`` for a ``fewstep`` one."""

    text: str
    line: Line | None = None
    copy: tuple[str, str] | None = None
    other: list[str] = field(default_factory=list)


def examples() -> list[Example]:
    """Every non-empty line of every ``bash`` block, in page order. ``torchrun ... -m fewstep ARGS``
    is the command ``fewstep ARGS``."""
    found = []
    for body in re.findall(r"^```bash\n(.*?)^```", guide(), re.S | re.M):
        for text in body.splitlines():
            words = shlex.split(text, comments=True)
            if not words:
                continue
            if "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["fewstep"]:
                words = words[words.index("-m") + 1:]
            if words[0] == "fewstep":
                found.append(Example(text, line=Line(text, words[1:], NEEDS in text)))
            elif words[0] == "cp" and len(words) == 3:
                found.append(Example(text, copy=(words[1], words[2])))
            else:
                found.append(Example(text, other=words))
    return found


def fewstep_lines() -> list[Line]:
    return [e.line for e in examples() if e.line is not None]


def recipe_of(parsed, copies: dict[str, Path]) -> str:
    """The recipe a ``train`` / ``quickstart`` line trains: a name, or the path a ``cp`` line made."""
    name = QUICKSTART_RECIPE if parsed.command == "quickstart" else parsed.recipe
    return str(copies.get(name, name))


def parsed_lines() -> Iterator[tuple[Line, argparse.Namespace, dict[str, Path]]]:
    """In page order, each ``fewstep`` line, its parsed arguments and the files the ``cp`` lines
    above it made (their name in the guide -> the repository file copied)."""
    parser = build_parser()
    copies: dict[str, Path] = {}
    for example in examples():
        if example.copy:
            copies[example.copy[1]] = ROOT / example.copy[0]
        if example.line is None:
            continue
        yield example.line, parser.parse_args(example.line.words), copies


# ------------------------------------------------------------------------------------------ tests


def test_every_subcommand_has_a_section():
    parser_commands = set(build_parser()._subparsers._group_actions[0].choices)  # the parser main() uses
    assert set(subcommands()) == parser_commands
    for command in subcommands():
        section(command)  # fails naming the missing section
        assert f"fewstep {command}" in guide()


def test_every_option_is_documented_in_its_commands_section():
    missing = {command: sorted(o for o in options_of(command) if not mentioned(o, section(command)))
               for command in subcommands()}
    missing = {c: opts for c, opts in missing.items() if opts}
    assert not missing, f"options of `fewstep COMMAND --help` that its section of docs/guides/cli.md never names: {missing}"
    top = set(OPTION.findall(fewstep_help())) - {"--help"}  # --version
    assert top and all(mentioned(o, guide()) for o in top), top


def test_quickstart_is_described_as_the_recipe_it_trains():
    assert f"train {QUICKSTART_RECIPE}" in " ".join(fewstep_help().split())
    first_paragraph = section("quickstart").strip().split("\n\n")[0]
    assert f"`{QUICKSTART_RECIPE}`" in first_paragraph, "the quickstart section must open with the recipe it trains"
    assert "train the quickstart recipe" not in guide()


def test_every_example_parses_and_its_overrides_load(tmp_path):
    """Each ``fewstep`` line through the real parser, each option spelled in full (argparse would
    also take an abbreviation), each ``--set`` loaded with the recipe; an override of a free
    options table also builds the model (offline recipes), so an option the model refuses fails."""
    from fewstep.config import load_recipe, runs_offline

    parser = build_parser()
    copies: dict[str, Path] = {}
    checked = 0
    for example in examples():
        if example.copy:
            src, dst = example.copy
            assert (ROOT / src).is_file(), f"{example.text}: {src} is not a file of the repository"
            copies[dst] = ROOT / src
            continue
        assert example.line is not None, f"a bash line that is neither a fewstep command nor cp: {example.text}"
        line = example.line
        assert line.words and line.words[0] in subcommands(), f"unknown sub-command: {line.text}"
        try:
            parsed = parser.parse_args(line.words)
        except SystemExit as exc:  # argparse has printed why
            pytest.fail(f"docs/guides/cli.md command does not parse (exit {exc.code}): {line.text}")
        for word in line.words:
            option = word.split("=", 1)[0]
            if option.startswith("--"):
                assert option in options_of(parsed.command), f"{line.text}: {option} is not an option of " \
                                                             f"`fewstep {parsed.command}`"
        if parsed.command in ("train", "quickstart"):
            recipe = load_recipe(recipe_of(parsed, copies), parsed.overrides)  # raises ConfigError naming the --set
            free = [o for o in parsed.overrides if o.startswith(("model.options.", "data.options.", "model.options="))]
            if free:
                assert runs_offline(recipe), f"{line.text}: can only check its options on an offline recipe"
                from fewstep.train.engine import make_model, prepare_data

                make_model(recipe, prepare_data(recipe, None))  # the model refuses options it does not take
        checked += 1
    assert checked >= 20, checked


def test_lines_that_need_data_say_so_and_the_others_run_offline():
    """``fewstep recipes`` (the real entry point) says which recipes are offline; a line on another
    one, or with ``--data-root``, carries ``# needs``; the offline lines do not need it."""
    from fewstep.config import load_recipe, runs_offline

    r = subprocess.run([*_entry_point(), "recipes"], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    offline = {row.split()[0] for row in r.stdout.splitlines() if len(row.split()) > 3 and row.split()[3] == "offline"}
    assert QUICKSTART_RECIPE in offline and "quickstart" in offline, r.stdout
    for line, parsed, copies in parsed_lines():
        if parsed.command in ("train", "quickstart"):
            name = recipe_of(parsed, copies)
            is_offline = name in offline or (Path(name).is_file() and runs_offline(load_recipe(name)))
            assert is_offline or line.needs_data, f"{line.text}: {name} is not an offline recipe: mark it '{NEEDS} ...'"
        if "--data-root" in line.words or "cuda" in line.words:
            assert line.needs_data, f"{line.text}: mark it '{NEEDS} ...'"


def test_every_checkpoint_an_example_reads_an_earlier_one_wrote():
    """In page order: ``eval`` / ``convert`` checkpoints and ``train.init_checkpoint`` values are
    files an earlier line wrote, ``--resume`` continues a run that exists, and no line trains into a
    folder that holds a run without ``--resume`` or ``--overwrite`` (it would be refused)."""
    from fewstep.config import load_recipe

    written: set[Path] = set()
    for line, parsed, copies in parsed_lines():
        if parsed.command in ("train", "quickstart"):
            recipe = load_recipe(recipe_of(parsed, copies), parsed.overrides)
            out = parsed.out or Path("runs") / recipe.name
            if parsed.resume:
                assert out / "last.pt" in written, f"{line.text}: no earlier line trained into {out}"
            elif not parsed.overwrite:
                assert out / "last.pt" not in written, f"{line.text}: {out} holds a run by then (refused)"
            if recipe.train.init_checkpoint:
                assert Path(recipe.train.init_checkpoint) in written, f"{line.text}: nothing wrote its init checkpoint"
            written.add(out / "last.pt")
        elif parsed.command in ("eval", "convert"):
            assert parsed.checkpoint in written, f"{line.text}: no earlier line wrote {parsed.checkpoint}"
            if parsed.command == "convert":
                out = parsed.out or parsed.checkpoint.parent / f"convert-t{parsed.timesteps}"
                methods = ["dist", "max", "p99.9", "clip"] if parsed.method == "all" else [parsed.method]
                written |= {out / f"converted-{m}-t{parsed.timesteps}.pt" for m in methods}


def test_links_stay_in_the_docs_and_exist():
    text = guide()
    assert "../shared" not in text and "/work/" not in text, "docs/guides/cli.md points outside the repository"
    links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<([a-z]+:[^>\s]+)>", text)
    for target in links:
        if target.startswith(("http://", "https://", "#")):
            continue
        assert not target.startswith(("/", "file:", "~")), f"absolute link {target!r}"
        path = (GUIDE.parent / target.split("#", 1)[0]).resolve()
        # Inside docs/: a link out of docs_dir fails `mkdocs build --strict`, and one out of the
        # repository does not exist in a clone.
        assert path.is_relative_to(DOCS.resolve()), f"link {target!r} leaves docs/"
        assert path.is_file(), f"link {target!r}: no such file {path}"
    for path in re.findall(r"`((?:docs|benchmarks|fewstep|tests|examples)/[\w./-]+\.\w+)`", text):
        assert (ROOT / path).is_file(), f"docs/guides/cli.md names {path}, which is not in the repository"


# ------------------------------------------------------------------------- run the examples (slow)

FAST_TRAIN = ["--set", "train.epochs=1", "--set", "data.train_limit=160", "--set", "data.test_limit=64",
              "--no-progress"]
FAST_VAL_SIZE = 32  # replaces a recipe's data.val_size (300 of the 160 samples above would not fit)
FAST_CONVERT = ["--calib-batches", "2", "--energy-samples", "16"]


@pytest.mark.slow
def test_the_offline_examples_run_as_written(tmp_path):
    """Every line without ``# needs``, in page order, in an empty folder, with no data root and no
    network, through the real entry point; training lines get one epoch on a few samples
    (the last ``--set`` of a key wins), ``convert`` fewer calibration batches."""
    from fewstep.config import load_recipe

    work = tmp_path / "fresh-clone"
    work.mkdir()
    parser = build_parser()
    for example in examples():
        if NEEDS in example.text:
            continue
        if example.copy:
            src, dst = example.copy
            (work / dst).write_text((ROOT / src).read_text())  # as `cp` from the clone's root
            continue
        line = example.line
        assert line is not None, example.text
        args = list(line.words)
        parsed = parser.parse_args(args)
        if parsed.command in ("train", "quickstart"):
            name = QUICKSTART_RECIPE if parsed.command == "quickstart" else parsed.recipe
            recipe = load_recipe(str(work / name) if (work / name).is_file() else name, parsed.overrides)
            args += FAST_TRAIN + (["--set", f"data.val_size={FAST_VAL_SIZE}"] if recipe.data.val_size else [])
        elif parsed.command == "convert":
            args += FAST_CONVERT
        r = subprocess.run([*_entry_point(), *args], cwd=work, env=_env(tmp_path), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{line.text} (run as {shlex.join(args)}) failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr
        if parsed.command == "eval":
            report = json.loads(((work / (parsed.out or parsed.checkpoint.parent)) / "eval_report.json").read_text())
            assert ("cutoff" in report) == bool(parsed.cutoff or parsed.margin), line.text
    assert not (tmp_path / "no-data-here").exists()  # nothing looked for (or made) a data folder
