"""Typed, validated FFN configurations: one per layer family, each able to build its layer
for any model width. Used by the models (`liteffn.models`), conversion (`convert_`) and the CLI.

Example:
    >>> from liteffn.config import LookupConfig
    >>> layer = LookupConfig(num_tables=64).build(d_model=384)
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from torch import nn

__all__ = [
    "CONFIG_TYPES",
    "DenseConfig",
    "FFFConfig",
    "FFNConfig",
    "LUTConfig",
    "LookupConfig",
    "config_from_dict",
]


def _require(cond: bool, cls: type, msg: str) -> None:
    if not cond:
        raise ValueError(f"{cls.__name__}: {msg}")


@dataclass(frozen=True)
class FFNConfig:
    """Base: ``build(d_model)`` makes the layer; ``to_dict``/``config_from_dict`` round-trip."""

    kind: ClassVar[str] = ""
    layer: ClassVar[str] = ""  # "module:Class"

    def layer_kwargs(self, d_model: int) -> dict[str, Any]:
        """Constructor arguments of the layer for a model of width ``d_model``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def build(self, d_model: int) -> nn.Module:
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(
                f"{type(self).__name__}.build: d_model must be an int >= 1, got {d_model!r}"
            )
        module_name, cls_name = self.layer.split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls(d_model, **self.layer_kwargs(d_model))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        return {"kind": self.kind, **d}


@dataclass(frozen=True)
class DenseConfig(FFNConfig):
    """Dense FFN; ``d_ff=None`` means ``4 * d_model``."""

    kind: ClassVar[str] = "dense"
    layer: ClassVar[str] = "liteffn.layers.dense:DenseFFN"
    d_ff: int | None = None
    activation: str = "gelu"

    def __post_init__(self) -> None:
        _require(
            self.d_ff is None or self.d_ff >= 1, type(self), f"d_ff must be >= 1, got {self.d_ff}"
        )

    def layer_kwargs(self, d_model: int) -> dict[str, Any]:
        return {"d_ff": self.d_ff or 4 * d_model, "activation": self.activation}


@dataclass(frozen=True)
class FFFConfig(FFNConfig):
    """FastFeedForward: ``trees`` binary trees of ``depth+1`` levels (UltraFastBERT form), or
    the original FFF form with leaves of width ``leaf_width`` when it is > 0."""

    kind: ClassVar[str] = "fff"
    layer: ClassVar[str] = "liteffn.layers.fff:FastFeedForward"
    depth: int = 11
    trees: int = 1
    bias_out: bool = False
    leaf_width: int = 0

    def __post_init__(self) -> None:
        _require(0 <= self.depth <= 20, type(self), f"depth must be in [0, 20], got {self.depth}")
        _require(self.trees >= 1, type(self), f"trees must be >= 1, got {self.trees}")
        _require(
            self.leaf_width >= 0, type(self), f"leaf_width must be >= 0, got {self.leaf_width}"
        )


@dataclass(frozen=True)
class LookupConfig(FFNConfig):
    """LookupFFN: ``num_tables`` tables of ``2**table_bits`` rows; BH4 or dense projection.
    The BH4 block size is capped at the padded model width."""

    kind: ClassVar[str] = "lookup"
    layer: ClassVar[str] = "liteffn.layers.lookup:LookupFFN"
    num_tables: int = 128
    table_bits: int = 8
    projection: str = "bh4"
    block_size: int = 64

    def __post_init__(self) -> None:
        cls = type(self)
        _require(self.num_tables >= 1, cls, f"num_tables must be >= 1, got {self.num_tables}")
        _require(
            1 <= self.table_bits <= 12, cls, f"table_bits must be in [1, 12], got {self.table_bits}"
        )
        _require(
            self.projection in ("bh4", "dense"),
            cls,
            f"projection must be 'bh4' or 'dense', got {self.projection!r}",
        )
        b = self.block_size
        _require(b >= 1 and b & (b - 1) == 0, cls, f"block_size must be a power of two, got {b}")

    def layer_kwargs(self, d_model: int) -> dict[str, Any]:
        padded = 1 << max(0, (d_model - 1).bit_length())  # next power of two >= d_model
        kw = super().layer_kwargs(d_model)
        kw["block_size"] = min(self.block_size, padded)
        return kw


@dataclass(frozen=True)
class LUTConfig(FFNConfig):
    """LUTFFN: thermometer bits -> LUT layers -> group popcount -> affine.
    ``hidden_luts=None`` means one hidden layer of ``16 * d_model`` LUTs; ``()`` means none."""

    kind: ClassVar[str] = "lut"
    layer: ClassVar[str] = "liteffn.layers.lut:LUTFFN"
    bits_per_channel: int = 8
    hidden_luts: int | tuple[int, ...] | None = None
    luts_per_output: int = 16
    lut_inputs: int = 6

    def __post_init__(self) -> None:
        cls = type(self)
        _require(
            self.bits_per_channel >= 1,
            cls,
            f"bits_per_channel must be >= 1, got {self.bits_per_channel}",
        )
        _require(
            self.luts_per_output >= 1,
            cls,
            f"luts_per_output must be >= 1, got {self.luts_per_output}",
        )
        _require(
            1 <= self.lut_inputs <= 6, cls, f"lut_inputs must be in [1, 6], got {self.lut_inputs}"
        )
        if isinstance(self.hidden_luts, list):
            object.__setattr__(self, "hidden_luts", tuple(self.hidden_luts))
        h = self.hidden_luts
        sizes = () if h is None else (h,) if isinstance(h, int) else h
        _require(
            all(isinstance(s, int) and s >= 1 for s in sizes),
            cls,
            f"hidden_luts must be None, an int >= 1 or a sequence of them, got {h!r}",
        )

    def layer_kwargs(self, d_model: int) -> dict[str, Any]:
        kw = super().layer_kwargs(d_model)
        if kw["hidden_luts"] is None:
            kw["hidden_luts"] = 16 * d_model
        return kw


CONFIG_TYPES: dict[str, type[FFNConfig]] = {
    c.kind: c for c in (DenseConfig, FFFConfig, LookupConfig, LUTConfig)
}


def config_from_dict(d: dict[str, Any]) -> FFNConfig:
    """Inverse of ``FFNConfig.to_dict``; a clear error for an unknown kind or field."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in CONFIG_TYPES:
        raise ValueError(
            f"unknown FFN config kind {kind!r}; expected one of {sorted(CONFIG_TYPES)}"
        )
    cls = CONFIG_TYPES[kind]
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown fields {sorted(unknown)}; known: {sorted(names)}"
        )
    if isinstance(d.get("hidden_luts"), list):
        d["hidden_luts"] = tuple(d["hidden_luts"])
    return cls(**d)
