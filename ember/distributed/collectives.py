"""Collectives on ember tensors (DT-7), each on MPI's implementation or on ember's algorithms.

Every function takes ``algorithm``: ``"mpi"`` calls MPI's own non-blocking collective
(MPI_Iallreduce, MPI_Ibcast, ...); ``"ember"`` (the default) runs ember's algorithm for that
collective over point-to-point MPI_Isend/MPI_Irecv, as a *schedule*: a Python generator that yields
the requests of one round and does the local reduction between rounds. A `Work` handle drives the
schedule, so the same code serves blocking calls (drive to the end) and ``async_op=True`` (each
`is_completed()` / `wait()` advances it; DDP polls it from the backward hooks).

ember's algorithms (book ch10.3; DT-8, DT-9):
- all_reduce ``"ring"``: reduce-scatter then all-gather around the ring; 2(n-1) steps, each rank
  sends 2(n-1)/n of the buffer (bandwidth optimal). ``"recursive_doubling"`` (log p rounds of
  pairwise exchange of the whole buffer; power-of-two sizes) and ``"tree"`` (binomial reduce +
  binomial broadcast) are the latency-optimal ones.
- broadcast / reduce ``"tree"``: binomial trees, ceil(log2 p) rounds, at most log p messages a rank.
- all_gather / reduce_scatter ``"ring"``; gather / scatter ``"linear"`` (the root talks to each
  rank); all_to_all ``"pairwise"`` (n-1 rounds, rank r sends to r+s and receives from r-s).

Only buffer-based calls are used (upper-case mpi4py methods): nothing is pickled. Tensors are
updated in place where PyTorch updates them (the data pointer does not change; the storage version
is bumped).
"""
from __future__ import annotations

import enum

import numpy as np

from .errors import DistributedError
from .process_group import group

__all__ = ["ReduceOp", "Work", "broadcast", "reduce", "all_reduce", "gather", "all_gather", "scatter",
           "reduce_scatter", "all_gather_into_tensor", "reduce_scatter_tensor", "all_to_all", "send", "recv",
           "isend", "irecv"]


class ReduceOp(enum.Enum):
    SUM = "sum"
    PROD = "prod"
    MAX = "max"
    MIN = "min"
    AVG = "avg"


_UFUNC = {ReduceOp.SUM: np.add, ReduceOp.AVG: np.add, ReduceOp.PROD: np.multiply,
          ReduceOp.MAX: np.maximum, ReduceOp.MIN: np.minimum}

_DEFAULT = {"all_reduce": "ring", "broadcast": "tree", "reduce": "tree", "all_gather": "ring",
            "reduce_scatter": "ring", "gather": "linear", "scatter": "linear", "all_to_all": "pairwise"}
_ALGOS = {"all_reduce": ("ring", "tree", "recursive_doubling", "hierarchical"), "broadcast": ("tree",),
          "reduce": ("tree",), "all_gather": ("ring",), "reduce_scatter": ("ring",),
          "gather": ("linear",), "scatter": ("linear",), "all_to_all": ("pairwise",)}


def _MPI():
    from mpi4py import MPI
    return MPI


def _op(op) -> ReduceOp:
    if isinstance(op, ReduceOp):
        return op
    try:
        return ReduceOp(str(op).lower())
    except ValueError:
        raise DistributedError(f"unknown reduce op {op!r}; use one of {[o.value for o in ReduceOp]}") from None


def _algo(coll: str, algorithm) -> str:
    a = "ember" if algorithm is None else str(algorithm)
    if a == "ember":
        return _DEFAULT[coll]
    if a == "mpi" or a in _ALGOS[coll]:
        return a
    raise DistributedError(f"{coll}: unknown algorithm {a!r}; choose 'mpi', 'ember' or one of {_ALGOS[coll]}")


