"""Post-training quantization to QDQ form and the traceable quantized forward the ONNX export reads (MD-8, MD-9).

`quantize_static(model, loader)` calibrates the float model (one observer per nn.Linear / nn.Conv2d
output, and one for the model input), quantizes the weights (int8, symmetric, per output channel by
default) and returns a copy whose layers are `qat.QuantizedLinear` / `qat.QuantizedConv2d`, the
modules `qat.convert` builds, so both paths export alike. With `quantize_input` (default) the model
is wrapped in `QuantWrapper`, whose `QuantStub` fake-quantizes the input (torch's QuantStub /
QuantWrapper), so that every quantized layer reads a quantized activation and onnxruntime can run
it on int8 kernels. With `fuse_bn` (default) an eval BatchNorm2d after a Conv2d in a Sequential is
first folded into it (`fuse_conv_bn`, as torch's fuse_modules), so the conv's output is what gets
quantized. `quantize_weight_only(model)` quantizes the weights only (float activations).

`reduce_range=True` keeps int8 weights in -64..63 (onnxruntime's quantizer's reduce_range):
onnxruntime's u8s8 / s8s8 kernels on x86 without VNNI (AVX2's VPMADDUBSW adds pairs of products
in int16) saturate with full-range weights and then miss ember's (and the ONNX reference's) output
by tens of steps; 7-bit weights do not overflow and match within one step.

The quantized layers (`qat.QuantizedLinear` / `QuantizedConv2d`) compute with two functions of
`qat` whose traced pattern `ember.onnx.export` recognizes (`ember/onnx/export_quant.py`):
`dequantize_weight` ``(float(q) - float(zp)) * scale`` becomes DequantizeLinear on an int8
initializer, and `quant_dequant` ``(min(max(round(x * (1 / scale)) + zp, qmin), qmax) - zp) * scale``
becomes QuantizeLinear -> DequantizeLinear; it equals `qat.fake_quantize` on finite values.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable

import numpy as np

from ember import api as E, nn
from ember._core import dtypes as dt
from ember._core.state import no_grad
from ember.tensor import Tensor, tensor as new_tensor

from .observers import MinMaxObserver, calibrate
from .qat import QuantizedConv2d, QuantizedLinear, _Quantized, dequantize_weight, quant_dequant
from .quant import QParams, QuantizationError, check_finite, choose_qparams, quantize

__all__ = ["dequantize_weight", "quant_dequant", "QuantStub", "QuantWrapper", "fuse_conv_bn",
           "quantize_static", "quantize_weight_only"]

_LAYERS = (nn.Linear, nn.Conv2d)


class QuantStub(nn.Module):
    """Fake-quantizes its input with fixed per-tensor qparams (buffers `scale`, `zero_point`)."""

    def __init__(self, qparams: QParams) -> None:
        super().__init__()
        if qparams.axis is not None:
            raise QuantizationError(f"QuantStub takes per-tensor qparams, got axis {qparams.axis}")
        self.qparams = qparams
        self.register_buffer("scale", new_tensor(np.array(qparams.scale.reshape(()), np.float32)))
        self.register_buffer("zero_point", new_tensor(np.array(qparams.zero_point.reshape(()), np.int32)))

    def forward(self, x: Tensor) -> Tensor:
        return quant_dequant(x, self.scale, self.zero_point, self.qparams.qmin, self.qparams.qmax)

    def extra_repr(self) -> str:
        return f"scale={float(self.qparams.scale):.6g}, zero_point={int(self.qparams.zero_point)}, " \
               f"dtype={self.qparams.dtype}"


class QuantWrapper(nn.Module):
    """`quant` (a QuantStub) on the input, then `module` (torch.ao.quantization.QuantWrapper)."""

    def __init__(self, module: nn.Module, quant: QuantStub) -> None:
        super().__init__()
        self.quant, self.module = quant, module

    def forward(self, *args):
        return self.module(self.quant(args[0]), *args[1:])


def _weight_qparams(w: np.ndarray, dtype: str, symmetric: bool, per_channel: bool, reduce_range: bool,
                    name: str) -> QParams:
    if per_channel:
        flat = w.reshape(w.shape[0], -1)
        return choose_qparams(flat.min(1), flat.max(1), dtype, symmetric, 0, reduce_range=reduce_range, name=name)
    return choose_qparams(w.min(), w.max(), dtype, symmetric, reduce_range=reduce_range, name=name)


def _quantized(m: nn.Module, name: str, act: QParams | None, dtype: str, symmetric: bool, per_channel: bool,
               reduce_range: bool) -> nn.Module:
    label = f"layer {name or type(m).__name__!r} weight"
    check_finite(m.weight, label)
    wqp = _weight_qparams(m.weight.detach().numpy(), dtype, symmetric, per_channel, reduce_range, label)
    with no_grad():
        qweight = quantize(m.weight.detach(), wqp)
    bias = None if m.bias is None else m.bias
    if isinstance(m, nn.Linear):
        return QuantizedLinear(m.in_features, m.out_features, qweight, wqp, bias, act).eval()
    return QuantizedConv2d(m, qweight, wqp, bias, act).eval()


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows an nn.Conv2d in an nn.Sequential into it (in place)."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = [n for n, _ in seq.named_children()]
        for a, b in zip(names, names[1:]):
            conv, bn = getattr(seq, a), getattr(seq, b)
            if type(conv) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d) or bn.training \
                    or bn.running_mean is None:
                continue
            var, mean = bn.running_var.numpy().astype(np.float64), bn.running_mean.numpy().astype(np.float64)
            g = (bn.weight.detach().numpy() if bn.affine else 1.0) / np.sqrt(var + bn.eps)
            beta = bn.bias.detach().numpy() if bn.affine else 0.0
            b0 = conv.bias.detach().numpy() if conv.bias is not None else 0.0
            w = conv.weight.detach().numpy() * g.reshape(-1, 1, 1, 1)
            with no_grad():
                conv.weight = nn.Parameter(new_tensor(np.array(w, np.float32)))
                conv.bias = nn.Parameter(new_tensor(np.array((b0 - mean) * g + beta, np.float32)))
            setattr(seq, b, nn.Identity())
    return model


def _targets(model: nn.Module, layers) -> list:
    named = dict(model.named_modules())
    if layers is None:
        return [n for n, m in named.items() if type(m) in _LAYERS]
    out = list(layers)
    bad = [n for n in out if type(named.get(n)) not in _LAYERS]
    if bad:
        raise QuantizationError(f"quantize: {bad} are not nn.Linear / nn.Conv2d layers of the model")
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """`model` with its submodule `name` replaced by `new` (`new` itself when name is the root)."""
    if not name:
        return new
    model.set_submodule(name, new)
    return model


def quantize_static(model: nn.Module, calibration_loader: Iterable, *, per_channel: bool = True,
                    weight_dtype: str = "int8", weight_symmetric: bool = True, reduce_range: bool = False,
                    activation_dtype: str = "uint8", observer: Callable | None = None, layers=None,
                    quantize_input: bool = True, fuse_bn: bool = True, input_fn: Callable | None = None,
                    inplace: bool = False) -> nn.Module:
    """Calibrate, then swap nn.Linear / nn.Conv2d for Quantized* layers with int weights and output qparams."""
    if not inplace:
        model = copy.deepcopy(model)
    if fuse_bn:
        fuse_conv_bn(model.eval())
    targets = _targets(model, layers)
    factory = observer or (lambda: MinMaxObserver(dtype=activation_dtype))
    obs = calibrate(model, calibration_loader, factory, layers=targets, input_fn=input_fn,
                    observe_input=quantize_input)
    for n in targets:
        q = _quantized(model.get_submodule(n) if n else model, n, obs[n].calculate_qparams(), weight_dtype,
                       weight_symmetric, per_channel, reduce_range)
        model = _replace(model, n, q)
    model.eval()
    if quantize_input:
        return QuantWrapper(model, QuantStub(obs["<input>"].calculate_qparams())).eval()
    return model


def quantize_weight_only(model: nn.Module, *, per_channel: bool = True, dtype: str = "int8",
                         symmetric: bool = True, reduce_range: bool = False, layers=None,
                         inplace: bool = False) -> nn.Module:
    """Swap nn.Linear / nn.Conv2d for Quantized* layers with int weights and float activations."""
    if not inplace:
        model = copy.deepcopy(model)
    for n in _targets(model, layers):
        model = _replace(model, n, _quantized(model.get_submodule(n) if n else model, n, None, dtype, symmetric,
                                              per_channel, reduce_range))
    return model.eval()
