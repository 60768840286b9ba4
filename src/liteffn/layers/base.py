"""The interface every liteffn layer shares: input checks, training vs inference dispatch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules import module as _module_mod

from liteffn import ops
from liteffn.cost import Cost

__all__ = ["FFNLayer", "NativeEvalCall", "check_input"]

_tracing_state = torch._C._get_tracing_state
# nn.Module's global hook dicts (mutated in place by torch.nn.modules.module, never rebound)
_global_hooks = (
    _module_mod._global_forward_hooks,
    _module_mod._global_forward_pre_hooks,
    _module_mod._global_backward_hooks,
    _module_mod._global_backward_pre_hooks,
)


def check_input(x: torch.Tensor, d_model: int, who: str) -> None:
    """Raise a TypeError/ValueError naming what was expected when ``x`` cannot be an FFN input."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: expected a floating-point tensor (float32), got {x.dtype}")
    if x.device.type != "cpu":
        raise ValueError(f"{who}: expected a CPU tensor, got device {x.device}")
    if x.dim() < 1:
        raise ValueError(f"{who}: expected shape (..., {d_model}), got a 0-d tensor")
    if x.shape[-1] != d_model:
        raise ValueError(
            f"{who}: expected last dimension d_model={d_model}, got shape {tuple(x.shape)}"
        )


class FFNLayer(nn.Module):
    """Base class: maps (..., d_model) -> (..., d_model).

    Subclasses implement ``_train_forward(x2)`` (differentiable), ``_reference(x2)`` (the hard
    inference path in plain PyTorch) and, when they have a kernel, ``_native_forward(x2)``; all
    three take and return (N, d_model) tensors. ``forward`` picks the training path in
    ``train()`` mode, and in ``eval()`` mode the native kernel (float32, native module built)
    or else the reference.
    """

    d_model: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.d_model, type(self).__name__)
        x2 = x.reshape(-1, self.d_model)  # (N, d_model); copies only if x is not viewable
        if self.training:
            y2 = self._train_forward(x2)
        elif self._use_native(x2):
            y2 = self._native_forward(x2.contiguous())
        else:
            y2 = self._reference(x2)
        return y2.reshape(x.shape)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """Pure-PyTorch hard inference path: the specification the native kernel must match."""
        check_input(x, self.d_model, type(self).__name__)
        with torch.no_grad():
            return self._reference(x.reshape(-1, self.d_model)).reshape(x.shape)

    def cost(self) -> Cost:
        """Inference cost per token (see ``liteffn.Cost``)."""
        raise NotImplementedError

    # -- for subclasses -------------------------------------------------------------------

    has_native: bool = False

    def _use_native(self, x2: torch.Tensor) -> bool:
        return (
            self.has_native
            and ops.native_available()
            and x2.dtype == torch.float32
            and not (torch.is_grad_enabled() and x2.requires_grad)
        )

    def _train_forward(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _reference(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _native_forward(self, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NativeEvalCall:
    """Mixin for an FFNLayer whose eval call can skip nn.Module's dispatch.

    nn.Module.__call__ costs ~2 µs per call even without hooks, and a batch-1 kernel only a
    few: an eval call with one positional argument and no hooks, tracing or compilation goes
    to the layer's cached native eval call ``state["_eval_call"]`` (``state`` is the module's
    __dict__, read directly since an attribute read on an nn.Module goes through its
    __getattr__ hook), which returns y or None. Anything else -- no cached call yet, changed
    weights or an unusual x (None) -- takes nn.Module's own dispatch -> forward, which
    rebuilds the call or takes the checked path.

    With the native module loaded, ``__call__`` is replaced by the same dispatch written in C
    (csrc/bind_module_call.cpp): the Python frames cost ~3-6 µs per batch-1 call once a kernel
    has streamed its weights through the caches. This definition serves without it.
    """

    def __call__(self, *args, **kwargs):
        state = self.__dict__
        if (
            not state["training"]
            and len(args) == 1
            and not kwargs
            and not (
                state["_forward_hooks"]
                or state["_forward_pre_hooks"]
                or state["_backward_hooks"]
                or state["_backward_pre_hooks"]
                or _global_hooks[0]
                or _global_hooks[1]
                or _global_hooks[2]
                or _global_hooks[3]
                or self._compiled_call_impl is not None
                or _tracing_state()
            )
        ):
            call = state.get("_eval_call")
            if call is not None:
                y = call(args[0])
                if y is not None:
                    return y
        return nn.Module.__call__(self, *args, **kwargs)

    def _native_eval(self, x, rebuild: Callable[[], bool]) -> torch.Tensor | None:
        """y from the cached native eval call, for forward's eval path; None when x is unusual
        (forward then takes its checked path). When there is no cached call, or a parameter it
        was built from changed, ``rebuild()`` re-packs and caches a new one (False: no native
        call possible) and x is tried once more."""
        call = self.__dict__.get("_eval_call")
        if call is not None:
            y = call(x)
            if y is not None:
                return y
            if call.current():
                return None  # an unusual x
        if not rebuild():
            return None
        return self.__dict__["_eval_call"](x)


if ops._native is not None:
    ops._native.install_module_call(NativeEvalCall, nn.Module, _global_hooks, _tracing_state)
