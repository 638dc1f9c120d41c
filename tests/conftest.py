"""Shared test setup: every test starts from the same torch RNG state; ``_one_thread`` pins torch
to one thread for the benchmark-script tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def _one_thread():
    """Small nets gain nothing from intra-op threads, and on a busy 2-core box OpenMP spinning
    makes them many times slower; the setting is restored for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
