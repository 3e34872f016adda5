"""Deep Compression (Han, Mao & Dally 2016; MD-13): pruning, k-means weight sharing, Huffman coding.

    prune.global_unstructured([(m, "weight") for m in layers], 0.9)   # 1. prune (ember.deploy.prune)
    share_weights(layer, "weight", bits=5)                            # 2. cluster, then fine-tune
    report = compress(model)                                          # 3. Huffman-code; sizes
    w = report.decode("fc1")                                          # the exact quantized weight

`share_weights` reparametrizes `module.<name>` as `centroids[indices]` (times the pruning mask if
there is one): the centroids are a Parameter of 2**bits values, initialised linearly between the
weights' min and max (Han et al.'s best init) and refined by numpy k-means; the index of each
weight is a buffer. A centroid's gradient is then the sum of the gradients of its weights (the
gather's backward is a scatter-add), so fine-tuning works eagerly and in a jitted step.

`compress` stores each Linear/Conv weight as the codebook, the Huffman-coded cluster index of every
kept weight and, for a sparse layer, the Huffman-coded gaps between kept positions (relative
indices of `gap_bits` bits; a longer gap takes filler zeros, as in the paper). Bytes count the
streams, the codebook and one byte of code length per symbol; every other parameter stays float.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .._core.state import no_grad
from .. import api as E
from ..nn.conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..tensor import Tensor, from_numpy
from . import prune as _prune
from .prune import PruningError

_CONV = (Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)

__all__ = ["CompressionError", "kmeans_1d", "share_weights", "unshare", "huffman_lengths", "huffman_encode",
           "huffman_decode", "EncodedLayer", "LayerReport", "CompressionReport", "compress", "encode_weight",
           "decode"]


class CompressionError(PruningError):
    """A compression request that cannot be carried out (bad bit width, unsupported layer)."""


# ------------------------------------------------------------------ weight sharing
def kmeans_1d(values: np.ndarray, k: int, *, init: str = "linear", max_iter: int = 100,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on a 1-d array: (centroids in values' dtype, int64 labels); deterministic."""
    v = np.asarray(values).reshape(-1)
    if v.size == 0:
        raise CompressionError("k-means needs at least one value")
    if not 1 <= k:
        raise CompressionError(f"k={k} clusters must be >= 1")
    x = v.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if init == "linear":  # Han et al.: evenly spaced over [min, max]
        c = np.linspace(lo, hi, k)
    elif init == "density":  # evenly spaced over the CDF
        c = np.quantile(x, np.linspace(0, 1, k))
    elif init == "random":
        c = np.random.default_rng(seed).choice(x, size=k, replace=x.size < k)
    else:
        raise CompressionError(f"init={init!r} must be 'linear', 'density' or 'random'")
    c = np.sort(c)
    labels = None
    for _ in range(max_iter):
        new = _assign(x, c)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        sums = np.bincount(labels, weights=x, minlength=k)
        counts = np.bincount(labels, minlength=k)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)  # an empty cluster keeps its centroid
        order = np.argsort(c, kind="stable")
        c = c[order]
    cq = c.astype(v.dtype)
    return cq, _assign(v, cq)


