"""Integer inference for quantized linear layers: `to_int8(model)` runs each `QuantizedLinear`
whose input is known to be quantized as an int8 x int8 -> int32 GEMM.

`qat.QuantizedLinear` (from `quantize_static` or `qat.convert`) computes in float on dequantized
weights, the form `ember.onnx.export` writes as QDQ. `to_int8` returns a copy of the model in which
such a layer becomes an `Int8Linear` when the values reaching it lie on a known quantization grid
(per-tensor scale s_x, zero point z_x): the output of a `QuantStub`, or of a quantized layer with
output qparams, possibly through modules that keep values on that grid (ReLU, Flatten, Identity,
MaxPool1d/2d/3d without indices, Dropout in eval mode). `Int8Linear.forward`:

1. ``xq = uint8(clamp(round(x * float32(1 / s_x)) + z_x, qmin, qmax))``: `quant_dequant`'s rounding,
   so on the grid it recovers the previous layer's integers exactly (|x / s_x| <= 255 is far from a
   rounding tie);
2. ``acc = dot_general(xq, qweight_t, ((1,), (0,)), preferred=int32)``: the exact integer sum, which
   ember.jit's CPU backend runs on its AVX2 int8 kernel (backend/cpu/qgemm.py; vpmaddubsw when
   2 * max(xq) * max|w| <= 32767, as weights in [-64, 64] from ``reduce_range=True`` guarantee,
   else the exact int16 vpmaddwd kernel). The weight is stored transposed, (in, out) contiguous
   (`qweight_t`): the kernel packs B per call, and reads 16 adjacent columns of a k-row at a time
   far faster than 4 bytes per column of an (out, in) weight (64x784x512: 0.34 ms against 0.60 ms);
3. ``acc - z_x * sum_k w[c, k]`` (int32, precomputed per output channel; with nonzero weight zero
   points also ``- z_w[c] * sum_k (xq - z_x)``): the exact sum of (xq - z_x)(wq - z_w);
4. ``float32(acc) * (s_x * s_w[c]) + bias``, then the output `quant_dequant` exactly as
   QuantizedLinear does, so the model's outputs equal the QuantizedLinear model's within one output
   quantization step (mostly exactly: the two differ only by float32 rounding of the sum before
   the output rounding).

Where the data flow comes from: by default a static walk of the module tree, as the QDQ export
walks the ONNX graph: a `QuantWrapper` (its stub, then its module), `nn.Sequential` children in
order, and the modules above. A module with a forward of its own (not a Sequential) is opaque:
its children are walked with an unknown input, so a layer whose input comes through such a forward
(FashionCNN's first Linear, after ``self.classifier(self.features(x))``) stays in float, and the
report says so. With ``example_input=``, the flow is traced instead, by one eager forward with
hooks that follow tensor identities through every module call, and each candidate's input is
checked to lie on its grid in that forward (a forward whose routing depends on the data is
trusted to route other inputs alike).

The returned model's `int8_report` (an `Int8Report`; ``print`` it) lists every layer converted,
with its input qparams and the GEMM kernel its value ranges guarantee, and every layer kept.

Kept in float, each with its reason in the report (never silently): `QuantizedConv2d` (there is
no int8 convolution kernel yet: an im2col over uint8 plus this GEMM is the next step; a conv's
quantized output still feeds an int8 Linear after it), layers whose input is not known to be
quantized, plain nn.Linear / nn.Conv2d (not quantized), and layers too deep for int32 sums
(in_features * 255 * 255 >= 2**31). `Int8Linear` is an inference module (no gradient, no
training); export the QuantizedLinear model, not this one, to ONNX.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ember import api as E, nn
from ember._core import dtypes as dt
from ember._core.state import no_grad
from ember.ops import lax
from ember.tensor import Tensor, tensor as new_tensor

from .qat import QuantizedConv2d, QuantizedLinear, quant_dequant
from .qdq import QuantStub, QuantWrapper, _replace
from .quant import QParams

__all__ = ["Int8Linear", "Int8Report", "to_int8"]

_GRID = (nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout)  # exact types: subclasses may change values
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_STORAGE = {"uint8": dt.uint8, "int8": dt.int8}
_I32_MAX = 2 ** 31 - 1


def _keeps_grid(m: nn.Module) -> bool:
    if type(m) is nn.Dropout:
        return not m.training
    if type(m) in _GRID:
        return True
    return type(m) in _MAXPOOL and not m.return_indices


def _f32(v) -> Tensor:
    return new_tensor(np.array(v, np.float32))


class Int8Linear(nn.Module):
    """QuantizedLinear computed on integers: uint8 input x int8 weight -> int32, then float (see the module doc)."""

    def __init__(self, q: QuantizedLinear, input_qparams: QParams) -> None:
        super().__init__()
        ip = input_qparams
        self.in_features, self.out_features = q.in_features, q.out_features
        self.input_qparams, self.weight_qparams, self.act_qparams = ip, q.weight_qparams, q.act_qparams
        w = np.asarray(q.qweight.numpy()).reshape(q.out_features, q.in_features)
        ws = np.broadcast_to(np.asarray(q.weight_scale.numpy(), np.float32).reshape(-1), (q.out_features,))
        wz = np.broadcast_to(np.asarray(q.weight_zero_point.numpy(), np.int64).reshape(-1), (q.out_features,))
        sx, zx = np.float32(ip.scale), int(ip.zero_point)
        self._qmin, self._qmax, self._zw, self._zxk = float(ip.qmin), float(ip.qmax), bool(wz.any()), zx * q.in_features
        self._xdtype = _STORAGE[ip.dtype]
        self.register_buffer("qweight_t", new_tensor(np.ascontiguousarray(w.T)))  # (in, out): qgemm's B
        self.register_buffer("input_inv_scale", _f32(np.float32(1) / sx))  # quant_dequant's float32(1 / s)
        self.register_buffer("input_zero_point", _f32(zx))
        # sum_k (xq - zx) * wq[c, k] = acc - zx * sum_k wq[c, k]   (|.| <= K * 255 * 255 < 2**31)
        self.register_buffer("col_term", new_tensor(np.array(zx * w.astype(np.int64).sum(1), np.int32)))
        self.register_buffer("weight_zero_point", new_tensor(np.array(wz, np.int32)) if self._zw else None)
        self.register_buffer("out_scale", new_tensor(np.array(sx * ws, np.float32)))
        self.register_buffer("bias", None if q.bias is None else q.bias.detach().clone())
        if q.act_qparams is not None:
            self.register_buffer("act_scale", q.act_scale.detach().clone())
            self.register_buffer("act_zero_point", q.act_zero_point.detach().clone())
        wmax = int(np.abs(w.astype(np.int64)).max()) if w.size else 0
        if ip.dtype == "uint8" and w.dtype == np.int8:  # qgemm.py picks per call: 2 * max(xq) * max|w| <= 32767
            cap = 32767 // max(2 * wmax, 1)
            self.kernel = "vpmaddubsw" if cap >= ip.qmax else f"vpmaddwd (vpmaddubsw if max(xq) <= {cap})"
        else:
            self.kernel = "chosen per call by the operands' ranges"

    def forward(self, input: Tensor) -> Tensor:
        k = self.in_features
        lead = tuple(input.shape[:-1])
        x = input if input.ndim == 2 else input.reshape(-1, k)
        q = E.round(x * self.input_inv_scale) + self.input_zero_point
        xq = E.convert(E.minimum(E.maximum(q, self._qmin), self._qmax), self._xdtype)
        acc = lax.dot_general(xq, self.qweight_t, ((1,), (0,)), preferred=dt.int32) - self.col_term
        if self._zw:  # - zw[c] * sum_k (xq - zx)
            rows = E.sum(E.convert(xq, dt.int32), 1, keepdim=True, dtype=dt.int32)
            acc = acc - self.weight_zero_point * (rows - self._zxk)
        y = E.convert(acc, dt.float32) * self.out_scale
        if self.bias is not None:
            y = y + self.bias
        if self.act_qparams is not None:
            y = quant_dequant(y, self.act_scale, self.act_zero_point, self.act_qparams.qmin, self.act_qparams.qmax)
        return y if input.ndim == 2 else y.reshape(lead + (self.out_features,))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, input={self.input_qparams.dtype} "
                f"scale={float(self.input_qparams.scale):.6g} zero_point={int(self.input_qparams.zero_point)}, "
                f"weight={self.weight_qparams.dtype}")


@dataclass
class Int8Report:
    """What `to_int8` did: `converted` [(layer, detail)] and `kept` [(layer, why it stays float)]."""

    converted: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    flow: str = "static walk of the module tree"

    def __str__(self) -> str:
        lines = [f"to_int8 ({self.flow}): {len(self.converted)} layer(s) converted to int8, "
                 f"{len(self.kept)} kept in float"]
        if not self.converted:
            lines.append("  nothing was converted")
        lines += [f"  int8   {n}: {d}" for n, d in self.converted]
        lines += [f"  float  {n}: {d}" for n, d in self.kept]
        return "\n".join(lines)


def _label(name: str) -> str:
    return repr(name) if name else "the model"


def _out_state(m: nn.Module, name: str):
    """The qparams of a quantized layer's output, or why it has none."""
    return m.act_qparams if m.act_qparams is not None else \
        f"it comes from {_label(name)}, whose output is not quantized (weight-only)"


