"""A chainable data pipeline (DP-1, DP-2, DP-5, DP-7, DP-13, DMLP-1..3), in the style of tf.data.

    from ember.data import Pipeline
    p = Pipeline.range(10).filter(lambda x: x % 2 == 0).map(lambda x: x * 10).batch(2)
    list(p)  # [array([0, 20]), array([40, 60]), array([80])]

A `Pipeline` is a recipe: every ``iter()`` runs it again from its sources (one *epoch*). Elements
are whatever the sources yield (numpy arrays, numbers, tuples/dicts of them). Operators return new
pipelines and never change the one they are called on.

* Sources: `range`, `from_numpy` (rows of arrays / tuples / dicts of arrays), `from_dataset`
  (map-style or iterable ember Datasets), `from_generator` (a callable returning an iterator, called
  once per epoch), `from_iterable`, `from_text_file` (lines, streamed), `from_npy` (rows of a
  ``.npy`` file read in chunks with plain file reads: streaming larger than memory, DMLP-1).
* Operators: `map`, `filter`, `batch` (``drop_remainder``), `unbatch`, `shuffle` (seeded buffer,
  reshuffled every epoch, DP-5), `repeat`, `take`, `skip`, `zip`, `prefetch` (a background thread),
  `cache` (memory, or files keyed by the upstream fingerprint, DMLP-3), `shard` (DP-7/DMLP-2),
  `enumerate`.
* ``stats()`` gives items, own time, wait time and items/s per stage (DP-13).

Errors raised by a user function name the op and the element's position (DP-4).
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from typing import Any, Callable, Iterable

import numpy as np

from .stats import StageStats, StatsTable

__all__ = ["Pipeline", "PipelineError", "fingerprint_fn"]

_pc = time.perf_counter


class PipelineError(RuntimeError):
    """A user function inside a pipeline failed; names the op and the element index."""


# ------------------------------------------------------------------ fingerprints
def _h(*parts) -> str:
    m = hashlib.sha256()
    for p in parts:
        m.update(repr(p).encode() if not isinstance(p, (bytes, bytearray, memoryview)) else bytes(p))
        m.update(b"\x00")
    return m.hexdigest()


def fingerprint_fn(fn) -> str:
    """A fingerprint of a function's code, constants, defaults and closure values (so editing the
    function, or changing a captured number, changes the fingerprint)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        call = getattr(type(fn), "__call__", None)
        if hasattr(fn, "fingerprint"):
            return _h("obj", fn.fingerprint())
        state = getattr(fn, "__dict__", {})
        return _h("callable", type(fn).__module__, type(fn).__qualname__,
                  fingerprint_fn(call) if call is not None and hasattr(call, "__code__") else "",
                  sorted((k, _value_fp(v)) for k, v in state.items()))

    def code_fp(c):
        consts = tuple(code_fp(k) if hasattr(k, "co_code") else repr(k) for k in c.co_consts)
        return _h(c.co_code, consts, c.co_names)
    closure = tuple(_value_fp(c.cell_contents) for c in (fn.__closure__ or ()))
    return _h(getattr(fn, "__module__", ""), getattr(fn, "__qualname__", ""), code_fp(code),
              repr(getattr(fn, "__defaults__", None)), closure)


def _value_fp(v) -> str:
    if isinstance(v, np.ndarray):
        return _h("nd", v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes())
    if callable(v):
        return fingerprint_fn(v)
    if isinstance(v, (list, tuple)):
        return _h(type(v).__name__, *[_value_fp(x) for x in v])
    if isinstance(v, dict):
        return _h("dict", *[(k, _value_fp(x)) for k, x in v.items()])
    return _h(type(v).__name__, repr(v))


# ------------------------------------------------------------------ collation (numpy)
def _collate(items: list):
    first = items[0]
    if isinstance(first, dict):
        return {k: _collate([d[k] for d in items]) for k in first}
    if isinstance(first, tuple):
        return tuple(_collate(list(s)) for s in zip(*items))
    if isinstance(first, list):
        return [_collate(list(s)) for s in zip(*items)]
    if isinstance(first, (str, bytes)):
        return list(items)
    from ..tensor import Tensor
    if isinstance(first, Tensor):
        from .dataloader import default_collate
        return default_collate(items)
    return np.stack([np.asarray(x) for x in items])


