"""Layer families. Each maps (..., d_model) -> (..., d_model); see ``FFNLayer``."""

from liteffn.layers.base import FFNLayer
from liteffn.layers.dense import DenseFFN
from liteffn.layers.lookup import LookupFFN

__all__ = ["DenseFFN", "FFNLayer", "LookupFFN"]
