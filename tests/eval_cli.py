"""The ``fewstep eval`` arguments the cutoff tests parse (``test_anytime``, ``test_calibrate_on``)."""

from __future__ import annotations

import argparse


def eval_parser() -> argparse.ArgumentParser:
    """A parser with the options ``run_cutoff`` reads besides its own: the checkpoint, ``--device``
    (default cpu), ``--data-root`` and ``--out``, plus :func:`register_eval_options`' ``--cutoff`` set."""
    from fewstep.infer.cli import register_eval_options

    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None)
    register_eval_options(parser)
    return parser
