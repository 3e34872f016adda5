"""ONNX op handlers for the rest: TopK, Unique, Einsum, BitCast, CenterCropPad, ReverseSequence,
TensorScatter, Det, the window functions, DFT/STFT, MelWeightMatrix and TfIdfVectorizer
(registered into `ops.OPS` when `ops` is imported).

Data-dependent results (Unique's distinct values, positions) are found in numpy and the values
gathered from the input with ember ops, so gradients still reach the picked elements. DFT's
values are numpy's FFT (what the onnx reference computes, to its float32 rounding) with the
gradient of the equivalent DFT-matrix product in ember ops.
"""
from __future__ import annotations

import numpy as np

from .. import api as E
from .._core import dtypes as dt
from .._core.errors import ConcretizationError
from ..ops import lax
from .ops import _ax, const, ints, onnx_dtype, register, static


def _need(ctx, owner, name):
    """`owner.name` (an ember API newer than this importer may run with), or UnsupportedOpError."""
    fn = getattr(owner, name, None)
    if fn is None:
        raise ctx.unsupported(f"this ember has no {getattr(owner, '__name__', owner)}.{name}")
    return fn


def _take(x, axis, start, stop):
    lo, hi = [0] * x.ndim, list(x.shape)
    lo[axis], hi[axis] = start, stop
    return lax.slice(x, lo, hi, [1] * x.ndim)


# ------------------------------------------------------------------ TopK
def _topk(ctx, x, k, axis, largest):
    axis = _ax(axis, x.ndim)
    if not 0 <= k <= x.shape[axis]:
        raise ctx.unsupported(f"k={k} for an axis of size {x.shape[axis]}")
    order = _need(ctx, lax, "argsort")(x, axis, bool(largest), True)  # stable: ties keep the lower index first
    idx = _take(order, axis, 0, k)
    return lax.take_along_axis(x, idx, axis), idx


@register("TopK")
def topk_attr(ctx, x):
    """TopK-1: k as an attribute, the largest elements."""
    return _topk(ctx, x, ctx.attr("k"), ctx.attr("axis", -1), True)


@register("TopK", since=10)
def topk_10(ctx, x, k):
    """TopK-10: k as an input."""
    return _topk(ctx, x, ints(k)[0], ctx.attr("axis", -1), True)


@register("TopK", since=11)
def topk(ctx, x, k):
    """TopK-11+: `largest` picks largest or smallest; the result is always sorted."""
    return _topk(ctx, x, ints(k)[0], ctx.attr("axis", -1), ctx.attr("largest", 1))


# ------------------------------------------------------------------ Unique
@register("Unique", since=11)
def unique(ctx, x):
    """Distinct elements (or slices along `axis`): Y, first-occurrence indices, inverse, counts."""
    a = static(x)
    axis = ctx.attr("axis")
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise ctx.unsupported("NaN inputs")
    if axis is None:
        _, first, inv, counts = np.unique(a.reshape(-1), return_index=True, return_inverse=True, return_counts=True)
    else:
        axis = _ax(axis, a.ndim)
        _, first, inv, counts = np.unique(a, return_index=True, return_inverse=True, return_counts=True, axis=axis)
    inv = np.asarray(inv).reshape(-1)
    if not ctx.attr("sorted", 1):  # order by first occurrence
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        first, counts, inv = first[order], counts[order], rank[inv]
    src = lax.reshape(x, (int(np.prod(x.shape)),)) if axis is None else x
    y = lax.gather(src, const(first.astype(np.int64)), 0 if axis is None else axis)
    return y, const(first.astype(np.int64)), const(inv.astype(np.int64)), const(counts.astype(np.int64))


# ------------------------------------------------------------------ Einsum, BitCast, Det
@register("Einsum", since=12)
def einsum(ctx, *xs):
    """Einstein summation (ember.einsum)."""
    eq = ctx.attr("equation").replace(" ", "")
    return _need(ctx, E, "einsum")(eq, *xs)


@register("BitCast", since=26)
def bitcast(ctx, x):
    """Reinterpret the bits of `x` as a same-width dtype."""
    to = onnx_dtype(ctx.attr("to"))
    if to.itemsize != x.dtype.itemsize:
        raise ctx.unsupported(f"bitcast from {x.dtype.name} to {to.name} (different widths)")
    return lax.bitcast(x, to)


@register("Det", since=11)
def det(ctx, x):
    """Determinant of the trailing square matrices."""
    return _need(ctx, E.linalg, "det")(x)


