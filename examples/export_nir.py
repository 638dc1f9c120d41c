"""Export a fewstep model to NIR, read it back, and (if snnTorch is installed) run it there.

    python examples/export_nir.py [--out model.nir]

Needs ``pip install 'fewstep[nir]'``; without the ``nir`` package the script says so and exits 0.
The model is ``Conv2d+BN -> LIF -> AvgPool+Conv2d+BN -> LIF -> Flatten -> Linear`` with hard
reset (NIR has no soft reset, no max pooling and no multi-threshold neuron: see
``fewstep.nir_io``). BatchNorm is folded into the convolutions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from fewstep.layers import TimeFold
from fewstep.models.base import SpikingModel
from fewstep.neurons import LIF, spiking_neurons


class Net(SpikingModel):
    def __init__(self) -> None:
        super().__init__(input_shape=(2, 16, 16), num_classes=10, timesteps=4)
        self.stem = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.body = nn.Sequential(
            LIF(decay=0.75),
            TimeFold(nn.AvgPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)),
            LIF(decay=0.75),
            TimeFold(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10)),
        )


def spikes_of(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    for _, n in spiking_neurons(model):
        n.record = True
    with torch.no_grad():
        model(x)
    return [n.last_spikes for _, n in spiking_neurons(model)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write the .nir file (default: temporary)")
    parser.add_argument("--tiny", action="store_true", help="accepted for symmetry; this example is always quick")
    args = parser.parse_args()
    try:
        import nir
    except ImportError:
        print("the 'nir' package is not installed (pip install 'fewstep[nir]'); nothing to export.")
        return 0
    from fewstep.nir_io import NIRModel, export_nir, import_nir

    torch.manual_seed(0)
    model = Net().eval()
    graph = export_nir(model)  # dt = 1e-4 (snnTorch's step); see fewstep.nir_io for the mapping
    print("NIR nodes:", ", ".join(f"{k}:{type(v).__name__}" for k, v in graph.nodes.items()))
    lif = graph.nodes["body_0"]
    print(f"LIF decay 0.75 -> tau {float(lif.tau.flat[0]):.6g} s, r {float(lif.r.flat[0]):.6g} at dt = {graph.metadata['dt']}")

    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or Path(tmp) / "net.nir"
        nir.write(str(path), graph)
        back = import_nir(path)
        print(f"wrote {path} ({path.stat().st_size} bytes) and imported it back as {type(back).__name__}")
        x = torch.rand(8, 2, 16, 16) * 3  # a static batch: fed at every one of the 4 steps
        same = all(torch.equal(a, b) for a, b in zip(spikes_of(model, x), spikes_of(back, x)))
        print("round trip fewstep -> NIR -> fewstep, identical spikes:", same)
        assert same

    try:
        from snntorch.import_nir import import_from_nir
    except ImportError:
        print("snnTorch (with nirtorch) is not installed: skipping the peer check.")
        return 0
    # snnTorch 1.0 hands NIR's Flatten dims to torch unshifted, so run the part before Flatten there
    conv_part = NIRModel(model.stem, model.body[:3], input_shape=(2, 16, 16), num_classes=0, timesteps=4).eval()
    peer = import_from_nir(export_nir(conv_part))
    with torch.no_grad():
        ours = conv_part(x)
        theirs = torch.stack([peer(x)[0] for _ in range(4)])
    print("snnTorch runs the exported conv layers with the same spikes:", torch.equal(ours, theirs))
    assert torch.equal(ours, theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
