"""The check the regularizer tests share (``test_regularizers``, ``test_rcs_authors``)."""

from __future__ import annotations

from typing import Any

import pytest

from fewstep.errors import ConfigError
from fewstep.regularizers import make_regularizer


def assert_refused(key: str, name: str, **options: Any) -> None:
    """``make_regularizer(name, **options)`` raises :class:`ConfigError` naming the config ``key``
    (a regular expression, as ``pytest.raises``' ``match``)."""
    with pytest.raises(ConfigError, match=key):
        make_regularizer(name, **options)