# ------------------------------------------------------------------ CenterCropPad, ReverseSequence
@register("CenterCropPad", since=18)
def center_crop_pad(ctx, x, shape):
    """Crop or zero-pad each of `axes` to `shape`, centred (the odd cell goes to the end)."""
    axes = [_ax(a, x.ndim) for a in (ctx.attr("axes") or range(x.ndim))]
    for a, want in zip(axes, ints(shape)):
        n = x.shape[a]
        if want < n:
            d = (n - want) // 2
            x = _take(x, a, d, d + want)
        elif want > n:
            d = (want - n) // 2
            cfg = [(0, 0, 0)] * x.ndim
            cfg[a] = (d, want - n - d, 0)
            x = lax.pad(x, False if x.dtype is dt.bool_ else 0, cfg)
    return x


@register("ReverseSequence", since=10)
def reverse_sequence(ctx, x, seq_lens):
    """Reverse the first seq_lens[b] steps along `time_axis` of each batch entry."""
    ba, ta = _ax(ctx.attr("batch_axis", 1), x.ndim), _ax(ctx.attr("time_axis", 0), x.ndim)
    lens = ints(seq_lens)
    t = np.arange(x.shape[ta])
    rows = np.stack([np.where(t < n, n - 1 - t, t) for n in lens]) if lens else np.zeros((0, t.size), np.int64)
    shape = [1] * x.ndim
    shape[ba], shape[ta] = rows.shape[0], rows.shape[1]
    idx = rows if ba < ta else rows.T
    idx = np.broadcast_to(idx.reshape(shape), x.shape).astype(np.int64)
    return lax.take_along_axis(x, const(idx), ta)


@register("TensorScatter", since=24)
def tensor_scatter(ctx, cache, update, write_indices=None):
    """Write `update` into `cache` along `axis` from each batch entry's write index (linear or circular)."""
    mode = ctx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise ctx.unsupported(f"mode={mode!r}")
    axis = _ax(ctx.attr("axis", -2), cache.ndim)
    if axis == 0:
        raise ctx.unsupported("axis=0 (the batch axis)")
    b, n, s = cache.shape[0], cache.shape[axis], update.shape[axis]
    starts = ints(write_indices) if write_indices is not None else [0] * b
    pos = np.array(starts, np.int64)[:, None] + np.arange(s)[None, :]
    if mode == "circular":
        pos = pos % n
    if ((pos < 0) | (pos >= n)).any():
        raise ctx.unsupported("write positions past the end of the cache in linear mode")
    src = np.full((b, n), -1, np.int64)  # which update step lands at each cache position, -1: keep
    for i in range(b):
        src[i, pos[i]] = np.arange(s)
    shape = [1] * cache.ndim
    shape[0], shape[axis] = b, n
    keep = np.broadcast_to((src < 0).reshape(shape), cache.shape)
    upd_shape = list(cache.shape)
    idx = np.broadcast_to(np.maximum(src, 0).reshape(shape), upd_shape).astype(np.int64)
    picked = lax.take_along_axis(update, const(idx), axis) if s else lax.full(cache.shape, 0, cache.dtype)
    return lax.select(const(keep), cache, picked)


# ------------------------------------------------------------------ windows
def _window(fn):
    def h(ctx, size):
        n = ints(size)[0]
        d = onnx_dtype(ctx.attr("output_datatype", 1))
        m = n if ctx.attr("periodic", 1) else n - 1
        k = np.arange(n, dtype=np.float64)
        return const(fn(k, m).astype(d.np))
    return h


register("HannWindow", since=17)(_window(lambda k, m: np.sin(k * np.pi / m) ** 2))
register("HammingWindow", since=17)(_window(lambda k, m: 25 / 46 - np.cos(k * np.pi * 2 / m) * (21 / 46)))
register("BlackmanWindow", since=17)(_window(
    lambda k, m: 0.42 - 0.5 * np.cos(k * np.pi * 2 / m) + 0.08 * np.cos(k * np.pi * 4 / m)))


