"""The optimizer's parameter groups: weight decay, and airbench's batch-norm treatment
(``train.bn_bias_lr_scale``, ``train.freeze_bn_weights``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.config import load_recipe
from fewstep.errors import ConfigError
from fewstep.models import build_model
from fewstep.train.engine import (
    batchnorm_biases,
    freeze_batchnorm_weights,
    make_optimizer,
    set_batchnorm_momentum,
    set_learning_rate,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cifar_fast_dnn", num_classes=10, input_shape=(3, 16, 16), timesteps=1,
                       widths=[4, 4, 8, 8])


def _recipe(*overrides: str):
    return load_recipe("cifar10-fast-dnn", ["train.momentum=0.0", "train.nesterov=false", *overrides])


def test_bn_biases_get_their_own_group_and_learning_rate():
    net = _net()
    biases = batchnorm_biases(net)
    assert len(biases) == 7  # the stem's BN and two per block
    opt = make_optimizer(_recipe("train.bn_bias_lr_scale=64"), net)
    assert len(opt.param_groups) == 3
    assert {id(p) for p in opt.param_groups[2]["params"]} == {id(b) for b in biases}
    assert not {id(b) for b in biases} & {id(p) for g in opt.param_groups[:2] for p in g["params"]}
    set_learning_rate(opt, 0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.1, 6.4])
    # without the option: the two groups of every earlier checkpoint, BN biases among the no-decay ones
    plain = make_optimizer(_recipe(), _net())
    assert len(plain.param_groups) == 2 and [g["weight_decay"] for g in plain.param_groups] == [5e-4, 0.0]


def test_bn_bias_lr_scale_scales_their_first_step_and_nothing_else():
    x, y = torch.randn(1, 16, 3, 16, 16), torch.randint(0, 10, (16,))
    steps = []
    for scale in (1.0, 8.0):
        net = _net()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        opt = make_optimizer(_recipe(f"train.bn_bias_lr_scale={scale}", "train.weight_decay=0.0"), net)
        set_learning_rate(opt, 0.05)
        nn.functional.cross_entropy(net(x).mean(0), y).backward()
        opt.step()
        steps.append({k: v - before[k] for k, v in net.state_dict().items() if v.is_floating_point()})
    bn_biases = {f"{name}.bias" for name, m in _net().named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bn_biases) == 7
    for key, delta in steps[0].items():
        torch.testing.assert_close(steps[1][key], (8.0 if key in bn_biases else 1.0) * delta, msg=key)
    assert all(steps[0][k].abs().sum() > 0 for k in bn_biases)  # they did move
    assert steps[0]["body.13.2.bias"].abs().sum() > 0  # the read-out's bias, not a BN's: unscaled above


def test_freeze_bn_weights_leaves_the_scales_out_of_the_optimizer():
    net = _net()
    assert freeze_batchnorm_weights(net) == 7
    opt = make_optimizer(_recipe(), net)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    scales = [m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert scales and not any(id(w) in trained or w.requires_grad for w in scales)
    assert all(id(b) in trained for b in batchnorm_biases(net))


@pytest.mark.parametrize("override,match", [("train.bn_bias_lr_scale=0", "bn_bias_lr_scale"),
                                            ("train.bn_bias_lr_scale=-2", "bn_bias_lr_scale"),
                                            ("train.freeze_bn_weights='yes'", "freeze_bn_weights")])
def test_bad_bn_options_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_recipe("cifar10-fast-dnn", [override])


def test_bn_momentum_sets_the_running_average_weight():
    net = _net()
    assert set_batchnorm_momentum(net, 0.4) == 7
    net.train()
    x = torch.randn(1, 16, 3, 16, 16)
    net(x)
    stem_bn = net.stem[1]
    conv_out = net.stem[0](x[0])
    torch.testing.assert_close(stem_bn.running_mean, 0.4 * conv_out.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_bad_bn_momentum_is_a_config_error(value):
    with pytest.raises(ConfigError, match="train.bn_momentum"):
        load_recipe("cifar10-fast-dnn", [f"train.bn_momentum={value}"])
