"""Shared fixtures: fixed seeds, and `isa`, which runs a kernel test at every ISA level."""

from __future__ import annotations

import os

import pytest
import torch

from liteffn import ops, testing


def pytest_sessionstart(session: pytest.Session) -> None:
    # CI and `make test` set this: a missing native build must fail loudly, not skip quietly.
    if os.environ.get("LITEFFN_REQUIRE_NATIVE") == "1" and not ops.native_available():
        raise pytest.UsageError(f"native module required but not loaded: {ops.load_error()}")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=list(ops.ISAS))
def isa(request: pytest.FixtureRequest):
    """Run the test with the native kernels forced to each ISA level this CPU has."""
    if not ops.native_available():
        pytest.skip("native module not built")
    if request.param not in testing.isa_levels():
        pytest.skip(f"CPU lacks {request.param}")
    with testing.use_isa(request.param):
        yield request.param
