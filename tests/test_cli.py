"""The command line: recipes listing, train/eval round trip, errors as one clear line."""

import json
import os
import subprocess
import sys

from fewstep.cli import main

SMALL = ["--set", "train.epochs=1", "--set", "data.train_limit=128", "--set", "data.test_limit=64",
         "--set", "model.options.channels=[8, 8]", "--set", "model.options.hidden=16", "--no-progress"]


def test_recipes_lists_quickstart(capsys):
    assert main(["recipes"]) == 0
    assert "quickstart" in capsys.readouterr().out


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "quickstart", "--out", str(out), "--device", "cpu", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "accuracy @ t=2" in text
    assert main(["eval", str(out / "last.pt"), "--device", "cpu"]) == 0
    ev = json.loads((out / "eval_report.json").read_text())
    rep = json.loads((out / "report.json").read_text())
    assert ev["accuracy_per_step"] == rep["accuracy_per_step"]


def test_unknown_key_is_one_clear_error(tmp_path, capsys):
    code = main(["train", "quickstart", "--out", str(tmp_path), "--set", "train.epochz=1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "train.epochz" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys):
    assert main(["train", "quickstart", "--out", str(tmp_path / "empty"), "--resume", *SMALL]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_console_script_and_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fewstep", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    r = subprocess.run([sys.executable, "-m", "fewstep", "eval", str(tmp_path / "nope.pt")], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1 and "no such checkpoint" in r.stderr


def test_eval_cutoff_adds_the_anytime_sweep(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "quickstart", "--out", str(out), "--device", "cpu", *SMALL, "--set", "data.val_size=32"]) == 0
    assert main(["eval", str(out / "last.pt"), "--device", "cpu", "--cutoff", "--eps", "0", "0.5",
                 "--no-timing"]) == 0
    ev = json.loads((out / "eval_report.json").read_text())
    sweep = ev["cutoff"]
    assert sweep["eps"] == [0.0, 0.5] and len(sweep["accuracy"]) == 2
    assert sweep["mean_steps"][0] == 2.0  # eps = 0 never stops early: every sample runs all T steps
    assert (out / "cutoff.png").stat().st_size > 0
    assert "speed-up" in capsys.readouterr().out


def test_convert_is_a_subcommand(tmp_path, capsys):
    code = main(["convert", str(tmp_path / "nope.pt"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "nope.pt" in err and "Traceback" not in err


def test_quickstart_runs_the_event_pipeline():
    from fewstep.cli import QUICKSTART_RECIPE, build_parser
    from fewstep.config import load_recipe

    assert build_parser().parse_args(["quickstart"]).command == "quickstart"
    recipe = load_recipe(QUICKSTART_RECIPE)
    assert recipe.data.dataset.startswith("saccade-") and recipe.model.timesteps == 2
    assert recipe.neuron.kind == "mtlif" and recipe.model.name.startswith("scb_")