def _uncollate(b):
    if isinstance(b, dict):
        cols = {k: list(_uncollate(v)) for k, v in b.items()}
        n = len(next(iter(cols.values())))
        return [{k: cols[k][i] for k in cols} for i in range(n)]
    if isinstance(b, (tuple, list)) and b and not isinstance(b[0], (str, bytes)):
        cols = [list(_uncollate(v)) for v in b]
        return [type(b)(c[i] for c in cols) if isinstance(b, tuple) else [c[i] for c in cols]
                for i in range(len(cols[0]))]
    return list(b)


# ------------------------------------------------------------------ the pipeline
class Pipeline:
    """A node of a data pipeline; iterate it for one epoch, chain operators to build new nodes."""

    op = "pipeline"

    def __init__(self, parents: tuple = (), name: str | None = None):
        self._parents = tuple(parents)
        self._stat = StageStats(name or self.op)
        self._epoch = 0

    # ---- to implement
    def _iter(self, epoch: int):
        raise NotImplementedError

    def _params(self) -> Any:
        return ()

    # ---- running
    def __iter__(self):
        epoch = self._epoch
        self._epoch += 1
        return self._timed(self._iter(epoch))

    def _timed(self, gen):
        st = self._stat
        while True:
            t0 = _pc()
            w0 = st.wait
            try:
                x = next(gen)
            except StopIteration:
                st.busy += _pc() - t0 - (st.wait - w0)
                return
            st.busy += _pc() - t0 - (st.wait - w0)
            st.items += 1
            yield x

    def _pull(self, it):
        """Iterate an upstream iterator, counting the time blocked on it as this stage's wait."""
        st = self._stat
        it = iter(it)
        while True:
            t0 = _pc()
            try:
                x = next(it)
            except StopIteration:
                st.wait += _pc() - t0
                return
            st.wait += _pc() - t0
            yield x

    def set_epoch(self, epoch: int) -> "Pipeline":
        """Set the epoch counter of this node and its ancestors (the next iter() runs `epoch`)."""
        for n in self._nodes():
            n._epoch = int(epoch)
        return self

    def fingerprint(self) -> str:
        """A hash of this pipeline's recipe: ops, parameters, function code and source data."""
        return _h(type(self).__name__, self._params(), *[p.fingerprint() for p in self._parents])

    def _nodes(self) -> list:
        seen, order = set(), []

        def visit(n):
            if id(n) in seen:
                return
            seen.add(id(n))
            for p in n._parents:
                visit(p)
            order.append(n)
        visit(self)
        return order

    def stats(self) -> StatsTable:
        """Per-stage items, own time (busy), wait on upstream, items/s: sources first (DP-13)."""
        return StatsTable([n._stat for n in self._nodes()])

    def reset_stats(self) -> "Pipeline":
        for n in self._nodes():
            n._stat = StageStats(n._stat.name)
        return self

    def __repr__(self):
        return " -> ".join(n._stat.name for n in self._nodes())

    # ---- sources
    @staticmethod
    def range(*args) -> "Pipeline":
        """Integers like Python's ``range``."""
        return _Range(range(*args))

    @staticmethod
    def from_numpy(data) -> "Pipeline":
        """Rows of an array, or tuples/dicts of rows of equal-length arrays."""
        return _FromNumpy(data)

    @staticmethod
    def from_dataset(dataset) -> "Pipeline":
        """Samples of a map-style Dataset (``ds[0..len-1]``) or an IterableDataset."""
        return _FromDataset(dataset)

    @staticmethod
    def from_generator(fn: Callable[[], Iterable], fingerprint: str | None = None) -> "Pipeline":
        """``fn()`` is called once per epoch and iterated."""
        return _FromGenerator(fn, fingerprint)

    @staticmethod
    def from_iterable(it: Iterable) -> "Pipeline":
        """A re-iterable collection (a list, ...): each epoch calls ``iter(it)``."""
        return _FromGenerator(lambda: iter(it), _value_fp(list(it)) if isinstance(it, (list, tuple)) else None)

    @staticmethod
    def from_text_file(path, encoding: str = "utf-8", strip_newline: bool = True) -> "Pipeline":
        """The lines of a text file, read lazily (constant memory)."""
        return _TextFile(path, encoding, strip_newline)

    @staticmethod
    def from_npy(path, rows_per_read: int = 256) -> "Pipeline":
        """Rows of a ``.npy`` file, read `rows_per_read` at a time with plain reads (no mmap), so
        memory stays bounded however large the file is."""
        return _NpyRows(path, rows_per_read)

    @staticmethod
    def zip(*pipelines: "Pipeline") -> "Pipeline":
        """Tuples of elements of several pipelines; stops with the shortest."""
        return _Zip(pipelines)

    # ---- operators
    def map(self, fn: Callable, name: str | None = None) -> "Pipeline":
        return _Map(self, fn, name)

    def filter(self, pred: Callable, name: str | None = None) -> "Pipeline":
        return _Filter(self, pred, name)

    def batch(self, batch_size: int, drop_remainder: bool = False, collate_fn: Callable | None = None) -> "Pipeline":
        return _Batch(self, batch_size, drop_remainder, collate_fn)

    def unbatch(self) -> "Pipeline":
        return _Unbatch(self)

    def shuffle(self, buffer_size: int, seed: int | None = None) -> "Pipeline":
        return _Shuffle(self, buffer_size, seed)

    def repeat(self, count: int | None = None) -> "Pipeline":
        return _Repeat(self, count)

    def take(self, n: int) -> "Pipeline":
        return _Take(self, n)

    def skip(self, n: int) -> "Pipeline":
        return _Skip(self, n)

    def enumerate(self) -> "Pipeline":
        return Pipeline.zip(Pipeline.range(2 ** 62), self)

    def prefetch(self, buffer_size: int = 2) -> "Pipeline":
        return _Prefetch(self, buffer_size)

    def cache(self, path: str | os.PathLike | None = None) -> "Pipeline":
        from .cache import _Cache  # the cache stage lives in its own module
        return _Cache(self, path)

    def shard(self, num_shards: int, index: int) -> "Pipeline":
        return _Shard(self, num_shards, index)


