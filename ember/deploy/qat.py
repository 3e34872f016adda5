"""Quantization-aware training (MD-7): fake quantization with the straight-through estimator,
`FakeQuantize` modules, `prepare_qat` and `convert`, in PyTorch's (torch.ao.quantization) shape.

`fake_quantize` is built from differentiable ember ops, so it runs eagerly and traces under
ember.jit: ``q = round(x * (1 / scale)) + zero_point`` (half to even, float32),
``y = (clamp(q, qmin, qmax) - zero_point) * scale``; the gradient is 1 where qmin <= q <= qmax
and 0 elsewhere, exactly torch.fake_quantize_per_tensor_affine's / per_channel_affine's backward
(scale and zero point get none).

`prepare_qat(model)` returns a copy (or, with inplace=True, the model itself) whose nn.Linear and
nn.Conv2d layers are `QATLinear` / `QATConv2d`: the same parameters, a weight fake-quant
(per-channel symmetric int8 by default) and an output fake-quant `activation_post_process`
(uint8 affine). Observers update only in training mode. `convert(model)` replaces them by
`QuantizedLinear` / `QuantizedConv2d` holding int8 weights and qparams (no FakeQuantize left), whose
float forward (dequantized weights, the layer, quantize-dequantize of the output) gives the QAT
model's eval output. To jit a QAT training step, freeze the qparams first (`disable_observer`):
observers read values on the host, which a trace does not have.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ember import api as E, nn
from ember._core import dtypes as dt
from ember._core.errors import ConcretizationError
from ember._core.state import no_grad
from ember.nn import functional as F
from ember.tensor import Tensor, tensor as new_tensor

from .observers import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver, Observer
from .quant import QParams, QuantizationError, check_finite, is_traced

__all__ = ["fake_quantize", "FakeQuantize", "QConfig", "default_qat_qconfig", "QATLinear", "QATConv2d",
           "QuantizedLinear", "QuantizedConv2d", "prepare_qat", "convert", "disable_observer", "enable_observer",
           "disable_fake_quant", "enable_fake_quant"]


def _shaped(v, x: Tensor, axis: int | None, dtype) -> Tensor:
    t = v if isinstance(v, Tensor) else new_tensor(np.asarray(v, dtype=np.float32))
    if t.dtype is not dtype:
        t = E.convert(t, dtype)
    if axis is None:
        if t.ndim and t.numel() != 1:
            raise QuantizationError(f"fake_quantize: per-tensor needs one scale/zero point, got {t.numel()} "
                                    "(pass axis= for per-channel)")
        return t.reshape(()) if t.ndim else t
    ax = axis % max(x.ndim, 1)
    if x.ndim == 0 or t.numel() != x.shape[ax]:
        raise QuantizationError(f"fake_quantize: {t.numel()} per-channel qparams along axis {axis} do not fit "
                                f"shape {tuple(x.shape)}")
    shape = [1] * x.ndim
    shape[ax] = x.shape[ax]
    return t.reshape(tuple(shape))


def _quant_float(x: Tensor, scale, zero_point, quant_min: int, quant_max: int, axis):
    """(q before the clamp, the clamped q, scale, zero point as floats), broadcast to x."""
    s = _shaped(scale, x, axis, dt.float32)
    if not is_traced(s):
        try:
            ok = bool((s.detach() > 0).all().item())
        except ConcretizationError:  # a buffer read inside ember.jit: checked when it was set
            ok = True
        if not ok:
            raise QuantizationError(f"fake_quantize: scale must be > 0, got {s.detach().numpy().reshape(-1).tolist()}")
    z = _shaped(zero_point, x, axis, dt.float32)
    inv = E.div(1, s)  # float32(1 / scale): torch multiplies by it
    q = E.round(x.detach() * inv) + z
    return q, E.clamp(q, quant_min, quant_max), s, z


def fake_quantize(x: Tensor, scale, zero_point, quant_min: int, quant_max: int, axis: int | None = None) -> Tensor:
    """Quantize-dequantize `x` with a straight-through gradient (1 inside [quant_min, quant_max], else 0)."""
    if quant_min >= quant_max:
        raise QuantizationError(f"fake_quantize: quant_min {quant_min} must be < quant_max {quant_max}")
    q, qc, s, z = _quant_float(x, scale, zero_point, quant_min, quant_max, axis)
    y = (qc - z) * s
    if not x.requires_grad:
        return y
    inside = E.where((q >= quant_min) & (q <= quant_max), x, E.zeros_like(x))
    return y.detach() + (inside - inside.detach())  # value y; d/dx = the mask


def dequantize_weight(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """(float(q) - float(zero_point)) * scale: ONNX export writes it as DequantizeLinear."""
    return (E.convert(q, dt.float32) - E.convert(zero_point, dt.float32)) * scale


def quant_dequant(x: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int) -> Tensor:
    """Per-tensor quantize-dequantize with fake_quantize's values on finite inputs and no gradient
    rule (inference): ONNX export writes it as QuantizeLinear -> DequantizeLinear."""
    z = E.convert(zero_point, dt.float32)
    q = E.round(x * E.div(1, scale)) + z
    return (E.minimum(E.maximum(q, float(quant_min)), float(quant_max)) - z) * scale


def _int_values(x: Tensor, scale, zero_point, quant_min: int, quant_max: int, axis) -> Tensor:
    """The integers fake_quantize rounds x to (what convert stores)."""
    return _quant_float(x, scale, zero_point, quant_min, quant_max, axis)[1]


def _observer_of(observer, kwargs: dict) -> Observer:
    if isinstance(observer, Observer):
        return observer
    return (observer or MovingAverageMinMaxObserver)(**kwargs)


class FakeQuantize(nn.Module):
    """An observer plus fake quantization (torch.ao.quantization.FakeQuantize); observes in training mode only."""

    def __init__(self, observer=None, **observer_kwargs) -> None:
        super().__init__()
        obs = _observer_of(observer, observer_kwargs)
        object.__setattr__(self, "observer", obs)
        self.quant_min, self.quant_max, self.dtype, self.axis = obs.quant_min, obs.quant_max, obs.dtype, obs.axis
        self.register_buffer("scale", new_tensor(np.ones(1, np.float32)))
        self.register_buffer("zero_point", new_tensor(np.zeros(1, np.int32)))
        self._switch(True, True)

    def _switch(self, fake_quant: bool, observe: bool) -> None:
        # buffers, as torch's: a new tensor on each change makes ember.jit retrace
        self._fq_on, self._obs_on = bool(fake_quant), bool(observe)
        self.register_buffer("fake_quant_enabled", new_tensor(np.array([int(fake_quant)], np.uint8)))
        self.register_buffer("observer_enabled", new_tensor(np.array([int(observe)], np.uint8)))

    def enable_fake_quant(self, enabled: bool = True) -> "FakeQuantize":
        """Switch fake quantization on (or off with False)."""
        self._switch(enabled, self._obs_on)
        return self

    def disable_fake_quant(self) -> "FakeQuantize":
        """Pass values through unchanged."""
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> "FakeQuantize":
        """Let training-mode forwards update the observer and the qparams (or freeze them with False)."""
        self._switch(self._fq_on, enabled)
        return self

    def disable_observer(self) -> "FakeQuantize":
        """Freeze the qparams."""
        return self.enable_observer(False)

    def calculate_qparams(self) -> QParams:
        """The observer's current qparams."""
        return self.observer.calculate_qparams()

    def qparams(self) -> QParams:
        """The qparams fake quantization uses now (the buffers)."""
        return QParams(self.scale.numpy(), self.zero_point.numpy(), self.dtype, self.axis, self.observer.symmetric,
                       self.quant_min, self.quant_max, self.observer.name)

    def _update(self, x: Tensor) -> None:
        self.observer.observe(x.detach())
        qp = self.observer.calculate_qparams()
        s = np.array(qp.scale.reshape(-1), np.float32)
        z = np.array(qp.zero_point.reshape(-1), np.int32)
        if tuple(self.scale.shape) == s.shape:
            with no_grad():
                self.scale.copy_(new_tensor(s))
                self.zero_point.copy_(new_tensor(z))
        else:
            self.scale, self.zero_point = new_tensor(s), new_tensor(z)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self._obs_on:
            self._update(x)
        if not self._fq_on:
            return x
        scale = self.scale if self.axis is not None else self.scale.reshape(())
        zp = self.zero_point if self.axis is not None else self.zero_point.reshape(())
        return fake_quantize(x, scale, zp, self.quant_min, self.quant_max, self.axis)

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={self._fq_on}, observer_enabled={self._obs_on}, dtype={self.dtype}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}, axis={self.axis}, "
                f"observer={type(self.observer).__name__}")


