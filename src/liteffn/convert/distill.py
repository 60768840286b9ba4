"""``distill_``: fit the lite layers of a converted model to the dense FFNs of its teacher.

1. Layer by layer: record each FFN's inputs on calibration data and the teacher FFN's outputs on
   those inputs, then fit the lite layer by MSE. ``sequential=True`` (default) records layer
   ``i``'s inputs from the student with layers ``< i`` already fitted, so each layer learns to
   work on the inputs it will really get; ``False`` records every layer in one teacher pass.
2. Optionally end to end: the student's final hidden states (per-token cosine + relative MSE)
   or logits (KL) against the teacher's, with the rest of the model frozen (default) or trainable.

Resumable: with ``checkpoint`` set, progress is saved after every layer and every
``save_every`` end-to-end steps, and a rerun continues where it stopped. Under ``torchrun`` the
calibration batches are sharded over ranks and gradients averaged; rank 0 shows progress and
writes checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from liteffn.convert._convert import lite_layers, record_of
from liteffn.convert.handlers import handler_for

__all__ = [
    "distill_",
    "fit_fff_outputs_",
    "fit_lookup_tables_",
    "init_fff_from_dense_",
    "make_batches",
    "remove_checkpoint",
    "ridge_backfit",
]

Batch = dict[str, torch.Tensor]


# -- data -----------------------------------------------------------------------------------


def make_batches(
    data: Any, tokenizer: Any = None, batch_size: int = 16, max_length: int = 128
) -> list[Batch]:
    """Model-input batches from ``data``: a list of strings (needs ``tokenizer``), a tensor of
    input ids (N, T) or images (N, C, H, W), or an iterable of ready batches (dicts)."""
    if isinstance(data, torch.Tensor):
        key = "pixel_values" if data.dim() == 4 else "input_ids"
        return [{key: data[i : i + batch_size]} for i in range(0, len(data), batch_size)]
    data = list(data)
    if not data:
        raise ValueError("distill_: the calibration data is empty")
    if isinstance(data[0], str):
        if tokenizer is None:
            raise ValueError("distill_: text calibration data needs tokenizer=")
        if getattr(tokenizer, "pad_token", "x") is None:
            tokenizer.pad_token = tokenizer.eos_token
        out = []
        for i in range(0, len(data), batch_size):
            enc = tokenizer(
                data[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out.append({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")})
        return out
    if isinstance(data[0], dict):
        return data
    raise TypeError(
        f"distill_: data must be a list of strings, a tensor or an iterable of dicts, "
        f"got a sequence of {type(data[0]).__name__}"
    )


# -- distributed ----------------------------------------------------------------------------


def _dist() -> tuple[int, int]:
    """(rank, world size); initialises gloo when launched by torchrun."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_grads(params: Sequence[nn.Parameter], world: int) -> None:
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def _all_mean(x: float, world: int) -> float:
    if world == 1:
        return x
    return float(_all_mean_tensor(torch.tensor([x], dtype=torch.float64), world))


def _all_mean_tensor(t: torch.Tensor, world: int) -> torch.Tensor:
    """Mean of ``t`` over ranks (each rank holds an equal share of the calibration data)."""
    if world == 1:
        return t
    import torch.distributed as dist

    t = t.detach().clone()
    dist.all_reduce(t)
    return t / world


def _broadcast_module(module: nn.Module, world: int) -> None:
    """Give every rank rank 0's parameters and buffers (after a data-dependent init)."""
    if world == 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


# -- recording ------------------------------------------------------------------------------


class _Stop(Exception):
    pass


