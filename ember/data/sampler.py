"""Samplers: the order in which a DataLoader visits a map-style dataset, and how it groups it.

Random orders come from ember's Philox generator (``ember.randperm(n, generator=g)``); with no
generator the default one is used, so ``ember.manual_seed(s)`` makes a run reproducible, and since
every epoch draws a new permutation the order changes from epoch to epoch.

Samplers also offer ``_index_array()`` (the whole epoch's indices as one int64 array, or a `range`)
so the DataLoader's fast path can cut batches out of it without a Python loop per sample.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "BatchSampler"]


class Sampler:
    """Base class: ``__iter__`` yields dataset indices (or, for batch samplers, lists of them)."""

    def __iter__(self) -> Iterator:
        raise NotImplementedError

    def _index_array(self):
        return np.fromiter(iter(self), dtype=np.int64)


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)

    def _index_array(self):
        return range(len(self.data_source))


class RandomSampler(Sampler):
    """A random permutation each epoch (or, with `replacement`, `num_samples` uniform draws)."""

    def __init__(self, data_source, replacement: bool = False, num_samples: int | None = None,
                 generator=None):
        self.data_source = data_source
        self.replacement = bool(replacement)
        self._num_samples = num_samples
        self.generator = generator
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def _index_array(self) -> np.ndarray:
        from ..api.random import randint, randperm
        n = len(self.data_source)
        if self.replacement:
            if n == 0:
                raise ValueError("cannot sample with replacement from an empty dataset")
            return randint(0, n, (self.num_samples,), generator=self.generator).numpy()
        reps = -(-self.num_samples // n) if n else 0
        parts = [randperm(n, generator=self.generator).numpy() for _ in range(reps)]
        return np.concatenate(parts)[:self.num_samples] if parts else np.zeros(0, np.int64)

    def __iter__(self):
        return iter(self._index_array().tolist())

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order each epoch."""

    def __init__(self, indices: Sequence[int], generator=None):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.generator = generator

    def _index_array(self) -> np.ndarray:
        from ..api.random import randperm
        return self.indices[randperm(len(self.indices), generator=self.generator).numpy()]

    def __iter__(self):
        return iter(self._index_array().tolist())

    def __len__(self) -> int:
        return len(self.indices)


class BatchSampler(Sampler):
    """Groups another sampler's indices into lists of `batch_size` (the last one shorter unless
    `drop_last`)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(int(i))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def _batches(self):
        """Batches as slices (sequential order) or int64 arrays, computed per epoch in bulk."""
        # bulk indices only from ember's own samplers: a subclass may override __iter__
        idx = self.sampler._index_array() if type(self.sampler) in _BULK else \
            np.fromiter(iter(self.sampler), dtype=np.int64)
        n, bs = len(idx), self.batch_size
        stop = n - n % bs if self.drop_last else n
        for s in range(0, stop, bs):
            e = min(s + bs, n)
            if isinstance(idx, range):
                yield slice(idx.start + s, idx.start + e)
            else:
                yield idx[s:e]

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


_BULK = (SequentialSampler, RandomSampler, SubsetRandomSampler)
