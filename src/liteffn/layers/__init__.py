"""Layer families. Each maps (..., d_model) -> (..., d_model); see ``FFNLayer``."""

from liteffn.layers.base import FFNLayer
from liteffn.layers.dense import DenseFFN
from liteffn.layers.fff import FastFeedForward
from liteffn.layers.lookup import LookupFFN
from liteffn.layers.lut import LUTFFN

__all__ = ["LUTFFN", "DenseFFN", "FFNLayer", "FastFeedForward", "LookupFFN"]
