"""Recipes: validation names the bad key; overrides; every shipped recipe loads."""

import pytest

from fewstep.config import apply_overrides, builtin_recipes, load_recipe, parse_override, recipe_from_dict
from fewstep.errors import ConfigError


def test_defaults_build():
    r = recipe_from_dict({})
    assert r.model.timesteps == 2 and r.train.optimizer == "sgd"


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"train": {"epochs": 3, "epochz": 1}}, "train.epochz"),
        ({"train": {"epochs": "3"}}, "train.epochs"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"lr": -0.1}}, "train.lr"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer"),
        ({"train": {"momentum": 1.5}}, "train.momentum"),
        ({"neuron": {"kind": "izhikevich"}}, "neuron"),
        ({"neuron": {"decay": 1.5}}, "neuron"),
        ({"neuron": {"surrogate": "gauss"}}, "neuron.surrogate"),
        ({"neuron": {"num_thresholds": 3}}, "neuron"),
        ({"model": {"timesteps": 0}}, "model.timesteps"),
        ({"data": {"batch_size": 1.5}}, "data.batch_size"),
        ({"data": {"flip": 1}}, "data.flip"),
        ({"extra": 1}, "extra"),
        ({"train": 3}, "train"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        recipe_from_dict(raw, "my.toml")
    assert err.value.key.startswith(key)
    assert "my.toml" in str(err.value)


def test_int_is_accepted_for_float_and_bool_is_not_int():
    assert recipe_from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError):
        recipe_from_dict({"train": {"epochs": True}})


def test_overrides_parse_toml_literals():
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("data.flip=true") == (["data", "flip"], True)
    assert parse_override("train.optimizer=adamw") == (["train", "optimizer"], "adamw")
    assert parse_override("model.options.channels=[8, 16]") == (["model", "options", "channels"], [8, 16])
    raw = apply_overrides({"train": {"epochs": 5}}, ["train.epochs=2", "model.options.width_mult=0.5"])
    assert raw == {"train": {"epochs": 2}, "model": {"options": {"width_mult": 0.5}}}
    with pytest.raises(ConfigError):
        parse_override("train.epochs")


def test_every_shipped_recipe_loads():
    names = builtin_recipes()
    assert "quickstart" in names
    for name in names:
        r = load_recipe(name)
        assert r.name == name, f"recipe file {name}.toml declares name {r.name!r}"


def test_unknown_recipe_lists_shipped_ones():
    with pytest.raises(ConfigError, match="quickstart"):
        load_recipe("no-such-recipe")


def test_bad_toml_file_names_the_file(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_recipe(str(p))


def test_override_errors_name_the_override_not_the_file():
    """Issue 19, item 14: a bad ``--set`` value was blamed on the recipe file."""
    with pytest.raises(ConfigError) as info:
        load_recipe("quickstart", ["train.epochs=0"])
    assert "(from --set train.epochs=0)" in str(info.value) and "quickstart.toml" not in str(info.value)
    with pytest.raises(ConfigError, match=r"from --set model\.bogus=1"):
        load_recipe("quickstart", ["model.bogus=1"])
    with pytest.raises(ConfigError) as info:  # the file's warmup_epochs against the override's epochs: both named
        load_recipe("cifar10-fast-lif-t2", ["train.epochs=1"])
    msg = str(info.value)
    assert "train.warmup_epochs" in msg and "cifar10-fast-lif-t2.toml with --set train.epochs=1" in msg, msg


def test_unknown_recipe_names_the_recipe_not_a_config_key():
    """Issue 19, item 14: "config key 'recipe'" for a recipe name that does not exist."""
    with pytest.raises(ConfigError) as info:
        load_recipe("no-such-recipe")
    assert str(info.value).startswith("no recipe named 'no-such-recipe'") and "config key" not in str(info.value)
    with pytest.raises(ConfigError, match="no such recipe file"):
        load_recipe("missing/recipe.toml")
