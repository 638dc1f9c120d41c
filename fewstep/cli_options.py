"""Option types shared by the ``fewstep`` command line (:mod:`fewstep.cli`) and the subcommands
that other packages add to it (``fewstep convert``: :mod:`fewstep.convert.cli`), so that those do
not import the main command line that imports them. Imports no torch."""

from __future__ import annotations

import argparse
import re


def device_option(text: str) -> str:
    """``--device``: checked when the command line is parsed, before any work (whether CUDA is
    there is checked when the run starts)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or auto, got {text!r}")
    return text
