"""FastFeedForward: a binary tree of neurons, one root-to-leaf path per token.

UltraFastBERT form (Belcak & Wattenhofer, "Exponentially Faster Language Modelling", 2023), the
default: ``trees`` heap-ordered trees of ``depth+1`` levels; every visited node is a neuron whose
GELU output is added along the path (see ``liteffn.ops.fff`` for the exact definition). The
original FFF form ("Fast Feedforward Networks", 2023) with ``leaf_width > 0``: ``depth`` levels of
routing hyperplanes, then a small MLP leaf; soft mixture of leaves at training, hard descent at
inference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from liteffn import ops
from liteffn.cost import Cost
from liteffn.layers.base import FFNLayer, NativeEvalCall
from liteffn.ops import _hugemem
from liteffn.ops import fff as fff_ops

__all__ = ["FastFeedForward", "load_ultrafastbert_ffns"]

_F32 = torch.float32
_HUGE_ADVICE_MIN = 8 << 20  # weights from which huge-page backing pays (a few 2 MiB pages)


class FastFeedForward(NativeEvalCall, FFNLayer):
    """Tree FFN: each token evaluates ``trees * (depth+1)`` of ``trees * (2**(depth+1)-1)``
    neurons (UltraFastBERT form), or, with ``leaf_width > 0``, walks ``depth`` routing levels
    to one of ``2**depth`` MLP leaves of that width (original FFF form).

    Parameters (UltraFastBERT form): ``w_in`` (trees·nodes, d_model), ``b_in`` (trees·nodes,),
    ``w_out`` (trees·nodes, d_model), optional ``b_out`` (d_model,). Training uses hard routing
    and gathers only the visited rows; ``eval()`` runs the native kernel.

    Leaf form adds ``leaf_w1`` (trees·leaves, leaf_width, d_model), ``leaf_b1`` (trees·leaves,
    leaf_width), ``leaf_w2`` (trees·leaves, leaf_width, d_model), ``leaf_b2`` (trees·leaves,
    d_model); ``w_in``/``b_in`` hold the ``2**depth - 1`` routing nodes per tree. Training mixes
    all leaves softly (sigmoid node decisions, optional ``region_leak``) and records the mean
    decision entropy for ``hardening_loss()``; inference takes the hard path (native kernel
    for float32, ``reference()`` in PyTorch).

    Example:
        >>> ffn = FastFeedForward(768, depth=11).eval()
        >>> ffn(torch.randn(2, 5, 768)).shape
        torch.Size([2, 5, 768])
    """

    def __init__(
        self,
        d_model: int,
        depth: int = 11,
        trees: int = 1,
        bias_out: bool = False,
        leaf_width: int = 0,
        *,
        region_leak: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model < 1:
            raise ValueError(f"FastFeedForward: d_model must be >= 1, got {d_model}")
        if not 0 <= depth <= 20:
            raise ValueError(f"FastFeedForward: depth must be in [0, 20], got {depth}")
        if trees < 1:
            raise ValueError(f"FastFeedForward: trees must be >= 1, got {trees}")
        if leaf_width < 0:
            raise ValueError(f"FastFeedForward: leaf_width must be >= 0, got {leaf_width}")
        if not 0.0 <= region_leak < 0.5:
            raise ValueError(f"FastFeedForward: region_leak must be in [0, 0.5), got {region_leak}")
        self.d_model, self.depth, self.trees = d_model, depth, trees
        self.leaf_width, self.region_leak = leaf_width, region_leak
        self.has_native = leaf_width == 0 or trees <= 64  # leaf kernel: up to 64 trees
        d = d_model
        if leaf_width == 0:
            self.nodes = 2 ** (depth + 1) - 1
            rows = trees * self.nodes
            # the eval kernel reads these at random rows: large ones go on huge pages
            self.w_in = nn.Parameter(_hugemem.empty((rows, d)))
            self.b_in = nn.Parameter(torch.empty(rows))
            self.w_out = nn.Parameter(_hugemem.empty((rows, d)))
        else:
            self.nodes, self.leaves = 2**depth - 1, 2**depth
            rows, lv = trees * self.nodes, trees * self.leaves
            self.w_in = nn.Parameter(torch.empty(rows, d))
            self.b_in = nn.Parameter(torch.empty(rows))
            self.leaf_w1 = nn.Parameter(torch.empty(lv, leaf_width, d))
            self.leaf_b1 = nn.Parameter(torch.empty(lv, leaf_width))
            self.leaf_w2 = nn.Parameter(torch.empty(lv, leaf_width, d))
            self.leaf_b2 = nn.Parameter(torch.empty(lv, d))
        self.register_parameter("b_out", nn.Parameter(torch.zeros(d)) if bias_out else None)
        self._entropy: torch.Tensor | None = None
        # the native eval call (FFFEval) for the weights as last validated (see _build_fast);
        # NativeEvalCall.__call__ calls it first
        self._eval_call = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear-style uniform init, fan-in = the inputs each neuron actually sums."""
        bound_in = 1.0 / math.sqrt(self.d_model)
        nn.init.uniform_(self.w_in, -bound_in, bound_in)
        nn.init.uniform_(self.b_in, -bound_in, bound_in)
        if self.leaf_width == 0:
            bound_out = 1.0 / math.sqrt(self.trees * (self.depth + 1))
            nn.init.uniform_(self.w_out, -bound_out, bound_out)
        else:
            bound_hid = 1.0 / math.sqrt(self.leaf_width * self.trees)
            for p in (self.leaf_w1, self.leaf_b1):
                nn.init.uniform_(p, -bound_in, bound_in)
            for p in (self.leaf_w2, self.leaf_b2):
                nn.init.uniform_(p, -bound_hid, bound_hid)
        if self.b_out is not None:
            nn.init.zeros_(self.b_out)

    # -- eval fast path ---------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            y = self._fast_eval(x)
            if y is not None:
                return y
        return super().forward(x)

    def _fast_eval(self, x) -> torch.Tensor | None:
        """The kernel through the cached native FFFEval, or None when x or the layer is
        unusual (then FFNLayer.forward handles it)."""
        return self._native_eval(x, self._rebuild_fast)

    def _rebuild_fast(self) -> bool:
        # first call, or the weights changed: validate and rebuild
        if self.leaf_width or ops._native is None or not self._weights_ok():
            return False  # the leaf form takes FFNLayer.forward -> _native_forward
        self._build_fast()
        return True

    def _build_fast(self):
        """A native FFFEval for the current (validated) weights, cached in ``_eval_call``."""
        native = ops._native
        p = self._parameters
        # the kernel reads random rows: back the (large) weights with huge pages, in place
        for w in (p["w_in"], p["w_out"]):
            nbytes = w.numel() * 4
            if nbytes >= _HUGE_ADVICE_MIN:
                native.fff_advise_weights(w.data_ptr(), nbytes)
        self._eval_call = native.FFFEval(p, self.d_model, self.depth, self.trees, ops.torch_refs())
        return self._eval_call

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # the native FFFEval is rebuilt on demand, never pickled
        state["_eval_call"] = None
        return state

    def _weights_ok(self) -> bool:
        """Whether the parameters are what the kernel reads: contiguous f32 CPU, right shapes."""
        rows, d = self.trees * self.nodes, self.d_model
        want = [(self.w_in, (rows, d)), (self.b_in, (rows,)), (self.w_out, (rows, d))]
        if self.b_out is not None:
            want.append((self.b_out, (d,)))
        return all(
            t.dtype is _F32 and t.is_cpu and t.is_contiguous() and tuple(t.shape) == shape
            for t, shape in want
        )

    # -- FFNLayer hooks ---------------------------------------------------------------------

    def _native_forward(self, x2: torch.Tensor) -> torch.Tensor:
        b_out = None if self.b_out is None else self.b_out.detach().contiguous()
        if self.leaf_width:
            params = [self.w_in, self.b_in, self.leaf_w1, self.leaf_b1, self.leaf_w2, self.leaf_b2]
            if any(p.dtype != _F32 for p in params):
                return self._reference(x2)  # e.g. a double module fed float32
            w_in, b_in, w1, b1, w2, b2 = (p.detach().contiguous() for p in params)
            return fff_ops.fff_leaf_native(
                x2, w_in, b_in, w1, b1, w2, b2, self.depth, self.trees, b_out
            )
        return fff_ops.fff_native(
            x2,
            self.w_in.detach().contiguous(),
            self.b_in.detach().contiguous(),
            self.w_out.detach().contiguous(),
            self.depth,
            self.trees,
            b_out,
        )

    def _reference(self, x2: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.leaf_width:
                return self._leaf_hard(x2)
            return fff_ops.fff_reference(
                x2, self.w_in, self.b_in, self.w_out, self.depth, self.trees, self.b_out
            )

    def _train_forward(self, x2: torch.Tensor) -> torch.Tensor:
        if self.leaf_width:
            return self._leaf_soft(x2)
        y = fff_ops.fff_train(x2, self.w_in, self.b_in, self.w_out, self.depth, self.trees)
        return y if self.b_out is None else y + self.b_out

    # -- original FFF form (leaves) ---------------------------------------------------------

    def _leaf_soft(self, x2: torch.Tensor) -> torch.Tensor:
        """Soft mixture of all leaves, weighted by the product of sigmoid decisions on the path."""
        n, d, w = x2.shape[0], self.d_model, self.leaf_width
        y = x2.new_zeros(n, d) if self.b_out is None else self.b_out.expand(n, d)
        entropies = []
        for t in range(self.trees):
            nodes = slice(t * self.nodes, (t + 1) * self.nodes)
            leaves = slice(t * self.leaves, (t + 1) * self.leaves)
            mix = x2.new_ones(n, 1)  # (N, 2**level): probability of reaching each node
            if self.nodes:
                c = torch.sigmoid(F.linear(x2, self.w_in[nodes], self.b_in[nodes]))  # (N, nodes)
                if self.region_leak > 0 and self.training:
                    flip = torch.rand_like(c) < self.region_leak
                    c = torch.where(flip, 1 - c, c)  # leak: swap the two regions at random
                entropies.append(_binary_entropy(c))
                for level in range(self.depth):
                    cl = c[:, 2**level - 1 : 2 ** (level + 1) - 1]  # (N, 2**level): P(right)
                    mix = torch.stack((mix * (1 - cl), mix * cl), dim=2).flatten(1)  # children
            w1 = self.leaf_w1[leaves].reshape(-1, d)  # (leaves*W, d)
            h = F.gelu(F.linear(x2, w1, self.leaf_b1[leaves].reshape(-1)))  # (N, leaves*W)
            h = (h.view(n, self.leaves, w) * mix.unsqueeze(2)).view(n, -1)  # mixture-weighted
            y = y + h @ self.leaf_w2[leaves].reshape(-1, d) + mix @ self.leaf_b2[leaves]
        self._entropy = torch.cat(entropies, 1).mean() if entropies else x2.new_zeros(())
        return y

    def _leaf_hard(self, x2: torch.Tensor) -> torch.Tensor:
        """Hard descent (``a > 0`` goes right) to one leaf per tree, then that leaf's MLP."""
        n = x2.shape[0]
        y = x2.new_zeros(n, self.d_model) if self.b_out is None else self.b_out.expand(n, -1)
        y = y.clone()
        for t in range(self.trees):
            node = torch.zeros(n, dtype=torch.long)  # (N,) local node index
            for _ in range(self.depth):
                row = node + t * self.nodes
                a = (x2 * self.w_in[row]).sum(-1) + self.b_in[row]  # (N,)
                node = 2 * node + 1 + (a > 0).long()
            leaf = node - self.nodes + t * self.leaves  # (N,) global leaf index
            h = torch.bmm(self.leaf_w1[leaf], x2.unsqueeze(2)).squeeze(2)  # (N, W)
            h = F.gelu(h + self.leaf_b1[leaf])
            y += torch.bmm(h.unsqueeze(1), self.leaf_w2[leaf]).squeeze(1) + self.leaf_b2[leaf]
        return y

    def hardening_loss(self) -> torch.Tensor:
        """Mean binary entropy of the node decisions in the last training forward (leaf form).

        Add ``h * layer.hardening_loss()`` to the task loss to push decisions towards 0 or 1 so
        hard inference agrees with soft training.
        """
        if self._entropy is None:
            raise RuntimeError(
                "FastFeedForward.hardening_loss: expected a training forward of the leaf form "
                f"(leaf_width > 0) first, got leaf_width={self.leaf_width} / no forward yet"
            )
        return self._entropy

    # -- accounting, loading ----------------------------------------------------------------

    def cost(self) -> Cost:
        d, t = self.d_model, self.trees
        param_bytes = 4 * sum(p.numel() for p in self.parameters())
        b_out = 4 * d if self.b_out is not None else 0
        if self.leaf_width == 0:
            k = t * (self.depth + 1)
            return Cost(
                flops_per_token=k * 4 * d,
                param_bytes=param_bytes,
                bytes_per_token=k * 4 * (2 * d + 1) + b_out,
            )
        w = self.leaf_width
        route = t * self.depth * (2 * d)
        leaf = t * (4 * d * w)
        return Cost(
            flops_per_token=route + leaf,
            param_bytes=param_bytes,
            bytes_per_token=4 * t * (self.depth * (d + 1) + 2 * w * d + w + d) + b_out,
        )

    def load_ultrafastbert_(self, state_dict: Mapping[str, torch.Tensor], layer: int) -> None:
        """Copy layer ``layer``'s FFN from an UltraFastBERT state dict into this module.

        Reads ``encoder.layers.{layer}.ffn.linear_in.{weight,bias}`` (trees·nodes, d) and
        ``...ffn.linear_out.weight`` (d, trees·nodes), which is transposed into ``w_out``.
        """
        if self.leaf_width:
            raise ValueError("load_ultrafastbert_: expected the UltraFastBERT form (leaf_width=0)")
        prefix = f"encoder.layers.{layer}.ffn."
        rows, d = self.trees * self.nodes, self.d_model
        pairs = [
            ("linear_in.weight", self.w_in, (rows, d), False),
            ("linear_in.bias", self.b_in, (rows,), False),
            ("linear_out.weight", self.w_out, (d, rows), True),
        ]
        with torch.no_grad():
            for name, param, shape, transpose in pairs:
                key = prefix + name
                if key not in state_dict:
                    raise KeyError(f"load_ultrafastbert_: expected key {key!r} in the state dict")
                src = state_dict[key]
                if tuple(src.shape) != shape:
                    raise ValueError(
                        f"load_ultrafastbert_: {key} expected shape {shape} (depth={self.depth}, "
                        f"trees={self.trees}, d_model={d}), got {tuple(src.shape)}"
                    )
                param.copy_(src.t() if transpose else src)  # contiguous: copy_ lays it out

    def extra_repr(self) -> str:
        s = f"d_model={self.d_model}, depth={self.depth}, trees={self.trees}"
        if self.b_out is not None:
            s += ", bias_out=True"
        if self.leaf_width:
            s += f", leaf_width={self.leaf_width}, region_leak={self.region_leak}"
        return s


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of Bernoulli(p), 0 at p in {0, 1}."""
    eps = torch.finfo(p.dtype).tiny
    return -(p * torch.log(p.clamp_min(eps)) + (1 - p) * torch.log((1 - p).clamp_min(eps)))


_UFB_KEY = re.compile(r"^encoder\.layers\.(\d+)\.ffn\.linear_in\.weight$")


def load_ultrafastbert_ffns(
    state_dict: Mapping[str, torch.Tensor], depth: int = 11
) -> dict[int, FastFeedForward]:
    """Build one ``FastFeedForward`` per encoder layer found in an UltraFastBERT state dict.

    ``depth`` is the tree depth the checkpoint was trained with (11 for UltraFastBERT-1x11);
    ``trees`` follows from the row count of ``linear_in.weight``, which must be a multiple of
    ``2**(depth+1) - 1``.
    """
    nodes = 2 ** (depth + 1) - 1
    layers: dict[int, FastFeedForward] = {}
    for key, w in state_dict.items():
        m = _UFB_KEY.match(key)
        if m is None:
            continue
        rows, d = w.shape
        if rows % nodes:
            raise ValueError(
                f"load_ultrafastbert_ffns: {key} expected a multiple of {nodes} rows "
                f"(depth={depth}), got shape {tuple(w.shape)}"
            )
        i = int(m.group(1))
        layer = FastFeedForward(d, depth=depth, trees=rows // nodes)
        layer.load_ultrafastbert_(state_dict, i)
        layers[i] = layer
    if not layers:
        raise KeyError(
            "load_ultrafastbert_ffns: expected keys 'encoder.layers.{i}.ffn.linear_in.weight', "
            "found none"
        )
    return dict(sorted(layers.items()))