def disable_observer(m: nn.Module) -> None:
    """For model.apply: freeze every FakeQuantize's qparams."""
    if isinstance(m, FakeQuantize):
        m.disable_observer()


def enable_observer(m: nn.Module) -> None:
    """For model.apply: let every FakeQuantize observe again."""
    if isinstance(m, FakeQuantize):
        m.enable_observer()


def disable_fake_quant(m: nn.Module) -> None:
    """For model.apply: switch fake quantization off."""
    if isinstance(m, FakeQuantize):
        m.disable_fake_quant()


def enable_fake_quant(m: nn.Module) -> None:
    """For model.apply: switch fake quantization on."""
    if isinstance(m, FakeQuantize):
        m.enable_fake_quant()


@dataclass
class QConfig:
    """Factories of the activation and weight FakeQuantize modules (torch's QConfig)."""

    activation: Callable[[], FakeQuantize]
    weight: Callable[[], FakeQuantize]


def default_qat_qconfig() -> QConfig:
    """uint8 affine moving-average activations; int8 per-channel symmetric moving-average weights."""
    return QConfig(activation=lambda: FakeQuantize(MovingAverageMinMaxObserver(dtype="uint8")),
                   weight=lambda: FakeQuantize(MovingAveragePerChannelMinMaxObserver(dtype="int8", symmetric=True)))


