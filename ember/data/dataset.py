"""Datasets: the map-style `Dataset` (``__getitem__`` + ``__len__``), the `IterableDataset`
(``__iter__``), and the usual combinators (PyTorch's names and semantics)."""
from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np

from ..tensor import Tensor, as_tensor, from_array

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "random_split"]


class Dataset:
    """A map-style dataset: subclasses define ``__getitem__(i)`` and ``__len__()``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __add__(self, other: "Dataset") -> "ConcatDataset":
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A dataset read as a stream: subclasses define ``__iter__()`` (``__len__`` is optional)."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")

    def __add__(self, other):
        raise TypeError("IterableDatasets cannot be concatenated with +")


class TensorDataset(Dataset):
    """Samples are tuples of rows of equal-length tensors: ``ds[i] == (t0[i], t1[i], ...)``.

    Accepts ember Tensors or numpy arrays (arrays are wrapped without a copy). The DataLoader
    batches a TensorDataset by gathering whole arrays at once instead of stacking rows.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        ts = tuple(t if isinstance(t, Tensor) else as_tensor(t) for t in tensors)
        n = ts[0].shape[0] if ts[0].ndim else None
        for t in ts:
            if t.ndim == 0 or t.shape[0] != n:
                raise ValueError("TensorDataset tensors must share their first dimension, got shapes "
                                 + ", ".join(str(tuple(x.shape)) for x in ts))
        self.tensors = ts

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            out = []
            for t in self.tensors:
                if t.requires_grad:
                    out.append(t[int(index)])
                else:  # a row view without a trip through the dispatcher
                    out.append(from_array(t._data[int(index), ...], t.dtype))
            return tuple(out)
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = [int(i) for i in indices] if not isinstance(indices, np.ndarray) else indices.astype(np.int64)

    def __getitem__(self, idx):
        if isinstance(idx, (list, tuple)):
            return [self.dataset[self.indices[i]] for i in idx]
        return self.dataset[int(self.indices[idx])]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset):
    """Several map-style datasets one after another."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset needs at least one dataset")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise TypeError("ConcatDataset does not take IterableDatasets")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]))

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1])

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise IndexError("index out of range")
            idx += len(self)
        if idx >= len(self):
            raise IndexError(f"index {idx} out of range for ConcatDataset of length {len(self)}")
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[d - 1] if d else 0
        return self.datasets[d][int(idx - start)]


def random_split(dataset, lengths, generator=None) -> list:
    """Split `dataset` into non-overlapping random `Subset`s of the given lengths.

    `lengths` are sample counts summing to ``len(dataset)``, or fractions summing to 1 (the
    remainder of flooring is handed out one by one from the first subset, as in PyTorch). The
    permutation comes from ``ember.randperm(n, generator=generator)``: reproducible with
    ``ember.manual_seed`` or a seeded `ember.Generator`.
    """
    from ..api.random import randperm
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0) \
            and sum(lengths) <= 1 + 1e-9:
        if any(x < 0 for x in lengths):
            raise ValueError("fractions must be non-negative")
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    lengths = [int(x) for x in lengths]
    if sum(lengths) != n or any(x < 0 for x in lengths):
        raise ValueError(f"lengths {lengths} must be non-negative and sum to the dataset's length {n}")
    perm = randperm(n, generator=generator).numpy()
    out, off = [], 0
    for ln in lengths:
        out.append(Subset(dataset, perm[off:off + ln]))
        off += ln
    return out
