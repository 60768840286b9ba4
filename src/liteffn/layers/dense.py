"""DenseFFN: the baseline, PyTorch's own two GEMMs with an activation between."""

from __future__ import annotations

import torch
from torch import nn

from liteffn.cost import Cost
from liteffn.layers.base import FFNLayer, check_input

__all__ = ["DenseFFN"]

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),  # exact erf form
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
}


class DenseFFN(FFNLayer):
    """``fc2(act(fc1(x)))`` with ``fc1: d_model -> d_ff`` and ``fc2: d_ff -> d_model`` (fp32).

    The baseline every lite layer is measured against; training and inference are the same
    computation, done by PyTorch.

    Example:
        >>> ffn = DenseFFN(768, 3072).eval()
        >>> ffn(torch.randn(2, 5, 768)).shape
        torch.Size([2, 5, 768])
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu") -> None:
        super().__init__()
        if d_model < 1 or d_ff < 1:
            raise ValueError(f"DenseFFN: d_model and d_ff must be >= 1, got {d_model}, {d_ff}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"DenseFFN: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.d_model, self.d_ff, self.activation = d_model, d_ff, activation
        self.fc1 = nn.Linear(d_model, d_ff)
        self.act = _ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.d_model, "DenseFFN")
        return self.fc2(self.act(self.fc1(x)))  # no reshape or dispatch: PyTorch as users call it

    def _train_forward(self, x2: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x2)))

    _reference = _train_forward

    def cost(self) -> Cost:
        d, f = self.d_model, self.d_ff
        weight_bytes = 4 * (2 * d * f + d + f)
        return Cost(
            flops_per_token=4 * d * f, param_bytes=weight_bytes, bytes_per_token=weight_bytes
        )

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_ff={self.d_ff}, activation={self.activation!r}"