def _walk(m: nn.Module, name: str, state, found: dict):
    """Static flow: the state (QParams or a reason string) of m's output given its input's; fills
    found[name] = the input state of each QuantizedLinear / Int8Linear."""
    join = (lambda n: f"{name}.{n}" if name else n)  # noqa: E731
    if isinstance(m, QuantStub):
        return m.qparams
    if isinstance(m, (QuantizedLinear, Int8Linear)):
        found[name] = state
        return _out_state(m, name)
    if isinstance(m, QuantizedConv2d):
        return _out_state(m, name)
    if type(m) is QuantWrapper:
        return _walk(m.module, join("module"), _walk(m.quant, join("quant"), state, found), found)
    if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
        for n, c in m.named_children():
            state = _walk(c, join(n), state, found)
        return state
    if _keeps_grid(m):
        return state
    children = list(m.named_children())
    inner = (f"it is inside {_label(name)} ({type(m).__name__}), whose own forward() the static walk cannot "
             "follow (pass example_input= to trace the data flow)")
    for n, c in children:
        _walk(c, join(n), inner, found)
    return (f"it comes from {_label(name)} ({type(m).__name__}), which may move values off the quantization "
            "grid" if not children else f"it comes through {_label(name)} ({type(m).__name__})'s own forward()")