def _attach(mod: nn.Module, qconfig: QConfig | None) -> None:
    qc = qconfig or default_qat_qconfig()
    mod.weight_fake_quant = qc.weight()
    mod.activation_post_process = qc.activation()


class QATLinear(nn.Linear):
    """nn.Linear with fake-quantized weight and output (torch.ao.nn.qat.Linear + its output observer)."""

    @classmethod
    def from_float(cls, mod: nn.Linear, qconfig: QConfig | None = None) -> "QATLinear":
        """A QAT copy of `mod` sharing its parameters."""
        q = cls(mod.in_features, mod.out_features, mod.bias is not None)
        q.weight, q.bias = mod.weight, mod.bias
        _attach(q, qconfig)
        return q.train(mod.training)

    def forward(self, input: Tensor) -> Tensor:
        return self.activation_post_process(F.linear(input, self.weight_fake_quant(self.weight), self.bias))


class QATConv2d(nn.Conv2d):
    """nn.Conv2d with fake-quantized weight and output (torch.ao.nn.qat.Conv2d + its output observer)."""

    @classmethod
    def from_float(cls, mod: nn.Conv2d, qconfig: QConfig | None = None) -> "QATConv2d":
        """A QAT copy of `mod` sharing its parameters."""
        q = cls(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                mod.groups, mod.bias is not None, mod.padding_mode)
        q.weight, q.bias = mod.weight, mod.bias
        _attach(q, qconfig)
        return q.train(mod.training)

    def forward(self, input: Tensor) -> Tensor:
        return self.activation_post_process(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias))


class _Quantized(nn.Module):
    """Shared by QuantizedLinear / QuantizedConv2d: int weights, weight and output qparams as buffers."""

    def _setup(self, qweight: Tensor, wqp: QParams, bias: Tensor | None, act: QParams | None) -> None:
        shape = [1] * qweight.ndim
        shape[0] = -1
        self.weight_qparams, self.act_qparams = wqp, act
        self.register_buffer("qweight", qweight)
        self.register_buffer("weight_scale", new_tensor(np.array(wqp.scale.reshape(shape), np.float32)))
        self.register_buffer("weight_zero_point", new_tensor(np.array(wqp.zero_point.reshape(shape), np.int32)))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        if act is not None:
            self.register_buffer("act_scale", new_tensor(np.array(act.scale.reshape(()), np.float32)))
            self.register_buffer("act_zero_point", new_tensor(np.array(act.zero_point.reshape(()), np.int32)))

    def dequantized_weight(self) -> Tensor:
        """The float32 weight: (q - zero_point) * scale."""
        return dequantize_weight(self.qweight, self.weight_scale, self.weight_zero_point)

    def _output(self, y: Tensor) -> Tensor:
        if self.act_qparams is None:
            return y
        return quant_dequant(y, self.act_scale, self.act_zero_point, self.act_qparams.qmin, self.act_qparams.qmax)


