"""Fixtures of the conversion tests: ``arch`` runs a test on each supported architecture."""

import pytest
from _tiny import TINY


@pytest.fixture(params=sorted(TINY))
def arch(request):
    return request.param


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: one thread is fastest, and far faster than oversubscribed threads on a
    # shared machine.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
