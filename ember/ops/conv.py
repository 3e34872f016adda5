"""Convolution and window primitives: conv_general, reduce_window_{max,sum}, select_and_scatter_add.

Layouts are fixed: lhs (N, C, *spatial), rhs (O, C/groups, *kernel), out (N, O, *spatial); layout
choices belong to a compiler pass. Padding is (lo, hi) per spatial dim and may be negative.
The VJPs are convolutions again (JAX's transpose rules): d(lhs) convolves the cotangent with the
flipped, in/out-swapped kernel; d(rhs) convolves the input with the cotangent, batch and channel
swapped; reduce_window_sum's VJP is a reduce_window_sum of the padded cotangent; max's is
select_and_scatter_add.
"""
from __future__ import annotations

from .._core import dtypes as dt
from .._core.errors import AutogradError, ShapeError, op_error
from . import _conv_kernels as K
from . import lax
from .core import Aval, P, Primitive, register

CONV_DTYPES = tuple(d for d in dt.ALL if d is not dt.bool_)


def _window_out(n, k, stride, lo, hi, base_dil=1, win_dil=1):
    return (K._dilate(n, base_dil) + lo + hi - K._dilate(k, win_dil)) // stride + 1


# ---------------------------------------------------------------- conv_general
def _conv_abstract(lhs: Aval, rhs: Aval, *, window_strides, padding, lhs_dilation, rhs_dilation, groups) -> Aval:
    nd = len(lhs.shape) - 2
    ok = nd >= 1 and len(rhs.shape) == nd + 2 and len(window_strides) == len(padding) == nd \
        and groups >= 1 and lhs.shape[1] == rhs.shape[1] * groups and rhs.shape[0] % groups == 0
    if ok:
        out = tuple(_window_out(n, k, s, lo, hi, ld, rd) for n, k, s, (lo, hi), ld, rd in
                    zip(lhs.shape[2:], rhs.shape[2:], window_strides, padding, lhs_dilation, rhs_dilation))
        ok = all(o >= 0 for o in out)
    if not ok:
        raise op_error(ShapeError, "conv", f"input of shape {lhs.shape} does not fit weight of shape "
                       f"{rhs.shape} (groups={groups}, stride={window_strides}, padding={padding}, "
                       f"dilation={rhs_dilation})")
    _, dtype = P.conv_general.resolve_dtypes((lhs.dtype, rhs.dtype))
    return Aval((lhs.shape[0], rhs.shape[0]) + out, dtype)


