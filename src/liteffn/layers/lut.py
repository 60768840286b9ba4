"""LUTFFN: a weightless feed-forward block (DWN / QuWeiT style).

Thermometer-encode each channel into ``T`` bits, feed the bits through layers of small learned
truth tables (``LUTLayer``: each LUT reads ``n`` bits and outputs one), count the output bits of
each channel's group and map the count back to a real value with a per-channel affine.

Training follows Bacellar et al., "Differentiable Weightless Neural Networks" (DWN, ICML 2024):
the hard forward pass is kept and the backward pass uses the Extended Finite Difference (EFD),
built here once per backward as a (luts, n, 2^n) weight table, so each sample costs one lookup per
LUT input. QuWeiT (Nag et al., 2024) uses this block in place of a ViT MLP.

Optimiser: the truth tables want a larger learning rate than thresholds and the affine (DWN
trains tables with Adam at ~1e-2). ``LUTFFN.param_groups(lr, table_lr)`` returns the two groups;
``table_lr`` defaults to ``10 * lr``. Tables are clamped to [-1, 1] at each training forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from liteffn import ops
from liteffn.cost import Cost
from liteffn.layers.base import FFNLayer, NativeEvalCall, check_input
from liteffn.ops import lut as lut_ops
from liteffn.ops.lut import lut_forward, lut_model

__all__ = ["LUTFFN", "LUTLayer", "efd_weights", "thermometer"]

BETA = 1.0 / 3.0  # EFD decay per Hamming step


def efd_alpha(n: int) -> float:
    """EFD scale ``0.5 * 0.75^(n-1)`` for ``n``-input LUTs."""
    return 0.5 * 0.75 ** (n - 1)


def efd_weights(table: torch.Tensor) -> torch.Tensor:
    """EFD input-gradient weights for every (slot, LUT, address): shape (n, out, 2^n).

    ``w[l, j, addr] = alpha * sum_a s_l(a) * beta^H_l(addr, a) * table[j, a]``, computed by
    smoothing the table with the two-tap filter [1, beta] along every bit but ``l`` and
    differencing along bit ``l`` (separable: cost out * n^2 * 2^n, not out * 4^n).
    """
    out, size = table.shape
    n = size.bit_length() - 1
    slots = []
    for l in range(n):
        s = table
        for k in range(n):
            pair = s.view(out, size >> (k + 1), 2, 1 << k)  # (out, high bits, bit k, low bits)
            lo, hi = pair[:, :, 0], pair[:, :, 1]
            if k == l:  # difference along bit l: the same value whatever addr_l is
                diff = hi - lo
                s = torch.stack((diff, diff), 2).view(out, size)
            else:  # smoothing: s'(addr_k) = s(addr_k) + beta * s(1 - addr_k)
                s = torch.stack((lo + BETA * hi, hi + BETA * lo), 2).view(out, size)
        slots.append(s)  # (out, 2^n)
    return efd_alpha(n) * torch.stack(slots)  # (n, out, 2^n)


def _addresses(bits: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """LSB-first LUT addresses: (N, in) 0/1 bits, (out, n) mapping -> (N, out) uint8."""
    addr = torch.zeros(bits.shape[0], mapping.shape[0], dtype=torch.uint8)
    for l in range(mapping.shape[1]):
        addr |= bits.index_select(1, mapping[:, l]).to(torch.uint8) << l  # (N, out)
    return addr


def _flat_index(addr: torch.Tensor, size: int) -> torch.Tensor:
    """(N, out) addresses -> (N, out) int64 indices into a flattened (out, size) table."""
    offsets = torch.arange(addr.shape[1], dtype=torch.int64) * size  # (out,)
    return addr.to(torch.int64) + offsets


def _native_f32(a: torch.Tensor, table: torch.Tensor) -> bool:
    """The native training kernels take float32 (other dtypes use the PyTorch path)."""
    return a.dtype == torch.float32 and table.dtype == torch.float32 and ops.native_available()


class _LUTFunction(torch.autograd.Function):
    """Hard LUT lookup with the straight-through table gradient and the EFD input gradient."""

    @staticmethod
    def forward(ctx, bits, table, mapping):
        ctx.in_features = bits.shape[1]
        if _native_f32(bits, table):
            addr, y = lut_ops.lut_train_forward(
                bits.contiguous(), mapping.contiguous(), table.detach().contiguous()
            )  # (N, out) uint8, (N, out) float32
            ctx.save_for_backward(addr, table, mapping)
            return y
        addr = _addresses(bits, mapping)  # (N, out) uint8
        values = table.gather(1, addr.t().long())  # (out, N); gather stays serial for small sizes
        ctx.save_for_backward(addr, table, mapping)
        return (values > 0).t().to(bits.dtype)  # (N, out)

    @staticmethod
    def backward(ctx, grad):
        addr, table, mapping = ctx.saved_tensors
        out, size = table.shape
        grad = grad.contiguous()
        grad_table = None
        if ctx.needs_input_grad[1] and _native_f32(grad, table):
            grad_table = lut_ops.lut_table_grad(grad, addr, size)  # (out, 2^n)
        elif ctx.needs_input_grad[1]:
            # index_add_ on CPU adds in index order: deterministic, no atomics.
            flat = _flat_index(addr, size)  # (N, out)
            grad_table = torch.zeros(out * size, dtype=grad.dtype)
            grad_table.index_add_(0, flat.reshape(-1), grad.reshape(-1))
            grad_table = grad_table.view(out, size)
        grad_bits = None
        if ctx.needs_input_grad[0]:
            if _native_f32(grad, table):
                n = mapping.shape[1]
                by_lut = lut_ops.lut_efd_weights(
                    table.detach().contiguous(), efd_alpha(n), BETA
                )  # (out, 2^n, n), once per backward
                grad_bits = lut_ops.lut_efd_input_grad_by_lut(
                    grad, addr, by_lut, mapping.contiguous(), ctx.in_features
                )
                return grad_bits, grad_table, None
            weights = efd_weights(table.to(grad.dtype))  # (n, out, 2^n), once per backward
            grad_bits = torch.zeros(grad.shape[0], ctx.in_features, dtype=grad.dtype)
            addr_t = addr.t().long()  # (out, N)
            for l in range(mapping.shape[1]):
                w = weights[l].gather(1, addr_t).t()  # (N, out): one lookup per sample and LUT
                grad_bits.index_add_(1, mapping[:, l], grad * w)
        return grad_bits, grad_table, None


class _LearnableMap(torch.autograd.Function):
    """DWN's learnable mapping: slot s reads input ``argmax(weight[s])``.

    Backward: ``d weight[s, i] = sum_b g[b, s] * (2 * bits[b, i] - 1)`` and
    ``d bits[b, i] = sum_s g[b, s] * softmax(weight[s] / tau)[i]``.
    """

    @staticmethod
    def forward(ctx, bits, weight, tau):
        index = weight.argmax(dim=1)  # (slots,)
        ctx.save_for_backward(bits, weight)
        ctx.tau = tau
        return bits[:, index]  # (N, slots)

    @staticmethod
    def backward(ctx, grad):
        bits, weight = ctx.saved_tensors
        grad_weight = grad.t() @ (2 * bits - 1) if ctx.needs_input_grad[1] else None
        grad_bits = None
        if ctx.needs_input_grad[0]:
            grad_bits = grad @ torch.softmax(weight / ctx.tau, dim=1)  # (N, in)
        return grad_bits, grad_weight, None


class _Thermometer(torch.autograd.Function):
    """``bits[:, c*T + i] = [x_c > t[c, i]]`` with the straight-through (identity) gradient."""

    @staticmethod
    def forward(ctx, x, thresholds):
        ctx.levels = thresholds.shape[1]
        return (x.unsqueeze(-1) > thresholds).to(x.dtype).flatten(1)  # (N, d*T), channel-major

    @staticmethod
    def backward(ctx, grad):
        g = grad.unflatten(1, (-1, ctx.levels))  # (N, d, T)
        return g.sum(2), -g.sum(0)  # d bit / d x = 1, d bit / d threshold = -1


def thermometer(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Hard thermometer bits (N, d) -> (N, d*T) bool, channel-major; NaN or ties give 0."""
    return (x.unsqueeze(-1) > thresholds).flatten(1)  # (N, d, T) -> (N, d*T)


