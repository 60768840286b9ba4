"""liteffn: compute-lite feed-forward blocks for transformers on CPUs.

Layers map (..., d_model) float32 -> (..., d_model) float32. ``train()`` mode runs the
differentiable training path, ``eval()`` mode the hard inference path (native kernel when built),
and ``layer.reference(x)`` the pure-PyTorch specification of that path.
"""

from importlib.metadata import PackageNotFoundError, version

from liteffn.cost import Cost
from liteffn.layers import LUTFFN, DenseFFN, FastFeedForward, LookupFFN
from liteffn.ops import native_available

try:
    __version__ = version("liteffn")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = [
    "LUTFFN",
    "Cost",
    "DenseFFN",
    "FastFeedForward",
    "LookupFFN",
    "__version__",
    "native_available",
]