@torch.no_grad()
def _record_inputs(
    model: nn.Module, entries: dict[str, nn.Module], batches: list[Batch], stop_after: str | None
) -> dict[str, torch.Tensor]:
    """Inputs of each module in ``entries`` over ``batches``, non-padding tokens only:
    name -> (N_tokens, d_model). Stops each forward pass once ``stop_after`` has been seen."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in entries}
    mask: list[torch.Tensor | None] = [None]

    def hook_for(name):
        def hook(_module, args):
            x = args[0].detach()
            m = mask[0]
            if m is not None and x.dim() == 3 and m.shape == x.shape[:2]:
                x = x[m.bool()]  # (B, T, d) -> (n_real_tokens, d)
            got[name].append(x.reshape(-1, x.shape[-1]).float().clone())
            if name == stop_after:
                raise _Stop

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in entries.items()]
    try:
        for b in batches:
            mask[0] = b.get("attention_mask")
            with contextlib.suppress(_Stop):  # the forward stops at the last layer needed
                model(**b)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(xs) for n, xs in got.items()}


# -- fitting --------------------------------------------------------------------------------


# Parameters through which each family's output is linear, last dim = d_model: scaling them
# along that dim scales output channels; and the output bias, if the layer has one.
_OUTPUT_PARAMS = {
    "FastFeedForward": (("w_out",), "b_out"),
    "LookupFFN": (("tables",), "bias"),
    "LUTFFN": (("scale",), "shift"),
    "DenseFFN": (("fc2.weight",), "fc2.bias"),
}


@torch.no_grad()
def _match_output_scale(lite: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Rescale a freshly built layer's output channels to the target's spread and mean, so the
    fit starts at the right scale (FFN outputs of a pretrained model differ a lot between models
    and channels)."""
    names, bias_name = _OUTPUT_PARAMS.get(type(lite).__name__, ((), None))
    if not names:
        return
    lite.eval()
    n = min(len(x), 8192)
    yh = lite(x[:n])  # (n, d)
    alpha = y[:n].std(0) / yh.std(0).clamp_min(1e-12)  # (d,)
    alpha = torch.where(torch.isfinite(alpha), alpha, torch.ones_like(alpha))
    params = dict(lite.named_parameters())
    for name in names:
        p = params[name]
        if name == "fc2.weight":  # nn.Linear stores (out, in): output channels are rows
            p.mul_(alpha.unsqueeze(1))
        else:
            p.mul_(alpha)  # (..., d) * (d,)
    bias = params.get(bias_name) if bias_name else None
    if bias is not None:
        bias.add_(y[:n].mean(0) - (alpha * yh).mean(0))


