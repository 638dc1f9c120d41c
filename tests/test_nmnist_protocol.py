"""The N-MNIST recipes' protocol (issue #15 item 7): a validation split carved from the 900 training
recordings (the augmentation is chosen on it, the test split is scored once, after the last epoch)
and only augmentations that N-MNIST permits (a shift; never a flip)."""

from __future__ import annotations

import pytest

from fewstep.config import load_recipe

NMNIST_RECIPES = ("nmnist-stc-t1", "nmnist-stc-t2", "nmnist-stc-t4", "nmnist-lif-t2")


@pytest.mark.parametrize("name", NMNIST_RECIPES)
def test_nmnist_recipes_hold_out_validation_and_augment_without_flips(name: str) -> None:
    recipe = load_recipe(name)
    d = recipe.data
    assert d.dataset == "nmnist"
    assert 50 <= d.val_size <= 150  # of the 900 training recordings
    # digits are never mirrored, at training or at test time; the shift is on
    assert not d.flip and not d.eval_flip
    assert d.crop_padding > 0
    from fewstep.augment_spec import EventAugmentSpec

    EventAugmentSpec.from_dict(d.augment)  # valid (off: no better on validation, see the recipe)


def test_the_event_augmentation_the_recipe_names_is_valid() -> None:
    """The setting the recipe's comment quotes (the strongest one tried) loads and trains-ready."""
    from fewstep.augment_spec import EventAugmentSpec

    recipe = load_recipe("nmnist-stc-t2", ["data.augment={shift=3, drop=0.4, jitter_us=5000}", "data.crop_padding=0"])
    spec = EventAugmentSpec.from_dict(recipe.data.augment)
    assert spec.enabled and spec == EventAugmentSpec(3, 0.4, 5000.0)
