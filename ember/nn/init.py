"""Weight initialisation (PyTorch's `torch.nn.init` names and formulas).

Every function fills its tensor in place under `no_grad` (the tensor object and its storage stay
the same) and draws from ember's Philox generator — the default one, or `generator=` — never from
numpy's, so `ember.manual_seed` makes model construction reproducible.
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .._core.state import no_grad
from ..api import random as _random
from ..autograd import assign_
from ..ops import lax
from ..tensor import Tensor, from_array

__all__ = ["calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
           "eye_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_"]


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity: 1 (linear, conv, sigmoid), 5/3 (tanh), sqrt(2)
    (relu), sqrt(2 / (1 + slope^2)) (leaky_relu, slope 0.01 by default), 3/4 (selu)."""
    linear_fns = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d"]
    if nonlinearity in linear_fns or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float)):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (weights are (out, in, *k))."""
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive = math.prod(tensor.shape[2:]) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator=None) -> Tensor:
    """Fill with U(a, b)."""
    return _random.uniform_(tensor, a, b, generator=generator)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    """Fill with N(mean, std^2)."""
    return _random.normal_(tensor, mean, std, generator=generator)


def _erfinv(y: Tensor) -> Tensor:
    """erfinv in float64: Giles' single-precision approximation, then two Newton steps on erf."""
    w = lax.neg(lax.log(lax.mul(lax.sub(1.0, y), lax.add(1.0, y))))
    small = lax.lt(w, 5.0)
    ws = lax.sub(w, 2.5)
    wl = lax.sub(lax.sqrt(w), 3.0)
    cs = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
          -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
    cl = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
          -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]
    ps, pl = cs[0], cl[0]
    for c_s, c_l in zip(cs[1:], cl[1:]):
        ps = lax.add(lax.mul(ps, ws), c_s)
        pl = lax.add(lax.mul(pl, wl), c_l)
    x = lax.mul(lax.select(small, ps, pl), y)
    k = 2.0 / math.sqrt(math.pi)
    for _ in range(2):
        x = lax.sub(x, lax.div(lax.sub(lax.erf(x), y), lax.mul(lax.exp(lax.neg(lax.mul(x, x))), k)))
    return x


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator=None) -> Tensor:
    """Fill with N(mean, std^2) truncated to [a, b] (absolute bounds), by the inverse CDF as PyTorch."""
    def cdf(x):
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    with no_grad():
        u = _random._uniform01(tensor.shape, dt.float64, generator)
        y = lax.add(lax.mul(u, 2 * hi - 2 * lo), 2 * lo - 1)
        eps = 2.0 ** -52
        y = lax.min(lax.max(y, -1.0 + eps), 1.0 - eps)
        x = lax.add(lax.mul(_erfinv(y), std * math.sqrt(2.0)), mean)
        x = lax.min(lax.max(x, float(a)), float(b))
        return assign_(tensor, lax.convert(x, tensor.dtype))


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with `val`."""
    with no_grad():
        return assign_(tensor, lax.full(tensor.shape, val, tensor.dtype))


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1)


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0)


def eye_(tensor: Tensor) -> Tensor:
    """Fill a 2-D tensor with the identity matrix."""
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    with no_grad():
        n, m = tensor.shape
        eye = lax.convert(lax.eq(lax.iota((n, m), 0, dt.int64), lax.iota((n, m), 1, dt.int64)), tensor.dtype)
        return assign_(tensor, eye)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    a = math.sqrt(3.0) * std
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator=None) -> Tensor:
    """U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al.); gain from `nonlinearity`, `a`."""
    if 0 in tensor.shape:
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator=None) -> Tensor:
    """N(0, std^2) with std = gain / sqrt(fan)."""
    if 0 in tensor.shape:
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std, generator)


def _orthogonal_from_normal(flat: np.ndarray) -> np.ndarray:
    """PyTorch's map from a (rows, cols) normal sample to a (semi-)orthogonal matrix: QR of the
    tall orientation, Q's columns multiplied by sign(diag(R)) (Mezzadri 2007) so Q is Haar-uniform."""
    rows, cols = flat.shape
    a = flat.T if rows < cols else flat
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diagonal(r))
    return q.T if rows < cols else q


def orthogonal_(tensor: Tensor, gain: float = 1, generator=None) -> Tensor:
    """Fill with a (semi-)orthogonal matrix times `gain`: rows x (numel / rows), from the QR of a
    normal sample drawn from ember's generator (Saxe et al. 2013)."""
    if tensor.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    with no_grad():
        sample = _random.randn((rows, cols), generator=generator, dtype=tensor.dtype)
        q = _orthogonal_from_normal(sample.numpy().astype(np.float64)) * gain
        return assign_(tensor, lax.convert(from_array(np.ascontiguousarray(q.reshape(tensor.shape)), dt.float64),
                                           tensor.dtype))


# PyTorch's deprecated non-underscore aliases are not provided: use the in-place names.


def default_layer_init_(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's default for Linear and Conv layers: kaiming_uniform_(a=sqrt(5)) on the weight and
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) on the bias."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)
