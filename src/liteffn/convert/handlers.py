"""Per-architecture handlers: where a Hugging Face model keeps its FFNs, how they are shaped, and
how a lite layer takes their place.

A handler finds the transformer blocks that hold an FFN (by structure, so task heads such as
``BertForSequenceClassification`` work too) and, for each block, can
- ``dense(block)``: the original FFN as a module ``x -> what the FFN adds`` (before any residual,
  dropout or norm the architecture applies outside it),
- ``install(block, lite)``: put a lite layer there so the block computes the same thing with the
  lite layer in place of the FFN,
- ``lite(block)``: the installed lite layer, or None.

The lite layer always replaces the whole FFN; anything the architecture does around it (BERT's
dropout + LayerNorm(h + input) in ``BertOutput``, GPT-2's residual dropout) is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from liteffn.layers.base import FFNLayer

__all__ = ["HANDLERS", "FFNSpec", "Handler", "handler_for"]


@dataclass(frozen=True)
class FFNSpec:
    """Shape of one dense FFN: ``d_model -> d_ff -> d_model``; ``gated`` for SwiGLU (3 matrices)."""

    d_model: int
    d_ff: int
    gated: bool = False

    @property
    def flops_per_token(self) -> int:
        """Multiply-adds x 2 of the dense FFN (2 matrices, or 3 when gated)."""
        return (6 if self.gated else 4) * self.d_model * self.d_ff


class _Seq(nn.Module):
    """A view of an FFN spread over modules the model owns: applies ``parts`` in order."""

    def __init__(self, *parts: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x):
        for p in self.parts:
            x = p(x)
        return x


class Handler:
    """Base: subclasses set ``name``, ``model_types`` and implement the block methods (``spec``
    and ``dense`` only on a block that still holds its dense FFN)."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    example: str = ""  # a Hugging Face class it handles, for messages

    def is_block(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def spec(self, block: nn.Module) -> FFNSpec:
        raise NotImplementedError

    def dense(self, block: nn.Module) -> nn.Module:
        raise NotImplementedError

    def install(self, block: nn.Module, lite: nn.Module) -> None:
        raise NotImplementedError

    def entry(self, block: nn.Module) -> nn.Module:
        """The module whose input is the FFN's input (the same slot before and after install)."""
        raise NotImplementedError

    def lite(self, block: nn.Module) -> FFNLayer | None:
        raise NotImplementedError

    def blocks(self, model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        """``(qualified name, block)`` for every block holding an FFN (dense or lite), in order."""
        for name, module in model.named_modules():
            if self.is_block(module):
                yield name, module


def _linear_dims(m: nn.Module) -> tuple[int, int]:
    """(in, out) of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (weight stored (in, out))."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if type(m).__name__ == "Conv1D":
        n_in, n_out = m.weight.shape
        return int(n_in), int(n_out)
    raise TypeError(f"expected nn.Linear or Conv1D, got {type(m).__name__}")


class BertHandler(Handler):
    """BERT/RoBERTa: ``intermediate`` (dense + act) then ``output.dense``; ``output`` itself applies
    dropout and LayerNorm(h + input), so the lite layer takes ``intermediate``'s place and
    ``output.dense`` becomes the identity."""

    name, model_types, example = "bert", ("bert", "roberta"), "BertModel"

    def is_block(self, m):
        return hasattr(m, "intermediate") and hasattr(getattr(m, "output", None), "LayerNorm")

    def spec(self, block):
        d_model, d_ff = _linear_dims(block.intermediate.dense)
        return FFNSpec(d_model, d_ff)

    def dense(self, block):
        return _Seq(block.intermediate, block.output.dense)

    def entry(self, block):
        return block.intermediate

    def install(self, block, lite):
        block.intermediate = lite
        block.output.dense = nn.Identity()

    def lite(self, block):
        return block.intermediate if isinstance(block.intermediate, FFNLayer) else None


class ViTHandler(BertHandler):
    """ViT: either ``mlp`` (fc1, act, fc2; transformers >= 5) or, in older releases,
    ``intermediate`` then ``output`` (dense + dropout + residual)."""

    name, model_types, example = "vit", ("vit",), "ViTModel"

    def is_block(self, m):
        if hasattr(m, "layernorm_after") and hasattr(m, "mlp"):
            return True
        return hasattr(m, "layernorm_after") and hasattr(m, "intermediate")

    def _mlp(self, block):
        return getattr(block, "mlp", None)

    def spec(self, block):
        if self._mlp(block) is None:
            return super().spec(block)
        d_model, d_ff = _linear_dims(block.mlp.fc1)
        return FFNSpec(d_model, d_ff)

    def dense(self, block):
        if self._mlp(block) is None:
            return super().dense(block)
        return block.mlp

    def entry(self, block):
        return block.intermediate if self._mlp(block) is None else block.mlp

    def install(self, block, lite):
        if self._mlp(block) is None:
            return super().install(block, lite)
        block.mlp = lite

    def lite(self, block):
        m = self._mlp(block)
        if m is None:
            return super().lite(block)
        return m if isinstance(m, FFNLayer) else None


class _MLPHandler(Handler):
    """Architectures whose block holds the FFN as one module ``mlp``, replaced whole."""

    def is_block(self, m):
        return isinstance(getattr(m, "mlp", None), nn.Module) and self._ok(m.mlp)

    def _ok(self, mlp: nn.Module) -> bool:
        raise NotImplementedError

    def dense(self, block):
        return block.mlp

    def entry(self, block):
        return block.mlp

    def lite(self, block):
        return block.mlp if isinstance(block.mlp, FFNLayer) else None

    def spec(self, block):
        return self._dense_spec(block.mlp)


class LlamaHandler(_MLPHandler):
    """Llama (SmolLM2): ``mlp`` = down(act(gate(x)) * up(x)), SwiGLU; replaced whole."""

    name, model_types, example = "llama", ("llama",), "LlamaForCausalLM"

    def _ok(self, mlp):
        return isinstance(mlp, FFNLayer) or all(
            hasattr(mlp, a) for a in ("gate_proj", "up_proj", "down_proj")
        )

    def _dense_spec(self, mlp):
        d_model, d_ff = _linear_dims(mlp.gate_proj)
        return FFNSpec(d_model, d_ff, gated=True)

    def install(self, block, lite):
        block.mlp = lite


class GPT2Handler(_MLPHandler):
    """GPT-2: ``mlp`` = dropout(c_proj(act(c_fc(x)))) with Conv1D projections; the lite layer
    takes ``c_fc``'s place, ``act`` and ``c_proj`` become identities, the dropout stays."""

    name, model_types, example = "gpt2", ("gpt2",), "GPT2LMHeadModel"

    def _ok(self, mlp):
        return hasattr(mlp, "c_fc") and hasattr(mlp, "c_proj")

    def _dense_spec(self, mlp):
        d_model, d_ff = _linear_dims(mlp.c_fc)
        return FFNSpec(d_model, d_ff)

    def dense(self, block):
        return _Seq(block.mlp.c_fc, block.mlp.act, block.mlp.c_proj)

    def entry(self, block):
        return block.mlp.c_fc

    def lite(self, block):
        return block.mlp.c_fc if isinstance(block.mlp.c_fc, FFNLayer) else None

    def install(self, block, lite):
        block.mlp.c_fc = lite
        block.mlp.act = nn.Identity()
        block.mlp.c_proj = nn.Identity()


HANDLERS: dict[str, Handler] = {
    h.name: h for h in (BertHandler(), LlamaHandler(), GPT2Handler(), ViTHandler())
}


def handler_for(model: nn.Module) -> Handler:
    """The handler of ``model``'s architecture (by ``model.config.model_type``), or a ValueError
    listing the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for h in HANDLERS.values():
        if model_type in h.model_types:
            return h
    supported = ", ".join(
        f"{t} (e.g. {h.example})" for h in HANDLERS.values() for t in h.model_types
    )
    raise ValueError(
        f"unsupported architecture: {type(model).__name__} (model_type={model_type!r}); "
        f"liteffn can convert: {supported}"
    )