@register("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx, num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz):
    """Triangular mel filter bank, (dft_length // 2 + 1, num_mel_bins)."""
    nm, nd, sr = ints(num_mel_bins)[0], ints(dft_length)[0], ints(sample_rate)[0]
    lo, hi = float(static(lower_edge_hertz).reshape(-1)[0]), float(static(upper_edge_hertz).reshape(-1)[0])
    mel = lambda f: 2595 * np.log1p(f / 700) / np.log(10)  # noqa: E731
    lo_m, hi_m = mel(lo), mel(hi)
    bins = np.arange(nm + 2) * ((hi_m - lo_m) / (nm + 2)) + lo_m
    bins = (((nd + 1) * (700 * np.expm1(bins / 2595 * np.log(10)))) // sr).astype(int)
    out = np.zeros((nd // 2 + 1, nm))
    for i in range(nm):
        left, mid, right = bins[i], bins[i + 1], bins[i + 2]
        if mid == left:
            out[mid, i] = 1
        else:
            for j in range(left, mid + 1):
                out[j, i] = (j - left) / (mid - left)
        for j in range(mid, right):
            out[j, i] = (right - j) / (right - mid)
    return const(out.astype(onnx_dtype(ctx.attr("output_datatype", 1)).np))


# ------------------------------------------------------------------ DFT, STFT
def _move_last(y, axis):
    """dot_general puts the transformed axis last; put it back at `axis`."""
    nd = y.ndim
    perm = list(range(nd - 1))
    perm.insert(axis, nd - 1)
    return lax.transpose(y, perm)


def _dft(x, axis, length, inverse, onesided):
    """DFT of x (..., n, ..., 1|2) along `axis` (not the last) -> (..., bins, ..., 2) or irfft's (..., L, ..., 1)."""
    c = x.shape[-1]
    xr = lax.reshape(_take(x, x.ndim - 1, 0, 1), x.shape[:-1])
    xi = lax.reshape(_take(x, x.ndim - 1, 1, 2), x.shape[:-1]) if c == 2 else None
    n = x.shape[axis]
    use = min(n, length)
    if use < n:
        xr = _take(xr, axis, 0, use)
        xi = _take(xi, axis, 0, use) if xi is not None else None
    npd = x.dtype.np if x.dtype.kind == "f" else np.float64

    def mat(m):  # contract over the input axis
        return lambda t: _move_last(lax.dot_general(t, const(m.astype(npd)), ((axis,), (1,))), axis)

    if inverse and onesided:  # irfft: Hermitian spectrum of `use` bins -> `length` real samples
        kk = np.arange(min(use, length // 2 + 1))
        w = np.where((kk == 0) | ((length % 2 == 0) & (kk == length // 2)), 1.0, 2.0)
        ang = 2 * np.pi * np.outer(np.arange(length), kk) / length
        cm = np.zeros((length, use))
        sm = np.zeros((length, use))
        cm[:, :kk.size] = np.cos(ang) * w / length
        sm[:, :kk.size] = np.sin(ang) * w / length
        y = mat(cm)(xr)
        if xi is not None:
            y = lax.sub(y, mat(sm)(xi))
        return lax.reshape(y, y.shape + (1,))
    bins = length // 2 + 1 if onesided else length
    ang = 2 * np.pi * np.outer(np.arange(bins), np.arange(use)) / length
    cm, sm = np.cos(ang), np.sin(ang)
    if inverse:
        cm, sm = cm / length, -sm / length
    re, im = mat(cm)(xr), lax.neg(mat(sm)(xr))
    if xi is not None:
        re = lax.add(re, mat(sm)(xi))
        im = lax.add(im, mat(cm)(xi))
    return lax.concatenate([lax.reshape(re, re.shape + (1,)), lax.reshape(im, im.shape + (1,))], re.ndim)


def _np_dft(a, axis, length, inverse, onesided):
    """numpy's pocketfft result in a's precision, shaped as _dft's."""
    z = a[..., 0] if a.shape[-1] == 1 else a[..., 0] + 1j * a[..., 1]
    if inverse and onesided:
        return np.fft.irfft(z, n=length, axis=axis)[..., None]
    r = (np.fft.ifft if inverse else np.fft.fft)(z, n=length, axis=axis)
    if onesided:
        r = np.take(r, np.arange(length // 2 + 1), axis=axis)
    return np.stack([r.real, r.imag], -1)


def _exact_dft(x, axis, length, inverse, onesided):
    """_dft with numpy's FFT values (as the reference's) and the DFT matrix's gradient."""
    y = _dft(x, axis, length, inverse, onesided)
    try:
        ref = _np_dft(static(x), axis, length, inverse, onesided).astype(y.dtype.np)
    except ConcretizationError:  # traced under ember.jit: the matrix product alone
        return y
    return lax.add(y, lax.sub(const(ref), y).detach())


def _dft_common(ctx, x, dft_length, axis):
    axis = _ax(axis, x.ndim)
    if axis == x.ndim - 1:
        raise ctx.unsupported("axis on the real/imaginary dimension")
    inverse, onesided = ctx.attr("inverse", 0), ctx.attr("onesided", 0)
    if dft_length is not None:
        length = ints(dft_length)[0]
    else:
        length = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    if onesided and not inverse and x.shape[-1] != 1:
        raise ctx.unsupported("onesided with a complex input")
    return _exact_dft(x, axis, length, inverse, onesided)


@register("DFT", since=17)
def dft_17(ctx, x, dft_length=None):
    """DFT-17: axis as an attribute (default 1)."""
    return _dft_common(ctx, x, dft_length, ctx.attr("axis", 1))


@register("DFT", since=20)
def dft(ctx, x, dft_length=None, axis=None):
    """DFT-20: axis as an input (default -2)."""
    return _dft_common(ctx, x, dft_length, ints(axis)[0] if axis is not None else -2)


@register("STFT", since=17)
def stft(ctx, x, frame_step, window=None, frame_length=None):
    """Short-time Fourier transform of (batch, length, 1|2) signals -> (batch, frames, bins, 2)."""
    step = ints(frame_step)[0]
    if frame_length is not None:
        fl = ints(frame_length)[0]
    else:
        fl = window.shape[0] if window is not None else x.shape[-2]
    if window is not None and window.shape[0] != fl:
        raise ctx.unsupported(f"a window of {window.shape[0]} samples for frame_length {fl}")
    onesided = ctx.attr("onesided", 1)
    if onesided and x.shape[-1] != 1:
        raise ctx.unsupported("onesided with a complex signal")
    nf = 1 + (x.shape[1] - fl) // step
    idx = (np.arange(nf)[:, None] * step + np.arange(fl)[None, :]).reshape(-1).astype(np.int64)
    frames = lax.reshape(lax.gather(x, const(idx), 1), (x.shape[0], nf, fl, x.shape[-1]))
    if window is not None:
        frames = lax.mul(frames, lax.reshape(E.convert(window, frames.dtype), (fl, 1)))
    return _exact_dft(frames, 2, fl, False, onesided)


# ------------------------------------------------------------------ TfIdfVectorizer
@register("TfIdfVectorizer", since=9)
def tfidf_vectorizer(ctx, x):
    """Counts (TF), presence (IDF) or weighted counts (TFIDF) of the pool's n-grams, skips allowed."""
    if ctx.has("pool_strings"):
        raise ctx.unsupported("pool_strings (string tensors)")
    mode = ctx.attr("mode")
    if mode not in ("TF", "IDF", "TFIDF"):
        raise ctx.unsupported(f"mode={mode!r}")
    pool, starts = list(ctx.attr("pool_int64s") or []), list(ctx.attr("ngram_counts") or [])
    idx = list(ctx.attr("ngram_indexes") or [])
    lo, hi, skip = ctx.attr("min_gram_length"), ctx.attr("max_gram_length"), ctx.attr("max_skip_count")
    grams, k = {}, 0
    for g, s in enumerate(starts):  # group g holds (g+1)-grams from pool[s] to the next group's start
        e = starts[g + 1] if g + 1 < len(starts) else len(pool)
        for j in range(s, e, g + 1):
            grams[tuple(pool[j:j + g + 1])] = idx[k]
            k += 1
    size = max(idx) + 1 if idx else 0
    a = static(x)
    rows = a.reshape(1, -1) if a.ndim < 2 else a
    freq = np.zeros((rows.shape[0], size), np.float64)
    for r, row in enumerate(rows.tolist()):
        c = len(row)
        for sd in range(1, skip + 2):
            for n in range(lo if sd == 1 else max(lo, 2), hi + 1):
                for st in range(c - (n - 1) * sd):
                    hit = grams.get(tuple(row[st:st + (n - 1) * sd + 1:sd]))
                    if hit is not None:
                        freq[r, hit] += 1
    w = np.asarray(ctx.attr("weights") or [], np.float64)
    if mode == "IDF":
        freq = (freq > 0) * (w[:size] if w.size else 1.0)
    elif mode == "TFIDF" and w.size:
        freq = freq * w[:size]
    out = freq.astype(np.float32)
    return const(out.reshape(-1) if a.ndim < 2 else out)
