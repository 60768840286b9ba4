"""Convert pretrained Hugging Face models: swap their dense FFNs for lite layers (``convert_``),
fit the new layers to the original FFNs (``distill_``), save and load (``save_pretrained``,
``from_pretrained``).

Example:
    >>> from liteffn.config import FFFConfig
    >>> teacher = copy.deepcopy(model)
    >>> convert_(model, FFFConfig(depth=5, trees=16))
    >>> distill_(model, teacher, texts, tokenizer=tokenizer)
    >>> save_pretrained(model, "out/")
"""

from liteffn.convert._convert import convert_, ffn_flops, lite_layers, record_of
from liteffn.convert.distill import distill_, make_batches
from liteffn.convert.handlers import HANDLERS, FFNSpec, Handler, handler_for
from liteffn.convert.io import CheckpointError, from_pretrained, save_pretrained

__all__ = [
    "HANDLERS",
    "CheckpointError",
    "FFNSpec",
    "Handler",
    "convert_",
    "distill_",
    "ffn_flops",
    "from_pretrained",
    "handler_for",
    "lite_layers",
    "make_batches",
    "record_of",
    "save_pretrained",
]
