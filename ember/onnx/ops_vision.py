"""ONNX vision op handlers: MaxPool's Indices output, MaxUnpool, Col2Im and NonMaxSuppression
(registered into `ops.OPS` when `ops` is imported).

Window geometry is static, so each op's source/target positions are numpy tables; the values are
gathered or scattered with ember ops. NonMaxSuppression's result is indices only and is computed
in numpy from the boxes and scores.
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from ..ops import lax
from .ops import const, ints, register, static


def _window_table(in_sp, out_sp, k, s, d, pads_lo):
    """(P_out, K) flat input positions of each output window's taps; -1 where a tap is padding."""
    nd = len(in_sp)
    outs = np.stack(np.meshgrid(*[np.arange(o) for o in out_sp], indexing="ij"), -1).reshape(-1, nd)
    taps = np.stack(np.meshgrid(*[np.arange(kk) for kk in k], indexing="ij"), -1).reshape(-1, nd)
    pos = outs[:, None, :] * np.array(s) - np.array(pads_lo) + taps[None, :, :] * np.array(d)  # (P, K, nd)
    ok = np.all((pos >= 0) & (pos < np.array(in_sp)), -1)
    flat = np.ravel_multi_index(tuple(np.clip(pos, 0, np.array(in_sp) - 1).transpose(2, 0, 1)), in_sp)
    return np.where(ok, flat, -1)


def max_pool_with_indices(ctx, x, values, k, s, d, pads):
    """MaxPool's (Y, Indices): the first maximum of each window, as a flat index into x."""
    N, C = x.shape[:2]
    in_sp, out_sp = list(x.shape[2:]), list(values.shape[2:])
    S = int(np.prod(in_sp))
    table = _window_table(in_sp, out_sp, k, s, d, [p[0] for p in pads])
    table = np.where(table < 0, S, table)  # padding reads an extra -inf cell
    P, K = table.shape
    xf = lax.reshape(x, (N * C, S))
    low = -math.inf if x.dtype.kind == "f" else int(dt.iinfo(x.dtype).min)
    xf = lax.concatenate([xf, lax.full((N * C, 1), low, x.dtype)], 1)
    g = lax.reshape(lax.gather(xf, const(table.reshape(-1).astype(np.int64)), 1), (N * C, P, K))
    am = lax.reshape(lax.argmax(g, 2), (N * C, P, 1))
    pos = lax.reshape(lax.take_along_axis(lax.broadcast_to(const(table.astype(np.int64)), (N * C, P, K)), am, 2),
                      (N * C, P))
    if ctx.attr("storage_order", 0):  # column-major: the first spatial axis varies fastest
        coords = np.stack(np.unravel_index(np.arange(S), in_sp), -1)
        col = np.zeros(S + 1, np.int64)
        col[:S] = sum(coords[:, i] * int(np.prod(in_sp[:i])) for i in range(len(in_sp)))
        pos = lax.gather(const(col), pos, 0)
    base = np.arange(N * C, dtype=np.int64).reshape(N * C, 1) * S
    idx = lax.reshape(lax.add(pos, const(base)), tuple(values.shape))
    return values, idx


@register("MaxUnpool", since=9)
def max_unpool(ctx, x, indices, output_shape=None):
    """Scatter pooled values back to the flat positions MaxPool's Indices name; zeros elsewhere."""
    k = ctx.attr("kernel_shape")
    nd = len(k)
    s = ctx.attr("strides") or [1] * nd
    p = ctx.attr("pads") or [0] * (2 * nd)
    shape = list(x.shape[:2]) + [(x.shape[2 + i] - 1) * s[i] - (p[i] + p[nd + i]) + k[i] for i in range(nd)]
    total = int(np.prod(shape))
    idx = static(indices).astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= total):
        raise ctx.unsupported(f"indices outside the unpooled tensor of {total} elements")
    last = np.zeros(total, np.int64) - 1
    last[idx] = np.arange(idx.size)  # the last write to each position wins, as the reference's loop
    keep = np.nonzero(last >= 0)[0]
    vals = lax.gather(lax.reshape(x, (int(np.prod(x.shape)),)), const(last[keep]), 0)
    y = lax.scatter_add(lax.full((total,), 0, x.dtype), const(keep.astype(np.int64)), vals, 0)
    y = lax.reshape(y, tuple(shape))
    if output_shape is not None:
        want = ints(output_shape)
        if any(w < h for w, h in zip(want, shape)):
            raise ctx.unsupported(f"output_shape {want} smaller than the inferred {shape}")
        y = lax.pad(y, 0, [(0, w - h, 0) for w, h in zip(want, shape)])
    return y


