"""Pure-numpy eager kernels for convolution, window reductions and their VJPs.

Layouts are fixed. conv lhs is (N, C, *spatial), rhs is (O, C // g, *kernel)
and the output is (N, O, *out_spatial). reduce_window windows run over all dims.
For each dim, out = floor((dilate(in, base) + lo + hi - dilate(k, win)) /
stride) + 1, where dilate(n, d) = (n - 1) * d + 1 (0 when n == 0). Padding may
be negative, which crops. Each kernel makes one dilated and padded copy, filled
with 0 or the max identity. It then takes an ``as_strided`` window view. conv
copies that view block by block (a few images at a time) into an im2col buffer
and does one batched BLAS matmul per block. The window reductions make one
vectorised pass per window tap.

Gradients of ``y = conv_general(x, w, s, pad, ld, rd, g)`` with cotangent
``ct``. With ``(P, s2) = conv_transpose_lhs_params(in, k, s, pad, ld, rd)``,
``dx = conv_general(ct, w_t, ld, P, s2, rd, g)``. The strides are the forward
lhs_dilation (all ones for an ordinary conv) and s2 is the forward strides.
Here ``w_t = flip_spatial(w.reshape(g, O//g, C//g, *k).swapaxes(1, 2)
.reshape(C, O//g, *k))``, which moves the group axis into the new output
features. With ``Q = conv_transpose_rhs_params(in, k, out, s, pad, ld, rd)``,
``dw = conv_general(xs, ct.swapaxes(0, 1), rd, Q, ld, s, g).swapaxes(0, 1)``,
where ``xs = x.swapaxes(0, 1)`` (C, N, *sp) for g == 1. For g > 1 the groups
fold into the batch and feature dims as in JAX's batch_group_count transpose:
``xs = x.swapaxes(0, 1).reshape(g, C//g, N, *sp).swapaxes(0, 1)
.reshape(C//g, g*N, *sp)``. An empty ``ct`` gives dw = 0.

reduce_window "sum" is linear and its window is symmetric, so its transpose is
another windowed sum. With ``(P, b) = reduce_window_sum_transpose_params(
x.shape, wd, s, pad, bd, wdil)``, ``dx = reduce_window(ct, "sum", wd, bd, P, b,
wdil)``. That is, the cotangent gets (stride - 1) zeros between its elements
and is padded with lo' = dilate(wd, wdil) - lo - 1 and hi' = dilate(in, bd) +
dilate(wd, wdil) - 1 - dilate(out, s) - lo'. It is then summed over the same
window with strides equal to the forward base_dilation. The VJP of
reduce_window "max" (without dilations) is
``select_and_scatter_add(ct, x, wd, s, pad)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "conv_general",
    "reduce_window",
    "select_and_scatter_add",
    "conv_transpose_lhs_params",
    "conv_transpose_rhs_params",
    "reduce_window_sum_transpose_params",
]

# Target size in bytes of one im2col block. Blocking over the batch keeps the
# patch buffer hot in cache and avoids page faults on a huge temporary. For
# (64,32,26,26) * (64,32,3,3) it runs in about 15 ms instead of 27 ms for one
# whole-batch im2col copy and matmul.
_BLOCK_BYTES = 1 << 21
# Pixel-major blocks (small outputs, big kernels, e.g. weight gradients) grow to
# at least _MIN_ROWS GEMM rows, up to _MAX_BLOCK_BYTES of patches.
_MAX_BLOCK_BYTES = 1 << 25
_MIN_ROWS = 256

Pads = tuple[tuple[int, int], ...]


def _compute_dtype(dt: np.dtype) -> np.dtype:
    """Return the dtype in which to compute for storage dtype ``dt``."""
    dt = np.dtype(dt)
    name = dt.name
    if "float" in name and (dt.kind == "V" or dt.itemsize < 4):
        return np.dtype(np.float32)  # float16, bfloat16, float8 variants
    if dt.kind == "V" and "int" in name:
        return np.dtype(np.int64)  # ml_dtypes int4 / uint4 / int2 ...
    return dt


def _dilate(n: int, d: int) -> int:
    """Return the size of a length-``n`` axis with ``d - 1`` holes between elements."""
    return 0 if n == 0 else (n - 1) * d + 1


def _ints(name: str, v: Sequence[int], n: int, minimum: int | None = None) -> tuple[int, ...]:
    """Check that ``v`` holds ``n`` ints (at least ``minimum``) and return it as a tuple."""
    t = tuple(int(a) for a in v)
    if len(t) != n:
        raise ValueError(f"{name} must have {n} entries, got {tuple(v)!r}")
    if minimum is not None and any(a < minimum for a in t):
        raise ValueError(f"{name} entries must be >= {minimum}, got {t!r}")
    return t


def _pads(padding: Sequence[Sequence[int]], n: int) -> Pads:
    """Check that ``padding`` holds ``n`` (lo, hi) int pairs and return it as a tuple."""
    try:
        p = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        raise ValueError(f"padding must be a sequence of (lo, hi) pairs, got {padding!r}") from None
    if len(p) != n:
        raise ValueError(f"padding must have {n} (lo, hi) pairs, got {padding!r}")
    return p


def _out_sizes(
    in_sp: Sequence[int],
    k_sp: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[tuple[int, int]],
    base_dil: Sequence[int],
    win_dil: Sequence[int],
) -> tuple[int, ...]:
    """Return the per-dim output sizes; they may be negative, and the caller checks."""
    return tuple(
        (_dilate(n, bd) + lo + hi - _dilate(k, wd)) // s + 1
        for n, k, s, (lo, hi), bd, wd in zip(in_sp, k_sp, strides, pads, base_dil, win_dil)
    )


def _dilate_pad(x: np.ndarray, first: int, pads: Pads, dil: Sequence[int], fill, dtype) -> np.ndarray:
    """Dilate and then (possibly negatively) pad axes ``first:`` of ``x``, filling holes with ``fill``."""
    sp = x.shape[first:]
    if all(d == 1 for d in dil) and all(lo <= 0 and hi <= 0 for lo, hi in pads):
        # Pure crop (or no-op): a view, and no copy.
        idx = (slice(None),) * first + tuple(slice(-lo, n + hi) for n, (lo, hi) in zip(sp, pads))
        return x[idx]
    psz = tuple(max(_dilate(n, d) + lo + hi, 0) for n, d, (lo, hi) in zip(sp, dil, pads))
    out = np.full(x.shape[:first] + psz, fill, dtype=dtype)
    dst, src = [slice(None)] * first, [slice(None)] * first
    for n, d, (lo, _), p in zip(sp, dil, pads, psz):
        j0 = max(0, -(lo // d))  # first j with lo + j*d >= 0 (ceil(-lo/d))
        j1 = min(n, (p - 1 - lo) // d + 1) if p > 0 else 0
        if j1 <= j0:
            return out  # no input element survives the crop
        dst.append(slice(lo + j0 * d, lo + (j1 - 1) * d + 1, d))
        src.append(slice(j0, j1))
    out[tuple(dst)] = x[tuple(src)]
    return out


def conv_general(
    lhs: np.ndarray,
    rhs: np.ndarray,
    window_strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
    feature_group_count: int = 1,
) -> np.ndarray:
    """Compute an N-d grouped, dilated conv (lax.conv_general_dilated semantics) with NC* / OI* / NC* layouts."""
    lhs = np.asarray(lhs)
    rhs = np.asarray(rhs)
    if lhs.ndim < 3 or lhs.ndim != rhs.ndim:
        raise ValueError(
            f"conv_general: lhs {lhs.shape} and rhs {rhs.shape} must both have rank >= 3 and equal rank"
        )
    nsp = lhs.ndim - 2
    strides = _ints("window_strides", window_strides, nsp, 1)
    pads = _pads(padding, nsp)
    ldil = _ints("lhs_dilation", lhs_dilation, nsp, 1)
    rdil = _ints("rhs_dilation", rhs_dilation, nsp, 1)
    g = int(feature_group_count)
    N, C = lhs.shape[:2]
    O, Cg = rhs.shape[:2]
    in_sp, k_sp = lhs.shape[2:], rhs.shape[2:]
    if g < 1 or C != Cg * g or O % g != 0:
        raise ValueError(
            f"conv_general: lhs {lhs.shape} / rhs {rhs.shape} mismatch with feature_group_count={g}: "
            f"need lhs channels ({C}) == rhs in-channels ({Cg}) * groups and rhs out-channels ({O}) "
            f"divisible by groups"
        )
    out_sp = _out_sizes(in_sp, k_sp, strides, pads, ldil, rdil)
    if any(o < 0 for o in out_sp):
        raise ValueError(
            f"conv_general: lhs {lhs.shape} and rhs {rhs.shape} with strides={strides}, padding={pads}, "
            f"lhs_dilation={ldil}, rhs_dilation={rdil} give a negative output size {out_sp}"
        )
    out_dtype = lhs.dtype if lhs.dtype == rhs.dtype else np.result_type(lhs.dtype, rhs.dtype)
    out_shape = (N, O) + out_sp
    K, P = math.prod(k_sp), math.prod(out_sp)
    if N == 0 or O == 0 or P == 0 or Cg == 0 or K == 0:
        return np.zeros(out_shape, dtype=out_dtype)
    cdt = _compute_dtype(out_dtype)
    og = O // g
    wm = rhs.astype(cdt, copy=False).reshape(g, og, Cg * K)
    xp = _dilate_pad(lhs, 2, pads, ldil, 0, cdt)

    if xp.dtype != cdt:
        xp = xp.astype(cdt)  # one contiguous cast beats casting inside the strided im2col copy

    if K == 1 and all(s == 1 for s in strides):
        # 1x1 conv, stride 1: the padded input is already the patch matrix.
        res = np.matmul(wm, xp.reshape(N, g, Cg, P)).reshape(out_shape)
        return res if res.dtype == out_dtype else res.astype(out_dtype)

    s = xp.strides
    k_str = tuple(a * d for a, d in zip(s[2:], rdil))
    o_str = tuple(a * d for a, d in zip(s[2:], strides))
    CgK = Cg * K
    per_image = g * CgK * P * cdt.itemsize
    nb = max(1, min(N, _BLOCK_BYTES // max(per_image, 1)))
    # Blocks of images (see _BLOCK_BYTES), not a loop per image or per pixel.
    if k_sp[-1] <= out_sp[-1]:
        # Channel-major patches (n, g, Cg, *k, *out): the copy's inner run is an output row, and
        # (og, CgK) @ (CgK, P) writes the NC* result in place.
        view = as_strided(xp, (N, g, Cg) + k_sp + out_sp, (s[0], s[1] * Cg, s[1]) + k_str + o_str, writeable=False)
        out = np.empty((N, g, og, P), dtype=cdt)
        buf = np.empty((nb, g, Cg) + k_sp + out_sp, dtype=cdt)
        for i in range(0, N, nb):
            m = min(nb, N - i)
            b = buf[:m]
            np.copyto(b, view[i : i + m])
            np.matmul(wm, b.reshape(m, g, CgK, P), out=out[i : i + m])
        res = out.reshape(out_shape)
    else:
        # Pixel-major patches (g, n, *out, Cg, *k): for big kernels / small outputs (weight gradients)
        # the copy's inner run is a kernel row, and the batch folds into the GEMM's M dimension.
        view = as_strided(xp, (g, N) + out_sp + (Cg,) + k_sp, (s[1] * Cg, s[0]) + o_str + (s[1],) + k_str, writeable=False)
        wt = wm.transpose(0, 2, 1)  # (g, CgK, og)
        # The GEMM is (m*P, CgK) @ (CgK, og) with a large CgK: take enough images that M >= _MIN_ROWS,
        # which pays for re-reading the big right-hand side (up to _MAX_BLOCK_BYTES of patches).
        nb = max(nb, min(N, -(-_MIN_ROWS // P), max(1, _MAX_BLOCK_BYTES // per_image)))
        out = np.empty((g, N * P, og), dtype=cdt)
        flat = np.empty(g * nb * P * CgK, dtype=cdt)
        for i in range(0, N, nb):
            m = min(nb, N - i)
            b = flat[: g * m * P * CgK].reshape((g, m) + out_sp + (Cg,) + k_sp)
            np.copyto(b, view[:, i : i + m])
            np.matmul(b.reshape(g, m * P, CgK), wt, out=out[:, i * P : (i + m) * P])
        res = out.reshape(g, N, P, og).transpose(1, 0, 3, 2).reshape(out_shape)
    return res if res.dtype == out_dtype else res.astype(out_dtype)


def _identity(kind: str, dtype: np.dtype):
    """Return the padding value for ``kind`` ("max" or "sum") in ``dtype``."""
    dtype = np.dtype(dtype)
    if kind == "sum":
        return dtype.type(0)
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def _window_view(
    x: np.ndarray, out_sp: Sequence[int], win: Sequence[int], strides: Sequence[int], wdil: Sequence[int]
) -> np.ndarray:
    """Return a read-only view of shape (*out, *win) over (already padded) ``x``."""
    s = x.strides
    return as_strided(
        x,
        shape=tuple(out_sp) + tuple(win),
        strides=tuple(a * st for a, st in zip(s, strides)) + tuple(a * d for a, d in zip(s, wdil)),
        writeable=False,
    )


def reduce_window(
    x: np.ndarray,
    kind: str,
    window_dimensions: Sequence[int],
    window_strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    base_dilation: Sequence[int],
    window_dilation: Sequence[int],
) -> np.ndarray:
    """Compute a windowed "max" or "sum" over all dims of ``x`` (lax.reduce_window semantics)."""
    x = np.asarray(x)
    if kind not in ("max", "sum"):
        raise ValueError(f"reduce_window: kind must be 'max' or 'sum', got {kind!r}")
    nd = x.ndim
    win = _ints("window_dimensions", window_dimensions, nd, 0)
    strides = _ints("window_strides", window_strides, nd, 1)
    pads = _pads(padding, nd)
    bdil = _ints("base_dilation", base_dilation, nd, 1)
    wdil = _ints("window_dilation", window_dilation, nd, 1)
    out_sp = _out_sizes(x.shape, win, strides, pads, bdil, wdil)
    if any(o < 0 for o in out_sp):
        raise ValueError(
            f"reduce_window: operand {x.shape} and window {win} with strides={strides}, padding={pads}, "
            f"base_dilation={bdil}, window_dilation={wdil} give a negative output size {out_sp}"
        )
    dtype = x.dtype
    cdt = _compute_dtype(dtype)
    ident = _identity(kind, cdt)
    if math.prod(out_sp) == 0:
        return np.zeros(out_sp, dtype=dtype)
    if math.prod(win) == 0:
        return np.full(out_sp, ident, dtype=cdt).astype(dtype)
    xp = _dilate_pad(x, 0, pads, bdil, ident, cdt)
    if xp.dtype != cdt:
        xp = xp.astype(cdt)
    view = _window_view(xp, out_sp, win, strides, wdil)
    op = np.maximum if kind == "max" else np.add
    # One vectorised pass per window tap. For pooling-sized windows this is several times faster
    # than np.max/np.sum over the strided (*out, *win) view, and it accumulates in the compute dtype.
    if math.prod(win) <= 64:
        taps = product(*(range(w) for w in win))
        acc = np.array(view[(Ellipsis,) + next(taps)], dtype=cdt)
        for t in taps:  # the tap first: np.maximum returns its second operand at a tie, so the
            op(view[(Ellipsis,) + t], acc, out=acc)  # first of equal values wins (-0 / +0: PyTorch's)
    else:
        axes = tuple(range(nd, 2 * nd))
        acc = op.reduce(view, axis=axes)
    return acc if acc.dtype == dtype else acc.astype(dtype)


def select_and_scatter_add(
    source: np.ndarray,
    operand: np.ndarray,
    window_dimensions: Sequence[int],
    window_strides: Sequence[int],
    padding: Sequence[Sequence[int]],
) -> np.ndarray:
    """Scatter-add each ``source`` element to the first argmax (first NaN wins) of its ``operand`` window."""
    source = np.asarray(source)
    x = np.asarray(operand)
    nd = x.ndim
    win = _ints("window_dimensions", window_dimensions, nd, 0)
    strides = _ints("window_strides", window_strides, nd, 1)
    pads = _pads(padding, nd)
    ones = (1,) * nd
    out_sp = _out_sizes(x.shape, win, strides, pads, ones, ones)
    if any(o < 0 for o in out_sp) or tuple(source.shape) != out_sp:
        raise ValueError(
            f"select_and_scatter_add: source {source.shape} does not match the reduce_window output "
            f"{out_sp} of operand {x.shape} with window {win}, strides={strides}, padding={pads}"
        )
    out_dtype = source.dtype
    if source.size == 0 or x.size == 0 or math.prod(win) == 0:
        return np.zeros(x.shape, dtype=out_dtype)
    cdt = _compute_dtype(x.dtype)
    xp = _dilate_pad(x, 0, pads, ones, _identity("max", cdt), cdt)
    if xp.dtype != cdt:
        xp = xp.astype(cdt)
    view = _window_view(xp, out_sp, win, strides, ones)
    psz = xp.shape  # padded (or cropped) operand; padded coordinate p = operand index + lo

    # Running first-argmax over the window taps in row-major order. The window value is the NaN-
    # propagating max, and arg is the last tap that strictly raised it, so ties keep the earliest
    # and the first NaN sticks.
    K = math.prod(win)
    adt = np.uint8 if K <= 255 else (np.uint16 if K <= 65535 else np.intp)
    taps = list(product(*(range(w) for w in win)))
    best = np.array(view[(Ellipsis,) + taps[0]], dtype=cdt)
    arg = np.zeros(out_sp, dtype=adt)
    has_nan = cdt.kind in "fc" and bool(np.isnan(xp).any())
    for k, t in enumerate(taps[1:], start=1):
        v = view[(Ellipsis,) + t]
        if has_nan:
            upd = ~(best >= v)  # v > best, or v is NaN
            upd &= best == best  # never replace a NaN
        else:
            upd = best < v
        np.maximum(best, v, out=best)
        np.maximum(arg, upd * adt(k), out=arg)

    # Flat index into the padded operand: window origin + offset of the chosen tap.
    mult = [math.prod(psz[d + 1 :]) for d in range(nd)]
    origin = np.zeros((), dtype=np.intp)
    tap_off = np.zeros((), dtype=np.intp)
    for d in range(nd):
        origin = np.add.outer(origin, np.arange(out_sp[d], dtype=np.intp) * (strides[d] * mult[d]))
        tap_off = np.add.outer(tap_off, np.arange(win[d], dtype=np.intp) * mult[d])
    flat = np.take(tap_off.ravel(), arg)
    flat += origin
    size_p = math.prod(psz)
    sdt = _compute_dtype(out_dtype)
    if sdt.kind == "f":
        res = np.bincount(flat.ravel(), weights=source.astype(np.float64).ravel(), minlength=size_p)
        res = res.astype(sdt, copy=False)
    else:
        res = np.zeros(size_p, dtype=sdt)
        np.add.at(res, flat.ravel(), source.astype(sdt).ravel())
    res = res.reshape(psz)
    if psz != x.shape or any(lo for lo, _ in pads):
        # Drop the padding positions (and re-insert the cropped-away, zero-gradient ones).
        full = np.zeros(x.shape, dtype=sdt)
        dst, src = [], []
        for n, (lo, hi) in zip(x.shape, pads):
            q0, q1 = max(0, -lo), min(n, n + hi)
            if q1 <= q0:
                return full.astype(out_dtype, copy=False)
            dst.append(slice(q0, q1))
            src.append(slice(q0 + lo, q1 + lo))
        full[tuple(dst)] = res[tuple(src)]
        res = full
    return res.astype(out_dtype, copy=False)


def conv_transpose_lhs_params(
    in_spatial: Sequence[int],
    kernel_spatial: Sequence[int],
    window_strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
) -> tuple[Pads, tuple[int, ...]]:
    """Return (padding, lhs_dilation) for the d(lhs) conv (JAX ``_conv_general_vjp_lhs_padding``)."""
    n = len(in_spatial)
    strides = _ints("window_strides", window_strides, n, 1)
    pads = _pads(padding, n)
    ldil = _ints("lhs_dilation", lhs_dilation, n, 1)
    rdil = _ints("rhs_dilation", rhs_dilation, n, 1)
    out_sp = _out_sizes(in_spatial, kernel_spatial, strides, pads, ldil, rdil)
    res = []
    for i, k, o, s, (lo, _), ld, rd in zip(in_spatial, kernel_spatial, out_sp, strides, pads, ldil, rdil):
        lhs_d, rhs_d, out_d = _dilate(i, ld), _dilate(k, rd), _dilate(o, s)
        before = rhs_d - lo - 1
        after = lhs_d + rhs_d - 1 - out_d - before
        res.append((before, after))
    return tuple(res), strides


def conv_transpose_rhs_params(
    in_spatial: Sequence[int],
    kernel_spatial: Sequence[int],
    out_spatial: Sequence[int],
    window_strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
) -> Pads:
    """Return the padding for the d(rhs) conv (JAX ``_conv_general_vjp_rhs_padding``)."""
    n = len(in_spatial)
    strides = _ints("window_strides", window_strides, n, 1)
    pads = _pads(padding, n)
    ldil = _ints("lhs_dilation", lhs_dilation, n, 1)
    rdil = _ints("rhs_dilation", rhs_dilation, n, 1)
    res = []
    for i, k, o, s, (lo, _), ld, rd in zip(in_spatial, kernel_spatial, out_spatial, strides, pads, ldil, rdil):
        lhs_d, rhs_d, out_d = _dilate(i, ld), _dilate(k, rd), _dilate(o, s)
        res.append((lo, (out_d - lhs_d) + (rhs_d - lo - 1)))
    return tuple(res)


def reduce_window_sum_transpose_params(
    in_shape: Sequence[int],
    window_dimensions: Sequence[int],
    window_strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    base_dilation: Sequence[int],
    window_dilation: Sequence[int],
) -> tuple[Pads, tuple[int, ...]]:
    """Return (padding, base_dilation) for the reduce_window "sum" transpose (JAX ``_reduce_window_sum_transpose_rule``)."""
    return conv_transpose_lhs_params(
        in_shape, window_dimensions, window_strides, padding, base_dilation, window_dilation
    )
