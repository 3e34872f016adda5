"""The process group: MPI's COMM_WORLD as ember sees it, plus the liveness watch (DMLP-6).

`init_process_group()` takes rank and size from the environment MPI provides (mpiexec, mpirun,
srun all start the processes and MPI_Init finds its peers). Two duplicated communicators keep
traffic apart: ``comm`` carries MPI's own collectives and user send/recv, ``p2p`` carries the
point-to-point messages of ember's algorithms, tagged by a per-collective sequence number so two
collectives in flight never match each other's messages.

Waiting is a polling loop (`wait_requests`): between MPI_Testall calls it checks, every
``poll_interval`` seconds, that the peer processes still exist (their pids were exchanged at
init). A peer that died turns the wait into `RankFailureError` naming it, instead of a hang; a
peer on another host is only caught by ``timeout``. With mpiexec's default clean-up the whole job
is killed when one rank dies, before anybody can raise: `ember launch` passes
``-disable-auto-cleanup`` so the survivors live to report it (see docs/distributed.md).

Threads: MPI is initialized with MPI_THREAD_MULTIPLE (mpi4py's default). A group's state shared
between threads is its tag sequence (`next_tag`, under a lock) and `stats` (counters); its
`comm_thread` (comm_thread.py) runs queued collectives in submission order.
"""
from __future__ import annotations

import atexit
import os
import threading
import re
import socket
import sys
import time
import zlib
from collections import Counter

import numpy as np

from .errors import DistributedError, RankFailureError

__all__ = ["ProcessGroup", "init_process_group", "destroy_process_group", "is_initialized", "get_rank",
           "get_world_size", "barrier", "group"]

_GROUP = None
_FAILED = False
_MPICH_SEG = re.compile(r"mpich_(shm|vci)_[0-9a-f]+_\d+")


def _mpi():
    from mpi4py import MPI
    return MPI


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped by its parent is a zombie: dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return False


