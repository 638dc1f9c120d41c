"""Build a spiking model by hand from fewstep's layers and neurons, and train it with a plain loop.

    python examples/custom_neuron_model.py            # 200 steps
    python examples/custom_neuron_model.py --tiny     # 30 steps

A PLIF layer (learnable decay) feeds an MT-LIF layer (2 thresholds: 0, 1 or 2 spikes per step);
stateless layers run over all time steps at once inside ``TimeFold``; the stem (conv + BN) runs
once per image and is repeated over the T steps (direct encoding, built into ``SpikingModel``).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from fewstep.data import load_dataset
from fewstep.layers import TimeFold
from fewstep.models.base import SpikingModel
from fewstep.neurons import MTLIF, PLIF, reset_net, spiking_neurons
from fewstep.train.losses import cumulative_accuracy, tet_loss


class TinySNN(SpikingModel):
    def __init__(self, timesteps: int = 2) -> None:
        super().__init__(input_shape=(1, 8, 8), num_classes=10, timesteps=timesteps)
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.body = nn.Sequential(
            PLIF(decay=0.6, surrogate="arctan"),
            TimeFold(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32)),
            MTLIF(num_thresholds=2, surrogate="triangle"),
            TimeFold(nn.Flatten(), nn.Linear(32 * 4 * 4, 10)),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="30 optimizer steps instead of 200")
    args = parser.parse_args()
    torch.manual_seed(0)

    splits = load_dataset("digits")  # embedded scikit-learn digits: uint8 [N, 1, 8, 8], offline
    def prep(ds):
        return ds.inputs.float() / 16.0, ds.labels  # digits pixels are 0..16

    x_train, y_train = prep(splits.train)
    x_test, y_test = prep(splits.test)
    model = TinySNN(timesteps=2)
    print(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    steps = 30 if args.tiny else 200
    for step in range(steps):
        idx = torch.randint(0, len(y_train), (64,))
        logits = model(x_train[idx])  # [T, B, 10]
        loss = tet_loss(logits, y_train[idx], 1e-3, 1.0, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        reset_net(model)  # forget membrane state before the next batch
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")

    model.eval()
    for _, n in spiking_neurons(model):
        n.record = True
    with torch.no_grad():
        logits = model(x_test)
    acc = (cumulative_accuracy(logits, y_test).double() / len(y_test)).tolist()
    print("test accuracy per step:", "  ".join(f"t={t}: {100 * a:.1f} %" for t, a in enumerate(acc, 1)))
    for name, n in spiking_neurons(model):
        s = n.last_spikes
        print(f"{name:8s} {type(n).__name__:6s} spikes/neuron/step {s.mean().item():.3f}  max count {int(s.max())}")
    print(f"learned PLIF decay: {model.body[0].decay.item():.3f}")


if __name__ == "__main__":
    main()
