"""The N-MNIST recipes' protocol (issue #15 item 7): a validation split carved from the 900 training
recordings (the model is chosen on it, the test split is scored once) and event augmentation that
N-MNIST permits (shift, drop, time jitter; no flips)."""

from __future__ import annotations

import pytest

from fewstep.config import load_recipe

NMNIST_RECIPES = ("nmnist-stc-t1", "nmnist-stc-t2", "nmnist-stc-t4", "nmnist-lif-t2")


@pytest.mark.parametrize("name", NMNIST_RECIPES)
def test_nmnist_recipes_hold_out_validation_and_augment_events(name: str) -> None:
    recipe = load_recipe(name)
    d = recipe.data
    assert recipe.data.dataset == "nmnist"
    assert 50 <= d.val_size <= 150  # of the 900 training recordings
    from fewstep.augment_spec import EventAugmentSpec

    spec = EventAugmentSpec.from_dict(d.augment)
    assert spec.enabled and spec.shift > 0 and spec.drop > 0 and spec.jitter_us > 0
    # digits are never mirrored, at training or at test time; the shift is the event-level one
    assert not d.flip and not d.eval_flip
    assert d.crop_padding == 0

