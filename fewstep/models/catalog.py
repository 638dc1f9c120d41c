"""Imports every built-in model module so they register themselves."""

from . import cnn  # noqa: F401
