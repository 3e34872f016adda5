"""Observers and calibration (MD-8, MD-9): statistics of activations -> quantization ranges -> QParams.

Observers accumulate on the host in numpy (calibration is not in the hot path; under ember.jit an
observer refuses a traced tensor). `calculate_qparams()` turns the observed range into `QParams` by
`choose_qparams`, PyTorch's rules. Defaults follow torch.ao.quantization's observers: uint8, affine.

- `MinMaxObserver`, `MovingAverageMinMaxObserver`, `PerChannelMinMaxObserver`,
  `MovingAveragePerChannelMinMaxObserver`: torch's, in float32 as torch computes them.
- `PercentileObserver`: keeps the values; the range is numpy.percentile of them (two-sided,
  (100 - p) / 2 cut from each tail, as onnxruntime's percentile calibrator; of |x| when symmetric).
- `HistogramObserver`: onnxruntime's HistogramCollector histogram (symmetric bins over
  [-max|x|, max|x|], grown at the same bin width when a later batch reaches further; past
  `max_bins`, 4 x bins, ember merges bins, where onnxruntime lets the count grow), then a
  threshold search over windows centred on 0: "kl" (TensorRT / onnxruntime entropy calibration:
  KL(P || Q) of the clipped reference P and its quantized Q, with MXNet's smoothing), "js"
  (Jensen-Shannon divergence, no smoothing needed), "mse" (expected squared error of fake-quantizing
  the histogram), and "symmetric_kl" (TensorRT's legacy search on the histogram of |x|).

`calibrate(model, loader)` runs a calibration loader through a module with forward hooks and
returns one observer per layer.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ember import nn
from ember._core.state import no_grad
from ember.tensor import Tensor

from .quant import F32_EPS, QParams, QuantizationError, check_finite, choose_qparams, is_traced, qrange

__all__ = ["Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
           "MovingAveragePerChannelMinMaxObserver", "PercentileObserver", "HistogramObserver", "calibrate",
           "qparams_of"]


class Observer:
    """Base class: `observe(x)` accumulates statistics, `calculate_qparams()` returns QParams."""

    axis: int | None = None

    def __init__(self, dtype: str = "uint8", symmetric: bool = False, *, quant_min: int | None = None,
                 quant_max: int | None = None, reduce_range: bool = False, eps: float = F32_EPS,
                 name: str = "tensor") -> None:
        self.quant_min, self.quant_max = qrange(dtype, quant_min, quant_max, reduce_range)
        self.dtype, self.symmetric, self.eps, self.name = dtype, symmetric, eps, name
        self._custom = (quant_min, quant_max, reduce_range)
        self.count = 0

    def _host(self, x) -> np.ndarray:
        if is_traced(x):
            raise QuantizationError(f"{self.name}: an observer cannot read a tensor traced by ember.jit; "
                                    "disable observers (FakeQuantize.disable_observer) before jitting")
        a = x.detach().numpy() if isinstance(x, Tensor) else np.asarray(x)
        return np.asarray(a, dtype=np.float32)

    def observe(self, x):
        """Accumulate the statistics of `x` (a tensor or array); returns `x` unchanged."""
        a = self._host(x)
        if a.size == 0:
            return x
        check_finite(a, f"{self.name} (observed by {type(self).__name__})")
        self._update(a)
        self.count += 1
        return x

    __call__ = observe

    def _update(self, a: np.ndarray) -> None:
        raise NotImplementedError

    def min_max(self) -> tuple:
        """The range (lo, hi) the qparams are chosen for (arrays for per-channel observers)."""
        raise NotImplementedError

    def _check_seen(self) -> None:
        if not self.count:
            raise QuantizationError(f"{self.name}: {type(self).__name__} has observed no data; run calibration "
                                    "(or a training step of a FakeQuantize) first")

    def calculate_qparams(self) -> QParams:
        """QParams for the observed range, by torch's observer rules (see ember.deploy.quant)."""
        self._check_seen()
        lo, hi = self.min_max()
        qmin, qmax, rr = self._custom
        return choose_qparams(lo, hi, self.dtype, self.symmetric, self.axis, self.eps, quant_min=qmin,
                              quant_max=qmax, reduce_range=rr, name=self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dtype={self.dtype}, symmetric={self.symmetric}, " \
               f"count={self.count})"


