"""More of torch.nn.functional, written in primitives: activations, losses, distances, one_hot and
the non-constant pad modes (PI-3, PI-4).

Everything here is re-exported by `ember.nn.functional`. Each function is a few primitives, so autodiff,
ember.jit and the fusion passes see through them. Two patterns recur:

- a piecewise function is `select`s over its pieces, and a piece that is not chosen reads a safe
  stand-in of its input (`select(region, x, 0)`), so its zero cotangent never meets an inf
  (0 * inf = NaN would otherwise leak into the gradient of inf inputs);
- where PyTorch's backward is not the derivative of its forward (the 1e-12 floor of BCE, the no_grad
  clamp of cosine_similarity's norms), the value and the gradient are assembled separately with
  `detach()`, to match PyTorch's gradient exactly.
"""
from __future__ import annotations

import math
import warnings

from .. import api as E
from .._core import dtypes as dt
from ..api.precision import autocast_float32
from .._core.errors import DTypeError, ShapeError, data_dependent, op_error
from ..ops import lax
from ..tensor import Tensor
from .functional import _inplace_src, _reduce, l1_loss

__all__ = ["elu", "celu", "selu", "hardtanh", "relu6", "hardsigmoid", "hardswish", "mish", "prelu", "logsigmoid",
           "softsign", "tanhshrink", "smooth_l1_loss", "huber_loss", "binary_cross_entropy", "kl_div",
           "cosine_embedding_loss", "margin_ranking_loss", "soft_margin_loss", "triplet_margin_loss",
           "pairwise_distance", "cosine_similarity", "normalize", "one_hot"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_BCE_EPS = 9.999999960041972e-13  # PyTorch's EPSILON = 1e-12, rounded to float32 in every dtype


def _traced(t: Tensor) -> bool:
    """Whether ember.jit is tracing `t` (its values are unknown)."""
    return t._data.__class__.__name__ == "Var"


def _finish(input: Tensor, out: Tensor, inplace: bool) -> Tensor:
    return E.assign_(input, out) if inplace else out


def _clamp_min0(z: Tensor) -> Tensor:
    """max(z, 0) with PyTorch's clamp_min: NaN stays NaN, the gradient passes where z >= 0."""
    return lax.select(lax.lt(z, 0), 0.0, z)


def _softplus0(z: Tensor) -> Tensor:
    """log(1 + exp(z)) without overflow; its gradient is sigmoid(z) everywhere (0.5 at 0)."""
    pos = lax.gt(z, 0)
    return lax.add(lax.select(pos, z, 0.0), lax.log1p(lax.exp(lax.select(pos, lax.neg(z), z))))


# ---------------------------------------------------------------- activations
def _elu(x: Tensor, negcoef: float, poscoef: float, negiptcoef: float) -> Tensor:
    """PyTorch's elu kernel: x > 0 ? x * poscoef : expm1(x * negiptcoef) * negcoef (NaN: NaN gradient)."""
    pos = lax.gt(x, 0)
    z = lax.mul(lax.select(pos, 0.0, x), negiptcoef)
    e = lax.exp(z)  # the value is expm1(z), its derivatives those of exp(z) (as PyTorch's backward)
    em1 = lax.add(lax.expm1(z).detach(), lax.sub(e, e.detach()))
    return lax.select(pos, x if poscoef == 1.0 else lax.mul(x, poscoef), lax.mul(em1, negcoef))


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x if x > 0 else alpha * (exp(x) - 1)."""
    return _finish(input, _elu(_inplace_src(input, inplace), alpha, 1.0, 1.0), inplace)


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x if x > 0 else alpha * (exp(x / alpha) - 1)."""
    if alpha == 0:
        raise ZeroDivisionError("alpha cannot be 0 for CELU")
    return _finish(input, _elu(_inplace_src(input, inplace), alpha, 1.0, 1.0 / alpha), inplace)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """scale * elu(x, alpha) with the self-normalising constants of Klambauer et al."""
    return _finish(input, _elu(_inplace_src(input, inplace), _SELU_ALPHA * _SELU_SCALE, _SELU_SCALE, 1.0), inplace)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """clamp(x, min_val, max_val); the gradient is 1 strictly inside the bounds, else 0 (NaN included)."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    x = _inplace_src(input, inplace)
    inside = lax.bitwise_and(lax.gt(x, min_val), lax.lt(x, max_val))
    outside = lax.select(lax.le(x, min_val), min_val, lax.select(lax.ge(x, max_val), max_val, x.detach()))
    return _finish(input, lax.select(inside, x, outside), inplace)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6) (hardtanh(x, 0, 6))."""
    return hardtanh(input, 0.0, 6.0, inplace)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x + 3, 0), 6) / 6; the gradient is 1/6 strictly inside (-3, 3), else 0."""
    x = _inplace_src(input, inplace)
    mid = lax.bitwise_and(lax.gt(x, -3.0), lax.lt(x, 3.0))
    xm = lax.select(mid, x, 0.0)
    outside = lax.div(lax.min(lax.max(lax.add(x.detach(), 3.0), 0.0), 6.0), 6.0)  # 0, 1 or NaN
    return _finish(input, lax.select(mid, lax.div(lax.add(xm, 3.0), 6.0), outside), inplace)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * min(max(x + 3, 0), 6) / 6; gradient 0 for x <= -3, x / 3 + 1/2 below 3, then 1."""
    x = _inplace_src(input, inplace)
    low, high = lax.le(x, -3.0), lax.ge(x, 3.0)
    mid = lax.bitwise_not(lax.bitwise_or(low, high))  # NaN too: NaN value and gradient
    xm = lax.select(mid, x, 0.0)
    inner = lax.div(lax.mul(xm, lax.add(xm, 3.0)), 6.0)
    out = lax.select(low, lax.mul(x, 0.0), lax.select(mid, inner, lax.div(lax.mul(x, 6.0), 6.0)))
    return _finish(input, out, inplace)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x)) (Misra 2019)."""
    x = _inplace_src(input, inplace)
    return _finish(input, lax.mul(x, lax.tanh(_softplus0(x))), inplace)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """x if x > 0 else weight * x, with one weight or one per channel (dim 1)."""
    if input.dtype is not weight.dtype:
        raise op_error(DTypeError, "prelu", f"input ({input.dtype.name}) and weight ({weight.dtype.name}) "
                       "must have the same dtype")
    if weight.ndim > 1:
        raise op_error(ShapeError, "prelu", f"weight must be 0-D or 1-D, got shape {weight.shape}")
    n = weight.numel()
    if n == 1:
        w = lax.reshape(weight, ())
    else:
        if input.ndim == 0:
            raise op_error(ShapeError, "prelu", "Not allow zero-dim input tensor.")
        c = input.shape[1] if input.ndim > 1 else 1
        if c != n:
            raise op_error(ShapeError, "prelu", f"Mismatch of parameter numbers and input channel size. Found "
                           f"parameter numbers = {n} and channel size = {c}.")
        w = lax.reshape(weight, (n,) + (1,) * (input.ndim - 2))
    pos = lax.gt(input, 0)
    return lax.select(pos, input, lax.mul(w, lax.select(pos, 0.0, input)))


def logsigmoid(input: Tensor) -> Tensor:
    """log(sigmoid(x)) = -softplus(-x), without overflow."""
    neg = lax.lt(input, 0)
    return lax.sub(lax.select(neg, input, 0.0), lax.log1p(lax.exp(lax.select(neg, input, lax.neg(input)))))


def softsign(input: Tensor) -> Tensor:
    """x / (1 + |x|)."""
    return lax.div(input, lax.add(lax.abs(input), 1.0))


def tanhshrink(input: Tensor) -> Tensor:
    """x - tanh(x)."""
    return lax.sub(input, lax.tanh(input))


# ---------------------------------------------------------------- losses
def _legacy(size_average, reduce, reduction: str) -> str:
    """PyTorch's deprecated size_average / reduce flags as a reduction string."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        return "mean"
    return "sum" if reduce else "none"


