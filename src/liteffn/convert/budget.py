"""Pick a layer config for an FFN FLOPs budget: ``config_for_budget("fff", spec, cut=4)`` gives the
largest FastFeedForward whose ``cost().flops_per_token`` is at most the dense FFN's / 4.

Costs come from the layers' own ``cost()`` (built once per candidate), so the accounting is the
one DESIGN.md defines, never a second copy of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from liteffn.config import CONFIG_TYPES, FFNConfig
from liteffn.convert.handlers import FFNSpec

__all__ = ["config_for_budget", "parse_budget"]


def parse_budget(text: str | float) -> float:
    """FLOPs cut factor from ``"4x"`` (4 times fewer), ``"0.25"`` (a quarter) or a number."""
    s = str(text).strip().lower()
    try:
        value = float(s[:-1]) if s.endswith("x") else float(s)
    except ValueError:
        raise ValueError(f"budget must look like '4x' or '0.25', got {text!r}") from None
    as_factor = s.endswith("x") or value > 1
    cut = value if as_factor else (1.0 / value if value > 0 else 0.0)
    if not cut >= 1.0:
        raise ValueError(f"budget must cut FLOPs (a factor >= 1 or a fraction <= 1), got {text!r}")
    return cut


def _candidates(kind: str, spec: FFNSpec, limit: float) -> Iterator[dict[str, Any]]:
    """Configs of family ``kind`` for this FFN, from most to least capacity, starting near
    ``limit`` FLOPs per token (the caller checks each against the layer's ``cost()``)."""
    d, f = spec.d_model, spec.d_ff
    if kind == "dense":
        for d_ff in range(max(1, int(limit // (4 * d))), 0, -1):
            yield {"d_ff": d_ff}
    elif kind == "fff":
        # neurons per token n = trees * (depth + 1): prefer the deepest trees whose total node
        # count stays within 2x the dense FFN's neurons (weights at most ~2x dense).
        for n in range(max(1, int(limit // (4 * d))), 0, -1):
            for depth in range(7, -1, -1):
                trees = n // (depth + 1)
                if trees >= 1 and trees * (2 ** (depth + 1) - 1) <= 2 * f:
                    yield {"depth": depth, "trees": trees, "bias_out": True}
                    break
    elif kind == "lookup":
        for tables in (512, 384, 256, 192, 128, 96, 64, 48, 32, 24, 16, 8, 4, 2, 1):
            yield {"num_tables": tables, "table_bits": 8}
    elif kind == "lut":
        for mult in (16, 8, 4, 2, 1):
            for per_out in (16, 8, 4):
                yield {"hidden_luts": mult * d, "luts_per_output": per_out}
    else:
        raise ValueError(f"unknown method {kind!r}; expected one of {sorted(CONFIG_TYPES)}")


def config_for_budget(kind: str, spec: FFNSpec, cut: float = 4.0, **overrides: Any) -> FFNConfig:
    """The first (largest) config of family ``kind`` whose FLOPs per token are at most
    ``spec.flops_per_token / cut``; ``overrides`` fix fields (e.g. ``depth=3``)."""
    if kind not in CONFIG_TYPES:
        raise ValueError(f"unknown method {kind!r}; expected one of {sorted(CONFIG_TYPES)}")
    cls = CONFIG_TYPES[kind]
    limit = spec.flops_per_token / cut
    seen = set()
    for cand in _candidates(kind, spec, limit):
        kw = {**cand, **overrides}
        key = tuple(sorted((k, str(v)) for k, v in kw.items()))
        if key in seen:
            continue
        seen.add(key)
        cfg = cls(**kw)
        if cfg.build(spec.d_model).cost().flops_per_token <= limit:
            return cfg
    raise ValueError(
        f"no {kind} config with {overrides or 'default settings'} fits {limit:.0f} FLOPs/token "
        f"(the dense FFN's {spec.flops_per_token} / {cut:g})"
    )
