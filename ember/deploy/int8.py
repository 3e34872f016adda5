"""Integer inference for quantized layers: `to_int8(model)` runs each `QuantizedLinear` and
`QuantizedConv2d` whose input is known to be quantized as an int8 x int8 -> int32 GEMM.

`qat.QuantizedLinear` / `QuantizedConv2d` (from `quantize_static` or `qat.convert`) compute in
float on dequantized weights, the form `ember.onnx.export` writes as QDQ. `to_int8` returns a copy
of the model in which such a layer becomes an `Int8Linear` / `Int8Conv2d` when the values reaching
it lie on a known quantization grid (per-tensor scale s_x, zero point z_x): the output of a
`QuantStub`, or of a quantized layer with output qparams, possibly through modules that keep values
on that grid (ReLU, Flatten, Identity, MaxPool1d/2d/3d without indices, Dropout in eval mode).
`Int8Linear.forward`:

1. ``xq = uint8(clamp(round(x * float32(1 / s_x)) + z_x, qmin, qmax))``: `quant_dequant`'s rounding,
   so on the grid it recovers the previous layer's integers exactly (|x / s_x| <= 255 is far from a
   rounding tie);
2. ``acc = packed_matmul(xq, packed_weight)``: the exact integer sum against the int8 weight packed
   once, at conversion, into the int8 GEMM kernel's layout (ops/packed.py), which ember.jit's CPU
   backend runs on its AVX2 kernel (backend/cpu/qgemm.py; vpmaddubsw when 2 * max(xq) * max|w|
   <= 32767, as weights in [-64, 64] from ``reduce_range=True`` guarantee, else the exact int16
   vpmaddwd kernel); packing at each call was a quarter of the time at 64 x 784 x 512. A uint8
   weight is kept (in, out) contiguous and packed per call (``dot_general(preferred=int32)``);
3. ``acc - z_x * sum_k w[c, k]`` (int32, precomputed per output channel; with nonzero weight zero
   points also ``- z_w[c] * sum_k (xq - z_x)``): the exact sum of (xq - z_x)(wq - z_w);
4. ``float32(acc) * (s_x * s_w[c]) + bias``, then the output `quant_dequant` exactly as
   QuantizedLinear does, so the model's outputs equal the QuantizedLinear model's within one output
   quantization step (mostly exactly: the two differ only by float32 rounding of the sum before
   the output rounding).

Under ember.jit, steps 3 and 4 and whatever elementwise work follows (a ReLU, the next layer's
step 1) are one elementwise group reading only the GEMM's result: the CPU target fuses it into
the GEMM as its epilogue (runtime/units.py `Epilogue`), computed on each tile as it is stored, so
the int32 result never reaches memory and the kernel writes the next layer's uint8 input.

`Int8Conv2d` is the same arithmetic with the GEMM the other way round, weight times im2col:
``acc (O, N * oh * ow) = wq (O, C * kh * kw) @ cols``, where `cols` holds the input's integers one
tap per row block (C, kh * kw, N * oh * ow), taken from the CNHW input padded with z_x (the float
0 on the input grid; 'reflect' / 'replicate' / 'circular' padding copies the input's own integers);
the result, (O, N, oh, ow), becomes NCHW by a transpose that moves whole rows of oh * ow values
(an (N * oh * ow, O) GEMM would need an element-by-element transpose, which cost more than the
GEMM). The weight is the GEMM's A, packed per call (O * K bytes). Grouped convolutions stay float.

Where the data flow comes from: by default a static walk of the module tree, as the QDQ export
walks the ONNX graph: a `QuantWrapper` (its stub, then its module), `nn.Sequential` children in
order, and the modules above. A module with a forward of its own (not a Sequential) is opaque:
its children are walked with an unknown input, so a layer whose input comes through such a forward
(FashionCNN's first conv, and its first Linear, after ``self.classifier(self.features(x))``) stays
in float, and the report says so. With ``example_input=``, the flow is traced instead, by one
eager forward with hooks that follow tensor identities through every module call, and each
candidate's input is checked to lie on its grid in that forward (a forward whose routing depends
on the data is trusted to route other inputs alike).

The returned model's `int8_report` (an `Int8Report`; ``print`` it) lists every layer converted,
with its input qparams and the GEMM kernel its value ranges guarantee, and every layer kept.

Kept in float, each with its reason in the report (never silently): layers whose input is not
known to be quantized, grouped convolutions, plain nn.Linear / nn.Conv2d (not quantized), and
layers too deep for int32 sums (K * 255 * 255 >= 2**31). `Int8Linear` and `Int8Conv2d` are
inference modules (no gradient, no training); export the Quantized* model, not this one, to ONNX.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ember import api as E, nn
from ember.nn import functional as F
from ember._core import dtypes as dt
from ember._core.state import no_grad
from ember.ops import lax
from ember.ops.packed import pack_weight
from ember.tensor import Tensor, tensor as new_tensor

from .qat import QuantizedConv2d, QuantizedLinear, quant_dequant
from .qdq import QuantStub, QuantWrapper, _replace
from .quant import QParams

__all__ = ["Int8Conv2d", "Int8Linear", "Int8ReLU", "Int8Report", "to_int8"]

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


class _Int8Gemm(nn.Module):
    """The integer core of Int8Linear and Int8Conv2d: an (M, K) input on the grid of
    `input_qparams` times the (K, O) int8 weight `wmat`, corrected, scaled and requantized."""

    def _setup(self, q, wmat: np.ndarray, input_qparams: QParams, transposed: bool = False) -> None:
        """Buffers for the GEMM x (M, K) @ wmat (K, O), or with `transposed` wmat.T (O, K) @ x (K, M)
        (per-channel vectors then (O, 1))."""
        ip = input_qparams
        k, o = wmat.shape
        self.input_qparams, self.weight_qparams, self.act_qparams = ip, q.weight_qparams, q.act_qparams
        ws = np.broadcast_to(np.asarray(q.weight_scale.numpy(), np.float32).reshape(-1), (o,))
        wz = np.broadcast_to(np.asarray(q.weight_zero_point.numpy(), np.int64).reshape(-1), (o,))
        sx, zx = np.float32(ip.scale), int(ip.zero_point)
        self._qmin, self._qmax, self._zw, self._zxk = float(ip.qmin), float(ip.qmax), bool(wz.any()), zx * k
        self._k, self._o, self._zx, self._t = k, o, zx, transposed
        self._xdtype = _STORAGE[ip.dtype]
        vec = (lambda v: v.reshape(o, 1)) if transposed else (lambda v: v)  # noqa: E731
        self.register_buffer("packed_weight", None)
        self.register_buffer("qweight_t", None)
        self.register_buffer("qweight", None)
        if transposed:  # (O, K): the GEMM's A, packed by the kernel at each call (O * K bytes)
            self.register_buffer("qweight", new_tensor(np.ascontiguousarray(wmat.T)))
        elif wmat.dtype == np.int8:  # packed once for the int8 GEMM kernel (ops/packed.py)
            self.register_buffer("packed_weight", new_tensor(pack_weight(np.ascontiguousarray(wmat))))
        else:  # a uint8 weight: (K, O) contiguous, packed by the kernel at each call
            self.register_buffer("qweight_t", new_tensor(np.ascontiguousarray(wmat)))
        self.register_buffer("input_inv_scale", _f32(np.float32(1) / sx))  # quant_dequant's float32(1 / s)
        self.register_buffer("input_zero_point", _f32(zx))
        # sum_k (xq - zx) * wq[k, c] = acc - zx * sum_k wq[k, c]   (|.| <= K * 255 * 255 < 2**31)
        self.register_buffer("col_term", new_tensor(vec(np.array(zx * wmat.astype(np.int64).sum(0), np.int32))))
        self.register_buffer("weight_zero_point", new_tensor(vec(np.array(wz, np.int32))) if self._zw else None)
        self.register_buffer("out_scale", new_tensor(vec(np.array(sx * ws, np.float32))))
        self.register_buffer("bias", None if q.bias is None else new_tensor(vec(np.array(q.bias.detach().numpy()))))
        if q.act_qparams is not None:
            self.register_buffer("act_scale", q.act_scale.detach().clone())
            self.register_buffer("act_zero_point", q.act_zero_point.detach().clone())
        wmax = int(np.abs(wmat.astype(np.int64)).max()) if wmat.size else 0
        if ip.dtype == "uint8" and wmat.dtype == np.int8:  # qgemm.py: vpmaddubsw if 2 * max(xq) * max|w| <= 32767
            cap = 32767 // max(2 * wmax, 1)
            self.kernel = "vpmaddubsw" if cap >= ip.qmax else f"vpmaddwd (vpmaddubsw if max(xq) <= {cap})"
        else:
            self.kernel = "chosen per call by the operands' ranges"

    takes_codes = False  # the input is the previous layer's integers (a hand-off: see the module doc)
    emits_codes = False  # the output is this layer's integers on its output grid, not their values

    def _quantize(self, x: Tensor) -> Tensor:
        """x's integers on the input grid (quant_dequant's rounding), in the 8-bit storage dtype."""
        if self.takes_codes:
            return x
        q = E.round(x * self.input_inv_scale) + self.input_zero_point
        return E.convert(E.minimum(E.maximum(q, self._qmin), self._qmax), self._xdtype)

    def _gemm(self, xq: Tensor) -> Tensor:
        """float32 (M, O): the layer's output for the (M, K) integer input `xq` (transposed: (O, M)
        for a (K, M) input)."""
        if self._t:
            acc = lax.dot_general(self.qweight, xq, ((1,), (0,)), preferred=dt.int32)
        elif self.packed_weight is not None:
            acc = lax.packed_matmul(xq, self.packed_weight, self._k, self._o)
        else:
            acc = lax.dot_general(xq, self.qweight_t, ((1,), (0,)), preferred=dt.int32)
        acc = acc - self.col_term
        if self._zw:  # - zw[c] * sum_k (xq - zx)
            rows = E.sum(E.convert(xq, dt.int32), 0 if self._t else 1, keepdim=True, dtype=dt.int32)
            acc = acc - self.weight_zero_point * (rows - self._zxk)
        y = E.convert(acc, dt.float32) * self.out_scale
        if self.bias is not None:
            y = y + self.bias
        if self.act_qparams is not None:
            a = self.act_qparams
            if self.emits_codes:  # quant_dequant's integers, kept
                q = E.round(y * E.div(1, self.act_scale)) + E.convert(self.act_zero_point, dt.float32)
                return E.convert(E.minimum(E.maximum(q, float(a.qmin)), float(a.qmax)), _STORAGE[a.dtype])
            y = quant_dequant(y, self.act_scale, self.act_zero_point, a.qmin, a.qmax)
        return y

    def _qrepr(self) -> str:
        ip = self.input_qparams
        return (f"input={ip.dtype} scale={float(ip.scale):.6g} zero_point={int(ip.zero_point)}, "
                f"weight={self.weight_qparams.dtype}")


class Int8Linear(_Int8Gemm):
    """QuantizedLinear computed on integers: uint8 input x int8 weight -> int32, then float (see the module doc)."""

    def __init__(self, q: QuantizedLinear, input_qparams: QParams) -> None:
        super().__init__()
        self.in_features, self.out_features = q.in_features, q.out_features
        w = np.asarray(q.qweight.numpy()).reshape(q.out_features, q.in_features)
        self._setup(q, w.T, input_qparams)

    def forward(self, input: Tensor) -> Tensor:
        lead = tuple(input.shape[:-1])
        x = input if input.ndim == 2 else input.reshape(-1, self.in_features)
        y = self._gemm(self._quantize(x))
        return y if input.ndim == 2 else y.reshape(lead + (self.out_features,))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._qrepr()}"


class Int8Conv2d(_Int8Gemm):
    """QuantizedConv2d computed on integers: the (O, C * kh * kw) int8 weight times the input's
    integers im2col'd into (C * kh * kw, N * oh * ow), padded with the input zero point (the float
    0); the (O, N, oh, ow) result is NCHW by a transpose of whole rows (see the module doc)."""

    def __init__(self, q: QuantizedConv2d, input_qparams: QParams) -> None:
        super().__init__()
        for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                  "padding_mode"):
            setattr(self, k, getattr(q, k))
        self._pads = q._explicit_pads()
        w = np.asarray(q.qweight.numpy())  # (O, C, kh, kw): K in (c, i, j) order, the im2col rows'
        self._setup(q, w.reshape(w.shape[0], -1).T, input_qparams, transposed=True)

    def forward(self, input: Tensor) -> Tensor:
        x = input if input.ndim == 4 else E.unsqueeze(input, 0)
        xq = self._quantize(x)
        pads = self._pads
        if self.padding_mode != "zeros" and any(a or b for a, b in pads):
            (a, b), (c_, d) = pads  # copies of the input's own integers
            xq = F.pad(xq, (c_, d, a, b), mode=self.padding_mode)
            pads = [(0, 0), (0, 0)]
        n, c, h, w = xq.shape
        xq = lax.transpose(xq, (1, 0, 2, 3))  # CNHW: a tap is (C, N, oh, ow), a row of the im2col per c
        if any(a or b for a, b in pads):  # the float 0 is the zero point
            xq = lax.pad(xq, self._zx, [(0, 0, 0), (0, 0, 0), (pads[0][0], pads[0][1], 0),
                                        (pads[1][0], pads[1][1], 0)])
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        hp, wp = h + sum(pads[0]), w + sum(pads[1])
        oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
        taps = [lax.reshape(lax.slice(xq, (0, 0, i * dh, j * dw),
                                      (c, n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1), (1, 1, sh, sw)),
                            (c, 1, n * oh * ow)) for i in range(kh) for j in range(kw)]
        cols = taps[0] if len(taps) == 1 else lax.concatenate(taps, 1)  # (C, kh * kw, N * oh * ow)
        y = self._gemm(lax.reshape(cols, (c * kh * kw, n * oh * ow)))  # (O, N * oh * ow)
        y = lax.transpose(lax.reshape(y, (self.out_channels, n, oh, ow)), (1, 0, 2, 3))
        return y if input.ndim == 4 else E.squeeze(y, 0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"{self._qrepr()}")


_LAYERS = (QuantizedLinear, QuantizedConv2d, Int8Linear, Int8Conv2d)


class Int8ReLU(nn.Module):
    """ReLU on integers of a grid with zero point z: max(q, z) (the integer of max(dequant(q), 0))."""

    def __init__(self, zero_point: int) -> None:
        super().__init__()
        self.zero_point = int(zero_point)

    def forward(self, input: Tensor) -> Tensor:
        return E.maximum(input, self.zero_point)

    def extra_repr(self) -> str:
        return f"zero_point={self.zero_point}"


def _chains(model: nn.Module):
    """(container, [(name, module)]) of every module sequence whose members' outputs go only to the
    next member: nn.Sequential children, and a QuantWrapper's stub then its module (or the module's
    Sequential children)."""
    for name, m in model.named_modules():
        if type(m) is QuantWrapper:
            inner = m.module
            tail = _members(inner) if type(inner) is nn.Sequential else [("", inner)]
            yield name, [("quant", m.quant)] + [(("module." + n).rstrip("."), c) for n, c in tail]
        elif type(m) is nn.Sequential:
            yield name, _members(m)


def _members(seq: nn.Sequential) -> list:
    """(name, module) of every position of `seq`, a module at two positions listed twice."""
    return [(n, c) for n, c in seq._modules.items() if c is not None]


def _hand_offs(model: nn.Module, report) -> None:
    """Integer hand-offs: an int8 layer whose output goes, through modules that keep the grid, only to
    an int8 layer reading that grid passes its integers on (`emits_codes` / `takes_codes`), and a
    ReLU between them becomes Int8ReLU; a QuantStub whose output goes only to an int8 layer reading
    its grid is dropped (the layer rounds the float input itself: the same integers)."""
    uses: dict = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    for cname, kids in list(_chains(model)):
        for i, (name, m) in enumerate(kids):
            if uses.get(id(m), 0) > 1:  # one module at two places: its flags would apply to both
                continue
            if isinstance(m, _Int8Gemm):
                if m.emits_codes or m.act_qparams is None:
                    continue
                grid = m.act_qparams
            elif isinstance(m, QuantStub):
                grid = m.qparams
            else:
                continue
            j = i + 1
            while j < len(kids) and _keeps_grid(kids[j][1]):
                j += 1
            if j == len(kids):
                continue
            nxt = kids[j][1]
            if not isinstance(nxt, _Int8Gemm) or nxt.takes_codes or not _same(nxt.input_qparams, grid) or \
                    any(uses.get(id(k), 0) > 1 for _, k in kids[i:j + 1]):
                continue
            full = lambda n: f"{cname}.{n}" if cname else n  # noqa: E731
            if isinstance(m, QuantStub):
                _replace(model, full(name), nn.Identity())
                report.hand_offs.append(f"{full(name)} (QuantStub) dropped: {full(kids[j][0])} rounds the input "
                                        "to the same integers")
                continue
            m.emits_codes = nxt.takes_codes = True
            relus = [k for k in range(i + 1, j) if type(kids[k][1]) is nn.ReLU]
            for k in relus:
                _replace(model, full(kids[k][0]), Int8ReLU(int(grid.zero_point)))
            report.hand_offs.append(f"{full(name)} -> {full(kids[j][0])} in integers"
                                    + (f" ({', '.join(full(kids[k][0]) for k in relus)}: ReLU as max(q, "
                                       f"{int(grid.zero_point)}))" if relus else ""))


@dataclass
class Int8Report:
    """What `to_int8` did: `converted` [(layer, detail)] and `kept` [(layer, why it stays float)]."""

    converted: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    flow: str = "static walk of the module tree"
    hand_offs: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"to_int8 ({self.flow}): {len(self.converted)} layer(s) converted to int8, "
                 f"{len(self.kept)} kept in float"]
        if not self.converted:
            lines.append("  nothing was converted")
        lines += [f"  int8   {n}: {d}" for n, d in self.converted]
        lines += [f"  float  {n}: {d}" for n, d in self.kept]
        lines += [f"  hand-off  {h}" for h in self.hand_offs]
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
    if isinstance(m, _LAYERS):
        found[name] = state
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
            elif isinstance(m, _LAYERS):
                tag[id(out)] = _out_state(m, name)
            elif _keeps_grid(m) and args and isinstance(args[0], Tensor) and id(args[0]) in tag:
                tag.setdefault(id(out), tag[id(args[0])])
        return hook

    handles = [mod.register_forward_hook(post(n)) for n, mod in named.items()]
    handles += [mod.register_forward_pre_hook(pre(n)) for n, mod in named.items() if isinstance(mod, _LAYERS)]
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
        if not isinstance(mod, _LAYERS):
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


def _depth(m: nn.Module) -> int:
    """K of the layer's GEMM: in_features, or in_channels * kh * kw."""
    if isinstance(m, QuantizedLinear):
        return m.in_features
    return m.in_channels // m.groups * int(np.prod(m.kernel_size))


