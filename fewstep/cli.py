"""The ``fewstep`` command line: train, eval (with the anytime cutoff sweep), quickstart, recipes, convert."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from pathlib import Path

from .cli_options import device_option
from .errors import FewstepError

#: The recipe ``fewstep quickstart`` trains: the event pipeline of methods.md section 1 on the
#: embedded digits (emulated saccade events -> STC -> SCB + MT-LIF, T = 2), offline.
QUICKSTART_RECIPE = "quickstart-events"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<recipe>)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (default: $FEWSTEP_DATA)")
    p.add_argument("--device", type=device_option, default="auto", help="cpu, cuda, cuda:N or auto (default)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out (without it, or --resume, such a folder is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewstep", description="Ultra-low-latency spiking neural networks.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train a recipe (a shipped name or a .toml path)")
    p.add_argument("recipe")
    _add_run_options(p)

    p = sub.add_parser("quickstart", help=f"train {QUICKSTART_RECIPE}: embedded digits as emulated events, STC, "
                                          "SCB + MT-LIF, T = 2 (CPU, under a minute, offline)")
    _add_run_options(p)

    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy at every time step")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--device", type=device_option, default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--out", type=Path, default=None, help="where to write eval_report.json (default: beside it)")
    from .infer.cli import register_eval_options

    register_eval_options(p)

    sub.add_parser("recipes", help="list the shipped recipes")
    from .convert.cli import register as register_convert

    register_convert(sub)
    return parser


def resume_command(args: argparse.Namespace, out: Path) -> str:
    """The ``fewstep`` command line that continues the run ``args`` describes (``--resume``,
    the same recipe, ``--set`` options, ``--out``, data root and device)."""
    words = ["fewstep", "quickstart"] if args.command == "quickstart" else ["fewstep", "train", args.recipe]
    for text in args.overrides:
        words += ["--set", text]
    words += ["--out", str(out)]
    if args.data_root is not None:
        words += ["--data-root", str(args.data_root)]
    if args.device != "auto":
        words += ["--device", args.device]
    if args.no_progress:
        words.append("--no-progress")
    return shlex.join([*words, "--resume"])


def interrupted_message(args: argparse.Namespace, out: Path, started: float) -> str:
    """What ``fewstep train`` says on Ctrl-C: where the last finished epoch is and the exact command
    that resumes it, or that no epoch of this run was saved. A ``last.pt`` older than this run (an
    ``--overwrite`` interrupted before its first epoch) is not this run's and is not offered."""
    from .train.engine import CHECKPOINT_NAME

    ckpt = out / CHECKPOINT_NAME
    try:
        ours = ckpt.is_file() and (args.resume or ckpt.stat().st_mtime >= started - 1.0)
    except OSError:
        ours = False
    if ours:
        return (f"interrupted; the last finished epoch is saved in {ckpt}. Continue with: "
                f"{resume_command(args, out)}")
    return f"interrupted before this run finished an epoch; nothing of it was saved in {out}"


def _say_interrupted(message: str) -> None:
    lead = "\n" if sys.stderr.isatty() else ""  # off the line a terminal's "^C" (or a progress bar) is on
    print(f"{lead}fewstep: {message}", file=sys.stderr, flush=True)


def disk_full_message(args: argparse.Namespace, out: Path, exc: BaseException, cause: OSError) -> str:
    """What ``fewstep train`` says when a write found no room (ENOSPC, EDQUOT, EFBIG): the file it
    was writing, that the previous checkpoint (and its epoch) is intact, and the command that
    resumes once space is freed; or that no epoch of this run was saved."""
    from .atomic import DiskFullError
    from .errors import CheckpointError
    from .train.checkpoint import latest_good
    from .train.engine import CHECKPOINT_NAME

    path = exc.path if isinstance(exc, DiskFullError) else Path(cause.filename) if cause.filename else out
    what = cause.strerror or os.strerror(cause.errno or 0)
    head = f"no space left on the disk while writing {path} ({what})"
    try:
        found = latest_good(out / CHECKPOINT_NAME)  # its temporary file is gone; the old one was never touched
    except (CheckpointError, OSError):
        found = None
    if found is None:
        return f"{head}; no epoch of this run was saved in {out}: free some space, then run the same command again"
    state, used = found
    return (f"{head}; the previous checkpoint {used} (epoch {state.get('epoch', '?')}) is intact: free some space, "
            f"then continue with: {resume_command(args, out)}")