class LUTLayer(nn.Module):
    """``out_features`` LUTs of ``lut_inputs`` bits each over ``in_features`` input bits.

    ``mapping`` (out, n) says which input bits each LUT reads ("random": concatenated random
    permutations of the inputs, so every input feeds about equally many LUTs; "learnable": DWN's
    learnable mapping, an argmax over a (out*n, in) weight matrix). ``table`` (out, 2^n) holds the
    truth tables; LUT ``j`` outputs ``[table[j, addr_j] > 0]`` with
    ``addr_j = sum_l b[mapping[j, l]] * 2^l``.

    Example:
        >>> layer = LUTLayer(32, 8, lut_inputs=4)
        >>> layer(torch.randint(0, 2, (5, 32)).float()).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        lut_inputs: int = 6,
        mapping: str = "random",
        *,
        mapping_tau: float = 1e-3,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"LUTLayer: in_features and out_features must be >= 1, got "
                f"{in_features}, {out_features}"
            )
        if not 1 <= lut_inputs <= 6:
            raise ValueError(f"LUTLayer: lut_inputs must be in [1, 6], got {lut_inputs}")
        if mapping not in ("random", "learnable"):
            raise ValueError(f"LUTLayer: mapping must be 'random' or 'learnable', got {mapping!r}")
        self.in_features, self.out_features, self.lut_inputs = in_features, out_features, lut_inputs
        self.mapping_kind, self.mapping_tau = mapping, mapping_tau
        n = lut_inputs
        slots = out_features * n
        perms = [torch.randperm(in_features) for _ in range(math.ceil(slots / in_features))]
        index = torch.cat(perms)[:slots].view(out_features, n)  # (out, n)
        self.register_buffer("mapping", index.clone())
        self.table = nn.Parameter(torch.empty(out_features, 2**n).uniform_(-1.0, 1.0))
        if mapping == "learnable":
            # Start at the random mapping: a small bump on the chosen input of every slot.
            weight = 0.01 * torch.randn(slots, in_features)
            weight[torch.arange(slots), index.view(-1)] += 1.0
            self.mapping_weight = nn.Parameter(weight)
            self._mapping_key: tuple[int, int] | None = None
            self.sync_mapping()

    def sync_mapping(self) -> None:
        """Refresh the ``mapping`` buffer from the learnable weights (argmax); no-op if random."""
        if self.mapping_kind != "learnable":
            return
        w = self.mapping_weight
        key = (w.data_ptr(), w._version)
        if key != self._mapping_key:
            with torch.no_grad():
                self.mapping.copy_(w.argmax(dim=1).view(self.out_features, self.lut_inputs))
            self._mapping_key = key

    def clamp_(self) -> None:
        """Clamp the tables to [-1, 1] (signs, hence the hard function, are unchanged)."""
        self.table.data.clamp_(-1.0, 1.0)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        """(N, in) float bits in {0, 1} -> (N, out) float bits, differentiable (EFD)."""
        if bits.dim() != 2 or bits.shape[1] != self.in_features:
            raise ValueError(
                f"LUTLayer: expected bits of shape (N, {self.in_features}), got {tuple(bits.shape)}"
            )
        if self.training:
            self.clamp_()
        if self.mapping_kind == "learnable":
            self.sync_mapping()
            sel = _LearnableMap.apply(bits, self.mapping_weight, self.mapping_tau)  # (N, out*n)
            ident = torch.arange(sel.shape[1]).view(self.out_features, self.lut_inputs)
            return _LUTFunction.apply(sel, self.table, ident)
        return _LUTFunction.apply(bits, self.table, self.mapping)

    def reference_bits(self, bits: torch.Tensor) -> torch.Tensor:
        """Hard path on booleans: (N, in) bool -> (N, out) bool."""
        self.sync_mapping()
        addr = _addresses(bits, self.mapping)  # (N, out)
        values = self.table.detach().gather(1, addr.t().long())  # (out, N)
        return (values > 0).t()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"lut_inputs={self.lut_inputs}, mapping={self.mapping_kind!r}"
        )


def _hidden_sizes(hidden_luts: int | Sequence[int] | None, d_model: int) -> list[int]:
    if hidden_luts is None:
        return [16 * d_model]
    if isinstance(hidden_luts, int) and not isinstance(hidden_luts, bool):
        sizes = [hidden_luts]
    elif isinstance(hidden_luts, Sequence) and not isinstance(hidden_luts, str):
        sizes = list(hidden_luts)
    else:
        raise ValueError(
            f"LUTFFN: hidden_luts must be None, an int or a sequence of ints, got {hidden_luts!r}"
        )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ValueError(f"LUTFFN: hidden layer sizes must be ints >= 1, got {hidden_luts!r}")
    return sizes


class LUTFFN(NativeEvalCall, FFNLayer):
    """Weightless FFN: thermometer bits -> LUT layers -> group popcount -> per-channel affine.

    * ``bits[:, c*T + i] = [x_c > thresholds[c, i]]`` (``T = bits_per_channel``; ties and NaN
      give 0), thresholds initialised at Gaussian quantiles ``Phi^-1(i / (T+1))`` or fitted to
      data with ``fit(x)``; learnable with a straight-through gradient.
    * ``LUTLayer``s of ``hidden_luts`` LUTs (an int: one layer; a sequence: one layer each, empty
      for none; ``None``: ``16 * d_model``), then one of ``d_model * luts_per_output`` LUTs.
    * ``count_c`` = number of set bits among outputs ``c*g ... c*g + g - 1`` (``g =
      luts_per_output``); ``y_c = scale_c * (2 * count_c / g - 1) + shift_c``.

    ``first_mapping="learnable"`` gives the first LUT layer DWN's learnable mapping. Train with
    ``param_groups(lr, table_lr)`` (tables want a higher learning rate).

    Example:
        >>> ffn = LUTFFN(16, bits_per_channel=4, hidden_luts=64, luts_per_output=8).eval()
        >>> ffn(torch.randn(2, 3, 16)).shape
        torch.Size([2, 3, 16])
    """

    has_native = True

    def __init__(
        self,
        d_model: int,
        bits_per_channel: int = 8,
        hidden_luts: int | Sequence[int] | None = None,
        luts_per_output: int = 16,
        lut_inputs: int = 6,
        *,
        first_mapping: str = "random",
    ) -> None:
        super().__init__()
        if d_model < 1:
            raise ValueError(f"LUTFFN: d_model must be >= 1, got {d_model}")
        if bits_per_channel < 1:
            raise ValueError(f"LUTFFN: bits_per_channel must be >= 1, got {bits_per_channel}")
        if luts_per_output < 1:
            raise ValueError(f"LUTFFN: luts_per_output must be >= 1, got {luts_per_output}")
        self.d_model, self.bits_per_channel = d_model, bits_per_channel
        self.luts_per_output, self.lut_inputs = luts_per_output, lut_inputs
        self.hidden_luts = _hidden_sizes(hidden_luts, d_model)
        T = bits_per_channel
        q = torch.arange(1, T + 1, dtype=torch.float64) / (T + 1)
        self.thresholds = nn.Parameter(
            torch.special.ndtri(q).float().expand(d_model, T).clone()  # (d, T)
        )
        widths = [d_model * T, *self.hidden_luts, d_model * luts_per_output]
        self.layers = nn.ModuleList(
            LUTLayer(widths[k], widths[k + 1], lut_inputs, first_mapping if k == 0 else "random")
            for k in range(len(widths) - 1)
        )
        self.scale = nn.Parameter(torch.ones(d_model))
        self.shift = nn.Parameter(torch.zeros(d_model))
        self._packed = None
        self._packed_key: tuple | None = None
        self._eval_call = None  # native LutEval over _packed (NativeEvalCall.__call__ calls it)

    # -- training ---------------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> LUTFFN:
        """Set the thresholds to the per-channel quantiles ``i / (T+1)`` of ``x`` (..., d)."""
        check_input(x, self.d_model, "LUTFFN.fit")
        x2 = x.detach().reshape(-1, self.d_model).float()  # (N, d)
        if x2.shape[0] == 0:
            raise ValueError("LUTFFN.fit: expected at least one token, got an empty batch")
        T = self.bits_per_channel
        s = x2.sort(dim=0).values  # (N, d); NaN sorts last
        pos = torch.arange(1, T + 1, dtype=torch.float64) / (T + 1) * (s.shape[0] - 1)  # (T,)
        lo = pos.floor().long()
        hi = pos.ceil().long()
        frac = (pos - lo).float().unsqueeze(1)  # (T, 1)
        q = s[lo] + (s[hi] - s[lo]) * frac  # (T, d), linear interpolation
        self.thresholds.copy_(q.t())
        return self

    def param_groups(self, lr: float, table_lr: float | None = None) -> list[dict]:
        """Optimiser groups: truth tables at ``table_lr`` (default ``10 * lr``), the rest at ``lr``.

        Example:
            >>> opt = torch.optim.Adam(LUTFFN(8, hidden_luts=32).param_groups(1e-3))
        """
        tables = [layer.table for layer in self.layers]
        ids = {id(t) for t in tables}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [
            {"params": tables, "lr": 10 * lr if table_lr is None else table_lr},
            {"params": rest, "lr": lr},
        ]

    def _affine(self, count: torch.Tensor) -> torch.Tensor:
        """``scale * (2 * count / g - 1) + shift`` in the parameters' dtype (float32).

        The kernel reads a (d, g+1) table of this same expression, so results are bit-exact.
        """
        c = count.to(self.scale.dtype)
        return self.scale * (2.0 * c / self.luts_per_output - 1.0) + self.shift

    def _train_forward(self, x2: torch.Tensor) -> torch.Tensor:
        bits = _Thermometer.apply(x2, self.thresholds)  # (N, d*T)
        for layer in self.layers:
            bits = layer(bits)  # (N, width)
        count = bits.view(x2.shape[0], self.d_model, self.luts_per_output).sum(2)  # (N, d)
        return self._affine(count).to(x2.dtype)

    # -- inference --------------------------------------------------------------------------

    def _reference(self, x2: torch.Tensor) -> torch.Tensor:
        bits = thermometer(x2, self.thresholds.detach())  # (N, d*T) bool
        for layer in self.layers:
            bits = layer.reference_bits(bits)  # (N, width) bool
        count = bits.view(x2.shape[0], self.d_model, self.luts_per_output).sum(2)  # (N, d)
        return self._affine(count).detach().to(x2.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Lean eval path: batch 1 is dominated by Python overhead, so every tensor call counts.
        if (
            self.training
            or type(x) is not torch.Tensor
            or x.dtype != torch.float32
            or not x.is_cpu
            or x.dim() == 0
            or x.shape[-1] != self.d_model
            or (x.requires_grad and torch.is_grad_enabled())
        ):
            return super().forward(x)  # checks the input, raises with a clear message
        y = self._fast_eval(x)
        if y is not None:
            return y
        model = self.native_model()
        if model is None:
            return super().forward(x)
        x2 = x if x.dim() == 2 and x.is_contiguous() else x.reshape(-1, self.d_model).contiguous()
        y = torch.empty(x.shape, dtype=torch.float32)  # (..., d), written by the kernel
        model.forward(x2.data_ptr(), x2.shape[0], y.data_ptr(), torch.get_num_threads())
        return y

    def _fast_eval(self, x: torch.Tensor) -> torch.Tensor | None:
        """The kernel through the native LutEval built with the packed model, or None when x
        is unusual (not contiguous, ...: forward then handles it) or there is no native model."""
        return self._native_eval(x, self._repack)

    def _repack(self) -> bool:
        self._packed_key = None  # first call, or a tensor the model was packed from changed
        return self.native_model() is not None

    def _use_native(self, x2: torch.Tensor) -> bool:
        return super()._use_native(x2) and self.thresholds.dtype == torch.float32

    def _native_forward(self, x2: torch.Tensor) -> torch.Tensor:
        return lut_forward(self.native_model(), x2, self.d_model)

    def _packed_from(self) -> list[tuple[dict, str]]:
        """(dict, name) of every tensor the packed model depends on: this module's and its
        LUT layers' ``_parameters`` / ``_buffers`` entries."""
        # Direct dict access: nn.Module.__getattr__ would cost ~20 µs here, per call.
        p = self._parameters
        entries = [(p, "thresholds"), (p, "scale"), (p, "shift")]
        for layer in self._modules["layers"]._modules.values():
            entries += [(layer._parameters, "table"), (layer._buffers, "mapping")]
            if "mapping_weight" in layer._parameters:
                entries.append((layer._parameters, "mapping_weight"))
        return entries

    def _state_key(self) -> tuple:
        return tuple((d[k].data_ptr(), d[k]._version) for d, k in self._packed_from())

    def native_model(self):
        """The packed native network for the current parameters, or None when the native
        module is missing or the parameters are not float32. Repacked when any parameter
        changes (tracked by tensor version counters, so in-place optimiser steps are seen)."""
        key = self._state_key()
        if key != self._packed_key:
            if not ops.native_available() or self.thresholds.dtype != torch.float32:
                return None
            for layer in self.layers:
                layer.sync_mapping()
            with torch.no_grad():
                d, g = self.d_model, self.luts_per_output
                counts = torch.arange(g + 1).unsqueeze(1).expand(g + 1, d)  # (g+1, d)
                affine = self._affine(counts).t().float().contiguous()  # (d, g+1)
                self._packed = lut_model(
                    self.thresholds.detach().float().contiguous(),
                    affine,
                    [layer.mapping.contiguous() for layer in self.layers],
                    [layer.table.detach().float().contiguous() for layer in self.layers],
                )
            self._packed_key = self._state_key()
            self._eval_call = ops.native().LutEval(
                self._packed, self.d_model, self._packed_from(), ops.torch_refs()
            )
        return self._packed

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # the native model is rebuilt on demand, never pickled
        state["_packed"], state["_packed_key"], state["_eval_call"] = None, None, None
        return state

    def cost(self) -> Cost:
        d, T, g, n = self.d_model, self.bits_per_channel, self.luts_per_output, self.lut_inputs
        luts = sum(layer.out_features for layer in self.layers)
        # Kernel storage: thresholds (f32), one bit per table entry, int32 mapping, the
        # (d, g+1) f32 affine table. Every token reads all of it.
        stored = 4 * d * T + luts * ((2**n + 7) // 8) + 4 * luts * n + 4 * d * (g + 1)
        return Cost(
            flops_per_token=d * T + luts + 2 * d, param_bytes=stored, bytes_per_token=stored
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, bits_per_channel={self.bits_per_channel}, "
            f"hidden_luts={self.hidden_luts}, luts_per_output={self.luts_per_output}, "
            f"lut_inputs={self.lut_inputs}"
        )