def _on_grid(x: Tensor, qp: QParams) -> bool:
    a = np.asarray(x.detach().numpy(), np.float32)
    s, z = np.float32(qp.scale), np.float32(qp.zero_point)
    q = np.rint(a * (np.float32(1) / s)) + z
    return bool(((q >= qp.qmin) & (q <= qp.qmax)).all() and np.array_equal((q - z) * s, a))


def _traced(model: nn.Module, example_input) -> dict:
    """Flow by one eager forward: tensors are followed by identity through module calls."""
    tag, made_by, alive, found = {}, {}, [], {}
    inputs = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    alive.extend(inputs)
    named = dict(model.named_modules())

    def state_of(x):
        if not isinstance(x, Tensor):
            return "its input is not a tensor"
        st = tag.get(id(x))
        if isinstance(st, QParams):
            return st if _on_grid(x, st) else "its input is off the grid of the qparams it was traced to " \
                                              "(changed in place?)"
        if st is not None:
            return st
        if any(x is i for i in inputs):
            return "its input is the float model input (no QuantStub before it)"
        src = made_by.get(id(x))
        if src is None:
            return "its input is computed in a forward() between module calls"
        return f"its input comes from {_label(src)} ({type(named[src]).__name__}), which may move values off " \
               "the quantization grid"

    def pre(name):
        def hook(m, args):
            found.setdefault(name, []).append(state_of(args[0]) if args else "it has no input")
        return hook

    def post(name):
        def hook(m, args, out):
            if not isinstance(out, Tensor):
                return
            alive.append(out)
            made_by.setdefault(id(out), name)  # the innermost module: its hook runs first
            if isinstance(m, QuantStub):
                tag[id(out)] = m.qparams
            elif isinstance(m, (QuantizedLinear, QuantizedConv2d, Int8Linear)):
                tag[id(out)] = _out_state(m, name)
            elif _keeps_grid(m) and args and isinstance(args[0], Tensor) and id(args[0]) in tag:
                tag.setdefault(id(out), tag[id(args[0])])
        return hook

    handles = [mod.register_forward_hook(post(n)) for n, mod in named.items()]
    handles += [mod.register_forward_pre_hook(pre(n)) for n, mod in named.items()
                if isinstance(mod, (QuantizedLinear, Int8Linear))]
    was = model.training
    try:
        model.eval()
        with no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    out = {}
    for n, mod in named.items():
        if not isinstance(mod, (QuantizedLinear, Int8Linear)):
            continue
        calls = found.get(n, [])
        if not calls:
            out[n] = "it was not called by the example forward"
        elif len(calls) > 1 and not all(_same(c, calls[0]) for c in calls):
            bad = next((c for c in calls if not isinstance(c, QParams)), "calls see different input qparams")
            out[n] = f"called {len(calls)} times, not always on one grid: {bad}"
        else:
            out[n] = calls[0]
    return out


