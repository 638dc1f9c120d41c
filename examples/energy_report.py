"""Count MACs, SOPs and energy of a spiking model, and plot its spike rate per layer.

    python examples/energy_report.py [--out spike_rates.png]

Writes the spike-rate plot to ``--out`` (default ``spike_rates.png`` in the current folder) and
prints its path. Uses an untrained ``small_cnn`` on random 8x8 inputs; point it at a trained checkpoint's model
for real numbers (``fewstep train`` does that for every run: see ``report.json``'s ``energy``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fewstep.energy import count_energy, format_energy_table
from fewstep.models import build_model
from fewstep.neurons import NeuronSpec
from fewstep.plots import plot_spike_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("spike_rates.png"),
                        help="PNG of the spike rates (default: spike_rates.png here)")
    parser.add_argument("--tiny", action="store_true", help="accepted for symmetry; this example is always quick")
    args = parser.parse_args()
    torch.manual_seed(0)

    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=2,
                        neuron=NeuronSpec(kind="mtlif", num_thresholds=2))
    x = torch.rand(64, 1, 8, 8) * 2
    # An untrained net is nearly silent; set its BatchNorm statistics from these inputs instead.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass gives the exact batch statistics
    model.train()
    with torch.no_grad():
        model(x)
    for preset in ("45nm-float", "45nm-int"):
        report = count_energy(model, x, preset=preset)
        print(f"== preset {preset}")
        print(format_energy_table(report))
        print()
    # The file is kept: a path printed here exists after the script ends (it once named a
    # temporary file that was already deleted).
    out = plot_spike_rates(report, args.out)
    print(f"spike rates plotted to {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