class QuantizedLinear(_Quantized):
    """A linear layer holding int8 weights and qparams; computes in float on dequantized weights."""

    def __init__(self, in_features: int, out_features: int, qweight: Tensor, wqp: QParams, bias: Tensor | None,
                 act: QParams | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup(qweight, wqp, bias, act)

    def forward(self, input: Tensor) -> Tensor:
        return self._output(F.linear(input, self.dequantized_weight(), self.bias))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.weight_qparams.dtype}"


class QuantizedConv2d(_Quantized):
    """A 2-d convolution holding int8 weights and qparams (nn.Conv2d's geometry and padding modes)."""

    _nd = 2
    _explicit_pads = nn.Conv2d._explicit_pads
    _conv_forward = nn.Conv2d._conv_forward

    def __init__(self, conv: nn.Conv2d, qweight: Tensor, wqp: QParams, bias: Tensor | None,
                 act: QParams | None) -> None:
        super().__init__()
        for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                  "padding_mode"):
            setattr(self, k, getattr(conv, k))
        self._setup(qweight, wqp, bias, act)

    def forward(self, input: Tensor) -> Tensor:
        return self._output(self._conv_forward(input, self.dequantized_weight(), self.bias))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, " \
               f"dtype={self.weight_qparams.dtype}"


_QAT = {nn.Linear: QATLinear, nn.Conv2d: QATConv2d}


def _swap(module: nn.Module, fn: Callable, prefix: str = "") -> nn.Module:
    out = fn(module, prefix)
    if out is not module:
        return out
    for name, child in list(module.named_children()):
        new = _swap(child, fn, f"{prefix}{name}.")
        if new is not child:
            setattr(module, name, new)
    return module


def prepare_qat(model: nn.Module, qconfig: QConfig | None = None, inplace: bool = False) -> nn.Module:
    """Swap nn.Linear / nn.Conv2d for QAT modules with weight and activation fake-quant (a copy unless inplace)."""
    if not inplace:
        model = copy.deepcopy(model)
    return _swap(model, lambda m, _: _QAT[type(m)].from_float(m, qconfig) if type(m) in _QAT else m)


def _convert_one(m: nn.Module, name: str) -> nn.Module:
    if not isinstance(m, (QATLinear, QATConv2d)):
        return m
    layer = name[:-1] or type(m).__name__
    wfq, afq = m.weight_fake_quant, m.activation_post_process
    check_finite(m.weight, f"convert: layer {layer!r} weight")
    for what, fq in (("weight", wfq), ("activation", afq)):
        if fq._fq_on and fq.observer.count == 0:
            raise QuantizationError(f"convert: layer {layer!r}: the {what} observer has seen no data (scale is "
                                    "still the initial 1.0); run QAT training steps or calibration first")
    wqp = wfq.qparams()
    with no_grad():
        w = m.weight.detach()
        scale = wfq.scale if wfq.axis is not None else wfq.scale.reshape(())
        zp = wfq.zero_point if wfq.axis is not None else wfq.zero_point.reshape(())
        q = _int_values(w, scale, zp, wfq.quant_min, wfq.quant_max, wfq.axis)
        storage = dt.uint8 if wfq.quant_min >= 0 else dt.int8
        qweight = E.convert(q, storage)
    if wqp.axis is None:  # per-tensor: one scale broadcast over every output channel
        n = w.shape[0]
        wqp = QParams(np.repeat(wqp.scale.reshape(1), n), np.repeat(wqp.zero_point.reshape(1), n), wqp.dtype, 0,
                      wqp.symmetric, wqp.quant_min, wqp.quant_max, wqp.name)
    act = afq.qparams() if afq._fq_on else None
    bias = None if m.bias is None else m.bias
    if isinstance(m, QATLinear):
        return QuantizedLinear(m.in_features, m.out_features, qweight, wqp, bias, act).train(m.training)
    return QuantizedConv2d(m, qweight, wqp, bias, act).train(m.training)


def convert(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace QAT modules by Quantized* modules holding int weights + qparams (no FakeQuantize left)."""
    if not inplace:
        model = copy.deepcopy(model)
    model = _swap(model, _convert_one)
    left = [n for n, m in model.named_modules() if isinstance(m, FakeQuantize)]
    if left:
        raise QuantizationError(f"convert: FakeQuantize modules outside QATLinear/QATConv2d remain: {left}")
    return model
