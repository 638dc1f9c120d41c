"""Imports every built-in dataset module so they register themselves."""

from . import digits  # noqa: F401