def _mpich_init_segments() -> list:
    """Names of the MPICH start-up segments (/dev/shm/mpich_shm_<world>_<node>) this process maps."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "/dev/shm/mpich_" in line}
    except OSError:
        return []
    return sorted(os.path.basename(p) for p in paths if _MPICH_SEG.fullmatch(os.path.basename(p)))


def _unlink_segments(names) -> None:
    # MPICH (>= 4.2, MPL_initshm) keeps this segment's name for the whole job and only the rank
    # that created it unlinks it, in MPI_Finalize: a SIGKILLed rank, or a survivor leaving with
    # os._exit after RankFailureError, leaves ~2 MB in /dev/shm per job. The name is needed only
    # until every local rank has mapped the segment, which the Allgather above proves; removing it
    # now (as POSIX allows: the mappings stay valid) means no kill can leak it. MPI_Finalize's own
    # shm_unlink then finds nothing, which MPICH ignores. One rank per host does it.
    for n in names:
        try:
            os.unlink(os.path.join("/dev/shm", n))
        except OSError:
            pass


class ProcessGroup:
    """All ranks of the job. `stats` counts what ember's algorithms sent (DT-8/DT-9 tests read it)."""

    def __init__(self, comm=None, timeout: float | None = None, poll_interval: float = 0.05):
        MPI = _mpi()
        base = comm if comm is not None else MPI.COMM_WORLD
        self.comm = base.Dup()
        self.p2p = base.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        env = os.environ.get("EMBER_DIST_TIMEOUT")
        self.timeout = float(timeout if timeout is not None else (env if env else 600.0))
        self.poll_interval = poll_interval
        self.seq = 0
        self._tag_lock = threading.Lock()
        self._comm_thread = None
        self.tag_ub = min(int(MPI.COMM_WORLD.Get_attr(MPI.TAG_UB) or 32767), 1 << 20)
        self.stats = Counter()  # bytes_sent, messages_sent, calls:<op>:<algorithm>
        # who is where: (pid, host hash, hash of the MPICH segments it maps) of every rank,
        # exchanged with a buffer Allgather
        segs = _mpich_init_segments() if comm is None else []
        host = zlib.crc32(socket.gethostname().encode())
        me = np.array([os.getpid(), host, zlib.crc32(" ".join(segs).encode()) + 1 if segs else 0,
                       _node_key(host)], np.int64)
        allv = np.empty((self.size, 4), np.int64)
        self.comm.Allgather(me, allv)
        self.pids = allv[:, 0].tolist()
        self.same_host = (allv[:, 1] == me[1]).tolist()
        keys = allv[:, 3].tolist()  # node of each rank, numbered in order of first appearance
        self.nodes = [sorted(set(keys), key=keys.index).index(k) for k in keys]
        local = [r for r in range(self.size) if self.same_host[r]]
        if segs and self.rank == local[0] and all(allv[r, 2] == me[2] for r in local):
            _unlink_segments(segs)
        # Hydra (mpiexec -disable-auto-cleanup, as `ember launch` runs it) tells the survivors of a
        # dead rank with SIGUSR1, whose default action kills them silently: turn it into an error.
        import signal
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._on_peer_failure)

    def _on_peer_failure(self, signum, frame):
        # act at once: Hydra may follow with SIGKILL, so the report is written before anything else
        dead = self.dead_ranks()
        deadline = time.monotonic() + 0.2
        while not dead and time.monotonic() < deadline:
            time.sleep(0.002)
            dead = self.dead_ranks()
        if not dead:
            global _FAILED
            _FAILED = True
            err = RankFailureError(f"rank {self.rank}: mpiexec reported a failed process (SIGUSR1)")
            self.report(err)
            raise err
        raise self.fail(dead, "training (mpiexec reported the failure)")

    # ---- bookkeeping
    def next_tag(self) -> int:
        """A fresh tag for one collective of ember's algorithms (same sequence on every rank)."""
        with self._tag_lock:
            self.seq += 1
            return self.seq % self.tag_ub

    @property
    def comm_thread(self):
        """This group's communication thread (started on its first use)."""
        if self._comm_thread is None:
            from .comm_thread import CommThread
            with self._tag_lock:
                if self._comm_thread is None:
                    self._comm_thread = CommThread(self)
        return self._comm_thread

    def dead_ranks(self) -> list:
        """Ranks on this host whose process no longer exists."""
        return [r for r in range(self.size)
                if r != self.rank and self.same_host[r] and _pid_dead(self.pids[r])]

    def fail(self, ranks, what: str):
        global _FAILED
        _FAILED = True
        names = ", ".join(str(r) for r in ranks)
        plural = "s" if len(ranks) != 1 else ""
        err = RankFailureError(f"rank{plural} {names} died while rank {self.rank} waited in {what} "
                               f"(pid{plural} {', '.join(str(self.pids[r]) for r in ranks)})", ranks)
        self.report(err)
        return err

    def report(self, err: Exception) -> None:
        # mpiexec stops forwarding output once a rank dies: leave the report where
        # `ember launch` looks for it (EMBER_ERROR_DIR), as well as on stderr.
        d = os.environ.get("EMBER_ERROR_DIR")
        if d:
            try:
                with open(os.path.join(d, f"rank-{self.rank}.err"), "w") as f:
                    f.write(f"{type(err).__name__}: {err}\n")
            except OSError:
                pass

    # ---- waiting
    def test_requests(self, reqs, statuses=None) -> bool:
        return not reqs or _mpi().Request.Testall(reqs, statuses)

    def wait_requests(self, reqs, what: str = "a collective", statuses=None, nap: float = 0.0) -> None:
        """Wait for MPI requests, raising RankFailureError if a peer dies (or on timeout); with
        `nap` it sleeps that long between tests (a communication thread) instead of spinning."""
        if not reqs:
            return
        MPI = _mpi()
        if MPI.Request.Testall(reqs, statuses):
            return
        start = time.monotonic()
        next_check = start + self.poll_interval
        spins = 0
        while not MPI.Request.Testall(reqs, statuses):
            spins += 1
            if nap:
                time.sleep(nap)
            if nap or spins & 63 == 0:
                now = time.monotonic()
                if now >= next_check:
                    dead = self.dead_ranks()
                    if dead:
                        raise self.fail(dead, what)
                    if now - start > self.timeout:
                        global _FAILED
                        _FAILED = True
                        err = RankFailureError(f"rank {self.rank}: {what} did not complete within "
                                               f"{self.timeout:.0f} s (EMBER_DIST_TIMEOUT); a peer "
                                               "is dead or hung")
                        self.report(err)
                        raise err
                    next_check = now + self.poll_interval
                    if now - start > 0.01:
                        time.sleep(0)  # yield the core when oversubscribed

    def barrier(self) -> None:
        self.wait_requests([self.comm.Ibarrier()], "barrier")

    def destroy(self) -> None:
        if self._comm_thread is not None:
            self._comm_thread.close()
        for c in (self.comm, self.p2p):
            try:
                c.Free()
            except Exception:
                pass