@torch.no_grad()
def ridge_backfit(
    codes: torch.Tensor,
    scores: torch.Tensor,
    y: torch.Tensor,
    rows: int,
    sweeps: int = 6,
    ridge: float = 1.0,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Ridge least squares for a map that is linear in a weight matrix ``W`` (rows, d) through
    a sparse, grouped selection: ``y_n ~ b + sum_g scores[n, g] * W[codes[n, g]]``, where within
    one group ``g`` the rows any token can select are disjoint from the other groups' rows.

    Within a group each token selects exactly one row, so the group's rows have disjoint
    supports and minimising over one group alone (the others fixed) is a closed form per row,
    ``W[r] = sum_{n: codes[n,g]=r} s_ng e_n / (sum s_ng^2 + lambda_g)`` with ``e`` the residual
    without group ``g``. Sweeping the groups in turn is block Gauss-Seidel on the ridge normal
    equations (it converges to the ridge solution); ``lambda_g = ridge * mean_n s_ng^2`` is worth
    ``ridge`` pseudo-tokens pulling a row to zero (or to ``init``'s row when ``init`` is given),
    so rows no calibration token reaches stay there. The bias ``b`` is unpenalised.
    Cost per sweep: O(N * G * d), like one epoch of gradient steps.

    codes (N, G) int row indices into W, scores (N, G), y (N, d) -> (W, b, residual MSE).
    """
    n, groups = codes.shape
    d = y.shape[1]
    codes = codes.long()
    prior = torch.zeros(rows, d) if init is None else init.float().clone()
    w = prior.clone()
    r = (
        y.float()
        - sum(  # (N, d) residual of the current fit
            (w[codes[:, g]] * scores[:, g : g + 1] for g in range(groups)), torch.zeros(n, d)
        )
    )
    bias = r.mean(0)  # (d,)
    r -= bias
    for _ in range(sweeps):
        for g in range(groups):
            c, sc = codes[:, g], scores[:, g].float()  # (N,), (N,)
            r.addcmul_(w[c], sc.unsqueeze(1))  # the residual without group g
            lam = ridge * float((sc * sc).mean()) + 1e-12
            # only the rows this group's tokens select change: solve for those (U of them), not
            # for all `rows` (a (rows, d) temporary per group was 75 MB for SmolLM2's tables)
            u, slot = torch.unique(c, return_inverse=True)  # (U,), (N,) index into u
            num = (lam * prior[u]).index_add_(0, slot, r * sc.unsqueeze(1))  # (U, d), summed
            den = torch.full((len(u),), lam).index_add_(0, slot, sc * sc)  # (U,)
            w[u] = num / den.unsqueeze(1)
            r.addcmul_(w[c], sc.unsqueeze(1), value=-1.0)
            shift = r.mean(0)  # the bias, an unpenalised group of its own, after every group
            bias += shift
            r -= shift
    return w, bias, float(r.pow(2).mean())


@torch.no_grad()
def ridge_solve(
    codes: torch.Tensor,
    scores: torch.Tensor,
    y: torch.Tensor,
    rows: int,
    ridge: float = 1.0,
    init: torch.Tensor | None = None,
    chunk: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The same ridge problem as ``ridge_backfit``, solved exactly through its normal equations
    (for a moderate number of rows: the Gram matrix is (rows + 1)^2; building it is a dense
    GEMM over token chunks, faster than backfitting when every token selects many rows).
    ``lambda_g = ridge * mean_n s_ng^2`` for group ``g``'s rows, pulling them to ``init`` (or 0);
    the bias is unpenalised. codes (N, G) int, scores (N, G), y (N, d) -> (W, b, residual MSE)."""
    n, d = codes.shape[0], y.shape[1]
    codes = codes.long()
    gram = torch.zeros(rows + 1, rows + 1, dtype=torch.float64)
    rhs = torch.zeros(rows + 1, d, dtype=torch.float64)
    for i in range(0, n, chunk):
        c, sc, yi = codes[i : i + chunk], scores[i : i + chunk].float(), y[i : i + chunk].float()
        a = torch.zeros(len(c), rows + 1)  # (n_i, rows + 1): the design rows, last = bias
        a.scatter_add_(1, c, sc)
        a[:, rows] = 1.0
        gram += (a.t() @ a).double()
        rhs += (a.t() @ yi).double()
    prior = torch.zeros(rows, d) if init is None else init.detach().float()
    lam = torch.full((rows,), 1e-9, dtype=torch.float64)  # per row, as ridge_backfit's groups
    for g in range(codes.shape[1]):
        lam[codes[:, g].unique()] += ridge * float((scores[:, g].double() ** 2).mean())
    idx = torch.arange(rows)
    gram[idx, idx] += lam
    rhs[:rows] += lam.unsqueeze(1) * prior.double()
    sol = torch.linalg.solve(gram, rhs)  # (rows + 1, d)
    w, bias = sol[:rows].float(), sol[rows].float()
    mse = 0.0
    for i in range(0, n, chunk):
        pred = _rows_out(w, codes[i : i + chunk], scores[i : i + chunk]) + bias
        mse += float(((pred - y[i : i + chunk].float()) ** 2).sum())
    return w, bias, mse / (n * d)


@torch.no_grad()
def fit_lookup_tables_(
    lite: nn.Module, x: torch.Tensor, y: torch.Tensor, sweeps: int = 6, ridge: float = 1.0
) -> tuple[float, float]:
    """Ridge least-squares fit of a ``LookupFFN``'s tables and bias to map x -> y with the
    projection fixed (``ridge_backfit``: the output is linear in the tables and each token reads
    one row per table); returns the relative MSE before and after. Rows no calibration token
    reaches become zero."""
    from liteffn.layers.lookup import codes_and_scores

    h, rows, d = lite.tables.shape
    tau = rows.bit_length() - 1
    z = torch.cat([lite.project(x[i : i + 8192]) for i in range(0, len(x), 8192)])  # (N, h*tau)
    codes, scores = codes_and_scores(z, h, tau)  # (N, h) each
    del z
    flat = codes.long() + torch.arange(h) * rows  # (N, h) rows of tables.reshape(h*rows, d)
    y = y.float()
    var = max(float(((y - y.mean(0)) ** 2).mean()), 1e-30)
    before = float((_rows_out(lite.tables, flat, scores) + lite.bias.float() - y).pow(2).mean())
    w, bias, mse = ridge_backfit(flat, scores, y, h * rows, sweeps, ridge)
    lite.tables.copy_(w.reshape(h, rows, d))
    lite.bias.copy_(bias)
    return before / var, mse / var


def _rows_out(weight: torch.Tensor, flat: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """sum_g scores[:, g] * weight.reshape(-1, d)[flat[:, g]]: (N, d)."""
    wf = weight.detach().float().reshape(-1, weight.shape[-1])
    out = torch.zeros(flat.shape[0], wf.shape[1])
    for g in range(flat.shape[1]):
        out.addcmul_(wf[flat[:, g]], scores[:, g : g + 1].float())
    return out


def dense_gelu_weights(dense: nn.Module, x: torch.Tensor):
    """``(W1 (f, d), b1 (f,), W2 (f, d), b2 (d,))`` when ``dense`` computes
    ``gelu(x W1^T + b1) W2 + b2`` (erf GELU; checked on ``x``), else None."""
    lins = [m for m in dense.modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]
    if len(lins) != 2:
        return None
    mats = []
    for m in lins:  # nn.Linear stores (out, in); GPT-2's Conv1D (in, out)
        w = m.weight.detach().float()
        mats.append((w if isinstance(m, nn.Linear) else w.t(), m.bias))
    (w1, b1), (w2, b2) = mats  # w1 (f, d), w2 (d, f)
    if w1.shape[0] != w2.shape[1] or w1.shape[1] != w2.shape[0]:
        return None
    b1 = torch.zeros(w1.shape[0]) if b1 is None else b1.detach().float()
    b2 = torch.zeros(w2.shape[0]) if b2 is None else b2.detach().float()
    xs = x[:256].float()
    with torch.no_grad():
        want = dense(xs).float()
    got = F.gelu(xs @ w1.t() + b1) @ w2.t() + b2
    if not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()) + 1e-6):
        return None
    return w1, b1, w2.t().contiguous(), b2


@torch.no_grad()
def init_fff_from_dense_(
    lite: nn.Module, dense: nn.Module, x: torch.Tensor, y: torch.Tensor, max_tokens: int = 8192
) -> bool:
    """Build a ``FastFeedForward`` (UltraFastBERT form) out of a dense GELU FFN's own neurons.

    Every FFF node is a GELU neuron and a token adds the outputs of the nodes on its path, so a
    node can be an exact copy of a dense neuron (``w_in``/``b_in`` its input row and bias,
    ``w_out`` its output row). The trees are grown greedily, level by level: at each node, among
    the tokens reaching it (calibration tokens ``x``), take the dense neuron whose output that
    the path does not yet cover matters most, ``sum_n (gelu(a_nj) - mean_j)^2 ||w2_j||^2``;
    the sign of its pre-activation routes the token on, exactly as the layer will. The output
    bias takes the mean of the neurons a token skips. Returns False (layer untouched) when the
    layer or the dense FFN does not fit this scheme."""
    if type(lite).__name__ != "FastFeedForward" or lite.leaf_width or lite.b_out is None:
        return False
    got = dense_gelu_weights(dense, x)
    if got is None:
        return False
    w1, b1, w2, b2 = got  # (f, d), (f,), (f, d), (d,)
    xs = x[:: max(1, len(x) // max_tokens)][:max_tokens].float()  # (n, d) evenly spaced
    n = len(xs)
    a = xs @ w1.t() + b1  # (n, f) pre-activations
    g = F.gelu(a)
    imp = (g - g.mean(0)) ** 2 * (w2**2).sum(1)  # (n, f) error of skipping neuron j for token n
    tokens = torch.arange(n)
    nodes = lite.nodes
    pick = torch.zeros(lite.trees * nodes, dtype=torch.long)
    for t in range(lite.trees):
        node = torch.zeros(n, dtype=torch.long)  # heap index within the tree
        for level in range(lite.depth + 1):
            first, width = 2**level - 1, 2**level
            local = node - first  # (n,) in [0, width)
            gain = torch.zeros(width, imp.shape[1]).index_add_(0, local, imp)  # (width, f)
            best = gain.argmax(1)  # (width,) a dense neuron per node of this level
            pick[t * nodes + first : t * nodes + first + width] = best
            j = best[local]  # (n,) the neuron each token evaluates here
            imp[tokens, j] = 0.0  # covered on this token's path
            node = 2 * node + 1 + (a[tokens, j] > 0).long()
    lite.w_in.copy_(w1[pick])
    lite.b_in.copy_(b1[pick])
    lite.w_out.copy_(w2[pick])
    lite.b_out.copy_(b2)
    lite.eval()
    out = lite(xs) if xs.numel() else xs
    lite.b_out.add_((y[:: max(1, len(x) // max_tokens)][:max_tokens].float() - out).mean(0))
    return True


@torch.no_grad()
def fit_fff_outputs_(
    lite: nn.Module, x: torch.Tensor, y: torch.Tensor, sweeps: int = 4, ridge: float = 1.0
) -> tuple[float, float]:
    """Ridge least-squares refit of a ``FastFeedForward``'s ``w_out`` and ``b_out`` with the
    routing and input weights fixed: the output is linear in ``w_out`` and each token visits
    one node per level of each tree (``ridge_backfit``, shrinking towards the current rows).
    Returns the relative MSE before and after."""
    t, nodes, k = lite.trees, lite.nodes, lite.depth + 1
    n = len(x)
    codes = torch.empty(n, t * k, dtype=torch.long)  # (N, trees * levels) global node rows
    scores = torch.empty(n, t * k)
    node = torch.zeros(n, t, dtype=torch.long)
    base = torch.arange(t) * nodes  # (t,)
    w_in, b_in = lite.w_in.detach().float(), lite.b_in.detach().float()
    for level in range(k):
        row = base + node  # (N, t)
        a = torch.empty(n, t)
        for i in range(0, n, 512):  # (512, t, d) gathered rows at a time
            xi = x[i : i + 512].float().unsqueeze(2)  # (n_i, d, 1)
            a[i : i + 512] = torch.bmm(w_in[row[i : i + 512]], xi).squeeze(2)
        a += b_in[row]
        codes[:, level::k] = row
        scores[:, level::k] = F.gelu(a)
        node = 2 * node + 1 + (a > 0).long()
    y = y.float()
    var = max(float(((y - y.mean(0)) ** 2).mean()), 1e-30)
    b0 = lite.b_out.float() if lite.b_out is not None else torch.zeros(y.shape[1])
    before = float((_rows_out(lite.w_out, codes, scores) + b0 - y).pow(2).mean())
    if t * nodes <= 6144:  # exact normal equations: a GEMM per token chunk
        w, bias, mse = ridge_solve(codes, scores, y, t * nodes, ridge, init=lite.w_out)
    else:
        w, bias, mse = ridge_backfit(codes, scores, y, t * nodes, sweeps, ridge, init=lite.w_out)
    lite.w_out.copy_(w)
    if lite.b_out is not None:
        lite.b_out.copy_(bias)
    return before / var, mse / var


def _fit_closed_form(
    lite: nn.Module, dense: nn.Module, x: torch.Tensor, y: torch.Tensor, sweeps: int, ridge: float
) -> tuple[float, float] | None:
    """Relative MSE (before, after) of a closed-form fit of ``lite``, or None if it has none."""
    kind = type(lite).__name__
    if kind == "LookupFFN":
        return fit_lookup_tables_(lite, x, y, sweeps, ridge)
    if kind == "FastFeedForward" and init_fff_from_dense_(lite, dense, x, y):
        return fit_fff_outputs_(lite, x, y, sweeps, ridge)  # "before" = right after the init
    return None


def _fit_layer(
    lite: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    token_batch: int,
    world: int,
    seed: int,
    desc: str,
    show: bool,
) -> tuple[float, float]:
    """Fit ``lite`` to map x -> y (both (N, d)) by weighted MSE with Adam and a cosine schedule;
    returns the relative MSE (||lite(x) - y||^2 / ||y - mean(y)||^2) before and after."""
    for hook in ("calibrate", "fit"):  # data-dependent init, e.g. LUTFFN's thermometer thresholds
        if callable(getattr(lite, hook, None)):
            lite.train()
            getattr(lite, hook)(x)
            break
    # Fit in normalised units (Adam's step size is absolute, and FFN outputs range from 1e-4 in
    # a fresh model to 1e2 in outlier channels), then fold the scale into the output parameters.
    names, bias_name = _OUTPUT_PARAMS.get(type(lite).__name__, ((), None))
    has_bias = bias_name is not None and dict(lite.named_parameters()).get(bias_name) is not None
    # Statistics are averaged over ranks and the init broadcast from rank 0, so every rank
    # starts from the same layer and minimises the same loss.
    mean_j = _all_mean_tensor(y.mean(0), world)  # (d,) global per-dimension mean
    spread = _all_mean_tensor(((y - mean_j.mean()) ** 2).mean().reshape(1), world)
    sigma = float(spread.sqrt().clamp_min(1e-12)) if names else 1.0
    mu = mean_j if has_bias else torch.zeros_like(y[0])  # (d,)
    y = (y - mu) / sigma
    _match_output_scale(lite, x, y)
    _broadcast_module(lite, world)
    var_j = _all_mean_tensor(((y - (mean_j - mu) / sigma) ** 2).mean(0), world)
    var_j = var_j.clamp_min(1e-12)  # (d,) per output dimension
    var = var_j.mean()
    # Transformer FFN outputs often put most of their variance in a few outlier dimensions; half
    # the loss weighs every dimension by its own variance so the others are fitted too.
    weight = (0.5 / var + 0.5 / var_j) / len(var_j)  # (d,)

    def rel_err() -> float:  # scale-free, so the same in normalised and original units
        lite.eval()
        with torch.no_grad():
            err = sum(
                F.mse_loss(lite(x[i : i + 4096]), y[i : i + 4096], reduction="sum")
                for i in range(0, len(x), 4096)
            )
        return _all_mean(float(err / (y.numel() * var)), world)

    before = rel_err()
    params = [p for p in lite.parameters() if p.requires_grad]
    groups = lite.param_groups(lr) if callable(getattr(lite, "param_groups", None)) else params
    opt = torch.optim.Adam(groups, lr=lr)  # a layer may ask for per-group rates (LUT tables)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0)))
    )
    g = torch.Generator().manual_seed(seed)
    lite.train()
    bar = tqdm(range(steps), desc=desc, disable=not show, leave=False, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(0, len(x), (min(token_batch, len(x)),), generator=g)
        loss = ((lite(x[idx]) - y[idx]) ** 2 * weight).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _average_grads(params, world)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    after = rel_err()
    _fold_output(lite, sigma, mu)
    return before, after


@torch.no_grad()
def _fold_output(lite: nn.Module, sigma: float, mu: torch.Tensor) -> None:
    """Turn a layer fitted to (y - mu) / sigma into one that outputs y."""
    names, bias_name = _OUTPUT_PARAMS.get(type(lite).__name__, ((), None))
    params = dict(lite.named_parameters())
    for name in names:
        params[name].mul_(sigma)
    bias = params.get(bias_name) if bias_name else None
    if bias is not None:
        bias.mul_(sigma).add_(mu)


def _end_to_end(
    model, teacher, batches, steps, lr, train_rest, target, world, seed, show, ckpt, save_every
):
    outs = lambda o: o.logits if target == "logits" else o.last_hidden_state  # noqa: E731
    lites = list(lite_layers(model).values())
    lite_ids = {id(p) for m in lites for p in m.parameters()}
    params = [p for p in model.parameters() if train_rest or id(p) in lite_ids]
    for p in model.parameters():
        p.requires_grad_(train_rest or id(p) in lite_ids)
    opt = torch.optim.Adam(params, lr=lr)
    start = 0
    if ckpt.get("e2e_step"):
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["e2e_step"]
    model.eval()  # no dropout; the lite layers alone run their training path
    for m in lites:
        m.train()
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    bar = tqdm(range(start, steps), desc="end to end", disable=not show, mininterval=1.0)
    for step in bar:
        b = batches[int(torch.randint(0, len(batches), (1,), generator=g))]
        with torch.no_grad():
            t = outs(teacher(**b)).float()
        s = outs(model(**b)).float()
        mask = b.get("attention_mask")
        if target == "logits":
            loss = F.kl_div(
                F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none"
            ).sum(-1)  # (B, T)
        else:  # per token: scale-free direction error plus MSE relative to the teacher's variance
            cos = F.cosine_similarity(s, t, dim=-1)  # (B, T)
            loss = (1 - cos) + ((s - t) ** 2).mean(-1) / t.var().clamp_min(1e-12)
        loss = (loss * mask).sum() / mask.sum() if mask is not None else loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _average_grads(params, world)
        lr_now = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        for group in opt.param_groups:
            group["lr"] = lr_now
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if ckpt.get("_path") and (step + 1) % save_every == 0:
            _save_ckpt(
                ckpt, e2e_step=step + 1, model=model.state_dict(), optimizer=opt.state_dict()
            )
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


# -- checkpoints ----------------------------------------------------------------------------


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic: a crash leaves the previous file intact


def _save_ckpt(ckpt: dict[str, Any], **update: Any) -> None:
    ckpt.update(update)
    if ckpt.get("_rank", 0) == 0:
        _atomic_save({k: v for k, v in ckpt.items() if not k.startswith("_")}, Path(ckpt["_path"]))


# Each fitted layer goes to a file of its own beside the checkpoint (CKPT.layers/NAME.pt), so
# a checkpoint after layer i writes one layer, not all i of them again (for SmolLM2's LookupFFN
# tables that was 2.3 GB per write, 35 GB per conversion).
def _layer_file(ckpt: dict[str, Any], name: str) -> Path:
    return Path(str(ckpt["_path"]) + ".layers") / f"{name}.pt"


def _save_layer(ckpt: dict[str, Any], name: str, state: dict[str, torch.Tensor]) -> None:
    if ckpt.get("_rank", 0) == 0:
        _atomic_save({k: v.detach() for k, v in state.items()}, _layer_file(ckpt, name))


def _load_layer(ckpt: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    if name in ckpt.get("layers", {}):  # a checkpoint written before layers had files
        return ckpt["layers"][name]
    path = _layer_file(ckpt, name)
    if not path.is_file():
        raise ValueError(
            f"distill_: checkpoint {ckpt['_path']} lists layer {name!r} as fitted but its file "
            f"{path} is missing; delete the checkpoint to start over"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete a ``distill_`` checkpoint and its per-layer files (missing ones are fine)."""
    Path(path).unlink(missing_ok=True)
    layers = Path(str(path) + ".layers")
    if layers.is_dir():
        shutil.rmtree(layers)


def _load_ckpt(path: str | os.PathLike | None, key: Any, rank: int) -> dict[str, Any]:
    if path is None:
        return {}
    ckpt: dict[str, Any] = {"_path": str(path), "_rank": rank, "key": key}
    if Path(path).is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("key") != key:
            raise ValueError(
                f"distill_: checkpoint {path} is from another conversion or other settings; "
                "delete it or pass another checkpoint path"
            )
        ckpt.update(saved)
    return ckpt


# -- the verb -------------------------------------------------------------------------------


def distill_(
    model: nn.Module,
    teacher: nn.Module,
    data: Iterable[Any] | torch.Tensor,
    *,
    tokenizer: Any = None,
    batch_size: int = 16,
    max_length: int = 128,
    layer_steps: int = 500,
    layer_lr: float = 3e-3,
    token_batch: int = 1024,
    sequential: bool = True,
    fit: str = "auto",
    sweeps: int = 4,
    ridge: float = 1.0,
    e2e_steps: int = 0,
    e2e_lr: float = 1e-4,
    e2e_target: str = "auto",
    train_rest: bool = False,
    checkpoint: str | os.PathLike | None = None,
    save_every: int = 50,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the lite layers of ``model`` (converted by ``convert_``) to ``teacher`` (the original
    dense model, same architecture) on calibration ``data``, in place.

    ``data``: strings (with ``tokenizer``), an input-id / image tensor, or dicts of model inputs.
    Layer-wise: ``fit="auto"`` solves the layers that have a closed form by ridge least squares
    (``sweeps`` backfitting sweeps, ``ridge`` pseudo-tokens of shrinkage): LookupFFN tables with
    the projection fixed (``fit_lookup_tables_``), FastFeedForward with ``bias_out`` grown from
    a dense GELU FFN's own neurons (``init_fff_from_dense_``) then its output rows refitted
    (``fit_fff_outputs_``); other layers, and every layer with ``fit="adam"`` or under torchrun,
    take ``layer_steps`` Adam steps of ``token_batch`` tokens at ``layer_lr``.
    End to end (``e2e_steps > 0``): ``e2e_target`` "hidden" (final hidden states, MSE), "logits"
    (KL) or "auto" (logits when the model has them); only the lite layers train unless
    ``train_rest``. Returns a report: per layer relative MSE before/after, end-to-end losses.
    """
    handler = handler_for(model)
    record = record_of(model)
    if not record:
        raise ValueError("distill_: the model was not converted by liteffn.convert_")
    if handler_for(teacher).name != handler.name:
        raise ValueError(
            f"distill_: teacher is a {handler_for(teacher).name} model, student {handler.name}"
        )
    rank, world = _dist()
    show = progress and rank == 0
    batches = make_batches(data, tokenizer, batch_size, max_length)[rank::world]
    if not batches:
        raise ValueError(f"distill_: no calibration batch for rank {rank} of {world}")
    s_blocks, t_blocks = dict(handler.blocks(model)), dict(handler.blocks(teacher))
    names = [n for n in s_blocks if n in record["sites"]]
    if fit not in ("auto", "lstsq", "adam"):
        raise ValueError(f"distill_: fit must be 'auto', 'lstsq' or 'adam', got {fit!r}")
    key = {"sites": record["sites"], "steps": layer_steps, "seq": sequential, "e2e": e2e_steps}
    if fit != "adam":
        key.update(fit=fit, sweeps=sweeps, ridge=ridge)
    ckpt = _load_ckpt(checkpoint, key, rank)
    done: dict[str, tuple[float, float]] = dict(ckpt.get("done", {}))
    layers = lite_layers(model)
    for name in done:
        layers[name].load_state_dict(_load_layer(ckpt, name))
    teacher.eval()
    model.eval()
    report: dict[str, Any] = {"layers": {}, "e2e_losses": []}
    t0 = time.perf_counter()
    todo = [n for n in names if n not in done]
    recorded: dict[str, torch.Tensor] = {}
    if todo and not sequential:
        entries = {n: handler.entry(t_blocks[n]) for n in todo}
        recorded = _record_inputs(teacher, entries, batches, stop_after=None)
    for i, name in enumerate(tqdm(todo, desc="layer-wise fit", disable=not show)):
        if sequential:
            entry = {name: handler.entry(s_blocks[name])}
            x = _record_inputs(model, entry, batches, stop_after=name)[name]
        else:
            x = recorded.pop(name)
        dense = handler.dense(t_blocks[name])
        with torch.no_grad():
            y = torch.cat([dense(x[j : j + 4096]) for j in range(0, len(x), 4096)]).float()
        lite = layers[name]
        closed = None
        if fit in ("auto", "lstsq") and world == 1:
            closed = _fit_closed_form(lite, dense, x, y, sweeps, ridge)
        if closed is None and fit == "lstsq":
            raise ValueError(
                f"distill_: fit='lstsq' has no closed form for {type(lite).__name__}"
                + (" under torchrun" if world > 1 else "")
                + "; use fit='adam' or 'auto'"
            )
        if closed is not None:
            done[name] = closed
        else:
            done[name] = _fit_layer(
                lite, x, y, layer_steps, layer_lr, token_batch, world, seed + i, name, show
            )
        lite.eval()
        del x, y
        if checkpoint is not None:  # the layer's file first: a crash in between only refits it
            _save_layer(ckpt, name, lite.state_dict())
            _save_ckpt(ckpt, done=dict(done))
        if show:
            b, a = done[name]
            tqdm.write(f"[distill] {name}: relative MSE {b:.4f} -> {a:.4f}")
    report["layers"] = {n: {"rel_mse_before": b, "rel_mse_after": a} for n, (b, a) in done.items()}
    report["layerwise_seconds"] = time.perf_counter() - t0
    if e2e_steps > 0:
        target = e2e_target
        if target == "auto":
            with torch.no_grad():
                target = "logits" if hasattr(teacher(**batches[0]), "logits") else "hidden"
        if target not in ("hidden", "logits"):
            raise ValueError(f"distill_: e2e_target must be auto/hidden/logits, got {target!r}")
        t1 = time.perf_counter()
        report["e2e_losses"] = _end_to_end(
            model, teacher, batches, e2e_steps, e2e_lr, train_rest, target, world, seed, show,
            ckpt, save_every,
        )  # fmt: skip
        report["e2e_seconds"] = time.perf_counter() - t1
    model.eval()
    return report