# ------------------------------------------------------------------ sources
class _Range(Pipeline):
    op = "range"

    def __init__(self, r):
        super().__init__(name=f"range({r.start},{r.stop},{r.step})")
        self.r = r

    def _params(self):
        return (self.r.start, self.r.stop, self.r.step)

    def _iter(self, epoch):
        return iter(self.r)


def _rows_len(data):
    if isinstance(data, dict):
        return {k: _rows_len(v) for k, v in data.items()}
    return len(data)


class _FromNumpy(Pipeline):
    op = "from_numpy"

    def __init__(self, data):
        super().__init__()
        self.data = data
        lens = set()

        def walk(d):
            if isinstance(d, dict):
                for v in d.values():
                    walk(v)
            elif isinstance(d, (tuple, list)):
                for v in d:
                    walk(v)
            else:
                lens.add(len(d))
        walk(data)
        if len(lens) != 1:
            raise ValueError(f"from_numpy: arrays must share their first dimension, got lengths {sorted(lens)}")
        self.n = lens.pop()

    def _params(self):
        return _value_fp(self.data)

    def _iter(self, epoch):
        d = self.data
        if isinstance(d, dict):
            return ({k: v[i] for k, v in d.items()} for i in range(self.n))
        if isinstance(d, (tuple, list)):
            return (tuple(v[i] for v in d) for i in range(self.n))
        return (d[i] for i in range(self.n))


class _FromDataset(Pipeline):
    op = "from_dataset"

    def __init__(self, ds):
        super().__init__(name=f"from_dataset({type(ds).__name__})")
        self.ds = ds

    def _params(self):
        fp = getattr(self.ds, "fingerprint", None)
        if callable(fp):
            return fp()
        tensors = getattr(self.ds, "tensors", None)
        if tensors is not None:
            return _h(*[_value_fp(t.numpy()) for t in tensors])
        return (type(self.ds).__module__, type(self.ds).__qualname__,
                len(self.ds) if hasattr(self.ds, "__len__") else None,
                sorted((k, _value_fp(v)) for k, v in vars(self.ds).items()))

    def _iter(self, epoch):
        from .dataset import IterableDataset
        if isinstance(self.ds, IterableDataset):
            return iter(self.ds)
        ds = self.ds
        return (ds[i] for i in range(len(ds)))