def cmd_train(args: argparse.Namespace, recipe_name: str) -> int:
    """``fewstep train`` / ``quickstart``. Holds the lock on ``--out`` for the whole run (rank 0;
    see :mod:`fewstep.runlock`): a second run into the same folder stops at once, naming the PID
    that holds it. A write that finds the disk full ends the run with one line (see
    :func:`disk_full_message`) instead of a traceback; the last checkpoint stays loadable."""
    from .atomic import no_space_cause
    from .config import load_recipe
    from .runlock import run_lock

    recipe = load_recipe(recipe_name, args.overrides)
    out = args.out or Path("runs") / recipe.name
    started = time.time()
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun every rank runs this; rank 0 writes
    try:
        # the lock before torch is imported: a second run into the folder stops within a second
        with run_lock(out) if main_rank else contextlib.nullcontext():
            from .train.engine import threads_from_env, train

            threads_from_env()
            report = train(recipe, out, device=args.device, data_root=args.data_root, resume=args.resume,
                           overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt:
        if main_rank:
            _say_interrupted(interrupted_message(args, out, started))
        return 130
    except Exception as exc:
        cause = no_space_cause(exc)
        if cause is None:
            raise
        if main_rank:
            print(f"fewstep: error: {disk_full_message(args, out, exc, cause)}", file=sys.stderr, flush=True)
        return 1
    if report and main_rank:
        from .report import summary_table

        print(f"\n{recipe.name} finished; report and plots in {out}/")
        print(summary_table(report))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Accuracy at every step; with ``--cutoff`` (or ``--margin``, which implies it) the anytime
    sweep. Ends by naming every file it wrote."""
    from .evaluate import EVAL_REPORT_NAME, eval_output_dir, evaluate_checkpoint
    from .infer.cli import CUTOFF_PLOT_NAME

    report = evaluate_checkpoint(args.checkpoint, device=args.device, data_root=args.data_root, out_dir=args.out)
    for t, a in enumerate(report["accuracy_per_step"], 1):
        print(f"  accuracy @ t={t}: {100 * a:.2f} %")
    written = [EVAL_REPORT_NAME]
    if args.cutoff or args.margin:
        from .infer.cli import run_cutoff

        run_cutoff(args, report)
        written.append(CUTOFF_PLOT_NAME)
    out = eval_output_dir(args.checkpoint, args.out)
    for name in written:
        print(f"wrote {out / name}")
    return 0


#: The ``data`` column of ``fewstep recipes``: the data ships with fewstep, or must be in the data root.
OFFLINE_MARK, NEEDS_DATA_MARK = "offline", "data-root"


def cmd_recipes() -> int:
    """List the shipped recipes: name, dataset, T, whether they run offline, description.

    Reads and validates the TOML files only (:mod:`fewstep.config` imports no torch), so it
    answers at once."""
    from .config import builtin_recipes, load_recipe, runs_offline

    recipes = {name: load_recipe(name) for name in sorted(builtin_recipes())}  # by file stem, what train takes
    width = max(len("recipe"), *map(len, recipes))
    dwidth = max(len("dataset"), *(len(r.data.dataset) for r in recipes.values()))
    print(f"{'recipe':<{width}} {'dataset':<{dwidth}} {'T':<5} {'data':<9} description")
    for name, r in recipes.items():
        mark = OFFLINE_MARK if runs_offline(r) else NEEDS_DATA_MARK
        print(f"{name:<{width}} {r.data.dataset:<{dwidth}} T={r.model.timesteps:<3} {mark:<9} {r.description}")
    print(f"\n{OFFLINE_MARK}: the data ships with fewstep, no --data-root and no download; "
          f"{NEEDS_DATA_MARK}: reads --data-root or $FEWSTEP_DATA (docs/guides/datasets.md)")
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail again on the closed
    pipe (the pattern the Python docs give for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command in ("train", "quickstart", "eval", "convert"):
        from .runtime import tune_allocator

        tune_allocator()  # keep freed activations for reuse instead of faulting them in each step
    try:
        if args.command == "train":
            return cmd_train(args, args.recipe)
        if args.command == "quickstart":
            return cmd_train(args, QUICKSTART_RECIPE)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "recipes":
            return cmd_recipes()
        if args.command == "convert":
            return args.handler(args)
        parser.print_help()
        return 2
    except FewstepError as exc:
        print(f"fewstep: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever it wraps
        return 1
    except KeyboardInterrupt:  # train says more (cmd_train); eval and convert have nothing to resume
        _say_interrupted("interrupted")
        return 130
    except BrokenPipeError:  # `fewstep recipes | head`: the reader has gone, which is no error of ours
        _silence_stdout()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