def _reason(m: nn.Module, st) -> str | None:
    """Why QuantizedLinear / QuantizedConv2d m with input state st cannot go int8 (None: it can)."""
    if not isinstance(st, QParams):
        return f"input not known to be quantized: {st}"
    if st.axis is not None or st.dtype not in _STORAGE:
        return f"its input qparams are {st.dtype} along axis {st.axis}: int8 needs per-tensor uint8 / int8"
    if isinstance(m, QuantizedConv2d) and m.groups != 1:
        return f"groups={m.groups}: Int8Conv2d runs one GEMM over all channels (groups=1 only)"
    if _depth(m) * 255 * 255 > _I32_MAX:
        return f"its depth {_depth(m)} is too deep for exact int32 sums (at most {_I32_MAX // 65025})"
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
        if isinstance(m, (Int8Linear, Int8Conv2d)):
            report.kept.append((name, f"already {type(m).__name__}"))
        elif isinstance(m, (QuantizedLinear, QuantizedConv2d)):
            st = found.get(name, "not reached by the walk")
            why = _reason(m, st)
            if why is not None:
                report.kept.append((name, why))
                continue
            lin = isinstance(m, QuantizedLinear)
            new = (Int8Linear if lin else Int8Conv2d)(m, st).train(m.training)
            model = _replace(model, name, new)
            shape = f"{m.in_features}->{m.out_features}" if lin else \
                f"conv {m.in_channels}->{m.out_channels} {m.kernel_size[0]}x{m.kernel_size[1]} (K={_depth(m)})"
            report.converted.append((name, f"{shape}, input {st.dtype} scale {float(st.scale):.6g} zero_point "
                                           f"{int(st.zero_point)}, kernel {new.kernel}"))
        elif type(m) in (nn.Linear, nn.Conv2d):
            report.kept.append((name, f"plain {type(m).__name__}, not quantized (run quantize_static first)"))
    _hand_offs(model, report)
    object.__setattr__(model, "int8_report", report)
    return model
