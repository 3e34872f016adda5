"""Shared-memory blocks of DataLoader workers: naming, create/attach/unlink, the orphan sweep, and
what goes into blocks (a batch's arrays; the dataset's arrays when it is shipped to a worker).

Every block is a file in ``/dev/shm`` named ``ember_dl_<pid>_<start>_<ns>_<pool>_...`` where
``<pid>`` is the main process that owns the loader (workers write blocks under its name too),
``<start>`` its start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) and ``<ns>``
the inode of its pid namespace (``/proc/self/ns/pid``). The loader unlinks its blocks itself on
every exit path it can see (exhaustion, errors, ``del``, KeyboardInterrupt, interpreter exit).

A main process that is SIGKILLed (or OOM-killed) cannot: its blocks would stay forever. So each
new `WorkerPool` first runs `sweep_orphans`, which unlinks the blocks whose owner is dead: no
process with that pid, a zombie, or a process with that pid but another start time (the pid was
reused). Blocks of another pid namespace (a container sharing ``/dev/shm``), of another user, or
in a name this version did not write are never touched, so a live owner's blocks are safe.

Why not Python's resource tracker (which unlinks a dead process's registered blocks): ember
unregisters every block (`_untrack`). Before Python 3.13 the tracker registers a block in every
process that merely attaches to it and warns about or unlinks blocks that another process still
uses (CPython gh-82300); a result block is created in a worker and unlinked in the main process,
which the tracker cannot express; it costs a message per block (one per batch); and it does not
help when the whole process group or cgroup is killed, tracker included (an OOM kill of a job).
The sweep covers all of these; its cost is one directory listing per pool start.

The one pickle in the DataLoader is here (`ShmPickler`): a worker's configuration (the user's own
dataset object, collate_fn and worker_init_fn) must be pickled once per worker start, as
multiprocessing does for PyTorch too, and every array in it travels as a shared-memory block
instead. No model, checkpoint, batch or control message is ever pickled: batches are blocks and
messages are JSON.
"""
from __future__ import annotations

import math
import os
import pickle
import re
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from .. import codec

__all__ = ["SHM_PREFIX", "owner_tag", "create_block", "attach", "unlink_name", "cleanup_prefix",
           "sweep_orphans", "write_result", "read_result", "ShmPickler", "ShmUnpickler"]

SHM_PREFIX = "ember_dl_"
_ALIGN = 64
_SHM_DIR = "/dev/shm"
_NAME = re.compile(re.escape(SHM_PREFIX) + r"(\d+)_(\d+)_(\d+)_")


def _untrack(shm) -> None:
    # Python < 3.13 registers every SharedMemory with the resource tracker; ember cleans up its own
    # blocks (by prefix, and dead owners' blocks by `sweep_orphans`), see the module docstring.
    try:
        resource_tracker.unregister(shm._name, "shared_memory")
    except Exception:  # pragma: no cover
        pass


def create_block(name: str, size: int):
    """A new shared-memory block `name` of at least `size` bytes (not tracked)."""
    shm = shared_memory.SharedMemory(name=name, create=True, size=max(int(size), 1))
    _untrack(shm)
    return shm


def attach(name: str):
    """Open the existing block `name` (not tracked)."""
    shm = shared_memory.SharedMemory(name=name, create=False)
    _untrack(shm)
    return shm


def unlink_name(name: str) -> None:
    """Remove block `name` if it exists (mappings that are open stay valid)."""
    try:
        os.unlink(os.path.join(_SHM_DIR, name))
    except FileNotFoundError:
        pass
    except OSError:  # pragma: no cover - non-Linux: fall back to the portable call
        try:
            s = shared_memory.SharedMemory(name=name)
            _untrack(s)
            s.close()
            s.unlink()
        except Exception:
            pass


def cleanup_prefix(prefix: str) -> list:
    """Unlink every /dev/shm entry starting with `prefix`; returns the names removed."""
    removed = []
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:  # pragma: no cover
        return removed
    for n in names:
        if n.startswith(prefix):
            unlink_name(n)
            removed.append(n)
    return removed