# ---------------------------------------------------------------- the handle
class Work:
    """A collective in flight: `wait()` blocks until it is done, `is_completed()` polls it.

    It holds either MPI requests or an ember schedule (a generator yielding the requests of each
    round), and a `finish` step (copy back, average) run once when the traffic is done.
    """

    def __init__(self, g, reqs=None, schedule=None, finish=None, what: str = "collective", result=None,
                 statuses=None):
        self._g = g
        self._statuses = statuses
        self._reqs = list(reqs) if reqs else None
        self._gen = schedule
        self._finish = finish
        self._done = False
        self.what = what
        self.result = result
        self._advance(False)  # post the first round now: the operation has *started*

    def _advance(self, block: bool, nap: float = 0.0) -> bool:
        if self._done:
            return True
        g = self._g
        while True:
            if self._reqs:
                if block:
                    g.wait_requests(self._reqs, self.what, self._statuses, nap=nap)
                elif not g.test_requests(self._reqs, self._statuses):
                    return False
                self._reqs = None
            if self._gen is None:
                break
            try:
                self._reqs = next(self._gen)
            except StopIteration:
                self._gen = None
        if self._finish is not None:
            f, self._finish = self._finish, None
            r = f()
            if r is not None:
                self.result = r
        self._done = True
        return True

    def is_completed(self) -> bool:
        """Advance without blocking; True once the result is in place."""
        return self._advance(False)

    def wait(self, timeout=None, *, nap: float = 0.0):
        """Block until done (a dead peer raises RankFailureError); returns `result` (or None).
        With `nap` > 0 it sleeps that long between tests of the requests instead of spinning."""
        self._advance(True, nap)
        return self.result

    def __repr__(self) -> str:
        return f"Work({self.what}, completed={self._done})"


# ---------------------------------------------------------------- buffers
def _arr(t) -> np.ndarray:
    from ..tensor import Tensor
    if isinstance(t, Tensor):
        return t._data
    if isinstance(t, np.ndarray):
        return t
    raise TypeError(f"collectives take ember tensors, got {type(t).__name__}")


def _work_buf(t):
    """A C-contiguous ndarray to communicate in, and a function that writes it back into `t`."""
    a = _arr(t)
    if a.flags.c_contiguous and a.flags.writeable:
        def done():
            _bump(t)
        return a.reshape(-1), done
    w = np.ascontiguousarray(a).reshape(-1)

    def back():
        np.copyto(a, w.reshape(a.shape))
        _bump(t)
    return w, back


def _bump(t) -> None:
    from ..tensor import Tensor
    if isinstance(t, Tensor):
        t._ensure_storage().version += 1


def _u8(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(np.uint8)


def _bytes_msg(a: np.ndarray):
    return [_u8(a), _MPI().BYTE]


def _isend(g, a, dst, tag):
    g.stats["bytes_sent"] += a.nbytes
    g.stats["messages_sent"] += 1
    if g.nodes[dst] != g.nodes[g.rank]:
        g.stats["bytes_internode"] += a.nbytes
    return g.p2p.Isend(_bytes_msg(a), dst, tag)


def _irecv(g, a, src, tag):
    return g.p2p.Irecv(_bytes_msg(a), src, tag)


def _mpi_reduce_view(a: np.ndarray):
    """(array MPI can reduce, copy-back) for dtypes MPI has no type for (float16, bfloat16, bool)."""
    if a.dtype.kind == "f" and a.dtype.itemsize == 2 or a.dtype.name == "bfloat16":
        w = a.astype(np.float32)
        return w, lambda: np.copyto(a, w.astype(a.dtype))
    if a.dtype == np.bool_:
        w = a.astype(np.uint8)
        return w, lambda: np.copyto(a, w.astype(np.bool_))
    return a, lambda: None


def _mpi_op(op: ReduceOp):
    MPI = _MPI()
    return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PROD: MPI.PROD,
            ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN}[op]


def _avg(a: np.ndarray, n: int) -> None:
    if a.dtype.kind not in "fc" and a.dtype.name != "bfloat16":
        raise DistributedError(f"ReduceOp.AVG needs a floating dtype, got {a.dtype}")
    np.divide(a, n, out=a, casting="unsafe")


def _start(g, coll: str, algo: str, reqs=None, schedule=None, finish=None, async_op=False, result=None):
    g.stats[f"calls:{coll}:{algo}"] += 1
    w = Work(g, reqs=reqs, schedule=schedule, finish=finish, what=f"{coll}({algo})", result=result)
    if async_op:
        return w
    return w.wait()


# ---------------------------------------------------------------- ember's schedules
def _ring(g, members):
    """(ring size, my place, right, left) over `members` (rank order of the ring; all ranks if None)."""
    if members is None:
        n, r = g.size, g.rank
        return n, r, (r + 1) % n, (r - 1) % n
    n, r = len(members), members.index(g.rank)
    return n, r, members[(r + 1) % n], members[(r - 1) % n]


