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