def _conv_vjp(g, out, lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, groups):
    nd = len(lhs.shape) - 2
    in_sp, k_sp, out_sp = lhs.shape[2:], rhs.shape[2:], g.shape[2:]
    sp = tuple(range(2, nd + 2))
    gl = gr = None
    if lhs.dtype.kind == "f" and getattr(lhs, "_rg", True):
        o, ig = rhs.shape[0], rhs.shape[1]
        w = lax.reshape(rhs, (groups, o // groups, ig) + k_sp)
        w = lax.transpose(w, (0, 2, 1) + tuple(range(3, nd + 3)))
        w = lax.rev(lax.reshape(w, (groups * ig, o // groups) + k_sp), sp)
        pads, _ = K.conv_transpose_lhs_params(in_sp, k_sp, window_strides, padding, lhs_dilation, rhs_dilation)
        gl = lax.conv_general(g, w, lhs_dilation, pads, window_strides, rhs_dilation, groups)
    if rhs.dtype.kind == "f" and getattr(rhs, "_rg", True):
        pads = K.conv_transpose_rhs_params(in_sp, k_sp, out_sp, window_strides, padding, lhs_dilation,
                                           rhs_dilation)
        c, o = lhs.shape[1], rhs.shape[0]
        parts = []
        for gi in range(groups):
            x = lhs if groups == 1 else _channel_slice(lhs, gi * (c // groups), (gi + 1) * (c // groups))
            gg = g if groups == 1 else _channel_slice(g, gi * (o // groups), (gi + 1) * (o // groups))
            xt = lax.transpose(x, (1, 0) + sp)
            gt = lax.transpose(gg, (1, 0) + sp)
            r = lax.conv_general(xt, gt, rhs_dilation, pads, lhs_dilation, window_strides, 1)
            parts.append(lax.transpose(r, (1, 0) + sp))
        gr = parts[0] if groups == 1 else lax.concatenate(parts, 0)
    return gl, gr


def _channel_slice(x, a, b):
    start = (0, a) + (0,) * (len(x.shape) - 2)
    stop = (x.shape[0], b) + tuple(x.shape[2:])
    return lax.slice(x, start, stop, (1,) * len(x.shape))


def _conv_impl(lhs, rhs, *, window_strides, padding, lhs_dilation, rhs_dilation, groups):
    return K.conv_general(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, groups)


register(Primitive("conv_general", impl=_conv_impl, abstract=_conv_abstract, vjp=_conv_vjp,
                   kind="conv", dtypes=CONV_DTYPES, doc="N-d grouped, strided, dilated convolution"))


# ---------------------------------------------------------------- windows
def _window_abstract(name):
    def rule(x: Aval, *, window, strides, padding, base_dilation, window_dilation) -> Aval:
        nd = len(x.shape)
        ok = len(window) == len(strides) == len(padding) == len(base_dilation) == len(window_dilation) == nd \
            and all(s >= 1 for s in strides) and all(w >= 1 for w in window)
        if ok:
            out = tuple(_window_out(n, k, s, lo, hi, bd, wd) for n, k, s, (lo, hi), bd, wd in
                        zip(x.shape, window, strides, padding, base_dilation, window_dilation))
            ok = all(o >= 0 for o in out)
        if not ok:
            raise op_error(ShapeError, name, f"window {window} (strides {strides}, padding {padding}) "
                           f"does not fit input of shape {x.shape}")
        _, dtype = REGISTRY_WINDOW[name].resolve_dtypes((x.dtype,))
        return Aval(out, dtype)
    return rule


def _rw_sum_vjp(g, out, x, *, window, strides, padding, base_dilation, window_dilation):
    pads, _ = K.reduce_window_sum_transpose_params(x.shape, window, strides, padding, base_dilation,
                                                   window_dilation)
    # the cotangent gets (stride - 1) zeros between its elements, then a windowed sum
    padded = lax.pad(g, 0, [(lo, hi, s - 1) for (lo, hi), s in zip(pads, strides)])
    r = lax.reduce_window(padded, "sum", window, base_dilation, [(0, 0)] * len(window),
                          None, window_dilation)
    return (r,)


def _rw_max_vjp(g, out, x, *, window, strides, padding, base_dilation, window_dilation):
    if any(d != 1 for d in base_dilation + window_dilation):
        raise AutogradError("the gradient of a dilated max-pool window is not supported; "
                            "use dilation=1")
    return (lax.select_and_scatter_add(g, x, window, strides, padding),)


def _rw_impl(kind):
    return lambda x, *, window, strides, padding, base_dilation, window_dilation: K.reduce_window(
        x, kind, window, strides, padding, base_dilation, window_dilation)


REGISTRY_WINDOW = {
    "reduce_window_max": register(Primitive(
        "reduce_window_max", impl=_rw_impl("max"), abstract=_window_abstract("reduce_window_max"),
        vjp=_rw_max_vjp, kind="window", dtypes=CONV_DTYPES, lowering=("max", "-inf"))),
    "reduce_window_sum": register(Primitive(
        "reduce_window_sum", impl=_rw_impl("sum"), abstract=_window_abstract("reduce_window_sum"),
        vjp=_rw_sum_vjp, kind="window", dtypes=CONV_DTYPES, lowering=("add", 0))),
}


def _sas_abstract(source: Aval, operand: Aval, *, window, strides, padding) -> Aval:
    want = tuple(_window_out(n, k, s, lo, hi) for n, k, s, (lo, hi) in zip(operand.shape, window, strides, padding))
    if source.shape != want:
        raise op_error(ShapeError, "max_pool backward", f"cotangent of shape {source.shape} does not "
                       f"match the pooled shape {want} of {operand.shape}")
    _, dtype = P.select_and_scatter_add.resolve_dtypes((source.dtype, operand.dtype))
    return Aval(operand.shape, dtype)


def _sas_impl(source, operand, *, window, strides, padding):
    return K.select_and_scatter_add(source, operand, window, strides, padding)


register(Primitive("select_and_scatter_add", impl=_sas_impl, abstract=_sas_abstract,
                   vjp=None, kind="window", dtypes=CONV_DTYPES))
