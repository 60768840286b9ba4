"""``convert_``: swap a Hugging Face model's dense FFNs for lite layers, in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from liteffn.config import FFNConfig, config_from_dict
from liteffn.convert.handlers import FFNSpec, Handler, handler_for
from liteffn.layers.base import FFNLayer

__all__ = ["RECORD_ATTR", "convert_", "ffn_flops", "lite_layers", "record_of"]

RECORD_ATTR = "liteffn_record"
FORMAT_VERSION = 1

FilterFn = Callable[[nn.Module, str], bool]


def record_of(model: nn.Module) -> dict[str, Any] | None:
    """What ``convert_`` swapped in ``model``: ``{"architecture", "sites": {block name:
    {"config", "d_model", "d_ff", "gated"}}}``, or None for an unconverted model."""
    return getattr(model, RECORD_ATTR, None)


def _build(config: FFNConfig, spec: FFNSpec, like: nn.Module) -> nn.Module:
    lite = config.build(spec.d_model)
    p = next(like.parameters(), None)
    if p is not None:
        lite.to(device=p.device)
    return lite.train(like.training)


def convert_(model: nn.Module, config: FFNConfig, filter_fn: FilterFn | None = None) -> nn.Module:
    """Replace the dense FFN of every transformer block of ``model`` (a Hugging Face BERT, Llama,
    GPT-2 or ViT model) by ``config.build(d_model)``, in place, and return ``model``.

    ``filter_fn(block, name)`` picks the blocks to convert (default: all); blocks already holding
    a lite layer are left alone, so a model can be converted in several calls with different
    configs. The swapped blocks are recorded (``record_of(model)``) for ``save_pretrained``.
    The new layers are randomly initialised: fit them with ``distill_``.

    Example:
        >>> convert_(model, FFFConfig(depth=5, trees=8), lambda block, name: "layer.0" in name)
    """
    if not isinstance(config, FFNConfig):
        raise TypeError(
            f"convert_: config must be an FFNConfig (e.g. FFFConfig, LookupConfig, LUTConfig), "
            f"got {type(config).__name__}"
        )
    handler = handler_for(model)
    record = record_of(model) or {
        "format": FORMAT_VERSION,
        "architecture": handler.name,
        "model_class": type(model).__name__,
        "sites": {},
    }
    done = 0
    for name, block in list(handler.blocks(model)):
        if handler.lite(block) is not None:
            continue
        if filter_fn is not None and not filter_fn(block, name):
            continue
        spec = handler.spec(block)
        handler.install(block, _build(config, spec, block))
        record["sites"][name] = {
            "config": config.to_dict(),
            "d_model": spec.d_model,
            "d_ff": spec.d_ff,
            "gated": spec.gated,
        }
        done += 1
    if done == 0:
        n = len(list(handler.blocks(model)))
        raise ValueError(
            f"convert_: no FFN was converted: the {handler.name} model has {n} FFN blocks, "
            f"{len(record['sites'])} already converted, and filter_fn selected none of the rest"
        )
    setattr(model, RECORD_ATTR, record)
    return model


def _reinstall(model: nn.Module, record: dict[str, Any]) -> Handler:
    """Build and install the recorded lite layers (fresh weights) into an unconverted model."""
    handler = handler_for(model)
    if record.get("architecture") != handler.name:
        raise ValueError(
            f"record is for architecture {record.get('architecture')!r}, model is {handler.name!r}"
        )
    blocks = dict(handler.blocks(model))
    missing = sorted(set(record["sites"]) - set(blocks))
    if missing:
        raise ValueError(f"recorded FFN blocks not found in the model: {missing}")
    for name, site in record["sites"].items():
        spec = handler.spec(blocks[name])
        if (spec.d_model, spec.d_ff, spec.gated) != (site["d_model"], site["d_ff"], site["gated"]):
            raise ValueError(
                f"block {name}: recorded FFN d_model={site['d_model']}, d_ff={site['d_ff']}, "
                f"gated={site['gated']}; the model has {spec}"
            )
        handler.install(blocks[name], _build(config_from_dict(site["config"]), spec, blocks[name]))
    setattr(model, RECORD_ATTR, record)
    return handler


def lite_layers(model: nn.Module) -> dict[str, FFNLayer]:
    """The installed lite layers of a converted model, by block name, in order."""
    handler = handler_for(model)
    out = {}
    for name, block in handler.blocks(model):
        lite = handler.lite(block)
        if lite is not None:
            out[name] = lite
    return out


def ffn_flops(model: nn.Module) -> tuple[int, int]:
    """``(dense, now)``: FFN FLOPs per token summed over all blocks for the original dense model
    and for ``model`` as it is (converted blocks counted by their lite layer's ``cost()``)."""
    handler = handler_for(model)
    sites = (record_of(model) or {}).get("sites", {})
    dense = now = 0
    for name, block in handler.blocks(model):
        lite = handler.lite(block)
        if lite is None:
            f = handler.spec(block).flops_per_token
            dense, now = dense + f, now + f
        else:
            s = sites[name]
            dense += FFNSpec(s["d_model"], s["d_ff"], s["gated"]).flops_per_token
            now += lite.cost().flops_per_token
    return dense, now