class MinMaxObserver(Observer):
    """The running min and max (torch.ao.quantization.MinMaxObserver)."""

    def __init__(self, dtype: str = "uint8", symmetric: bool = False, **kw) -> None:
        super().__init__(dtype, symmetric, **kw)
        self.min_val = np.float32(np.inf)
        self.max_val = np.float32(-np.inf)

    def _update(self, a: np.ndarray) -> None:
        self.min_val = np.minimum(self.min_val, a.min())
        self.max_val = np.maximum(self.max_val, a.max())

    def min_max(self) -> tuple:
        return self.min_val, self.max_val


class MovingAverageMinMaxObserver(MinMaxObserver):
    """min/max as exponential moving averages: m += c * (batch_min - m) (torch's, float32)."""

    def __init__(self, averaging_constant: float = 0.01, dtype: str = "uint8", symmetric: bool = False,
                 **kw) -> None:
        super().__init__(dtype, symmetric, **kw)
        self.averaging_constant = averaging_constant

    def _update(self, a: np.ndarray) -> None:
        mn, mx = a.min(), a.max()
        if self.count == 0:
            self.min_val, self.max_val = mn, mx
            return
        c = np.float32(self.averaging_constant)
        self.min_val = np.float32(self.min_val + c * (mn - self.min_val))
        self.max_val = np.float32(self.max_val + c * (mx - self.max_val))