class _FromGenerator(Pipeline):
    op = "from_generator"

    def __init__(self, fn, fp=None):
        super().__init__(name=f"from_generator({getattr(fn, '__name__', '?')})")
        self.fn, self.fp = fn, fp

    def _params(self):
        return self.fp if self.fp is not None else fingerprint_fn(self.fn)

    def _iter(self, epoch):
        return iter(self.fn())


class _TextFile(Pipeline):
    op = "text_file"

    def __init__(self, path, encoding, strip):
        super().__init__(name=f"text_file({os.path.basename(str(path))})")
        self.path, self.encoding, self.strip = os.fspath(path), encoding, strip

    def _params(self):
        st = os.stat(self.path)
        return (os.path.abspath(self.path), st.st_size, st.st_mtime_ns, self.encoding, self.strip)

    def _iter(self, epoch):
        with open(self.path, "r", encoding=self.encoding, newline="") as f:
            for line in f:
                yield line.rstrip("\r\n") if self.strip else line


class _NpyRows(Pipeline):
    op = "npy"

    def __init__(self, path, rows_per_read):
        super().__init__(name=f"npy({os.path.basename(str(path))})")
        self.path, self.rows = os.fspath(path), int(rows_per_read)

    def _params(self):
        st = os.stat(self.path)
        return (os.path.abspath(self.path), st.st_size, st.st_mtime_ns)

    def _iter(self, epoch):
        from numpy.lib import format as npf
        with open(self.path, "rb") as f:
            version = npf.read_magic(f)
            read = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
            shape, fortran, dtype = read(f)
            if fortran or dtype.hasobject:
                raise ValueError(f"{self.path}: only C-ordered, non-object .npy files can be streamed")
            row_shape = shape[1:]
            row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
            left = shape[0]
            while left:
                k = min(self.rows, left)
                buf = f.read(k * row_bytes)
                if len(buf) != k * row_bytes:
                    raise ValueError(f"{self.path}: file is truncated")
                chunk = np.frombuffer(buf, dtype).reshape((k,) + row_shape)
                left -= k
                for i in range(k):
                    yield chunk[i]


class _Zip(Pipeline):
    op = "zip"

    def _iter(self, epoch):
        return zip(*[self._pull(p) for p in self._parents])


# ------------------------------------------------------------------ operators
def _name(fn, name):
    return name or getattr(fn, "__name__", type(fn).__name__)


class _Map(Pipeline):
    op = "map"

    def __init__(self, parent, fn, name):
        super().__init__((parent,), f"map({_name(fn, name)})")
        self.fn = fn

    def _params(self):
        return fingerprint_fn(self.fn)

    def _iter(self, epoch):
        fn = self.fn
        for i, x in enumerate(self._pull(self._parents[0])):
            try:
                y = fn(x)
            except Exception as e:
                raise PipelineError(f"{self._stat.name} failed on element {i}: {type(e).__name__}: {e}") from e
            yield y


class _Filter(Pipeline):
    op = "filter"

    def __init__(self, parent, pred, name):
        super().__init__((parent,), f"filter({_name(pred, name)})")
        self.pred = pred

    def _params(self):
        return fingerprint_fn(self.pred)

    def _iter(self, epoch):
        for i, x in enumerate(self._pull(self._parents[0])):
            try:
                keep = self.pred(x)
            except Exception as e:
                raise PipelineError(f"{self._stat.name} failed on element {i}: {type(e).__name__}: {e}") from e
            if keep:
                yield x


class _Batch(Pipeline):
    op = "batch"

    def __init__(self, parent, bs, drop, collate):
        if not isinstance(bs, int) or bs <= 0:
            raise ValueError(f"batch_size must be a positive int, got {bs!r}")
        super().__init__((parent,), f"batch({bs})")
        self.bs, self.drop, self.collate = bs, bool(drop), collate or _collate

    def _params(self):
        return (self.bs, self.drop, fingerprint_fn(self.collate))

    def _iter(self, epoch):
        buf = []
        for x in self._pull(self._parents[0]):
            buf.append(x)
            if len(buf) == self.bs:
                yield self.collate(buf)
                buf = []
        if buf and not self.drop:
            yield self.collate(buf)


class _Unbatch(Pipeline):
    op = "unbatch"

    def __init__(self, parent):
        super().__init__((parent,))

    def _iter(self, epoch):
        for b in self._pull(self._parents[0]):
            yield from _uncollate(b)


