"""The DataLoader (single process for now) and `default_collate`.

`DataLoader(dataset, batch_size=1, shuffle=False, ...)` follows PyTorch: a sampler orders the
indices (`RandomSampler` when shuffling, drawing from ember's generator), a `BatchSampler` groups
them, and ``collate_fn`` (default: `default_collate`) turns a list of samples into a batch.

Fast path: a `TensorDataset` (or a `Subset` of one, e.g. from `random_split`) with the default
collate and automatic batching is batched by gathering rows of the whole arrays with one
``np.take`` (or one slice copy, in sequential order) per tensor per batch; no per-sample Python
runs. It yields exactly what the general path yields: a list of Tensors, one per dataset tensor.

With ``num_workers > 0`` batches are made in worker processes (`ember.data.workers`: forkserver or
spawn, fork where those cannot work, results through shared memory, strictly in order);
``loader.stats()`` reports per-worker rates.
"""
from __future__ import annotations

import collections.abc as cabc
import numbers

import numpy as np

from .._core import dtypes as dt
from ..tensor import Tensor, from_array
from .dataset import IterableDataset, Subset, TensorDataset
from .sampler import BatchSampler, RandomSampler, SequentialSampler

__all__ = ["DataLoader", "default_collate", "default_convert"]

_ELEM_ERR = ("default_collate: batch elements must be tensors, numpy arrays, numbers, str, dicts "
             "or sequences; found {}")


def _stack_arrays(arrs: list) -> np.ndarray:
    first = arrs[0]
    for a in arrs[1:]:
        if a.shape != first.shape:
            raise RuntimeError("default_collate: stack expects each element to be of equal size, got "
                               + ", ".join(str(tuple(x.shape)) for x in arrs[:8])
                               + (" ..." if len(arrs) > 8 else ""))
    return np.stack(arrs)


def default_collate(batch):
    """Merge a list of samples into a batch (PyTorch's rules).

    Tensors and numpy arrays are stacked into a Tensor with a new leading dim; Python floats
    become float64, ints int64 and bools bool tensors (as in PyTorch); str/bytes stay a list; dicts
    collate per key; namedtuples stay namedtuples; other sequences (tuples, lists) are transposed
    and collated element-wise, returning a list.
    """
    if not isinstance(batch, (list, tuple)) or not batch:
        raise TypeError("default_collate takes a non-empty list of samples")
    elem = batch[0]
    if isinstance(elem, Tensor):
        if any(isinstance(b, Tensor) and b.requires_grad for b in batch):
            from ..api.shape import stack
            return stack(list(batch), 0)
        arrs = [b._data if isinstance(b, Tensor) else np.asarray(b) for b in batch]
        return from_array(_stack_arrays(arrs), elem.dtype)
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind in "OUS":
            raise TypeError(_ELEM_ERR.format(f"a numpy array of dtype {elem.dtype}"))
        arr = _stack_arrays([np.asarray(b) for b in batch])
        return from_array(arr)
    if isinstance(elem, np.generic) and not isinstance(elem, (np.str_, np.bytes_)):
        arr = np.asarray(batch)
        return from_array(arr)
    if isinstance(elem, bool):
        return from_array(np.asarray(batch, dtype=np.bool_), dt.bool_)
    if isinstance(elem, numbers.Integral):
        return from_array(np.asarray(batch, dtype=np.int64), dt.int64)
    if isinstance(elem, numbers.Real):
        return from_array(np.asarray(batch, dtype=np.float64), dt.float64)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, cabc.Mapping):
        return {k: default_collate([d[k] for d in batch]) for k in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, cabc.Sequence):
        n = len(elem)
        if any(len(b) != n for b in batch):
            raise RuntimeError("default_collate: each element in list of batch should be of equal size")
        return [default_collate(list(s)) for s in zip(*batch)]
    raise TypeError(_ELEM_ERR.format(type(elem).__name__))


def default_convert(data):
    """What the loader does to each sample when automatic batching is off (``batch_size=None``):
    numpy arrays become Tensors, containers are converted recursively, the rest is unchanged."""
    if isinstance(data, np.ndarray) and data.dtype.kind not in "OUS":
        return from_array(data)
    if isinstance(data, cabc.Mapping):
        return {k: default_convert(v) for k, v in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, list):
        return [default_convert(d) for d in data]
    return data


def _tensor_source(dataset):
    """(TensorDataset, index map or None) if `dataset` is a TensorDataset or Subsets of one."""
    index = None
    while isinstance(dataset, Subset):
        sub = np.asarray(dataset.indices, dtype=np.int64)
        index = sub if index is None else sub[index]
        dataset = dataset.dataset
    if isinstance(dataset, TensorDataset) and not any(t.requires_grad for t in dataset.tensors):
        return dataset, index
    return None, None


