"""Train the quickstart recipe from Python: load, override, train, read the report.

    python examples/train_quickstart_api.py            # 3 epochs on all 1,797 digits (about a minute)
    python examples/train_quickstart_api.py --tiny     # 5 epochs on 512 digits, small net (seconds)

The same as ``fewstep train quickstart --set ...`` on the command line.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fewstep.config import load_recipe
from fewstep.report import summary_table
from fewstep.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="seconds: 5 epochs, 512 samples, small net")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()

    overrides = ["train.epochs=3"]
    if args.tiny:
        overrides = ["train.epochs=5", "data.train_limit=512", "data.test_limit=256",
                     "model.options.channels=[8, 16]", "model.options.hidden=32"]
    recipe = load_recipe("quickstart", overrides)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "quickstart"
        report = train(recipe, out, device="cpu", progress=False)
        print(summary_table(report))
        print("files written:", ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
