"""Datta and Beerel's fine-tuning details are the conversion recipes' defaults: the converted
neuron's surrogate derivative is 1 inside ``|U/V - 1| < 1`` and the optimizer is Adam with amsgrad."""

from __future__ import annotations

import pytest
import torch

from fewstep.config import load_recipe
from fewstep.errors import ConfigError
from fewstep.models import build_model
from fewstep.models.dnn import ConvertedIF

FINETUNE_RECIPES = ("digits-dnn-finetune-t2", "fmnist-convert-finetune-t2", "cifar10-convert-finetune-t2")


def _derivative(neuron: ConvertedIF, ratio: torch.Tensor) -> torch.Tensor:
    """d spike / d (U / V - 1) at one step with U = (ratio + 1) V."""
    v = float(neuron.threshold.detach())
    x = ((ratio + 1.0) * v).clone().requires_grad_(True)
    neuron(x.view(1, -1)).sum().backward()
    return x.grad * v / float(neuron.spike_amplitude.detach())


def test_surrogate_derivative_is_one_inside_the_window():
    n = ConvertedIF(v_threshold=0.8)
    ratio = torch.tensor([-1.5, -0.99, -0.5, 0.0, 0.5, 0.99, 1.5])
    assert torch.allclose(_derivative(n, ratio), torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]))
    old = ConvertedIF(v_threshold=0.8, surrogate_gain=1.0)
    assert torch.allclose(_derivative(old, ratio), torch.tensor([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0]))


def test_gain_leaves_the_forward_pass_alone():
    x = torch.rand(4, 3, 6) * 2
    a, b = ConvertedIF(), ConvertedIF(surrogate_gain=1.0)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", FINETUNE_RECIPES)
def test_finetune_recipes_use_adam_with_amsgrad(name):
    from fewstep.train.engine import make_optimizer

    recipe = load_recipe(name)
    t = recipe.train
    assert t.optimizer == "adamw" and t.weight_decay == 0.0 and t.amsgrad is True and t.lr == 1e-4
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(recipe, model)
    assert all(g["amsgrad"] for g in opt.param_groups)


def test_converted_models_default_to_the_authors_surrogate():
    model = build_model("small_cnn_converted", num_classes=10, input_shape=(1, 8, 8), timesteps=2,
                        channels=(4, 8), hidden=16)
    gains = {m.surrogate_gain for m in model.modules() if isinstance(m, ConvertedIF)}
    assert gains == {2.0}
    old = build_model("small_cnn_converted", num_classes=10, input_shape=(1, 8, 8), timesteps=2,
                      channels=(4, 8), hidden=16, surrogate_gain=1.0)
    assert {m.surrogate_gain for m in old.modules() if isinstance(m, ConvertedIF)} == {1.0}


def test_amsgrad_needs_adamw():
    with pytest.raises(ConfigError, match="train.amsgrad"):
        load_recipe("digits-dnn-finetune-t2", ["train.optimizer='sgd'"])