def _ring_reduce_scatter(g, chunks, ufunc, tag, shift: int, tmp=None, members=None):
    """n-1 steps; afterwards ring place r holds the full reduction of chunk (r + shift) % n."""
    n, r, right, left = _ring(g, members)
    if tmp is None:
        tmp = np.empty(max(c.size for c in chunks), chunks[0].dtype)
    for s in range(n - 1):
        si, ri = (r + shift - 1 - s) % n, (r + shift - 2 - s) % n
        buf = tmp[:chunks[ri].size]
        yield [_isend(g, chunks[si], right, tag), _irecv(g, buf, left, tag)]
        ufunc(chunks[ri], buf, out=chunks[ri])


def _ring_all_gather(g, chunks, tag, shift: int, members=None):
    """n-1 steps; ring place r starts owning chunk (r + shift) % n and ends with all of them."""
    n, r, right, left = _ring(g, members)
    for s in range(n - 1):
        si, ri = (r + shift - s) % n, (r + shift - 1 - s) % n
        yield [_isend(g, chunks[si], right, tag), _irecv(g, chunks[ri], left, tag)]


def _ring_all_reduce(g, flat, ufunc, tag, members=None):
    chunks = np.array_split(flat, g.size if members is None else len(members))
    yield from _ring_reduce_scatter(g, chunks, ufunc, tag, shift=1, members=members)  # place r owns chunk r+1
    yield from _ring_all_gather(g, chunks, tag, shift=1, members=members)


def _hierarchical_all_reduce(g, flat, ufunc, tags):
    """DT-19: reduce-scatter within each node (K ranks, rings over local ranks), all-reduce each
    1/K piece across the nodes among the ranks holding it (one per node), all-gather within the
    node. Only the middle phase crosses nodes, carrying 1/K of the buffer per rank."""
    local = [q for q in range(g.size) if g.nodes[q] == g.nodes[g.rank]]
    place = local.index(g.rank)
    nodes = sorted(set(g.nodes))
    by_node = [[q for q in range(g.size) if g.nodes[q] == v] for v in nodes]
    if len({len(m) for m in by_node}) != 1:
        raise DistributedError(f"all_reduce(hierarchical) needs the same number of ranks on every node, got "
                               f"{[len(m) for m in by_node]} (ranks per node)")
    cross = [m[place] for m in by_node]
    chunks = np.array_split(flat, len(local))
    yield from _ring_reduce_scatter(g, chunks, ufunc, tags[0], shift=0, members=local)  # place l owns chunk l
    if len(cross) > 1:
        yield from _ring_all_reduce(g, chunks[place], ufunc, tags[1], members=cross)
    yield from _ring_all_gather(g, chunks, tags[2], shift=0, members=local)


def _recursive_doubling(g, flat, ufunc, tag):
    n, r = g.size, g.rank
    if n & (n - 1):
        raise DistributedError(f"recursive_doubling needs a power-of-two world size, got {n}")
    tmp = np.empty_like(flat)
    mask = 1
    while mask < n:
        peer = r ^ mask
        yield [_isend(g, flat, peer, tag), _irecv(g, tmp, peer, tag)]
        ufunc(flat, tmp, out=flat)
        mask <<= 1


def _tree_broadcast(g, flat, root, tag):
    n = g.size
    vr = (g.rank - root) % n
    mask = 1
    while mask < n:
        if vr & mask:
            yield [_irecv(g, flat, (vr - mask + root) % n, tag)]
            break
        mask <<= 1
    mask >>= 1
    sends = []
    while mask > 0:
        if vr + mask < n:
            sends.append(_isend(g, flat, (vr + mask + root) % n, tag))
        mask >>= 1
    if sends:
        yield sends


def _tree_reduce(g, acc, ufunc, root, tag):
    """Binomial reduce into `acc` (the root's result; a scratch copy elsewhere)."""
    n = g.size
    vr = (g.rank - root) % n
    tmp = None
    mask = 1
    while mask < n:
        if vr & mask == 0:
            src = vr | mask
            if src < n:
                if tmp is None:
                    tmp = np.empty_like(acc)
                yield [_irecv(g, tmp, (src + root) % n, tag)]
                ufunc(acc, tmp, out=acc)
        else:
            yield [_isend(g, acc, (vr - mask + root) % n, tag)]
            break
        mask <<= 1