class _Shuffle(Pipeline):
    """Reservoir-style buffer: fill `buffer_size` elements, then repeatedly emit a random one and
    replace it with the next input. The random numbers come from an ember Philox generator seeded by
    (seed, epoch), so a seed fixes every epoch's order and epochs differ (DP-5)."""
    op = "shuffle"

    def __init__(self, parent, buffer_size, seed):
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
        super().__init__((parent,), f"shuffle({buffer_size})")
        if seed is None:
            from ..api.random import default_generator
            b = default_generator().bits((2,)).numpy()
            seed = int(b[0]) | (int(b[1]) << 32)
        self.size, self.seed = buffer_size, int(seed)

    def _params(self):
        return (self.size, self.seed)

    def _iter(self, epoch):
        from ..api.random import Generator
        g = Generator().manual_seed((self.seed * 0x9E3779B97F4A7C15 + epoch) & 0xFFFFFFFFFFFFFFFF)
        bits = iter(())

        def rnd(n):  # uniform int in [0, n)
            nonlocal bits
            try:
                u = next(bits)
            except StopIteration:
                bits = iter(g.bits((1024,)).numpy().tolist())
                u = next(bits)
            return u % n
        buf = []
        for x in self._pull(self._parents[0]):
            if len(buf) < self.size:
                buf.append(x)
                continue
            j = rnd(len(buf))
            yield buf[j]
            buf[j] = x
        while buf:
            j = rnd(len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()


class _Repeat(Pipeline):
    op = "repeat"

    def __init__(self, parent, count):
        super().__init__((parent,), f"repeat({count})")
        self.count = count

    def _params(self):
        return self.count

    def _iter(self, epoch):
        k = 0
        while self.count is None or k < self.count:
            got = False
            for x in self._pull(self._parents[0]):
                got = True
                yield x
            if not got:
                return
            k += 1


class _Take(Pipeline):
    op = "take"

    def __init__(self, parent, n):
        super().__init__((parent,), f"take({n})")
        self.n = int(n)

    def _params(self):
        return self.n

    def _iter(self, epoch):
        if self.n <= 0:
            return
        for i, x in enumerate(self._pull(self._parents[0])):
            yield x
            if i + 1 >= self.n:
                return


class _Skip(Pipeline):
    op = "skip"

    def __init__(self, parent, n):
        super().__init__((parent,), f"skip({n})")
        self.n = int(n)

    def _params(self):
        return self.n

    def _iter(self, epoch):
        for i, x in enumerate(self._pull(self._parents[0])):
            if i >= self.n:
                yield x


class _Shard(Pipeline):
    """Element i goes to shard ``i % num_shards``: shards are disjoint, cover the input, and their
    sizes differ by at most one (DP-7, DMLP-2). Put it before `shuffle` with a shared seed, or after
    a shuffle whose seed all shards share, so every epoch is partitioned."""
    op = "shard"

    def __init__(self, parent, num_shards, index):
        if not 0 <= index < num_shards:
            raise ValueError(f"shard index {index} out of range for {num_shards} shards")
        super().__init__((parent,), f"shard({index}/{num_shards})")
        self.k, self.i = int(num_shards), int(index)

    def _params(self):
        return (self.k, self.i)

    def _iter(self, epoch):
        for j, x in enumerate(self._pull(self._parents[0])):
            if j % self.k == self.i:
                yield x


_END = object()


class _Prefetch(Pipeline):
    """Runs the upstream in a background thread, `buffer_size` elements ahead. Useful when the
    upstream waits on I/O or runs numpy code that releases the GIL."""
    op = "prefetch"

    def __init__(self, parent, n):
        super().__init__((parent,), f"prefetch({n})")
        self.n = max(int(n), 1)

    def _iter(self, epoch):
        q: queue.Queue = queue.Queue(self.n)
        stop = threading.Event()
        up = iter(self._parents[0])

        def run():
            try:
                for x in up:
                    while not stop.is_set():
                        try:
                            q.put((True, x), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put((True, _END))
            except BaseException as e:  # handed to the consumer
                q.put((False, e))
        t = threading.Thread(target=run, daemon=True, name="ember-prefetch")
        t.start()
        st = self._stat
        try:
            while True:
                t0 = _pc()
                ok, x = q.get()
                st.wait += _pc() - t0
                if not ok:
                    raise x
                if x is _END:
                    return
                yield x
        finally:
            stop.set()
            while t.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