def _assign(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The nearest of the sorted centroids `c` for each value (the lower one on a tie)."""
    if c.size == 1:
        return np.zeros(x.shape, np.int64)
    mids = (c[:-1].astype(np.float64) + c[1:].astype(np.float64)) / 2
    lab = np.searchsorted(mids, x.astype(np.float64), side="left")
    return lab.astype(np.int64)


def _eval_shared(m: Module, name: str) -> Tensor:
    idx = m._buffers[name + "_indices"]
    w = E.index_select(m._parameters[name + "_centroids"], 0, idx.reshape(-1)).reshape(idx.shape)
    mask = m._buffers.get(name + "_mask")
    return w if mask is None else w * mask


_prune._EVAL["shared"] = _eval_shared


def _bits_for(module: Module, bits) -> int:
    if isinstance(bits, dict):
        bits = bits.get(type(module).__name__, None)
    if bits is None:
        bits = 8 if isinstance(module, _CONV) else 5  # Han et al.: 8 bits for conv, 5 for fc
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise CompressionError(f"bits={bits!r} must be an int in [1, 16]")
    return bits


def share_weights(module: Module, name: str = "weight", bits: int | None = None, *, init: str = "linear",
                  max_iter: int = 100, seed: int = 0) -> Module:
    """Cluster module.<name>'s kept weights into 2**bits shared, trainable centroids (k-means)."""
    value, mask = _prune._slot(module, name)
    kind = _prune.reparam_kind(module, name)
    if kind == "shared":
        raise CompressionError(f"{type(module).__name__}.{name} is already shared")
    k = 2 ** _bits_for(module, bits)
    keep = np.ones(value.shape, bool) if mask is None else mask == 1
    vals = value[keep]
    if vals.size == 0:
        raise CompressionError(f"{type(module).__name__}.{name} has no unpruned weight to cluster")
    cents, lab = kmeans_1d(vals, min(k, vals.size), init=init, max_iter=max_iter, seed=seed)
    idx = np.zeros(value.shape, np.int64)
    idx[keep] = lab
    old = module._parameters[name + "_orig"] if kind == "prune" else module._parameters[name]
    delattr(module, name + "_orig" if kind == "prune" else name)
    module.register_parameter(name + "_centroids", Parameter(from_numpy(cents), requires_grad=old.requires_grad))
    module.register_buffer(name + "_indices", from_numpy(idx))
    if kind == "prune":
        _prune.uninstall_reparam(module, name)
    _prune.install_reparam(module, name, "shared")
    return module


def unshare(module: Module, name: str = "weight") -> Module:
    """Make module.<name> a plain Parameter holding its quantized (and masked) values again."""
    if _prune.reparam_kind(module, name) != "shared":
        raise CompressionError(f"{type(module).__name__}.{name} is not shared")
    with no_grad():
        w = getattr(module, name).detach().numpy().copy()
    rg = module._parameters[name + "_centroids"].requires_grad
    for k in ("_centroids", "_indices", "_mask"):
        if hasattr(module, name + k):
            delattr(module, name + k)
    _prune.uninstall_reparam(module, name)
    module.register_parameter(name, Parameter(from_numpy(w), requires_grad=rg))
    return module


# ------------------------------------------------------------------ Huffman coding
def huffman_lengths(freqs: dict) -> dict:
    """Optimal (Huffman) code length of each symbol with a count > 0; one symbol gets 1 bit."""
    items = [(int(f), s) for s, f in freqs.items() if f > 0]
    if not items:
        return {}
    if len(items) == 1:
        return {items[0][1]: 1}
    tie = itertools.count()
    heap = [(f, next(tie), [s]) for f, s in sorted(items, key=lambda t: (t[0], repr(t[1])))]
    heapq.heapify(heap)
    length = {s: 0 for _, s in items}
    while len(heap) > 1:
        fa, _, a = heapq.heappop(heap)
        fb, _, b = heapq.heappop(heap)
        for s in a + b:
            length[s] += 1
        heapq.heappush(heap, (fa + fb, next(tie), a + b))
    return length


def _canonical(lengths: dict) -> dict:
    """Canonical codes (as '0'/'1' strings) from code lengths: symbols ordered by (length, symbol)."""
    codes, code, prev = {}, 0, 0
    for s, n in sorted(lengths.items(), key=lambda t: (t[1], t[0])):
        code <<= n - prev
        codes[s] = format(code, f"0{n}b")
        code, prev = code + 1, n
    return codes


def huffman_encode(symbols: np.ndarray) -> tuple[bytes, int, dict]:
    """(packed bits, number of bits, code lengths) of a canonical Huffman code of `symbols`."""
    symbols = np.asarray(symbols, np.int64).reshape(-1)
    if symbols.size == 0:
        return b"", 0, {}
    uniq, counts = np.unique(symbols, return_counts=True)
    lengths = huffman_lengths(dict(zip(uniq.tolist(), counts.tolist())))
    codes = _canonical(lengths)
    table = np.array([codes[s] for s in uniq.tolist()], dtype=object)
    bits = "".join(table[np.searchsorted(uniq, symbols)].tolist())
    arr = np.frombuffer(bits.encode("ascii"), np.uint8) - ord("0")
    return np.packbits(arr).tobytes(), len(bits), lengths


def huffman_decode(data: bytes, nbits: int, lengths: dict, count: int) -> np.ndarray:
    """The `count` symbols that `huffman_encode` wrote as (data, nbits, lengths)."""
    if count == 0:
        return np.zeros(0, np.int64)
    lookup = {c: s for s, c in _canonical(lengths).items()}
    bits = (np.unpackbits(np.frombuffer(data, np.uint8))[:nbits] + ord("0")).tobytes().decode("ascii")
    out, cur = [], ""
    for ch in bits:
        cur += ch
        s = lookup.get(cur)
        if s is not None:
            out.append(s)
            cur = ""
    if cur or len(out) != count:
        raise CompressionError(f"corrupt Huffman stream: decoded {len(out)} of {count} symbols")
    return np.array(out, np.int64)


# ------------------------------------------------------------------ layers
@dataclass
class EncodedLayer:
    """One weight tensor as codebook + Huffman streams (cluster indices, and gaps if sparse)."""

    shape: tuple
    dtype: str
    centroids: np.ndarray
    count: int                  # symbols in the index stream (kept weights + fillers)
    index_stream: tuple         # (bytes, nbits, code lengths); symbol len(centroids) is a filler zero
    gap_stream: tuple | None    # None for a dense layer
    gap_bits: int

    @property
    def nbytes(self) -> int:
        """Stored size: both streams, the codebook and one byte per code length."""
        n = (self.index_stream[1] + 7) // 8 + self.centroids.nbytes + len(self.centroids) + 1
        if self.gap_stream is not None:
            n += (self.gap_stream[1] + 7) // 8 + 2 ** self.gap_bits
        return n


def encode_weight(weight: np.ndarray, centroids: np.ndarray, indices: np.ndarray, keep: np.ndarray | None,
                  gap_bits: int = 5) -> EncodedLayer:
    """Encode centroids[indices] at the `keep` positions (all of them when keep is None)."""
    flat_idx = np.asarray(indices, np.int64).reshape(-1)
    k = len(centroids)
    if keep is None or keep.all():
        syms, gaps = flat_idx, None
    else:
        pos = np.flatnonzero(np.asarray(keep).reshape(-1))
        skip = np.diff(np.concatenate([[-1], pos])) - 1  # zeros skipped before each kept weight
        bound = 2 ** gap_bits - 1
        fillers = skip // (bound + 1)  # each filler zero occupies a position after `bound` skips
        rest = skip - fillers * (bound + 1)
        n_out = int(fillers.sum()) + pos.size
        syms = np.full(n_out, k, np.int64)
        gaps = np.full(n_out, bound, np.int64)
        at = np.cumsum(fillers + 1) - 1  # where each real weight lands in the stream
        syms[at] = flat_idx[pos]
        gaps[at] = rest
    return EncodedLayer(tuple(weight.shape), np.dtype(weight.dtype).name, np.asarray(centroids).copy(), len(syms),
                        huffman_encode(syms), None if gaps is None else huffman_encode(gaps), gap_bits)


def decode(enc: EncodedLayer) -> np.ndarray:
    """The exact quantized weight an EncodedLayer stores (zeros where it was pruned)."""
    syms = huffman_decode(*enc.index_stream, enc.count)
    cents = np.concatenate([enc.centroids, np.zeros(1, enc.centroids.dtype)])  # the filler symbol
    n = int(np.prod(enc.shape))
    if enc.gap_stream is None:
        return cents[syms].reshape(enc.shape).astype(enc.dtype)
    gaps = huffman_decode(*enc.gap_stream, enc.count)
    pos = np.cumsum(gaps + 1) - 1
    out = np.zeros(n, enc.dtype)
    real = syms < len(enc.centroids)
    if pos.size and pos[-1] >= n:
        raise CompressionError(f"corrupt gap stream: position {pos[-1]} outside {n} weights")
    out[pos[real]] = enc.centroids[syms[real]]
    return out.reshape(enc.shape)


@dataclass
class LayerReport:
    """Sizes of one compressed weight."""

    shape: tuple
    nonzero: int
    bits: int
    original_bytes: int
    compressed_bytes: int
    encoded: EncodedLayer

    @property
    def ratio(self) -> float:
        """original_bytes / compressed_bytes."""
        return self.original_bytes / max(self.compressed_bytes, 1)


@dataclass
class CompressionReport:
    """Per-layer and total sizes (bytes) of a Deep-Compressed model; `decode` restores weights."""

    layers: dict = field(default_factory=dict)
    other_bytes: int = 0  # parameters left as they are (biases, norms)

    @property
    def original_bytes(self) -> int:
        """The float size of the compressed weights plus every other parameter."""
        return sum(r.original_bytes for r in self.layers.values()) + self.other_bytes

    @property
    def compressed_bytes(self) -> int:
        """The encoded size of the compressed weights plus every other parameter."""
        return sum(r.compressed_bytes for r in self.layers.values()) + self.other_bytes

    @property
    def ratio(self) -> float:
        """The whole model's compression ratio."""
        return self.original_bytes / max(self.compressed_bytes, 1)

    def decode(self, name: str) -> np.ndarray:
        """The quantized weight of layer `name` ('fc1' for fc1.weight)."""
        return decode(self.layers[name].encoded)

    def __str__(self) -> str:
        rows = [f"{k:<24} {str(r.shape):<18} nz {r.nonzero:>8} {r.bits:>2}b {r.original_bytes:>10} -> "
                f"{r.compressed_bytes:>9} ({r.ratio:6.1f}x)" for k, r in self.layers.items()]
        return "\n".join(rows + [f"{'total':<24} {self.original_bytes} -> {self.compressed_bytes} bytes "
                                 f"({self.ratio:.1f}x; {self.other_bytes} bytes of other parameters)"])


_INTERNAL = ("_orig", "_mask", "_centroids", "_indices")


def compress(model: Module, *, bits=None, gap_bits=None, layers: Iterable[str] | None = None,
             seed: int = 0) -> CompressionReport:
    """Huffman-code every Linear/Conv weight of `model` (shared ones as they are, others clustered
    now, with 2**bits centroids: 8 bits for conv, 5 for fc by default); report the sizes."""
    rep = CompressionReport()
    chosen = None if layers is None else set(layers)
    done = set()
    with no_grad():
        for prefix, m in model.named_modules():
            if not isinstance(m, (Linear, *_CONV)) or (chosen is not None and prefix not in chosen):
                continue
            if chosen is not None:
                chosen.discard(prefix)
            w = m.weight.detach().numpy()
            kind = _prune.reparam_kind(m, "weight")
            mask = m._buffers.get("weight_mask")
            keep = (w != 0) if mask is None else mask.detach().numpy() == 1
            if kind == "shared":
                cents = m.weight_centroids.detach().numpy()
                idx = m.weight_indices.detach().numpy()
                b = max(1, int(np.ceil(np.log2(max(len(cents), 2)))))
            else:
                b = _bits_for(m, bits)
                vals = w[keep]
                cents, lab = kmeans_1d(vals if vals.size else np.zeros(1, w.dtype), min(2 ** b, max(vals.size, 1)),
                                       seed=seed)
                idx = np.zeros(w.shape, np.int64)
                idx[keep] = lab[:vals.size] if vals.size else 0
                w = np.where(keep, cents[idx], 0).astype(w.dtype)
            gb = gap_bits if gap_bits is not None else (8 if isinstance(m, _CONV) else 5)
            enc = encode_weight(w, cents, idx, keep, gb)
            rep.layers[prefix] = LayerReport(tuple(w.shape), int(keep.sum()), b, w.size * w.itemsize, enc.nbytes, enc)
            done.add(prefix + ".weight" if prefix else "weight")
        if chosen:
            raise CompressionError(f"no Linear/Conv layer named {sorted(chosen)} in the model")
        for pname, m in model.named_modules():
            for k, p in m._parameters.items():
                full = f"{pname}.{k}" if pname else k
                if p is None or full in done or any(k.endswith(s) for s in _INTERNAL):
                    continue
                rep.other_bytes += p.numel() * p.dtype.itemsize
            for k in m.__dict__.get("_ember_reparam", {}):
                full = f"{pname}.{k}" if pname else k
                if full not in done:
                    t = getattr(m, k)
                    rep.other_bytes += t.numel() * t.dtype.itemsize
    return rep