def _warn_size(input: Tensor, target: Tensor) -> None:
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size ({input.shape}). "
                      "This will likely lead to incorrect results due to broadcasting. Please ensure they have "
                      "the same size.", stacklevel=3)


@autocast_float32("input", "target")
def smooth_l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, else |d| - beta / 2 (d = input - target); beta = 0 is L1."""
    reduction = _legacy(size_average, reduce, reduction)
    if beta < 0:
        raise ValueError("smooth_l1_loss does not support negative values for beta.")
    _warn_size(input, target)
    if beta == 0:
        return l1_loss(input, target, reduction=reduction)
    d = lax.sub(input, target)
    ad = lax.abs(d)
    small = lax.bitwise_not(lax.ge(ad, beta))  # NaN: NaN value and gradients
    ds = lax.select(small, d, 0.0)
    quad = lax.div(lax.mul(lax.mul(ds, 0.5), ds), beta)
    return _reduce(lax.select(small, quad, lax.sub(ad, 0.5 * beta)), reduction)


@autocast_float32("input", "target")
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """0.5 d^2 where |d| < delta, else delta * (|d| - delta / 2); optionally weighted elementwise."""
    if delta <= 0:
        raise ValueError("huber_loss does not support non-positive values for delta.")
    _warn_size(input, target)
    d = lax.sub(input, target)
    ad = lax.abs(d)
    small = lax.bitwise_not(lax.ge(ad, delta))  # NaN: NaN value and gradients
    ds = lax.select(small, d, 0.0)
    loss = lax.select(small, lax.mul(lax.mul(ds, 0.5), ds), lax.mul(lax.sub(ad, 0.5 * delta), delta))
    if weight is not None:
        if tuple(weight.shape) != tuple(input.shape):
            raise ValueError("Weights and input must have the same size.")
        loss = lax.mul(loss, weight)
    return _reduce(loss, reduction)


@autocast_float32("input", "target", "weight")
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
                         reduce=None, reduction: str = "mean") -> Tensor:
    """-w (t log x + (1 - t) log(1 - x)) with each log floored at -100, as PyTorch.

    The input gradient is PyTorch's w (x - t) / max(x (1 - x), 1e-12): the derivative of the
    formula inside, a 1e-12 floor at (and within 1e-12 of) 0 and 1, where the formula's derivative
    would be infinite. The target gradient is -w logit(x), clamped to +-100 at exactly 0 and 1
    (PyTorch gives +-inf there). Inputs and targets outside [0, 1] raise, eagerly."""
    reduction = _legacy(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Using a target size ({target.shape}) that is different to the input size "
                         f"({input.shape}) is deprecated. Please ensure they have the same size.")
    for what, t in (("input", input), ("target", target)):  # eagerly only: ember.jit does not know values
        if not _traced(t) and t.numel():
            a = t.detach().numpy()
            if not ((a >= 0) & (a <= 1)).all():
                raise RuntimeError(f"all elements of {what} should be between 0 and 1")
    xd = input.detach()
    edge = lax.lt(lax.mul(xd, lax.sub(1.0, xd)), _BCE_EPS)
    xi = lax.select(edge, 0.5, input)  # inside: the plain formula, differentiable (twice)
    inside = lax.sub(lax.mul(lax.sub(target, 1.0), lax.log1p(lax.neg(xi))), lax.mul(target, lax.log(xi)))
    xe = lax.select(edge, xd, 0.5)  # at the edges: floored logs, and the gradient (x - t) / 1e-12
    lo = lax.select(lax.eq(xe, 1), -100.0, lax.max(lax.log1p(lax.neg(lax.select(lax.eq(xe, 1), 0.0, xe))), -100.0))
    lx = lax.select(lax.eq(xe, 0), -100.0, lax.max(lax.log(lax.select(lax.eq(xe, 0), 1.0, xe)), -100.0))
    slope = lax.div(lax.sub(xd, target.detach()), _BCE_EPS)
    at_edge = lax.add(lax.sub(lax.mul(lax.sub(target, 1.0), lo), lax.mul(target, lx)),
                      lax.mul(lax.sub(input, xd), slope))
    loss = lax.select(edge, at_edge, inside)
    if weight is not None:
        loss = lax.mul(loss, weight)
    return _reduce(loss, reduction)


@autocast_float32("input", "target")
def kl_div(input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """Pointwise KL divergence target * (log target - input), input being log-probabilities.

    reduction 'batchmean' divides the sum by the batch size (the KL divergence proper); 'mean'
    divides by every element and warns, as PyTorch does."""
    if size_average is not None or reduce is not None:
        reduction = _legacy(size_average, reduce, reduction)
    elif reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      stacklevel=2)
    if log_target:
        out = lax.mul(lax.exp(target), lax.sub(target, input))
    else:  # xlogy(t, t) - t * x, with log(0) never formed: at t = 0 the target gradient is -input
        zero = lax.eq(target, 0)
        xlogx = lax.select(zero, 0.0, lax.mul(target, lax.log(lax.select(zero, 1.0, target))))
        out = lax.sub(xlogx, lax.mul(target, input))
    if reduction == "batchmean":
        total = E.sum(out)
        return lax.div(total, input.shape[0]) if input.ndim else total
    return _reduce(out, reduction)


@autocast_float32("input1", "input2")
def cosine_embedding_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0, size_average=None,
                          reduce=None, reduction: str = "mean") -> Tensor:
    """1 - cos(x1, x2) where target is 1, max(0, cos(x1, x2) - margin) where it is -1."""
    reduction = _legacy(size_average, reduce, reduction)
    td = target.ndim
    if td not in (0, 1):
        raise op_error(ShapeError, "cosine_embedding_loss",
                       "0D or 1D target tensor expected, multi-target not supported")
    if input1.ndim != td + 1 or input2.ndim != td + 1:
        raise op_error(ShapeError, "cosine_embedding_loss", f"{td}D target tensor expects {td + 1}D input tensors, "
                       f"but found inputs with sizes {input1.shape} and {input2.shape}.")
    eps = 1e-12
    prod = lax.reduce_sum(lax.mul(input1, input2), (td,))
    m1 = lax.add(lax.reduce_sum(lax.mul(input1, input1), (td,)), eps)
    m2 = lax.add(lax.reduce_sum(lax.mul(input2, input2), (td,)), eps)
    cos = lax.div(prod, lax.sqrt(lax.mul(m1, m2)))
    pos = lax.select(lax.eq(target, 1), lax.sub(1.0, cos), 0.0)
    neg = lax.select(lax.eq(target, -1), _clamp_min0(lax.sub(cos, margin)), 0.0)
    return _reduce(lax.add(pos, neg), reduction)


@autocast_float32("input1", "input2")
def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0, size_average=None,
                        reduce=None, reduction: str = "mean") -> Tensor:
    """max(0, -target * (x1 - x2) + margin)."""
    reduction = _legacy(size_average, reduce, reduction)
    if not input1.ndim == input2.ndim == target.ndim:
        raise op_error(ShapeError, "margin_ranking_loss", "All input tensors should have same dimension but got "
                       f"sizes: input1: {input1.shape}, input2: {input2.shape}, target: {target.shape} ")
    z = lax.add(lax.mul(lax.neg(target), lax.sub(input1, input2)), margin)
    return _reduce(_clamp_min0(z), reduction)


@autocast_float32("input", "target")
def soft_margin_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
                     reduction: str = "mean") -> Tensor:
    """log(1 + exp(-target * input)) (computed without overflow)."""
    reduction = _legacy(size_average, reduce, reduction)
    return _reduce(_softplus0(lax.mul(lax.neg(input), target)), reduction)


def _minimum_split(a: Tensor, b: Tensor) -> Tensor:
    """torch.minimum: NaN propagates, and a tie sends half the gradient to each side."""
    return lax.select(lax.lt(a, b), a, lax.select(lax.lt(b, a), b, lax.mul(lax.add(a, b), 0.5)))


@autocast_float32("anchor", "positive", "negative")
def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0, p: float = 2,
                        eps: float = 1e-6, swap: bool = False, size_average=None, reduce=None,
                        reduction: str = "mean") -> Tensor:
    """max(d(a, p) - d(a, n) + margin, 0) with pairwise p-norm distances; `swap` also tries d(p, n)."""
    reduction = _legacy(size_average, reduce, reduction)
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise op_error(ShapeError, "triplet_margin_loss", "The anchor, positive, and negative tensors are expected "
                       f"to have the same number of dimensions, but got: anchor {anchor.ndim}D, positive "
                       f"{positive.ndim}D, and negative {negative.ndim}D inputs")
    dpos = pairwise_distance(anchor, positive, p, eps)
    dneg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        dneg = _minimum_split(dneg, pairwise_distance(positive, negative, p, eps))
    return _reduce(_clamp_min0(lax.sub(lax.add(dpos, margin), dneg)), reduction)


# ---------------------------------------------------------------- distances and normalisation
def _vector_norm(x: Tensor, p: float, dim: int, keepdim: bool) -> Tensor:
    """The p-norm over one dim with PyTorch's gradient (0 where the norm is 0)."""
    d = E.shape._dim(dim, x.ndim, "norm")
    ax = (d,)
    if p == 2:
        s = lax.reduce_sum(lax.mul(x, x), ax)
        zero = lax.eq(s, 0)
        n = lax.select(zero, 0.0, lax.sqrt(lax.select(zero, 1.0, s)))
    elif p == 1:
        n = lax.reduce_sum(lax.abs(x), ax)
    elif p == math.inf:
        n = E.amax(lax.abs(x), d)
    elif p == -math.inf:
        n = E.amin(lax.abs(x), d)
    elif p == 0:
        n = lax.reduce_sum(lax.convert(lax.ne(x, 0), x.dtype), ax)
    else:
        s = lax.reduce_sum(lax.pow(lax.abs(x), float(p)), ax)
        zero = lax.eq(s, 0)
        n = lax.select(zero, 0.0, lax.pow(lax.select(zero, 1.0, s), 1.0 / p))
    return lax.keepdims(n, ax) if keepdim else n


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """||x1 - x2 + eps||_p over the last dim (the inputs broadcast)."""
    d = lax.add(lax.sub(x1, x2), eps)
    if d.ndim == 0:
        return _vector_norm(lax.reshape(d, (1,)), p, 0, False)
    return _vector_norm(d, p, d.ndim - 1, keepdim)