def _same(a, b) -> bool:
    return isinstance(a, QParams) and isinstance(b, QParams) and (a.dtype, a.axis, a.qmin, a.qmax) == \
        (b.dtype, b.axis, b.qmin, b.qmax) and np.array_equal(a.scale, b.scale) and \
        np.array_equal(a.zero_point, b.zero_point)


def _reason(m: nn.Module, st) -> str | None:
    """Why QuantizedLinear m with input state st cannot go int8 (None: it can)."""
    if not isinstance(st, QParams):
        return f"input not known to be quantized: {st}"
    if st.axis is not None or st.dtype not in _STORAGE:
        return f"its input qparams are {st.dtype} along axis {st.axis}: int8 needs per-tensor uint8 / int8"
    if m.in_features * 255 * 255 > _I32_MAX:
        return f"in_features {m.in_features} is too deep for exact int32 sums (at most {_I32_MAX // 65025})"
    return None


def to_int8(model: nn.Module, example_input=None, inplace: bool = False) -> nn.Module:
    """A copy of `model` (or the model, with inplace=True) whose QuantizedLinear layers with a quantized
    input are Int8Linear; its `int8_report` (an Int8Report) names every layer converted or kept in float.

    `example_input` (a tensor or a tuple of the forward's arguments): trace the data flow by one
    eager forward instead of walking the module tree (for models with a forward of their own)."""
    if not inplace:
        model = copy.deepcopy(model)
    report = Int8Report()
    if example_input is None:
        found: dict = {}
        _walk(model, "", "its input is the float model input (no QuantStub before it)", found)
    else:
        found = _traced(model, example_input)
        report.flow = "data flow traced by one forward of example_input"
    for name, m in list(model.named_modules()):
        if isinstance(m, Int8Linear):
            report.kept.append((name, "already Int8Linear"))
        elif isinstance(m, QuantizedLinear):
            st = found.get(name, "not reached by the walk")
            why = _reason(m, st)
            if why is not None:
                report.kept.append((name, why))
                continue
            new = Int8Linear(m, st).train(m.training)
            model = _replace(model, name, new)
            report.converted.append((name, f"{m.in_features}->{m.out_features}, input {st.dtype} scale "
                                           f"{float(st.scale):.6g} zero_point {int(st.zero_point)}, "
                                           f"kernel {new.kernel}"))
        elif isinstance(m, QuantizedConv2d):
            report.kept.append((name, "QuantizedConv2d: no int8 convolution kernel yet (float on dequantized "
                                      "weights; its quantized output can still feed an int8 Linear)"))
        elif type(m) in (nn.Linear, nn.Conv2d):
            report.kept.append((name, f"plain {type(m).__name__}, not quantized (run quantize_static first)"))
    object.__setattr__(model, "int8_report", report)
    return model