def _proc_stat(pid: int):
    """(state, start time) of process `pid` from /proc, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()  # the command name may hold spaces and ')'
    except (FileNotFoundError, ProcessLookupError):
        return None
    return rest[0].decode(), int(rest[19])  # fields 3 (state) and 22 (starttime)


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def owner_tag(pid: int | None = None) -> str:
    """``<pid>_<start time>_<pid namespace>`` of this process (zeros where /proc is missing)."""
    pid = os.getpid() if pid is None else pid
    try:
        st = _proc_stat(pid)
    except (OSError, ValueError, IndexError):
        st = None
    return f"{pid}_{st[1] if st else 0}_{_pid_namespace() if st else 0}"


def _owner_dead(pid: int, start: int) -> bool:
    try:
        st = _proc_stat(pid)
    except (OSError, ValueError, IndexError):
        return False  # cannot tell: keep
    return st is None or st[0] in ("Z", "X") or st[1] != start


def sweep_orphans() -> list:
    """Unlink the blocks of loaders whose main process died (SIGKILL, OOM); returns their names."""
    ns = _pid_namespace()
    if not ns:
        return []  # no /proc: owners cannot be checked, touch nothing
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:  # pragma: no cover
        return []
    uid, removed, dead = os.getuid(), [], {}
    for n in names:
        m = _NAME.match(n)
        if m is None or int(m[3]) != ns or int(m[2]) == 0:
            continue
        owner = (int(m[1]), int(m[2]))
        if owner not in dead:
            dead[owner] = _owner_dead(*owner)
        if not dead[owner]:
            continue
        try:
            if os.stat(os.path.join(_SHM_DIR, n)).st_uid != uid:
                continue
            os.unlink(os.path.join(_SHM_DIR, n))
            removed.append(n)
        except OSError:
            pass
    return removed


# ------------------------------------------------------------------ what goes into blocks
def _np_dtype(name: str) -> np.dtype:
    from .._core import dtypes as dt
    d = dt._BY_NAME.get(name)
    return np.dtype(d.np) if d is not None else np.dtype(name)


def _dtype_name(a: np.ndarray) -> str:
    return a.dtype.name if a.dtype.kind == "V" else a.dtype.str


# ------------------------------------------------------------------ result encoding (JSON + shm)
def _c(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.array(a, order="C")  # keeps 0-d arrays 0-d


def write_result(obj, name: str) -> dict:
    """Encode `obj` (`ember.codec`: the header is JSON, named tuples included); its arrays go into
    one new shared-memory block `name` (if there are any)."""
    try:
        tree, arrays = codec.encode(obj, namedtuples=True)
    except TypeError as e:
        raise TypeError(f"DataLoader worker result: {e}") from None
    arrays = [_c(a) for a in arrays]
    if not arrays:
        return {"tree": tree, "shm": None, "arrays": []}
    layout, off = [], 0
    for a in arrays:
        off = -(-off // _ALIGN) * _ALIGN
        layout.append([_dtype_name(a), list(a.shape), off])
        off += a.nbytes
    shm = create_block(name, off)
    try:
        for a, (_, shape, o) in zip(arrays, layout):
            if a.nbytes:
                np.ndarray(a.shape, a.dtype, buffer=shm.buf, offset=o)[...] = a
    finally:
        shm.close()
    return {"tree": tree, "shm": name, "arrays": layout}


def read_result(msg: dict):
    """Copy the arrays of a result out of its block, unlink the block, rebuild the object."""
    name = msg.get("shm")
    arrays = []
    if name is not None:
        shm = attach(name)
        try:
            for dts, shape, off in msg["arrays"]:
                d = _np_dtype(dts)
                n = math.prod(shape)
                if n == 0:
                    arrays.append(np.zeros(shape, d))
                else:
                    arrays.append(np.ndarray(shape, d, buffer=shm.buf, offset=off).copy())
        finally:
            shm.close()
            unlink_name(name)
    return codec.decode(msg["tree"], arrays, namedtuples=True)


# ------------------------------------------------------------------ shipping the dataset
class ShmPickler(pickle.Pickler):
    """Pickles the worker's configuration (dataset, collate_fn, ...) with every numpy array and
    ember Tensor of at least `min_bytes` moved into a shared-memory block and referenced by name."""

    def __init__(self, f, prefix: str, blocks: list, min_bytes: int = 4096):
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self.prefix, self.blocks, self.min_bytes = prefix, blocks, min_bytes
        self._seen: dict = {}
        self.uses_main = False  # something is pickled by reference to a class/function in __main__

    def reducer_override(self, obj):
        if not self.uses_main:
            try:
                mod = obj.__module__ if isinstance(obj, type) or callable(obj) else type(obj).__module__
            except Exception:
                mod = None
            self.uses_main = mod == "__main__"
        return NotImplemented

    def persistent_id(self, obj):
        from ..tensor import Tensor
        if isinstance(obj, Tensor):
            arr, kind, dname = obj._data, "T", obj.dtype.name
        elif type(obj) is np.ndarray and obj.dtype.kind not in "OUSV" and obj.dtype.fields is None:
            arr, kind, dname = obj, "A", None
        else:
            return None
        if arr.nbytes < self.min_bytes and kind == "A":
            return None
        key = id(obj)
        if key not in self._seen:
            name = f"{self.prefix}d{len(self.blocks)}"
            shm = create_block(name, arr.nbytes)
            if arr.nbytes:
                np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)[...] = arr
            shm.close()
            self.blocks.append(name)
            self._seen[key] = (kind, name, _dtype_name(arr), tuple(arr.shape), dname,
                               bool(getattr(obj, "requires_grad", False)))
        return self._seen[key]


class ShmUnpickler(pickle.Unpickler):
    def __init__(self, f, keep: list):
        super().__init__(f)
        self.keep = keep

    def persistent_load(self, pid):
        kind, name, dts, shape, dname, rg = pid
        shm = attach(name)
        d = _np_dtype(dts)
        arr = np.ndarray(shape, d, buffer=shm.buf) if math.prod(shape) else np.zeros(shape, d)
        if arr.nbytes < 4096:  # small (e.g. a generator's state): a private, writable copy
            arr = arr.copy()
            shm.close()
        else:  # large: a read-only view shared by all workers; the mapping must outlive it
            arr.flags.writeable = False
            self.keep.append(shm)
        if kind == "A":
            return arr
        from .._core import dtypes as dt
        from ..tensor import from_array
        t = from_array(arr, dt._by_name(dname))
        if rg:
            t.requires_grad_(True)
        return t
