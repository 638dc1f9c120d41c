"""``fewstep.train.train_step``: one optimiser step of a hand-written loop, state reset after it."""

from __future__ import annotations

import copy

import torch

from fewstep.models import build_model
from fewstep.neurons import LIF, NeuronSpec
from fewstep.train import tet_loss, train_step


def test_train_step_is_the_hand_written_step_and_leaves_the_network_at_rest():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8), timesteps=2, neuron=NeuronSpec(),
                        channels=(4, 8), hidden=16)
    neurons = [m for m in model.modules() if isinstance(m, LIF)]
    for n in neurons:
        n.record = True  # a neuron that records keeps its last spikes until reset
    by_hand = copy.deepcopy(model)
    opt, opt_hand = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, by_hand))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(3):
        loss = train_step(model, opt, tet_loss, x, y)
        expected = tet_loss(by_hand(x), y)
        opt_hand.zero_grad()
        expected.backward()
        opt_hand.step()
        for m in by_hand.modules():
            if isinstance(m, LIF):
                m.reset()
        assert not loss.requires_grad and torch.equal(loss, expected.detach())
    for a, b in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert neurons and all(n.last_spikes is None for n in neurons)  # reset: the next batch starts from rest
    model(x)
    assert all(n.last_spikes is not None for n in neurons)  # what a forward without the reset leaves