# ---------------------------------------------------------------- the collectives
def broadcast(tensor, src: int = 0, group=None, async_op: bool = False, algorithm=None):
    """Copy `src`'s tensor into `tensor` on every rank (in place)."""
    g = group or globals()["group"]()
    algo = _algo("broadcast", algorithm)
    flat, done = _work_buf(tensor)
    if algo == "mpi":
        return _start(g, "broadcast", algo, reqs=[g.comm.Ibcast(_bytes_msg(flat), root=src)],
                      finish=done, async_op=async_op)
    return _start(g, "broadcast", algo, schedule=_tree_broadcast(g, flat, src, g.next_tag()),
                  finish=done, async_op=async_op)


def reduce(tensor, dst: int = 0, op=ReduceOp.SUM, group=None, async_op: bool = False, algorithm=None):
    """Reduce every rank's tensor into `dst`'s (in place there; other ranks' tensors unchanged)."""
    g = group or globals()["group"]()
    op, algo = _op(op), _algo("reduce", algorithm)
    flat, done = _work_buf(tensor)
    root = g.rank == dst

    def finish():
        if root:
            if op is ReduceOp.AVG:
                _avg(flat, g.size)
            done()
    if algo == "mpi":
        MPI = _MPI()
        w, back = _mpi_reduce_view(flat)
        if root:
            req = g.comm.Ireduce(MPI.IN_PLACE, w, _mpi_op(op), root=dst)
        else:
            req = g.comm.Ireduce(w, None, _mpi_op(op), root=dst)

        def fin():
            if root:
                back()
            finish()
        return _start(g, "reduce", algo, reqs=[req], finish=fin, async_op=async_op)
    acc = flat if root else flat.copy()
    return _start(g, "reduce", algo, schedule=_tree_reduce(g, acc, _UFUNC[op], dst, g.next_tag()),
                  finish=finish, async_op=async_op)


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op: bool = False, algorithm=None):
    """Reduce every rank's tensor and leave the result in `tensor` on every rank (in place)."""
    g = group or globals()["group"]()
    op, algo = _op(op), _algo("all_reduce", algorithm)
    flat, done = _work_buf(tensor)
    return _all_reduce_flat(g, flat, op, algo, done, async_op)


def _all_reduce_flat(g, flat, op, algo, done, async_op):
    def finish():
        if op is ReduceOp.AVG:
            _avg(flat, g.size)
        done()
    if algo == "mpi":
        MPI = _MPI()
        w, back = _mpi_reduce_view(flat)
        req = g.comm.Iallreduce(MPI.IN_PLACE, w, _mpi_op(op))

        def fin():
            back()
            finish()
        return _start(g, "all_reduce", algo, reqs=[req], finish=fin, async_op=async_op)
    uf, tag = _UFUNC[op], g.next_tag()
    if g.size == 1:
        sched = iter(())
    elif algo == "ring":
        sched = _ring_all_reduce(g, flat, uf, tag)
    elif algo == "recursive_doubling":
        sched = _recursive_doubling(g, flat, uf, tag)
    elif algo == "hierarchical":
        sched = _hierarchical_all_reduce(g, flat, uf, (tag, g.next_tag(), g.next_tag()))
    else:
        def sched_fn():
            yield from _tree_reduce(g, flat, uf, 0, tag)
            yield from _tree_broadcast(g, flat, 0, tag)
        sched = sched_fn()
    return _start(g, "all_reduce", algo, schedule=sched, finish=finish, async_op=async_op)


def _check_list(lst, n, like, what):
    if lst is None or len(lst) != n:
        raise DistributedError(f"{what} needs a list of {n} tensors (one per rank)")
    a = _arr(like)
    for t in lst:
        if _arr(t).shape != a.shape or _arr(t).dtype != a.dtype:
            raise DistributedError(f"{what}: every tensor must have shape {a.shape} and dtype {a.dtype}")


def _unpack(packed: np.ndarray, lst):
    parts = packed.reshape(len(lst), -1)
    for i, t in enumerate(lst):
        a = _arr(t)
        np.copyto(a, parts[i].reshape(a.shape))
        _bump(t)


def _pack(lst) -> np.ndarray:
    return np.ascontiguousarray(np.stack([_arr(t) for t in lst])).reshape(len(lst), -1)


