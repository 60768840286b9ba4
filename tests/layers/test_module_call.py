"""NativeEvalCall's dispatch (the C ``__call__`` with the native module, the Python one without):
an eval call takes the layer's native eval call only when nn.Module's own dispatch would do
nothing more than call forward; hooks, keyword calls, training mode, compiled calls and
torch.fx tracing all still go through nn.Module.__call__."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import fx, nn
from torch.nn.modules import module as module_mod

from liteffn import LUTFFN, FastFeedForward, LookupFFN, ops
from liteffn.layers.base import NativeEvalCall
from liteffn.testing import assert_kernel_close

LAYERS = {
    "fff": lambda: FastFeedForward(16, depth=3),
    "lookup": lambda: LookupFFN(16, 4, 3, block_size=8),
    "lut": lambda: LUTFFN(16, bits_per_channel=3, hidden_luts=32, luts_per_output=4),
}

needs_native = pytest.mark.skipif(not ops.native_available(), reason="native module not built")


@pytest.fixture(params=sorted(LAYERS))
def layer(request):
    return LAYERS[request.param]().eval()


@needs_native
def test_call_is_the_native_descriptor():
    call = NativeEvalCall.__dict__["__call__"]
    assert type(call).__name__ == "method_descriptor"
    assert "bind_module_call.cpp" in call.__doc__


@needs_native
def test_eval_call_uses_the_cached_native_call(layer):
    x = torch.randn(5, 16)
    expected = layer.reference(x)
    assert_kernel_close(layer(x), expected)  # first call builds the native eval call
    assert layer._eval_call is not None
    calls = []
    native_call = layer._eval_call

    class Spy:  # stands in for the cached native call, to see the dispatch reach it
        def __call__(self, arg):
            calls.append(arg)
            return native_call(arg)

    layer.__dict__["_eval_call"] = Spy()
    assert_kernel_close(layer(x), expected)
    assert calls == [x]


def test_hooks_keywords_and_training_take_nn_module_dispatch(layer):
    x = torch.randn(3, 16)
    expected = layer.reference(x)
    layer(x)
    seen = []
    handle = layer.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    assert_kernel_close(layer(x), layer.reference(x * 0))  # the pre-hook's input is used
    handle.remove()
    handle = module_mod.register_module_forward_hook(lambda mod, args, out: seen.append(mod))
    try:
        assert_kernel_close(layer(x), expected)
    finally:
        handle.remove()
    assert seen == [layer]
    assert_kernel_close(layer(x=x), expected)  # a keyword call: forward(x=x)
    layer.train()
    assert layer(x).requires_grad  # the training path, not the kernel
    layer.eval()
    assert_kernel_close(layer(x), expected)


def test_a_compiled_call_takes_over(layer):
    x = torch.randn(2, 16)
    layer(x)
    layer._compiled_call_impl = lambda *args, **kwargs: "compiled"
    assert layer(x) == "compiled"
    layer._compiled_call_impl = None
    assert_kernel_close(layer(x), layer.reference(x))


class LeafTracer(fx.Tracer):
    """Keeps liteffn layers whole (fx traces into any module outside torch.nn by default)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, NativeEvalCall) or super().is_leaf_module(m, qualname)


def test_fx_tracing_records_the_layer_as_a_module(layer):
    model = nn.Sequential(nn.Identity(), layer).eval()
    x = torch.randn(4, 16)
    model(x)  # the layer's native eval call is cached before tracing
    graph = LeafTracer().trace(model)  # fx patches nn.Module.__call__, which ours defers to
    targets = [n.target for n in graph.nodes if n.op == "call_module"]
    assert targets == ["0", "1"]
    assert_kernel_close(fx.GraphModule(model, graph)(x), layer.reference(x))


def test_dispatch_without_the_native_module():
    code = (
        "import torch, liteffn\n"
        "from liteffn.layers.base import NativeEvalCall\n"
        "assert not liteffn.native_available()\n"
        "assert type(NativeEvalCall.__dict__['__call__']).__name__ == 'function'\n"
        "fff = liteffn.FastFeedForward(8, depth=2)\n"
        "lookup = liteffn.LookupFFN(8, 4, 3, block_size=8)\n"
        "for layer in (fff, lookup):\n"
        "    layer.eval(); x = torch.randn(3, 8)\n"
        "    assert torch.equal(layer(x), layer.reference(x))\n"
        "    seen = []\n"
        "    h = layer.register_forward_hook(lambda m, a, o: seen.append(1))\n"
        "    layer(x); h.remove(); assert seen == [1]\n"
        "print('ok')\n"
    )
    env = {**os.environ, "LITEFFN_DISABLE_NATIVE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
