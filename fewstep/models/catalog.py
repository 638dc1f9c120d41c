"""Imports every built-in model module so they register themselves."""

from . import cnn  # noqa: F401
from . import resnet  # noqa: F401
from . import vgg  # noqa: F401
