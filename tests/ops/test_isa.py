"""ISA control: which levels exist, how one is chosen, and the errors for a bad choice."""

import os
import subprocess
import sys

import pytest

from liteffn import ops

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="native module not built")


def test_levels_are_lowest_first_and_best_is_the_default():
    levels = ops.available_isas()
    assert levels[0] == "scalar"
    assert levels == [i for i in ops.ISAS if i in levels]  # order kept, nothing unknown
    code = "from liteffn import ops; print(ops.get_isa())"
    env = {k: v for k, v in os.environ.items() if k != "LITEFFN_ISA"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == levels[-1]


@pytest.mark.parametrize("level", ops.ISAS)
def test_env_selects_the_level(level):
    if level not in ops.available_isas():
        pytest.skip(f"CPU lacks {level}")
    code = "from liteffn import ops; print(ops.get_isa())"
    env = dict(os.environ, LITEFFN_ISA=level)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == level


def test_use_isa_restores_the_previous_level():
    before = ops.get_isa()
    with ops.use_isa("scalar"):
        assert ops.get_isa() == "scalar"
    assert ops.get_isa() == before


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match=r"one of scalar, avx2, avx512, got 'sse9'"):
        ops.set_isa("sse9")


def test_missing_level_is_refused():
    missing = [i for i in ops.ISAS if i not in ops.available_isas()]
    if not missing:
        pytest.skip("this CPU has every level")
    before = ops.get_isa()
    with pytest.raises(ValueError, match="lacks"):
        ops.set_isa(missing[-1])
    assert ops.get_isa() == before


def test_unknown_env_value_warns_and_uses_the_best():
    code = (
        "import warnings; warnings.simplefilter('always'); "
        "from liteffn import ops; print(ops.get_isa())"
    )
    env = dict(os.environ, LITEFFN_ISA="sse9")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == ops.available_isas()[-1]
    assert "LITEFFN_ISA must be scalar, avx2, avx512 or auto" in out.stderr