@register("Col2Im", since=18)
def col2im(ctx, x, image_shape, block_shape):
    """Sum the columns (N, C*prod(block), L) back into images (N, C, *image_shape)."""
    img, blk = ints(image_shape), ints(block_shape)
    nd = len(img)
    d = ctx.attr("dilations") or [1] * nd
    s = ctx.attr("strides") or [1] * nd
    p = ctx.attr("pads") or [0] * (2 * nd)
    K = int(np.prod(blk))
    N, CK, L = x.shape
    C = CK // K
    padded = [img[i] + p[i] + p[nd + i] for i in range(nd)]
    out_sp = [(padded[i] - (d[i] * (blk[i] - 1) + 1)) // s[i] + 1 for i in range(nd)]
    if int(np.prod(out_sp)) != L:
        raise ctx.unsupported(f"{L} columns for {out_sp} block positions")
    table = _window_table(img, out_sp, blk, s, d, p[:nd])  # (L, K): image position of each (location, tap)
    S = int(np.prod(img))
    tgt = np.where(table < 0, S, table).T.reshape(-1).astype(np.int64)  # (K*L,), taps outer as x's layout
    cols = lax.reshape(x, (N, C, K * L))
    y = lax.scatter_add(lax.full((N, C, S + 1), 0, x.dtype), const(tgt), cols, 2)
    return lax.reshape(lax.slice(y, (0, 0, 0), (N, C, S), (1, 1, 1)), (N, C) + tuple(img))


# ------------------------------------------------------------------ NonMaxSuppression
def _iou_over(boxes, i, j, center, thr):
    """Whether box j suppresses box i (IoU > thr), corner or centre box format."""
    a, b = boxes[i], boxes[j]
    if center:
        ay0, ay1, ax0, ax1 = a[1] - a[3] / 2, a[1] + a[3] / 2, a[0] - a[2] / 2, a[0] + a[2] / 2
        by0, by1, bx0, bx1 = b[1] - b[3] / 2, b[1] + b[3] / 2, b[0] - b[2] / 2, b[0] + b[2] / 2
    else:
        ay0, ay1 = sorted((a[0], a[2]))
        ax0, ax1 = sorted((a[1], a[3]))
        by0, by1 = sorted((b[0], b[2]))
        bx0, bx1 = sorted((b[1], b[3]))
    iw, ih = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return False
    inter = iw * ih
    a1, a2 = (ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0)
    union = a1 + a2 - inter
    if a1 <= 0 or a2 <= 0 or union <= 0:
        return False
    return inter / union > thr


@register("NonMaxSuppression", since=10)
def non_max_suppression(ctx, boxes, scores, max_out=None, iou_threshold=None, score_threshold=None):
    """Greedy per-(batch, class) suppression by IoU; (selected, 3) rows of [batch, class, box]."""
    b, sc = static(boxes), static(scores)
    center = ctx.attr("center_point_box", 0)
    mo = static(max_out).reshape(-1) if max_out is not None else np.zeros(0, np.int64)
    k = max(int(mo[0]), 0) if mo.size else 0
    it = static(iou_threshold).reshape(-1) if iou_threshold is not None else np.zeros(0)
    iou = float(it[0]) if it.size else 0.0
    st = static(score_threshold).reshape(-1) if score_threshold is not None else np.zeros(0)
    out = []
    for n in range(b.shape[0]):
        for c in range(sc.shape[1]):
            s = sc[n, c]
            cand = [i for i in range(b.shape[1]) if not st.size or s[i] > st[0]]
            cand.sort(key=lambda i: (-s[i], i))
            kept = []
            for i in cand:
                if len(kept) >= k:
                    break
                if not any(_iou_over(b[n], i, j, center, iou) for j in kept):
                    kept.append(i)
                    out.append((n, c, i))
    return const(np.array(out, np.int64).reshape(-1, 3))



# ------------------------------------------------------------------ RoiAlign
def _roi_samples(roi, scale, H, W, oh, ow, ratio, half):
    """Bilinear corner positions and weights (oh*ow, G, 4) of one roi's sample points, and G's count."""
    off = 0.5 if half else 0.0
    x0, y0, x1, y1 = (float(v) * scale - off for v in roi)
    rw, rh = x1 - x0, y1 - y0
    if not half:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / oh, rw / ow
    gh = int(ratio) if ratio > 0 else int(np.ceil(rh / oh))
    gw = int(ratio) if ratio > 0 else int(np.ceil(rw / ow))
    pos = np.zeros((oh * ow, gh * gw, 4), np.int64)
    wt = np.zeros((oh * ow, gh * gw, 4), np.float64)
    for ph in range(oh):
        for pw in range(ow):
            for iy in range(gh):
                y = y0 + ph * bh + (iy + 0.5) * bh / gh
                for ix in range(gw):
                    x = x0 + pw * bw + (ix + 0.5) * bw / gw
                    if y < -1.0 or y > H or x < -1.0 or x > W:
                        continue
                    y, x = max(y, 0.0), max(x, 0.0)
                    yl, xl = int(y), int(x)
                    if yl >= H - 1:
                        yl = yh = H - 1
                        y = float(yl)
                    else:
                        yh = yl + 1
                    if xl >= W - 1:
                        xl = xh = W - 1
                        x = float(xl)
                    else:
                        xh = xl + 1
                    ly, lx = y - yl, x - xl
                    p, g = ph * ow + pw, iy * gw + ix
                    pos[p, g] = [yl * W + xl, yl * W + xh, yh * W + xl, yh * W + xh]
                    wt[p, g] = [(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx]
    return pos, wt, max(gh * gw, 1)


@register("RoiAlign", since=10)
def roi_align(ctx, x, rois, batch_indices):
    """Average (or max) of bilinear samples over each roi's output bins, (R, C, oh, ow)."""
    mode = ctx.attr("mode", "avg").lower()
    if mode not in ("avg", "max"):
        raise ctx.unsupported(f"mode={mode!r}")
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel" if ctx.opset >= 16 else "output_half_pixel")
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise ctx.unsupported(f"coordinate_transformation_mode={ctm!r}")
    oh, ow = ctx.attr("output_height", 1), ctx.attr("output_width", 1)
    ratio, scale = ctx.attr("sampling_ratio", 0), ctx.attr("spatial_scale", 1.0)
    N, C, H, W = x.shape
    r, bi = static(rois), static(batch_indices).astype(np.int64).reshape(-1)
    samples = [_roi_samples(r[i], scale, H, W, oh, ow, ratio, ctm == "half_pixel") for i in range(len(bi))]
    R, P = len(bi), oh * ow
    G = max([s[0].shape[1] for s in samples] + [1])
    pos = np.zeros((R, P, G, 4), np.int64)
    wt = np.zeros((R, P, G, 4), np.float64)
    real = np.zeros((R, 1, P, G), bool)
    for i, (p, w, _) in enumerate(samples):
        pos[i, :, :p.shape[1]], wt[i, :, :p.shape[1]], real[i, :, :, :p.shape[1]] = p, w, True
    xb = lax.gather(lax.reshape(x, (N, C, H * W)), const(bi), 0)  # (R, C, H*W)
    idx = lax.broadcast_to(const(pos.reshape(R, 1, -1)), (R, C, P * G * 4))
    v = lax.reshape(lax.take_along_axis(xb, idx, 2), (R, C, P, G, 4))
    v = lax.mul(v, const(wt.reshape(R, 1, P, G, 4).astype(x.dtype.np)))
    if mode == "avg":
        cnt = np.array([s[2] for s in samples], np.float64).reshape(R, 1, 1)
        y = lax.div(lax.reduce_sum(v, (3, 4)), const(cnt.astype(x.dtype.np)))
    else:
        y = lax.select(const(real), lax.reduce_max(v, (4,)), lax.full((), -math.inf, x.dtype))
        y = lax.select(const(real.any(-1)), lax.reduce_max(y, (3,)), lax.full((), 0, x.dtype))  # no sample: 0
    return lax.reshape(y, (R, C, oh, ow))


# ------------------------------------------------------------------ DeformConv
def _bilinear_taps(py, px, H, W):
    """[(flat index, weight * in-range)] of the 4 bilinear taps at float positions (py, px), zeros outside."""
    y0, x0 = lax.floor(py), lax.floor(px)
    ly, lx = lax.sub(py, y0), lax.sub(px, x0)
    taps = []
    for dy, wy in ((0, lax.sub(1, ly)), (1, ly)):
        for dx, wx in ((0, lax.sub(1, lx)), (1, lx)):
            yy, xx = lax.add(y0, dy), lax.add(x0, dx)
            ok = lax.bitwise_and(lax.bitwise_and(lax.ge(yy, 0), lax.le(yy, H - 1)),
                                 lax.bitwise_and(lax.ge(xx, 0), lax.le(xx, W - 1)))
            yc, xc = lax.min(lax.max(yy, 0.0), H - 1.0), lax.min(lax.max(xx, 0.0), W - 1.0)
            idx = lax.convert(lax.add(lax.mul(yc, W), xc), dt.int64)
            w = lax.select(ok, lax.mul(wy, wx), lax.full((), 0, py.dtype))
            taps.append((idx, w))
    return taps


@register("DeformConv", since=19)
def deform_conv(ctx, x, w, offset, b=None, mask=None):
    """2-D deformable convolution: bilinear samples at the kernel taps moved by `offset`, times `mask`."""
    if x.ndim != 4:
        raise ctx.unsupported(f"{x.ndim - 2}-D input (only 2-D)")
    n, ic, H, W = x.shape
    oc = w.shape[0]
    kh, kw = ctx.attr("kernel_shape") or list(w.shape[2:])
    sh, sw = ctx.attr("strides") or [1, 1]
    dh, dw = ctx.attr("dilations") or [1, 1]
    pads = ctx.attr("pads") or [0, 0, 0, 0]
    g, og = ctx.attr("group", 1), ctx.attr("offset_group", 1)
    oh, ow = offset.shape[2:]
    K, P, cpg = kh * kw, oh * ow, ic // og
    off = lax.reshape(offset, (n, og, K, 2, P))
    base_h = (np.arange(oh) * sh - pads[0])[:, None] + np.zeros((1, ow))
    base_w = (np.arange(ow) * sw - pads[1])[None, :] + np.zeros((oh, 1))
    kh_pos = np.repeat(np.arange(kh) * dh, kw)
    kw_pos = np.tile(np.arange(kw) * dw, kh)
    fd = x.dtype.np
    py = lax.add(const((kh_pos[:, None] + base_h.reshape(1, P)).astype(fd)),
                 lax.reshape(lax.slice(off, (0, 0, 0, 0, 0), (n, og, K, 1, P), (1,) * 5), (n, og, K, P)))
    px = lax.add(const((kw_pos[:, None] + base_w.reshape(1, P)).astype(fd)),
                 lax.reshape(lax.slice(off, (0, 0, 0, 1, 0), (n, og, K, 2, P), (1,) * 5), (n, og, K, P)))
    xg = lax.reshape(x, (n, og, cpg, H * W))
    cols = None
    for idx, wt in _bilinear_taps(py, px, H, W):
        ii = lax.broadcast_to(lax.reshape(idx, (n, og, 1, K * P)), (n, og, cpg, K * P))
        v = lax.mul(lax.reshape(lax.take_along_axis(xg, ii, 3), (n, og, cpg, K, P)), lax.reshape(wt, (n, og, 1, K, P)))
        cols = v if cols is None else lax.add(cols, v)
    if mask is not None:
        cols = lax.mul(cols, lax.reshape(mask, (n, og, 1, K, P)))
    cols = lax.reshape(cols, (n, g, (ic // g) * K, P))
    wg = lax.reshape(w, (g, oc // g, (ic // g) * K))
    y = lax.dot_general(cols, wg, ((2,), (2,)), ((1,), (0,)))  # (g, n, P, oc/g)
    y = lax.reshape(lax.transpose(y, (1, 0, 3, 2)), (n, oc, oh, ow))
    if b is not None:
        y = lax.add(y, lax.reshape(b, (oc, 1, 1)))
    return y