def _floored(n: Tensor, eps: float) -> Tensor:
    """max(n, eps) in value, with the gradient of n itself (PyTorch clamps the norms under no_grad)."""
    return lax.select(lax.lt(n, eps), lax.add(lax.sub(n, n.detach()), eps), n)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps)) along `dim` (PyTorch 2.x; |result| <= 1)."""
    if x1.dtype.kind != "f" and x2.dtype.kind != "f":
        raise op_error(DTypeError, "cosine_similarity", f"expected common dtype to be floating point, yet common "
                       f"dtype is {E.result_type(x1, x2).name}")
    common = E.result_type(x1, x2)
    x1, x2 = E.broadcast_tensors(E.convert(x1, common), E.convert(x2, common))
    d = E.shape._dim(dim, x1.ndim, "cosine_similarity")
    n1 = _floored(_vector_norm(x1, 2, d, True), eps)
    n2 = _floored(_vector_norm(x2, 2, d, True), eps)
    return lax.reduce_sum(lax.mul(lax.div(x1, n1), lax.div(x2, n2)), (d,))


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out=None) -> Tensor:
    """input / max(||input||_p, eps) along `dim`."""
    if out is not None:
        raise TypeError("normalize(out=...) is not supported in ember")
    n = _vector_norm(input, p, dim, True)
    return lax.div(input, lax.select(lax.lt(n, eps), eps, n))


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 (*, num_classes) with a 1 at each index; num_classes=-1 uses max + 1 (eagerly only)."""
    if tensor.dtype is not dt.int64:
        raise op_error(DTypeError, "one_hot", "one_hot is only applicable to index tensor of type LongTensor "
                       f"(int64), got {tensor.dtype.name}")
    if num_classes == -1:
        data_dependent("one_hot with num_classes=-1", tensor._data)
        if tensor.numel() == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(tensor.detach().numpy().max()) + 1
    elif num_classes < -1:
        raise RuntimeError("num_classes should be positive or -1")
    t = lax.check_classes(tensor, num_classes, None, "one_hot")  # IndexError outside [0, num_classes)
    cls = lax.iota((1,) * t.ndim + (num_classes,), t.ndim, dt.int64)
    return lax.convert(lax.eq(lax.reshape(t, t.shape + (1,)), cls), dt.int64)


