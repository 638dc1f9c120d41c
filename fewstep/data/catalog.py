"""Imports every built-in dataset module so they register themselves."""

from . import (
    cifar,  # noqa: F401  (cifar10, cifar100)
    digits,  # noqa: F401
    events_catalog,  # noqa: F401  (nmnist, dvsgesture, cifar10dvs, saccade-digits/-mnist/-fashion-mnist)
    imagefolder,  # noqa: F401  (cifar10-jpeg, image-folder)
    mnist,  # noqa: F401  (mnist, fashion-mnist)
    tinyimagenet,  # noqa: F401  (tinyimagenet)
)