class DataLoader:
    """Iterate over a dataset in batches.

    Args mirror ``torch.utils.data.DataLoader``: `batch_size` (None turns automatic batching
    off), `shuffle` (a `RandomSampler` drawing from `generator` or ember's default generator),
    `sampler` / `batch_sampler` (custom orders; mutually exclusive with `shuffle`), `drop_last`,
    `collate_fn`, `num_workers` (worker processes; see `ember.data.workers`), `timeout`,
    `worker_init_fn`, `prefetch_factor` (batches in flight per worker, default 2),
    `persistent_workers`, `multiprocessing_context` (default: "forkserver", or "fork" where the
    main module cannot be re-imported by workers -- stdin, an unguarded script; or pass "spawn",
    "fork"). `pin_memory` is accepted for compatibility and has no effect on the CPU.
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool | None = None, sampler=None,
                 batch_sampler=None, num_workers: int = 0, collate_fn=None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn=None, generator=None,
                 *, prefetch_factor=None, persistent_workers: bool = False, multiprocessing_context=None):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
        if num_workers == 0 and (prefetch_factor is not None or persistent_workers):
            raise ValueError("prefetch_factor and persistent_workers need num_workers > 0")
        if prefetch_factor is not None and (not isinstance(prefetch_factor, int) or prefetch_factor < 1):
            raise ValueError(f"prefetch_factor must be a positive int, got {prefetch_factor!r}")
        self.prefetch_factor = (2 if prefetch_factor is None else prefetch_factor) if num_workers else None
        self.persistent_workers = bool(persistent_workers)
        self.multiprocessing_context = multiprocessing_context
        self._pool = None
        self._stats = None
        if timeout and timeout < 0:
            raise ValueError("timeout must be >= 0")
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable:
            if shuffle:
                raise ValueError("DataLoader with an IterableDataset: shuffle must not be set "
                                 "(the dataset decides its own order)")
            if sampler is not None or batch_sampler is not None:
                raise ValueError("DataLoader with an IterableDataset: sampler/batch_sampler must not be set")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler is mutually exclusive with batch_size, shuffle, "
                                 "sampler and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None (no automatic batching) is mutually exclusive with drop_last")
        if sampler is not None and shuffle:
            raise ValueError("sampler is mutually exclusive with shuffle")
        if not self._iterable:
            if sampler is None:
                sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
            if batch_size is not None and batch_sampler is None:
                batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        elif batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self._auto_collation = batch_sampler is not None or (self._iterable and batch_size is not None)
        self.collate_fn = collate_fn if collate_fn is not None else \
            (default_collate if self._auto_collation else default_convert)
        self._custom_collate = collate_fn is not None

    # ---- iteration
    def __iter__(self):
        if self.num_workers > 0:
            from .workers import mp_iter
            return mp_iter(self)
        if self._iterable:
            return self._iter_iterable()
        if not self._auto_collation:
            return (self.collate_fn(self.dataset[i]) for i in self.sampler)
        if not self._custom_collate:
            src, index = _tensor_source(self.dataset)
            if src is not None:
                return self._iter_tensors(src, index)
        return (self.collate_fn([self.dataset[i] for i in b]) for b in self.batch_sampler)

    def _iter_tensors(self, src: TensorDataset, index):
        arrays = [(t._data, t.dtype) for t in src.tensors]
        bs = self.batch_sampler
        batches = bs._batches() if type(bs) is BatchSampler else \
            (np.asarray(list(b), dtype=np.int64) for b in bs)
        for b in batches:
            if index is not None:
                b = index[b]
            if isinstance(b, slice):
                yield [from_array(a[b].copy(), d) for a, d in arrays]
            else:
                yield [from_array(np.take(a, b, axis=0), d) for a, d in arrays]

    def _iter_iterable(self):
        it = iter(self.dataset)
        if not self._auto_collation:
            for x in it:
                yield self.collate_fn(x)
            return
        batch = []
        for x in it:
            batch.append(x)
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn(batch)

    def stats(self):
        """Per-worker items, busy time and rates, and the main process's wait, of the last epoch
        run with workers (a `StatsTable`; ``print(loader.stats())`` shows it), or None."""
        return self._stats

    def __len__(self) -> int:
        if self._iterable:
            n = len(self.dataset)  # TypeError if the stream has no length, as in PyTorch
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)

    def __repr__(self) -> str:
        n = len(self.dataset) if hasattr(self.dataset, "__len__") else "?"
        return (f"DataLoader({type(self.dataset).__name__} of {n}, batch_size={self.batch_size}, "
                f"sampler={type(self.sampler).__name__})")
