"""CPU lowerings that fill or copy: full, iota, random bits, class checks, pad, concatenate, and a
reshape the planner could not make a view."""
from __future__ import annotations

from ...ops import P
from ...runtime.layout import contiguous, prod
from ...runtime.memory import nbytes
from ..lowering import register_lowering
from . import loopnest as L
from .c_expr import CTYPE, c_convert
from .emitter import PAR_MIN, c_index


def copy(r, e) -> None:
    """A reshape the planner could not make a view: the values copied in row-major order."""
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    # a reshape copy reads the input in its own row-major order: walk the input's shape
    dst = out.moved(out.offset, x.shape, contiguous(x.shape))
    lines = L.render([L.Stmt("{")] + r.loops(x.shape, [dst], [x], lambda ld: ([], ld)) + [L.Stmt("}")])
    r.emit(("copy", lines, 0, 2 * nbytes(e.out.aval)))

def full(r, e) -> None:
    """Every element set to the `value` param."""
    r.fill(e, e.params["value"], "full")

def random_bits(r, e) -> None:
    """Philox4x32-10 (`ember.ops.creation`): block b of four words encrypts the counter
    (offset + b) under the key, so threads draw fixed ranges of blocks."""
    key, out = r.refs[e.inputs[0]], r.refs[e.out]
    n = prod(e.out.aval.shape)
    if n == 0:
        r.emit(("random_bits", [], 0, 0))
        return
    blocks = -(-n // 4)
    pre = [L.Stmt(f"uint32_t* o0 = {r.ptr(out)};\nconst uint32_t* key = {r.ptr(key)};\n"
                  f"const uint32_t k0 = key[0 * {key.strides[0]}], k1 = key[1 * {key.strides[0]}], "
                  f"c0 = key[2 * {key.strides[0]}], c1 = key[3 * {key.strides[0]}];")]
    block = L.Stmt(
        "const uint64_t lo = (uint64_t)c0 + (uint64_t)b;\n"
        "uint32_t w[4];\n"
        "philox4x32_10((uint32_t)lo, (uint32_t)(c1 + (lo >> 32)), k0, k1, w);\n"
        f"if (4 * b + 4 <= {n}) {{ o0[4 * b] = w[0]; o0[4 * b + 1] = w[1]; o0[4 * b + 2] = w[2]; o0[4 * b + 3] = w[3]; }}\n"
        f"else for (int64_t j = 0; 4 * b + j < {n}; j++) o0[4 * b + j] = w[j];")
    nest = [L.Loop("b", blocks, [block])]
    r.emit(("random_bits", r.worksharing(pre, nest, n >= PAR_MIN // 4), 0, 4 * n))

def iota(r, e) -> None:
    """out = the index along `dim`, converted to the dtype."""
    out, dim, dt = r.refs[e.out], e.params["dim"], e.out.aval.dtype.name
    shape = list(e.out.aval.shape)
    if prod(shape) == 0:
        r.emit(("iota", [], 0, 0))
        return
    vs = [f"i{d}" for d in range(len(shape))]
    nest = [L.Stmt(f"o0[{c_index(vs, out.strides)}] = {c_convert(f'(int64_t){vs[dim]}', 'int64', dt)};")]
    for d in reversed(range(len(shape))):
        nest = [L.Loop(vs[d], shape[d], nest, vectorize=d == len(shape) - 1)]
    pre = [L.Stmt(f"{CTYPE[out.dtype]}* o0 = {r.ptr(out)};")]
    r.emit(("iota", r.worksharing(pre, nest, prod(shape) >= PAR_MIN and shape[0] > 1), 0,
               nbytes(e.out.aval)))

def check_classes(r, e) -> None:
    """out = the targets; one outside [0, n) that is not `ignore` is reported (`ember_status`)."""
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    n, ignore = e.params["n"], e.params["ignore"]
    if prod(x.shape) == 0:
        r.emit(("check_classes", [], 0, 0))
        return

    def body(ld):
        bad = f"({ld[0]} < 0 || {ld[0]} >= {n})" + (f" && {ld[0]} != {int(ignore)}" if ignore is not None else "")
        return [f"if ({bad}) oob(C, (int64_t){ld[0]}, {n});"], [ld[0]]
    lines = L.render([L.Stmt("{")] + r.loops(list(x.shape), [out], [x], body) + [L.Stmt("}")])
    r.emit(("check_classes", lines, 0, 2 * nbytes(e.out.aval)))

def pad(r, e) -> None:
    """The padding value everywhere, then x into its strided place (crops are slices of x)."""
    x, out = r.refs[e.inputs[0]], r.refs[e.out]
    r.fill(e, e.params["value"], "pad fill")
    xoff, ooff, shape, xs, os_ = x.offset, out.offset, [], [], []
    for (lo, _, it), n, m, sx, so in zip(e.params["config"], x.shape, out.shape, x.strides, out.strides):
        step = it + 1
        a = 0 if lo >= 0 else -lo // step + (-lo % step > 0)
        b = min(n, (m - lo + step - 1) // step) if m > lo else 0
        shape.append(max(0, b - a))
        xoff += a * sx
        ooff += (lo + a * step) * so
        xs.append(sx)
        os_.append(so * step)
    if prod(shape):
        r.copy_values(x.moved(xoff, shape, xs), out.moved(ooff, shape, os_), "pad copy")

def concatenate(r, e) -> None:
    """Each operand copied into its slice of the output along `axis`."""
    out, axis, at = r.refs[e.out], e.params["axis"], 0
    for a in e.inputs:
        src = r.refs[a]
        if prod(src.shape):
            r.copy_values(src, out.moved(out.offset + at * out.strides[axis], src.shape, out.strides),
                             "concatenate")
        at += src.shape[axis]

register_lowering(P.reshape, "cpu", copy)
register_lowering(P.full, "cpu", full)
register_lowering(P.random_bits, "cpu", random_bits)
register_lowering(P.iota, "cpu", iota)
register_lowering(P.check_classes, "cpu", check_classes)
register_lowering(P.pad, "cpu", pad)
register_lowering(P.concatenate, "cpu", concatenate)
