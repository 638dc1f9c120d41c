"""The command line: recipes listing, train/eval round trip, errors as one clear line."""

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fewstep
from fewstep.cli import build_parser, main

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


# ----------------------------------------------------------------------------------------------
# Issue 19: refuse to destroy runs, stop fine-tunes without their checkpoint, say how to resume
# after Ctrl-C, one line for bad checkpoints, validate options first, wording. Each through the
# real entry point, ``python -m fewstep``, in a subprocess.

ROOT = Path(fewstep.__file__).resolve().parents[1]  # the fewstep under test (PYTHONPATH of the children)
TINY_DNN = ["--set", "train.epochs=1", "--set", "data.train_limit=64", "--set", "data.test_limit=32", "--no-progress"]


def fewstep_cli(*args: object, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m fewstep ARGS`` in a subprocess (one thread), its output captured."""
    return subprocess.run([sys.executable, "-m", "fewstep", *map(str, args)], capture_output=True, text=True,
                          env=_child_env(), cwd=cwd, timeout=timeout)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "FEWSTEP_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single ``fewstep: error:`` line a failed command must print (and nothing else on stderr)."""
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("fewstep: error: "), r.stderr
    return r.stderr


def test_a_second_run_into_a_finished_run_is_refused_unless_overwrite(tmp_path):
    """Item 1: the default ``runs/<recipe>`` of a second run of the same recipe held a finished run
    that was replaced without a word; now it is refused, files untouched, and --overwrite replaces it."""
    out = tmp_path / "runs" / "quickstart"
    first = fewstep_cli("train", "quickstart", "--device", "cpu", *SMALL, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    files = ("last.pt", "report.json")
    before = {n: (out / n).read_bytes() for n in files}
    err = one_error_line(fewstep_cli("train", "quickstart", "--device", "cpu", *SMALL, cwd=tmp_path))
    assert str(Path("runs") / "quickstart") in err and "--resume" in err and "--overwrite" in err, err
    assert "finished run" in err, err
    assert {n: (out / n).read_bytes() for n in files} == before  # nothing was touched
    mtime = (out / "report.json").stat().st_mtime_ns
    again = fewstep_cli("train", "quickstart", "--device", "cpu", *SMALL, "--overwrite", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert (out / "report.json").stat().st_mtime_ns != mtime
    both = fewstep_cli("train", "quickstart", "--device", "cpu", "--resume", "--overwrite", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with" in both.stderr, both.stderr


def test_finetune_recipe_without_its_checkpoint_stops_before_any_work(tmp_path):
    """Item 2: digits-dnn-finetune-t2 without train.init_checkpoint trained from scratch and reported
    success; now one error names the recipe and how to supply the checkpoint, and nothing is written."""
    out = tmp_path / "ft"
    err = one_error_line(fewstep_cli("train", "digits-dnn-finetune-t2", "--out", out, "--device", "cpu", *TINY_DNN))
    assert "digits-dnn-finetune-t2" in err and "--set train.init_checkpoint=" in err and "fewstep convert" in err, err
    assert not out.exists()


def test_ctrl_c_says_where_the_last_epoch_is_and_how_to_resume(tmp_path):
    """Item 3: SIGINT during training (once the first checkpoint exists) exits with 130 and prints
    the saved last.pt and the exact command that resumes the run."""
    out = tmp_path / "run"
    sets = ["train.epochs=1000", "data.train_limit=128", "data.test_limit=64", "model.options.channels=[8, 8]",
            "model.options.hidden=16"]
    args = ["train", "quickstart", "--out", str(out), "--device", "cpu", "--no-progress"]
    for s in sets:
        args += ["--set", s]
    # SIGINT is ignored in a background child of a non-interactive shell; give Python its default handler
    proc = subprocess.Popen([sys.executable, "-m", "fewstep", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_child_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / "last.pt").exists() and proc.poll() is None, "no checkpoint before the run ended"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, stderr[-4000:])
    assert "Traceback" not in stderr, stderr
    assert str(out / "last.pt") in stderr, stderr
    command = stderr.split("Continue with: ", 1)[1].strip()
    words = shlex.split(command)
    assert words[:3] == ["fewstep", "train", "quickstart"] and words[-1] == "--resume", command
    resumed = build_parser().parse_args(words[1:])
    assert resumed.resume and not resumed.overwrite and resumed.out == out and resumed.overrides == sets
    assert resumed.device == "cpu"


def test_interrupt_before_the_first_epoch_says_nothing_was_saved(tmp_path):
    from fewstep.cli import interrupted_message

    args = build_parser().parse_args(["train", "quickstart", "--out", str(tmp_path)])
    msg = interrupted_message(args, tmp_path, time.time())
    assert "nothing" in msg and "--resume" not in msg, msg


def _bad_checkpoint(kind: str, tmp_path: Path) -> Path:
    if kind == "README.md":
        return ROOT / "README.md"
    path = tmp_path / f"{kind}.pt"
    if kind == "text":
        path.write_text("epoch = 3\nthis is not a checkpoint\n")
    elif kind == "random bytes":
        path.write_bytes(random.Random(19).randbytes(4096))
    elif kind == "torch file without recipe":
        import torch

        torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1}, path)
    return path


@pytest.mark.parametrize("kind", ["text", "random bytes", "torch file without recipe", "README.md"])
def test_a_file_that_is_no_fewstep_checkpoint_is_one_line_naming_it(kind, tmp_path):
    """Item 4: these ended in KeyError / IndexError tracebacks, or (README.md) in "would run code"
    followed by PyTorch's request to file an issue."""
    path = _bad_checkpoint(kind, tmp_path)
    for command in ("eval", "convert"):
        err = one_error_line(fewstep_cli(command, path, "--device", "cpu", "--out", tmp_path / "out"))
        assert str(path) in err, err
        assert "file an issue" not in err and "would run code" not in err and "weights_only" not in err, err
        if kind in ("text", "README.md"):
            assert "a text file, not a PyTorch checkpoint" in err, err
        elif kind == "random bytes":
            assert "not a PyTorch checkpoint" in err, err
        else:
            assert "not a fewstep checkpoint (no 'recipe'" in err, err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny quickstart run (its ``last.pt``), trained once in this process."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "quickstart", "--out", str(out), "--device", "cpu", *SMALL]) == 0
    return out / "last.pt"


@pytest.mark.parametrize("options,flag", [
    (["eval", "--cutoff", "--eps", "2"], "--eps"), (["eval", "--cutoff", "--eps", "0", "nan"], "--eps"),
    (["eval", "--cutoff", "--target-drop", "-1"], "--target-drop"), (["eval", "--device", "gpu"], "--device"),
    (["convert", "--device", "gpu"], "--device")])
def test_bad_options_are_refused_before_any_work(options, flag, finished_run, tmp_path):
    """Item 5: ``eval --cutoff --eps 2`` failed with a traceback after the whole evaluation; options
    are now checked when the command line is parsed, before the checkpoint is even read."""
    command, *rest = options
    out = tmp_path / "out"
    r = fewstep_cli(command, finished_run, "--out", out, *rest)
    assert r.returncode == 2, (r.returncode, r.stderr[-4000:])
    assert "Traceback" not in r.stderr and f"argument {flag}" in r.stderr, r.stderr
    assert r.stdout == "" and not out.exists(), r.stdout


def test_unknown_recipe_is_not_a_config_key(tmp_path):
    """Item 14: an unknown recipe was reported as "config key 'recipe'"."""
    err = one_error_line(fewstep_cli("train", "no-such-recipe", "--out", tmp_path / "x"))
    assert "no recipe named 'no-such-recipe'" in err and "config key" not in err, err


def test_a_bad_override_blames_the_override_not_the_recipe_file(tmp_path):
    """Item 14: ``--set train.epochs=0`` was reported as an error in quickstart.toml."""
    err = one_error_line(fewstep_cli("train", "quickstart", "--out", tmp_path / "x", "--set", "train.epochs=0"))
    assert "--set train.epochs=0" in err and "train.epochs" in err and "quickstart.toml" not in err, err


def test_dnn_summary_does_not_claim_to_be_below_the_ann(tmp_path):
    """Item 14: the summary of a DNN run said "(1.0x below the ANN)" about the ANN itself."""
    r = fewstep_cli("train", "digits-dnn", "--out", tmp_path / "dnn", "--device", "cpu", *TINY_DNN)
    assert r.returncode == 0, r.stderr[-4000:]
    row = next(line for line in r.stdout.splitlines() if "energy / sample" in line)
    assert "below the ANN" not in row and "the ANN reference itself" in row, row


def test_energy_comparison_words():
    from fewstep.report import energy_comparison

    spiking = {"neurons": [{"name": "n"}], "sops": 10.0}
    assert energy_comparison({**spiking, "ratio": 4.0}) == "4.0x below the ANN"
    assert energy_comparison({**spiking, "ratio": 0.5}) == "2.0x above the ANN"
    assert "no ANN/SNN ratio" in energy_comparison({**spiking, "ratio": None})
    assert "ANN reference" in energy_comparison({"neurons": [], "sops": 0.0, "ratio": 1.0})
