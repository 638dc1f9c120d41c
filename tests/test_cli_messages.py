"""Issue 19 item 11: what the commands say. ``fewstep recipes`` is quick and marks the recipes
that run offline; event emulation shows progress (and ``--no-progress`` stills it); ``fewstep
eval`` names the files it wrote and prints its ``--margin`` result; the energy example prints
only files that exist. Each through the real entry point, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fewstep

ROOT = Path(fewstep.__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--set", "train.epochs=1", "--set", "data.train_limit=128", "--set", "data.test_limit=64",
        "--set", "model.options.channels=[8, 8]", "--set", "model.options.hidden=16"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "FEWSTEP_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def fewstep_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m fewstep ARGS`` in a subprocess, output captured; fails the test unless it exits 0."""
    r = subprocess.run([sys.executable, "-m", "fewstep", *map(str, args)], capture_output=True, text=True,
                       env=_env(), cwd=cwd, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    return r


# ---------------------------------------------------------------------------------------- recipes


def _recipe_rows(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in stdout.splitlines() if line.strip() and " T=" in line}


def test_recipes_marks_which_run_offline():
    """quickstart (embedded digits) and quickstart-events (emulated from them) run offline;
    mnist-lif-t2 needs its data folder. The header names the column and a footer explains it."""
    from fewstep.config import builtin_recipes

    r = fewstep_cli("recipes")
    rows = _recipe_rows(r.stdout)
    assert set(rows) == set(builtin_recipes())
    assert r.stdout.splitlines()[0].split()[:5] == ["recipe", "dataset", "T", "data", "description"]
    assert rows["quickstart"][3] == "offline", rows["quickstart"]
    assert rows["quickstart-events"][3] == "offline"
    assert rows["digits-tet-t8"][3] == "offline"
    assert rows["mnist-lif-t2"][3] == "data-root", rows["mnist-lif-t2"]
    assert rows["cifar10-stcb-t2"][3] == "data-root"
    assert "offline: the data ships with fewstep" in r.stdout


def test_recipes_imports_no_torch():
    """What made ``fewstep recipes`` take seconds: validating a recipe imported fewstep.neurons, hence
    torch. fewstep.config and the parser now import neither torch nor NumPy."""
    code = ("import sys\nfrom fewstep.cli import build_parser, main\nbuild_parser()\nassert main(['recipes']) == 0\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib', 'sklearn') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_torch_free_neuron_names_agree_with_the_neurons():
    from fewstep import config, neuron_spec
    from fewstep.neurons import NEURON_KINDS, SURROGATES, NeuronSpec

    assert tuple(NEURON_KINDS) == neuron_spec.NEURON_KIND_NAMES
    assert SURROGATES == neuron_spec.SURROGATE_NAMES
    assert NeuronSpec is config.NeuronSpec is neuron_spec.NeuronSpec
    assert type(NeuronSpec(kind="mtlif", num_thresholds=2).build()).__name__ == "MTLIF"


def test_the_offline_marker_matches_loading_from_an_empty_folder(tmp_path):
    """Every shipped recipe's dataset, loaded with no download from an empty data root: those
    marked offline load; every other one is reported missing."""
    from fewstep.config import builtin_recipes, load_recipe, runs_offline
    from fewstep.data import load_dataset
    from fewstep.errors import DatasetNotFoundError

    empty = tmp_path / "empty"
    empty.mkdir()
    checked: set[str] = set()
    for name in sorted(builtin_recipes()):
        recipe = load_recipe(name)
        if recipe.data.dataset in checked:
            continue
        checked.add(recipe.data.dataset)
        options = dict(recipe.data.options)
        if runs_offline(recipe):
            if recipe.data.dataset.startswith("saccade-"):
                options.update(limit=8, cache=False)  # a few emulated recordings, nothing written
            splits = load_dataset(recipe.data.dataset, empty, download=False, **options)
            assert len(splits.train) > 0 and len(splits.test) > 0, name
        else:
            with pytest.raises(DatasetNotFoundError):
                load_dataset(recipe.data.dataset, empty, download=False, **options)
    assert {"digits", "saccade-digits", "mnist"} <= checked
    assert list(empty.iterdir()) == []


# ------------------------------------------------------------------------------ emulation progress


def test_emulate_dataset_reports_progress_without_changing_the_streams():
    from fewstep.events.emulator import emulate_dataset

    rng = np.random.default_rng(0)
    images = (rng.random((7, 12, 12)) * 255).astype(np.uint8)
    plain = emulate_dataset(images, seed=4, batch_size=3)
    for workers in (1, 2):
        told: list[int] = []
        streams = emulate_dataset(images, seed=4, batch_size=3, workers=workers, progress=told.append)
        assert sum(told) == len(images) and len(told) == (3 if workers == 1 else 2), told
        assert all(np.array_equal(a, b) for a, b in zip(plain, streams))


def test_event_emulation_shows_progress_unless_no_progress(tmp_path):
    """quickstart-events emulates the digits' saccade recordings (about ten seconds for all of
    them) before the first epoch; that time now has a bar on stderr, and --no-progress has none."""
    common = ["train", "quickstart-events", *TINY, "--set", "data.options.limit=96", "--set", "data.options.cache=false"]
    shown = fewstep_cli(*common, "--out", tmp_path / "bars")
    assert "emulating saccade-digits train" in shown.stderr and "emulating saccade-digits test" in shown.stderr, \
        shown.stderr[-3000:]
    assert "96/96" in shown.stderr.replace("\r", "\n"), shown.stderr[-3000:]
    quiet = fewstep_cli(*common, "--out", tmp_path / "quiet", "--no-progress")
    assert "emulating" not in quiet.stderr and "epoch 1/1" not in quiet.stderr, quiet.stderr[-3000:]
    assert "accuracy @ t=2" in quiet.stdout


# ------------------------------------------------------------------------------------------ eval


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny quickstart run with a validation hold-out (``last.pt``)."""
    out = tmp_path_factory.mktemp("eval-messages") / "run"
    fewstep_cli("train", "quickstart", "--out", out, *TINY, "--set", "data.val_size=32", "--no-progress")
    return out / "last.pt"


def _wrote(stdout: str) -> list[Path]:
    return [Path(line[len("wrote "):]) for line in stdout.splitlines() if line.startswith("wrote ")]


def test_eval_names_the_file_it_wrote(tiny_run, tmp_path):
    r = fewstep_cli("eval", tiny_run, "--device", "cpu", "--out", tmp_path / "plain")
    assert _wrote(r.stdout) == [tmp_path / "plain" / "eval_report.json"], r.stdout
    assert (tmp_path / "plain" / "eval_report.json").is_file()
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["eval_report.json"]  # and nothing else


def test_eval_cutoff_names_the_report_and_the_plot(tiny_run, tmp_path):
    out = tmp_path / "cut"
    r = fewstep_cli("eval", tiny_run, "--device", "cpu", "--out", out, "--cutoff", "--eps", "0", "0.5", "--no-timing")
    assert _wrote(r.stdout) == [out / "eval_report.json", out / "cutoff.png"], r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["cutoff.png", "eval_report.json"]  # every file it wrote
    assert "margin" not in r.stdout


def test_eval_margin_prints_its_result(tiny_run, tmp_path):
    """--margin used to add its sweep to the JSON only (and alone did nothing): it now implies
    --cutoff and prints the margin cutoff's accuracy and mean steps beside the softmax columns."""
    out = tmp_path / "margin"
    r = fewstep_cli("eval", tiny_run, "--device", "cpu", "--out", out, "--margin", "--eps", "0", "0.5", "--no-timing")
    margin = json.loads((out / "eval_report.json").read_text())["cutoff"]["margin"]
    assert margin["calibrated_on"] == "val"
    lines = r.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if "margin acc" in line and "margin steps" in line)
    for i, eps in enumerate((0.0, 0.5)):
        cells = lines[head + 1 + i].split()
        assert float(cells[0]) == eps
        assert cells[3] == f"{100 * margin['accuracy'][i]:.2f}%" and cells[4] == f"{margin['mean_steps'][i]:.3f}"
    assert "calibrated on val" in r.stdout
    assert _wrote(r.stdout) == [out / "eval_report.json", out / "cutoff.png"]


# -------------------------------------------------------------------------------- energy example


@pytest.mark.parametrize("out", [None, "plots/rates.png"])
def test_energy_report_prints_only_files_that_exist(out, tmp_path):
    """examples/energy_report.py printed the path of a PNG in a temporary folder it had deleted."""
    (tmp_path / "plots").mkdir()
    args = [] if out is None else ["--out", out]
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "energy_report.py"), *args], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(), timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    printed = re.findall(r"(\S+\.png)", r.stdout)
    assert printed, r.stdout
    for path in printed:
        assert (tmp_path / path).is_file(), f"printed {path}, which does not exist"
    assert Path(printed[0]) == Path(out or "spike_rates.png")


def test_recipes_into_a_closed_pipe_ends_quietly():
    """`fewstep recipes | head -1` printed a BrokenPipeError traceback once head had gone."""
    import subprocess
    import sys

    # `true` exits without reading, long before Python has started: every write meets a closed pipe.
    proc = subprocess.run(f"{sys.executable} -m fewstep recipes | true", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    proc = subprocess.run(f"{sys.executable} -m fewstep recipes | head -n 1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() and "Traceback" not in proc.stderr, proc.stderr