def _atexit():
    # A normal exit without destroy_process_group: Hydra may signal SIGUSR1 while the ranks leave
    # one by one, which must not turn a finished job into a failure.
    if not _FAILED:
        import signal
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # After a RankFailureError, MPI_Finalize would wait for the dead peer forever: leave at once.
    if _FAILED:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            time.sleep(0.5)  # let mpiexec's proxy forward our output before the job is torn down
        finally:
            os._exit(1)


def init_process_group(backend: str = "mpi", *, timeout: float | None = None) -> ProcessGroup:
    """Join the job that mpiexec/mpirun/srun started; returns the default group."""
    global _GROUP
    if backend != "mpi":
        raise DistributedError(f"backend {backend!r} is not available; ember has 'mpi'")
    if _GROUP is None:
        _GROUP = ProcessGroup(timeout=timeout)
        atexit.register(_atexit)
    return _GROUP


def _node_key(host: int) -> int:
    """This rank's node: its host, or with EMBER_RANKS_PER_NODE=K (`ember launch --ranks-per-node K`)
    the simulated node world_rank // K, so one machine can stand for several (DT-19)."""
    k = os.environ.get("EMBER_RANKS_PER_NODE", "")
    if not k:
        return host
    if not k.isdigit() or int(k) < 1:
        raise DistributedError(f"EMBER_RANKS_PER_NODE must be a positive integer, got {k!r}")
    return _mpi().COMM_WORLD.Get_rank() // int(k)


def new_group(ranks) -> ProcessGroup | None:
    """A process group of `ranks` (of the default group, in the order given); every rank of the
    default group must call it, as in PyTorch. Ranks outside `ranks` get None."""
    g = group()
    ranks = [int(r) for r in ranks]
    if sorted(set(ranks)) != sorted(ranks) or any(not 0 <= r < g.size for r in ranks):
        raise DistributedError(f"new_group: ranks must be distinct ranks of 0..{g.size - 1}, got {ranks}")
    MPI = _mpi()
    member = g.rank in ranks
    sub = g.comm.Split(0 if member else MPI.UNDEFINED, ranks.index(g.rank) if member else 0)
    if not member:
        return None
    pg = ProcessGroup(comm=sub, timeout=g.timeout, poll_interval=g.poll_interval)
    sub.Free()
    return pg


def is_initialized() -> bool:
    return _GROUP is not None


def group() -> ProcessGroup:
    """The default process group (raises if init_process_group was not called)."""
    if _GROUP is None:
        raise DistributedError("call ember.distributed.init_process_group() first")
    return _GROUP


def get_rank() -> int:
    return group().rank


def get_world_size() -> int:
    return group().size


def barrier(async_op: bool = False):
    """Wait until every rank reaches this point."""
    g = group()
    if async_op:
        from .collectives import Work
        return Work(g, [g.comm.Ibarrier()], what="barrier")
    g.barrier()


def destroy_process_group() -> None:
    global _GROUP
    if _GROUP is not None:
        _GROUP.destroy()
        _GROUP = None
        # Hydra may signal SIGUSR1 while the ranks leave one by one: a normal shutdown ignores it
        import signal
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
