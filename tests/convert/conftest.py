"""Fixtures of the conversion tests: ``arch`` runs a test on each supported architecture."""

import pytest
from _tiny import TINY


@pytest.fixture(params=sorted(TINY))
def arch(request):
    return request.param