def gather(tensor, gather_list=None, dst: int = 0, group=None, async_op: bool = False, algorithm=None):
    """`dst` receives every rank's tensor into `gather_list` (rank order)."""
    g = group or globals()["group"]()
    algo = _algo("gather", algorithm)
    root = g.rank == dst
    if root:
        _check_list(gather_list, g.size, tensor, "gather")
    src = np.ascontiguousarray(_arr(tensor)).reshape(-1)
    out = np.empty((g.size, src.size), src.dtype) if root else None
    fin = (lambda: _unpack(out, gather_list)) if root else None
    if algo == "mpi":
        req = g.comm.Igather(_bytes_msg(src), _bytes_msg(out) if root else None, root=dst)
        return _start(g, "gather", algo, reqs=[req], finish=fin, async_op=async_op)
    tag = g.next_tag()
    if root:
        out[g.rank] = src
        reqs = [_irecv(g, out[r], r, tag) for r in range(g.size) if r != g.rank]
    else:
        reqs = [_isend(g, src, dst, tag)]
    return _start(g, "gather", algo, reqs=reqs, finish=fin, async_op=async_op)


def all_gather(tensor_list, tensor, group=None, async_op: bool = False, algorithm=None):
    """Every rank receives every rank's tensor into `tensor_list` (rank order)."""
    g = group or globals()["group"]()
    algo = _algo("all_gather", algorithm)
    _check_list(tensor_list, g.size, tensor, "all_gather")
    src = np.ascontiguousarray(_arr(tensor)).reshape(-1)
    out = np.empty((g.size, src.size), src.dtype)
    fin = lambda: _unpack(out, tensor_list)  # noqa: E731
    if algo == "mpi":
        req = g.comm.Iallgather(_bytes_msg(src), _bytes_msg(out))
        return _start(g, "all_gather", algo, reqs=[req], finish=fin, async_op=async_op)
    out[g.rank] = src
    return _start(g, "all_gather", algo, schedule=_ring_all_gather(g, list(out), g.next_tag(), 0),
                  finish=fin, async_op=async_op)


def all_gather_into_tensor(output, input, group=None, async_op: bool = False, algorithm=None):
    """`all_gather` into one tensor: `output` holds the ranks' `input`s end to end, flattened
    (world_size x input's elements; PyTorch's all_gather_into_tensor)."""
    g = group or globals()["group"]()
    algo = _algo("all_gather", algorithm)
    src = np.ascontiguousarray(_arr(input)).reshape(-1)
    out, done = _work_buf(output)
    if out.size != g.size * src.size or out.dtype != src.dtype:
        raise DistributedError(f"all_gather_into_tensor: output must hold world_size ({g.size}) x input's "
                               f"{src.size} elements of {src.dtype}, got {out.size} of {out.dtype}")
    rows = out.reshape(g.size, src.size)
    if algo == "mpi":
        req = g.comm.Iallgather(_bytes_msg(src), _bytes_msg(rows))
        return _start(g, "all_gather", algo, reqs=[req], finish=done, async_op=async_op)
    rows[g.rank] = src
    return _start(g, "all_gather", algo, schedule=_ring_all_gather(g, list(rows), g.next_tag(), 0),
                  finish=done, async_op=async_op)


def scatter(tensor, scatter_list=None, src: int = 0, group=None, async_op: bool = False, algorithm=None):
    """Rank i receives `scatter_list[i]` of rank `src` into `tensor`."""
    g = group or globals()["group"]()
    algo = _algo("scatter", algorithm)
    root = g.rank == src
    if root:
        _check_list(scatter_list, g.size, tensor, "scatter")
    flat, done = _work_buf(tensor)
    packed = _pack(scatter_list) if root else None
    if algo == "mpi":
        req = g.comm.Iscatter(_bytes_msg(packed) if root else None, _bytes_msg(flat), root=src)
        return _start(g, "scatter", algo, reqs=[req], finish=done, async_op=async_op)
    tag = g.next_tag()
    if root:
        flat[...] = packed[g.rank]
        reqs = [_isend(g, packed[r], r, tag) for r in range(g.size) if r != g.rank]
    else:
        reqs = [_irecv(g, flat, src, tag)]
    return _start(g, "scatter", algo, reqs=reqs, finish=done, async_op=async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op: bool = False, algorithm=None):
    """Rank i receives the reduction over ranks of `input_list[i]` into `output`."""
    g = group or globals()["group"]()
    op, algo = _op(op), _algo("reduce_scatter", algorithm)
    _check_list(input_list, g.size, output, "reduce_scatter")
    return _reduce_scatter_flat(g, _pack(input_list), output, op, algo, async_op)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op: bool = False, algorithm=None):
    """`reduce_scatter` from one tensor: rank i receives the reduction of `input`'s i-th of
    world_size equal pieces (flattened) into `output` (PyTorch's reduce_scatter_tensor)."""
    g = group or globals()["group"]()
    op, algo = _op(op), _algo("reduce_scatter", algorithm)
    a, o = _arr(input), _arr(output)
    if a.size != g.size * o.size or a.dtype != o.dtype:
        raise DistributedError(f"reduce_scatter_tensor: input must hold world_size ({g.size}) x output's "
                               f"{o.size} elements of {o.dtype}, got {a.size} of {a.dtype}")
    return _reduce_scatter_flat(g, np.array(a).reshape(g.size, -1), output, op, algo, async_op)