class PerChannelMinMaxObserver(Observer):
    """min/max of every slice along `ch_axis` (torch.ao.quantization.PerChannelMinMaxObserver)."""

    def __init__(self, ch_axis: int = 0, dtype: str = "uint8", symmetric: bool = False, **kw) -> None:
        super().__init__(dtype, symmetric, **kw)
        self.axis = ch_axis
        self.min_val = self.max_val = None

    def _channels(self, a: np.ndarray) -> tuple:
        if a.ndim == 0 or not -a.ndim <= self.axis < a.ndim:
            raise QuantizationError(f"{self.name}: per-channel axis {self.axis} does not exist in shape {a.shape}")
        y = np.moveaxis(a, self.axis, 0).reshape(a.shape[self.axis], -1)
        if self.min_val is not None and y.shape[0] != self.min_val.shape[0]:
            raise QuantizationError(f"{self.name}: {y.shape[0]} channels along axis {self.axis}, "
                                    f"observed {self.min_val.shape[0]} before")
        return y.min(1), y.max(1)

    def _update(self, a: np.ndarray) -> None:
        mn, mx = self._channels(a)
        if self.min_val is None:
            self.min_val, self.max_val = mn, mx
        else:
            self.min_val, self.max_val = np.minimum(self.min_val, mn), np.maximum(self.max_val, mx)

    def min_max(self) -> tuple:
        return self.min_val, self.max_val


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel min/max as moving averages (torch's; the default weight observer of QAT)."""

    def __init__(self, averaging_constant: float = 0.01, ch_axis: int = 0, dtype: str = "int8",
                 symmetric: bool = True, **kw) -> None:
        super().__init__(ch_axis, dtype, symmetric, **kw)
        self.averaging_constant = averaging_constant

    def _update(self, a: np.ndarray) -> None:
        mn, mx = self._channels(a)
        if self.min_val is None:
            self.min_val, self.max_val = mn, mx
            return
        c = np.float32(self.averaging_constant)
        self.min_val = (self.min_val + c * (mn - self.min_val)).astype(np.float32)
        self.max_val = (self.max_val + c * (mx - self.max_val)).astype(np.float32)


class PercentileObserver(Observer):
    """The range is numpy.percentile of everything observed: (100-p)/2 off each tail, or p of |x|."""

    def __init__(self, percentile: float = 99.99, dtype: str = "uint8", symmetric: bool = False, **kw) -> None:
        super().__init__(dtype, symmetric, **kw)
        if not 0 < percentile <= 100:
            raise QuantizationError(f"{self.name}: percentile must lie in (0, 100], got {percentile}")
        self.percentile = percentile
        self._values: list = []

    def _update(self, a: np.ndarray) -> None:
        self._values.append(a.reshape(-1).copy())

    def min_max(self) -> tuple:
        self._check_seen()
        v = np.concatenate(self._values)
        if self.symmetric:
            t = np.float32(np.percentile(np.abs(v), self.percentile))
            return -t, t
        cut = (100.0 - self.percentile) / 2
        return np.float32(np.percentile(v, cut)), np.float32(np.percentile(v, 100.0 - cut))


def _smooth(p: np.ndarray, eps: float = 1e-4):
    """onnxruntime's (MXNet's) smooth_distribution, in float32: zeros get eps, the rest give it back."""
    zeros = (p == 0).astype(np.float32)
    nonzeros = (p != 0).astype(np.float32)
    n_zeros = zeros.sum()
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = eps * float(n_zeros) / float(n_nonzeros)
    if eps1 >= 1.0:
        return None
    return p.astype(np.float32) + (eps * zeros + (-eps1) * nonzeros)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """onnxruntime's entropy(smooth(p), smooth(q)) in float32 (inf where a side is all zeros)."""
    p, q = _smooth(p), _smooth(q)
    if p is None or q is None:
        return np.inf
    p = 1.0 * p / np.sum(p)
    q = 1.0 * q / np.sum(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = p * np.log(p / q)
    r[(p == 0) & (q >= 0)] = 0
    r[~((p > 0) & (q > 0))] = np.inf
    return float(np.float32(np.sum(r)))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence of the normalized p and q (float64; no smoothing needed)."""
    p, q = p.astype(np.float64), q.astype(np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / m), 0.0)
        b = np.where(q > 0, q * np.log(q / m), 0.0)
    return float(0.5 * a.sum() + 0.5 * b.sum())


class HistogramObserver(Observer):
    """A histogram of the values, and a threshold chosen by "kl", "js", "mse" or "symmetric_kl"."""

    METHODS = ("kl", "symmetric_kl", "js", "mse")

    def __init__(self, method: str = "kl", bins: int = 2048, num_quantized_bins: int | None = None,
                 dtype: str = "uint8", symmetric: bool = False, *, max_bins: int | None = None, **kw) -> None:
        super().__init__(dtype, symmetric, **kw)
        if method not in self.METHODS:
            raise QuantizationError(f"{self.name}: method must be one of {self.METHODS}, got {method!r}")
        if bins < 4 or bins % 2:
            raise QuantizationError(f"{self.name}: bins must be even and >= 4, got {bins}")
        levels = self.quant_max - self.quant_min + 1
        self.num_quantized_bins = num_quantized_bins or (levels // 2 if method == "symmetric_kl" else levels)
        self.method, self.bins, self.max_bins = method, bins, max_bins or 4 * bins
        self.hist = self.edges = None
        self.min_val = self.max_val = self.threshold = None

    def _update(self, a: np.ndarray) -> None:  # onnxruntime's HistogramCollector.collect_value / merge_histogram
        a = a.reshape(-1)
        mn, mx = a.min(), a.max()
        t = np.float32(max(abs(mn), abs(mx)))
        if self.hist is None:
            self.hist, self.edges = np.histogram(a, self.bins, range=(-t, t))
            self.min_val, self.max_val, self.threshold = mn, mx, t
            return
        self.min_val, self.max_val = min(self.min_val, mn), max(self.max_val, mx)
        old_t, old_hist = self.threshold, self.hist
        if t <= old_t:
            self.hist = old_hist + np.histogram(a, old_hist.size, range=(-old_t, old_t))[0]
        elif old_t == 0:
            hist, self.edges = np.histogram(a, old_hist.size, range=(-t, t))
            self.hist, self.threshold = hist + old_hist, t
        else:
            stride = np.float32(2 * old_t / old_hist.size)
            half = int((t - old_t) // stride + 1)
            new_t = np.float32(half * stride + old_t)
            hist, self.edges = np.histogram(a, old_hist.size + 2 * half, range=(-new_t, new_t))
            hist[half:hist.size - half] += old_hist
            self.hist, self.threshold = hist, new_t
        if self.hist.size > self.max_bins:
            self._coarsen()

    def _coarsen(self) -> None:
        """Merge bins f at a time (outward from 0) once growth passed max_bins (onnxruntime lets them grow)."""
        half = self.hist.size // 2
        f = -(-self.hist.size // self.bins)
        pad = (-half) % f
        width = np.float32(2 * self.threshold / self.hist.size)
        h = np.concatenate([np.zeros(pad, self.hist.dtype), self.hist, np.zeros(pad, self.hist.dtype)])
        self.threshold = np.float32(self.threshold + pad * width)
        self.hist = h.reshape(-1, f).sum(1)
        self.edges = np.linspace(-self.threshold, self.threshold, self.hist.size + 1, dtype=np.float32)

    def _windows(self) -> list:
        """onnxruntime's candidate windows: bins [zero - i, zero + i + 1), i from nq // 2 to the edge."""
        nb = self.hist.size
        zero = nb // 2
        return [(zero - i, min(zero + i + 1, nb)) for i in range(min(self.num_quantized_bins // 2, zero), zero + 1)]

    def _search_divergence(self, div: Callable, truncate: bool) -> tuple:
        """onnxruntime's get_entropy_threshold: P = the window with the outliers folded into its end
        bins, Q = the window merged into nq bins and spread back over P's nonzero bins (truncated to
        integers when `truncate`, as onnxruntime does); the window of least div(P, Q)."""
        hist, nq = self.hist.astype(np.int64), self.num_quantized_bins
        best, arg = np.inf, None
        for s, e in self._windows():
            sliced = hist[s:e]
            p = sliced.copy()
            p[0] += hist[:s].sum()
            p[-1] += hist[e:].sum()
            nonzeros = (p != 0).astype(np.int64)
            k = min(nq, sliced.size)
            m = sliced.size // k
            starts = np.arange(k) * m
            qb = np.add.reduceat(sliced[:k * m], starts)
            qb[-1] += sliced[k * m:].sum()
            norm = np.add.reduceat(nonzeros[:k * m], starts)
            with np.errstate(divide="ignore", invalid="ignore"):
                per = np.where(norm != 0, qb / np.maximum(norm, 1), 0.0)
            if truncate:
                per = np.trunc(per)
            q = np.zeros(p.size, np.float64)
            q[:k * m] = np.repeat(per, m)
            d = div(p, q.astype(np.int64) if truncate else q)
            if d < best or arg is None:
                best, arg = d, (s, e)
        return self.edges[arg[0]], self.edges[arg[1]]

    def _search_mse(self) -> tuple:
        centers = (self.edges[:-1].astype(np.float64) + self.edges[1:]) / 2
        w = np.array(self._windows())
        lo, hi = self.edges[w[:, 0]].astype(np.float32), self.edges[w[:, 1]].astype(np.float32)
        qmin, qmax, rr = self._custom
        qp = choose_qparams(lo, hi, self.dtype, self.symmetric, 0, self.eps, quant_min=qmin, quant_max=qmax,
                            reduce_range=rr, name=self.name)
        s, z = qp.scale[:, None].astype(np.float64), qp.zero_point[:, None].astype(np.float64)
        deq = (np.clip(np.rint(centers[None] / s) + z, qp.qmin, qp.qmax) - z) * s
        err = ((deq - centers[None]) ** 2 * self.hist[None]).sum(1)
        j = int(np.argmin(err))
        return lo[j], hi[j]

    def _search_symmetric_kl(self) -> tuple:  # TensorRT's (pytorch_quantization _compute_amax_entropy)
        zero = self.hist.size // 2
        counts = (self.hist[zero:] + self.hist[:zero][::-1]).astype(np.float64)
        edges = self.edges[zero:] - self.edges[zero]
        nq, total = self.num_quantized_bins, counts.sum()
        divs, args = [], []
        for i in range(min(nq, counts.size), counts.size + 1):
            g = np.digitize(np.arange(i), np.linspace(0, i, nq + 1)) - 1
            valid = counts[:i] != 0
            sums = np.bincount(g[valid], weights=counts[:i][valid], minlength=nq)
            cnt = np.bincount(g[valid], minlength=nq)
            q = np.where(valid, sums[g] / np.maximum(cnt[g], 1), 0.0)
            p = counts[:i].copy()
            p[-1] += total - p.sum()
            p, q = p / p.sum(), q / max(q.sum(), 1e-300)
            with np.errstate(divide="ignore", invalid="ignore"):
                bad = ((p > 0) & (q == 0)).any()
                d = np.inf if bad else float(np.sum(np.where(p > 0, p * np.log(p / np.where(q > 0, q, 1)), 0)))
            divs.append(d)
            args.append(i)
        divs = np.array(divs)
        last = len(divs) - 1 - int(np.argmin(divs[::-1]))
        amax = np.float32(min(edges[args[last]], max(abs(self.min_val), abs(self.max_val))))
        return -amax, amax

    def min_max(self) -> tuple:
        """The clip range (lo, hi) the chosen method finds, inside the observed [min, max]."""
        self._check_seen()
        if self.threshold == 0:
            return np.float32(self.min_val), np.float32(self.max_val)
        if self.method == "kl":
            lo, hi = self._search_divergence(_kl, truncate=True)
        elif self.method == "js":
            lo, hi = self._search_divergence(_js, truncate=False)
        elif self.method == "mse":
            lo, hi = self._search_mse()
        else:
            return self._search_symmetric_kl()
        return np.float32(max(lo, self.min_val)), np.float32(min(hi, self.max_val))


def _default_layers(model: nn.Module) -> list:
    return [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def _select(model: nn.Module, layers) -> list:
    named = dict(model.named_modules())
    if layers is None:
        return _default_layers(model)
    if isinstance(layers, type) or (isinstance(layers, tuple) and all(isinstance(t, type) for t in layers)):
        return [n for n, m in named.items() if n and isinstance(m, layers)]
    out = list(layers)
    for n in out:
        if n not in named:
            raise QuantizationError(f"calibrate: the model has no layer {n!r} (layers: {sorted(named)[:20]})")
    return out


def _first_tensor(out):
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _default_input(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def run_hooked(model: nn.Module, loader: Iterable, handles: list, input_fn: Callable | None = None,
               on_input: Callable | None = None) -> int:
    """Run every batch of `loader` through `model` in eval mode without gradients, then remove the
    hook `handles` and restore the mode; returns the number of batches."""
    get_input = input_fn or _default_input
    was_training, batches = model.training, 0
    model.eval()
    try:
        with no_grad():
            for batch in loader:
                x = get_input(batch)
                if on_input is not None:
                    on_input(x)
                model(*x) if isinstance(x, tuple) else model(x)
                batches += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return batches


def calibrate(model: nn.Module, loader: Iterable, observer=None, *, layers=None, input_fn: Callable | None = None,
              observe_input: bool = False, name: str | None = None) -> dict:
    """Run `loader` through `model` (eval mode, no grad), observing each layer's output; {layer: observer}.

    `observer`: a factory called once per layer (default MinMaxObserver), or a dict {layer name:
    Observer} (then only those layers). `layers`: names or module types (default: every leaf module).
    `input_fn(batch)` gives the model input (default: the batch, or its first element for a tuple
    or list). `observe_input` also observes the model's input under the key "<input>"."""
    if isinstance(observer, dict):
        obs = dict(observer)
        _select(model, [k for k in obs if k != "<input>"])
    else:
        factory = observer or MinMaxObserver
        obs = {n: factory() for n in _select(model, layers)}
        if observe_input:
            obs["<input>"] = factory()
    for n, o in obs.items():
        if not isinstance(o, Observer):
            raise QuantizationError(f"calibrate: the observer for layer {n!r} is a {type(o).__name__}, not an Observer")
        if o.name == "tensor":
            o.name = n
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, args, out, o=o: o.observe(_first_tensor(out))
                                                if _first_tensor(out) is not None else None)
               for n, o in obs.items() if n != "<input>"]
    on_input = None
    if "<input>" in obs:
        def on_input(x):
            obs["<input>"].observe(_first_tensor(x) if not isinstance(x, Tensor) else x)
    batches = run_hooked(model, loader, handles, input_fn, on_input)
    if batches == 0:
        what = name or f"{type(loader).__name__} {getattr(loader, 'dataset', '')!r}".strip()
        raise QuantizationError(f"calibrate: the calibration loader ({what}) yielded no batches, so no layer of "
                                f"{type(model).__name__} was observed; give it at least one batch")
    return obs


def qparams_of(observers: dict) -> dict:
    """{layer: QParams} of calibrate()'s observers."""
    return {n: o.calculate_qparams() for n, o in observers.items()}
