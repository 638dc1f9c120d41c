"""Imports every built-in dataset module so they register themselves."""

from . import digits  # noqa: F401
from . import cifar  # noqa: F401  (cifar10, cifar100)
from . import imagefolder  # noqa: F401  (cifar10-jpeg, image-folder)
from . import mnist  # noqa: F401  (mnist, fashion-mnist)
from . import tinyimagenet  # noqa: F401  (tinyimagenet)
from . import events_catalog  # noqa: F401  (nmnist, dvsgesture, cifar10dvs, saccade-digits/-mnist/-fashion-mnist)
