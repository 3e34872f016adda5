"""Vision and label transforms (DP-3), on numpy arrays, per sample and vectorised per batch.

Every transform is callable on one sample (``t(x)``) and has ``t.batch(xb)`` for a whole batch
with a leading batch dimension, computed with whole-array numpy operations. Random transforms
draw from an ember Philox generator (``generator=`` or ember's default generator, so
``ember.manual_seed`` makes them reproducible); per-sample calls take their numbers from a buffer
refilled 256 at a time, ``batch`` draws all of a batch's numbers in one call.

Layouts: `ToTensor` turns HWC (or HW) uint8 into CHW float32 in [0, 1] (torchvision's rule);
`Normalize`, `RandomCrop` and `RandomHorizontalFlip` work on CHW samples / NCHW batches (the last two
axes are height and width). Outputs are numpy arrays, which `default_collate` / the DataLoader turn
into Tensors.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Transform", "Compose", "ToTensor", "Normalize", "RandomCrop", "RandomHorizontalFlip",
           "HWC2CHW", "CHW2HWC", "OneHot", "Lambda"]


def _uniform(generator, n: int) -> np.ndarray:
    from .._core import dtypes as dt
    from ..api.random import rand
    return rand(n, generator=generator, dtype=dt.float64).numpy()


class _Draws:
    """Uniform [0, 1) float64 numbers drawn from an ember generator 256 at a time (one ember call
    instead of one per sample). The stream is the generator's own: the k-th number taken equals the
    k-th value of one big ``ember.rand`` call. The buffer is not pickled, so a transform shipped to a
    worker draws from that worker's (re-seeded) generator."""

    def __init__(self, generator, chunk: int = 256):
        self.generator, self.chunk, self.buf, self.pos = generator, chunk, np.zeros(0), 0

    def take(self, n: int) -> np.ndarray:
        if n > self.chunk:
            return _uniform(self.generator, n)
        if self.pos + n > len(self.buf):
            self.buf, self.pos = _uniform(self.generator, self.chunk), 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def __getstate__(self):
        return {"generator": self.generator, "chunk": self.chunk, "buf": np.zeros(0), "pos": 0}


class Transform:
    def __call__(self, x):
        raise NotImplementedError

    def batch(self, xb):
        """Default: apply per sample and stack (transforms override with vectorised code)."""
        return np.stack([self(x) for x in xb])

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in ("generator", "_draws"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def batch(self, xb):
        for t in self.transforms:
            xb = t.batch(xb) if hasattr(t, "batch") else np.stack([t(x) for x in xb])
        return xb


class Lambda(Transform):
    def __init__(self, fn, batch_fn=None):
        self.fn, self.batch_fn = fn, batch_fn

    def __call__(self, x):
        return self.fn(x)

    def batch(self, xb):
        return self.batch_fn(xb) if self.batch_fn is not None else super().batch(xb)


class ToTensor(Transform):
    """HWC or HW uint8 -> CHW float32 / 255; float input keeps its values (HW gets a channel)."""

    def __call__(self, x):
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        elif x.ndim == 3:
            x = np.transpose(x, (2, 0, 1))
        else:
            raise ValueError(f"ToTensor expects HW or HWC, got shape {x.shape}")
        return self._scale(x)

    def batch(self, xb):
        xb = np.asarray(xb)
        if xb.ndim == 3:
            xb = xb[:, None]
        elif xb.ndim == 4:
            xb = np.transpose(xb, (0, 3, 1, 2))
        else:
            raise ValueError(f"ToTensor.batch expects NHW or NHWC, got shape {xb.shape}")
        return self._scale(xb)

    @staticmethod
    def _scale(x):
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x, dtype=np.float32) * np.float32(1 / 255)
        return np.ascontiguousarray(x, dtype=np.float32)