# ---------------------------------------------------------------- pad: reflect, replicate, circular
def _pad_dim(x: Tensor, d: int, lo: int, hi: int, mode: str) -> Tensor:
    """Pad (negative: crop) dim d of x by lo before and hi after with mode's values."""
    n = x.shape[d]
    if mode == "circular":
        if lo > n or hi > n:
            raise ValueError("Padding value causes wrapping around more than once.")
        if n + lo + hi < 0:
            raise ValueError("Negative padding value is resulting in an empty dimension")
        cut_lo, cut_hi = max(-lo, 0), max(-hi, 0)
        x = E.narrow(x, d, cut_lo, n - cut_lo - cut_hi)  # PyTorch crops first, then wraps
        m = x.shape[d]
        lo, hi = max(lo, 0), max(hi, 0)
        if lo > m or hi > m:
            raise ValueError(f"circular padding ({lo}, {hi}) wraps around more than the {m} elements that remain "
                             f"of dim {d} after cropping")
        parts = ([E.narrow(x, d, m - lo, lo)] if lo else []) + [x] + ([E.narrow(x, d, 0, hi)] if hi else [])
        return E.cat(parts, d) if len(parts) > 1 else x
    out = n + lo + hi
    if mode == "reflect" and (lo >= n or hi >= n):
        raise op_error(ShapeError, "pad", f"Padding size should be less than the corresponding input dimension, but "
                       f"got: padding ({lo}, {hi}) at dimension {d} of input {list(x.shape)}")
    plo, phi = max(lo, 0), max(hi, 0)
    parts = []
    if mode == "reflect":
        if plo:
            parts.append(E.flip(E.narrow(x, d, 1, plo), (d,)))
        parts.append(x)
        if phi:
            parts.append(E.flip(E.narrow(x, d, n - 1 - phi, phi), (d,)))
    else:  # replicate
        for k, at in ((plo, 0), (None, None), (phi, n - 1)):
            if k is None:
                parts.append(x)
            elif k:
                shape = list(x.shape)
                shape[d] = k
                parts.append(E.expand(E.narrow(x, d, at, 1), tuple(shape)))
    full = E.cat(parts, d) if len(parts) > 1 else x
    return E.narrow(full, d, max(-lo, 0), out) if lo < 0 or hi < 0 else full


