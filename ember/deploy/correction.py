"""Bias correction (MD-10): after quantizing a layer's weights, remove the expected output error.

Quantizing W to W_q shifts a layer's output by (W_q - W) x, whose mean over the data is not 0 when
the inputs' mean is not (ReLU outputs, images). Bias correction (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019; the empirical form) measures
that shift over calibration data, per output channel, and subtracts it from the bias:
``b' = b - E[layer(x; W_q - W, no bias)]``. The layer being linear in its weight, its per-channel
output mean then equals the float layer's over the same data (up to rounding).

`correct_bias(model, loader)` does it for every nn.Linear / nn.Conv2d (or the ones named), in place:
each weight becomes its quantized-dequantized value (fake quantization) and each bias is corrected;
a layer without a bias gets one. The error of every layer is measured in one pass with the float
model's own inputs.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ember import api as E, nn
from ember._core.state import no_grad
from ember.nn import functional as F
from ember.tensor import Tensor, tensor as new_tensor

from .observers import run_hooked
from .quant import QParams, QuantizationError, check_finite, choose_qparams, dequantize, quantize

__all__ = ["quantize_weight", "output_error", "correct_bias"]


def quantize_weight(weight: Tensor, dtype: str = "int8", symmetric: bool = True, per_channel: bool = True,
                    name: str = "weight") -> tuple[Tensor, QParams]:
    """(dequantized weight, qparams): min/max qparams per output channel (axis 0) or per tensor."""
    check_finite(weight, name)
    w = weight.detach().numpy()
    if per_channel:
        flat = w.reshape(w.shape[0], -1)
        qp = choose_qparams(flat.min(1), flat.max(1), dtype, symmetric, 0, name=name)
    else:
        qp = choose_qparams(w.min(), w.max(), dtype, symmetric, name=name)
    return dequantize(quantize(weight.detach(), qp), qp), qp


def output_error(module: nn.Module, x: Tensor, delta: Tensor) -> Tensor:
    """The layer's output for weight `delta` and no bias: the output error a weight change `delta` causes."""
    if isinstance(module, nn.Linear):
        return F.linear(x, delta)
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, delta, None)
    raise QuantizationError(f"bias correction handles nn.Linear and nn.Conv2d, not {type(module).__name__}")


def _channel_sum(err: Tensor, module: nn.Module) -> tuple[np.ndarray, int]:
    e = err.detach().numpy().astype(np.float64)
    if isinstance(module, nn.Linear):
        return e.reshape(-1, e.shape[-1]).sum(0), e.size // e.shape[-1]
    c = 0 if e.ndim == 3 else 1  # Conv2d also takes unbatched (C, H, W)
    e = np.moveaxis(e, c, 0).reshape(e.shape[c], -1)
    return e.sum(1), e.shape[1]


def correct_bias(model: nn.Module, loader: Iterable, *, dtype: str = "int8", symmetric: bool = True,
                 per_channel: bool = True, layers=None, input_fn: Callable | None = None,
                 name: str | None = None) -> dict:
    """Fake-quantize the weights of model's Linear/Conv2d layers and correct their biases; {layer: correction}."""
    named = dict(model.named_modules())
    if layers is None:
        targets = [n for n, m in named.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
    else:
        targets = list(layers)
        for n in targets:
            if not isinstance(named.get(n), (nn.Linear, nn.Conv2d)):
                raise QuantizationError(f"correct_bias: {n!r} is not an nn.Linear / nn.Conv2d layer of the model")
    deltas, sums, counts, handles = {}, {}, {}, []
    for n in targets:
        m = named[n]
        label = f"layer {n or type(m).__name__!r} weight"
        wq, _ = quantize_weight(m.weight, dtype, symmetric, per_channel, label)
        deltas[n] = (wq, wq - m.weight.detach())
        sums[n], counts[n] = np.zeros(m.weight.shape[0]), 0

        def hook(mod, args, n=n):
            s, k = _channel_sum(output_error(mod, args[0], deltas[n][1]), mod)
            sums[n] += s
            counts[n] += k
        handles.append(m.register_forward_pre_hook(hook))
    if run_hooked(model, loader, handles, input_fn) == 0:
        what = name or type(loader).__name__
        raise QuantizationError(f"correct_bias: the calibration loader ({what}) yielded no batches; the expected "
                                f"output error of {targets} cannot be measured")
    out = {}
    with no_grad():
        for n in targets:
            m = named[n]
            corr = new_tensor((sums[n] / max(counts[n], 1)).astype(np.float32))
            m.weight.copy_(deltas[n][0])
            if m.bias is None:
                m.bias = nn.Parameter(E.zeros(m.weight.shape[0]))
            m.bias.copy_(m.bias.detach() - corr)
            out[n] = corr
    return out