class Normalize(Transform):
    """(x - mean[c]) / std[c] over the channel axis of CHW / NCHW."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.std = np.asarray(std, np.float32).reshape(-1)
        if np.any(self.std == 0):
            raise ValueError("Normalize: std must be non-zero")

    def __call__(self, x):
        return ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32, copy=False)

    def batch(self, xb):
        return ((xb - self.mean[None, :, None, None]) / self.std[None, :, None, None]).astype(np.float32, copy=False)


class HWC2CHW(Transform):
    def __call__(self, x):
        return np.ascontiguousarray(np.transpose(x, (2, 0, 1)))

    def batch(self, xb):
        return np.ascontiguousarray(np.transpose(xb, (0, 3, 1, 2)))


class CHW2HWC(Transform):
    def __call__(self, x):
        return np.ascontiguousarray(np.transpose(x, (1, 2, 0)))

    def batch(self, xb):
        return np.ascontiguousarray(np.transpose(xb, (0, 2, 3, 1)))


def _pad(x, p, fill):
    if not p:
        return x
    width = [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)]
    return np.pad(x, width, mode="constant", constant_values=fill)


class RandomCrop(Transform):
    """Zero-pad the last two axes by `padding`, then crop a random `size` window.

    Per sample it draws (top, left) as two uniforms; per batch it draws 2N uniforms: sample k uses
    ``u[k]`` for top and ``u[N + k]`` for left, and the crop is one gather over a strided window view.
    """

    def __init__(self, size, padding: int = 0, fill=0, generator=None):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding, self.fill, self.generator = int(padding), fill, generator
        self._draws = _Draws(generator)

    def _ranges(self, shape):
        H, W = shape[-2] + 2 * self.padding, shape[-1] + 2 * self.padding
        h, w = self.size
        if h > H or w > W:
            raise ValueError(f"RandomCrop size {self.size} larger than padded input {(H, W)}")
        return H - h + 1, W - w + 1

    def __call__(self, x):
        x = np.asarray(x)
        rh, rw = self._ranges(x.shape)
        u = self._draws.take(2)
        top = min(int(u[0] * rh), rh - 1)
        left = min(int(u[1] * rw), rw - 1)
        xp = _pad(x, self.padding, self.fill)
        h, w = self.size
        return np.ascontiguousarray(xp[..., top:top + h, left:left + w])

    def batch(self, xb):
        xb = np.asarray(xb)
        n = xb.shape[0]
        rh, rw = self._ranges(xb.shape)
        u = _uniform(self.generator, 2 * n)
        top = np.minimum((u[:n] * rh).astype(np.int64), rh - 1)
        left = np.minimum((u[n:] * rw).astype(np.int64), rw - 1)
        xp = _pad(xb, self.padding, self.fill)
        h, w = self.size
        win = np.lib.stride_tricks.sliding_window_view(xp, (h, w), axis=(-2, -1))
        # win: (N, ..., H-h+1, W-w+1, h, w); pick each sample's window
        mid = xb.ndim - 3
        idx = (np.arange(n),) + (slice(None),) * mid + (top, left)
        if mid == 0:
            return np.ascontiguousarray(win[idx])
        # advanced indices separated by slices: numpy moves the indexed axis (N) first -> (N, C.., h, w)
        return np.ascontiguousarray(win[idx])


class RandomHorizontalFlip(Transform):
    """Flip the last axis with probability `p` (one uniform per sample)."""

    def __init__(self, p: float = 0.5, generator=None):
        self.p, self.generator = float(p), generator
        self._draws = _Draws(generator)

    def __call__(self, x):
        if self._draws.take(1)[0] < self.p:
            return np.ascontiguousarray(np.asarray(x)[..., ::-1])
        return np.asarray(x)

    def batch(self, xb):
        xb = np.asarray(xb)
        flip = _uniform(self.generator, xb.shape[0]) < self.p
        shape = (-1,) + (1,) * (xb.ndim - 1)
        return np.where(flip.reshape(shape), xb[..., ::-1], xb)


class OneHot(Transform):
    """An int label (or int array of labels) -> float32 one-hot over `num_classes`."""

    def __init__(self, num_classes: int, dtype=np.float32):
        self.num_classes, self.dtype = int(num_classes), dtype

    def __call__(self, y):
        y = np.asarray(y, dtype=np.int64)
        if np.any((y < 0) | (y >= self.num_classes)):
            raise ValueError(f"OneHot({self.num_classes}): label out of range")
        return (y[..., None] == np.arange(self.num_classes)).astype(self.dtype)

    batch = __call__