def _pad_nonconstant(input: Tensor, pad, mode: str, value) -> Tensor:
    """F.pad's 'reflect', 'replicate' and 'circular' modes for the last 1, 2 or 3 dims."""
    if mode not in ("reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    if value:
        raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
    pad = [int(p) for p in pad]
    k = len(pad) // 2
    if len(pad) % 2 or k not in (1, 2, 3) or input.ndim not in (k + 1, k + 2):
        raise NotImplementedError(
            f"Padding size {len(pad)} is not supported for {input.ndim}D input tensor.\nSupported combinations "
            "for non-constant padding:\n  - 2D or 3D input: padding size = 2 (pads last dimension)\n  - 3D or 4D "
            "input: padding size = 4 (pads last 2 dimensions)\n  - 4D or 5D input: padding size = 6 (pads last "
            "3 dimensions)")
    if mode != "circular":
        first = 1 if input.ndim == k + 2 else 0  # a batch dim may be empty, no other
        if any(s == 0 for s in input.shape[first:]):
            raise op_error(ShapeError, "pad", f"Expected {k + 1}D or {k + 2}D (batch mode) tensor with possibly 0 "
                           f"batch size and other non-zero dimensions for input, but got: {list(input.shape)}")
        outs = [input.shape[input.ndim - 1 - i] + pad[2 * i] + pad[2 * i + 1] for i in range(k)]
        if min(outs) < 0 or max(outs) < 1:  # PyTorch allows an empty padded dim, unless all are
            raise op_error(ShapeError, "pad", f"input of shape {list(input.shape)} is too small for padding {pad}: "
                           f"the padded dims would have sizes {outs[::-1]}")
    x = input
    for i in range(k):
        x = _pad_dim(x, input.ndim - 1 - i, pad[2 * i], pad[2 * i + 1], mode)
    return x