def _reduce_scatter_flat(g, packed, output, op, algo, async_op):
    """Reduce-scatter the rows of `packed` (world_size rows; its values are overwritten)."""
    flat, done = _work_buf(output)

    def finish():
        if op is ReduceOp.AVG:
            _avg(flat, g.size)
        done()
    if algo == "mpi":
        w, back = _mpi_reduce_view(packed)
        o, oback = _mpi_reduce_view(flat)
        req = g.comm.Ireduce_scatter_block(w, o, _mpi_op(op))

        def fin():
            oback()
            finish()
        return _start(g, "reduce_scatter", algo, reqs=[req], finish=fin, async_op=async_op)

    def sched():
        chunks = list(packed)
        yield from _ring_reduce_scatter(g, chunks, _UFUNC[op], g_tag, shift=0)  # rank r owns chunk r
        flat[...] = chunks[g.rank]
    g_tag = g.next_tag()
    return _start(g, "reduce_scatter", algo, schedule=sched(), finish=finish, async_op=async_op)


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op: bool = False, algorithm=None):
    """Rank r sends `input_tensor_list[j]` to rank j, which stores it as `output_tensor_list[r]`."""
    g = group or globals()["group"]()
    algo = _algo("all_to_all", algorithm)
    _check_list(input_tensor_list, g.size, input_tensor_list[0], "all_to_all")
    _check_list(output_tensor_list, g.size, input_tensor_list[0], "all_to_all")
    packed = _pack(input_tensor_list)
    out = np.empty_like(packed)
    fin = lambda: _unpack(out, output_tensor_list)  # noqa: E731
    if algo == "mpi":
        req = g.comm.Ialltoall(_bytes_msg(packed), _bytes_msg(out))
        return _start(g, "all_to_all", algo, reqs=[req], finish=fin, async_op=async_op)
    n, r, tag = g.size, g.rank, g.next_tag()
    out[r] = packed[r]

    def sched():
        for s in range(1, n):
            yield [_isend(g, packed[(r + s) % n], (r + s) % n, tag), _irecv(g, out[(r - s) % n], (r - s) % n, tag)]
    return _start(g, "all_to_all", algo, schedule=sched(), finish=fin, async_op=async_op)


# ---------------------------------------------------------------- point to point
def isend(tensor, dst: int, group=None, tag: int = 0) -> Work:
    """Start sending `tensor` to rank `dst`; returns a Work handle."""
    g = group or globals()["group"]()
    src = np.ascontiguousarray(_arr(tensor))
    return Work(g, reqs=[g.comm.Isend(_bytes_msg(src), dst, tag)], what=f"send to rank {dst}")


def irecv(tensor, src: int | None = None, group=None, tag: int = 0) -> Work:
    """Start receiving into `tensor` from `src` (any rank if None); `wait()` returns the sender."""
    g = group or globals()["group"]()
    MPI = _MPI()
    flat, done = _work_buf(tensor)
    status = MPI.Status()
    req = g.comm.Irecv(_bytes_msg(flat), MPI.ANY_SOURCE if src is None else src, tag)

    def finish():
        done()
        return status.Get_source() if status.Get_source() >= 0 else src
    return Work(g, reqs=[req], finish=finish, statuses=[status],
                what=f"recv from rank {'any' if src is None else src}")


def send(tensor, dst: int, group=None, tag: int = 0) -> None:
    """Send `tensor` to rank `dst` (blocks until the buffer may be reused)."""
    isend(tensor, dst, group, tag).wait()


def recv(tensor, src: int | None = None, group=None, tag: int = 0) -> int:
    """Receive into `tensor` from `src` (any rank if None); returns the sender's rank."""
    return irecv(tensor, src, group, tag).wait()
