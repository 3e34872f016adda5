"""DataLoader worker processes (DP-8, DP-12, DP-4): order, speed-up, errors, death, no leaks.

Workers are started with forkserver (fork for scripts that spawned workers cannot import, or on
request); datasets used by workers live at module level so a worker can import them by reference.
"""
import multiprocessing as mp
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

import ember
from ember.data import DataLoader, Dataset, IterableDataset, TensorDataset, WorkerError, get_worker_info
from ember.data import shm
from ember.data.workers import SHM_PREFIX

HERE = os.path.dirname(os.path.abspath(__file__))


def _shm_entries(prefix=SHM_PREFIX + f"{os.getpid()}_"):
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


def _assert_clean():
    deadline = time.time() + 3
    while time.time() < deadline and (mp.active_children() or _shm_entries()):
        time.sleep(0.05)
    assert mp.active_children() == []
    assert _shm_entries() == []


class Delayed(Dataset):
    """Item i sleeps a pseudo-random 0-5 ms, then returns i."""

    def __init__(self, n):
        self.n = n
        self.delay = np.random.default_rng(0).uniform(0, 0.005, n)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.delay[i])
        return i


class Failing(Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        if i == 7:
            raise ValueError("broken sample")
        return np.float32(i)


class Slow(Dataset):
    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        time.sleep(0.01)
        return np.zeros((16,), np.float32) + i


class EmberOps(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = ember.Generator().manual_seed(i)
        a = ember.randn(32, 32, generator=g)
        return (a @ a).sum().numpy()


class SeedProbe(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = get_worker_info()
        return np.array([info.id, info.seed % 1000003, int(ember.randint(0, 10 ** 6, (1,)).numpy()[0])])


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        lo, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(lo, self.n, step))


_INIT_CALLS = []


def init_fn(wid):
    np.random.seed(1000 + wid)


def test_workers_equal_single_process_dp8():
    """DP-8: TensorDataset(arange(50).view(10,5)), bs=2, workers=3 gives the workers=0 batches in order."""
    ds = TensorDataset(ember.arange(50).reshape(10, 5), ember.arange(10))
    ref = [[t.numpy() for t in b] for b in DataLoader(ds, batch_size=2)]
    got = [[t.numpy() for t in b] for b in DataLoader(ds, batch_size=2, num_workers=3)]
    assert len(got) == len(ref) == 5
    for r, g in zip(ref, got):
        for a, b in zip(r, g):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
    # general (per-sample + default_collate) path with dicts, strings and scalars
    sq = [{"x": np.full((2,), i, np.float32), "y": i, "name": f"s{i}"} for i in range(9)]
    got = list(DataLoader(sq, batch_size=4, num_workers=2))
    assert [b["name"] for b in got] == [[f"s{i}" for i in range(j, min(j + 4, 9))] for j in range(0, 9, 4)]
    assert got[2]["y"].numpy().tolist() == [8] and got[0]["x"].dtype == ember.float32
    _assert_clean()


def test_order_8_workers_random_delays_dp12():
    """DP-12: 8 workers with random 0-5 ms delays over 10,000 items deliver exactly the input order."""
    loader = DataLoader(Delayed(10_000), batch_size=None, num_workers=8, prefetch_factor=4)
    out = list(loader)
    assert out == list(range(10_000))
    _assert_clean()


class Timed(Dataset):
    """~2 ms of pure-Python work holding the GIL per item; returns (pid, start, end) of the work."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        t0 = time.time()
        s = 0
        while time.time() - t0 < 0.002:
            s += 1
        return np.array([os.getpid(), t0, time.time()], np.float64)


def test_two_workers_compute_in_parallel_dp8():
    """DP-8: with 2 workers a GIL-holding item runs in two processes at the same time.

    Structural, not timed (timings belong in bench/dataloader.py, which measures the >= 1.7x
    speed-up of this workload): both workers compute, and their busy intervals overlap."""
    rows = np.concatenate([b.numpy() for b in DataLoader(Timed(), batch_size=8, num_workers=2)])
    pids = sorted(set(rows[:, 0].astype(int)))
    assert len(pids) == 2 and os.getpid() not in pids
    spans = [(rows[rows[:, 0] == p, 1].min(), rows[rows[:, 0] == p, 2].max()) for p in pids]
    overlap = min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0])
    assert overlap > 0, spans
    _assert_clean()


def test_worker_exception_names_op_and_index_dp4():
    """DP-4: an exception in a worker surfaces in the main process naming the op and sample index 7."""
    with pytest.raises(ValueError, match=r"Failing.__getitem__ at sample index 7.*broken sample"):
        list(DataLoader(Failing(), batch_size=None, num_workers=2))
    with pytest.raises(ValueError, match="sample index 7"):
        list(DataLoader(Failing(), batch_size=4, num_workers=2))
    _assert_clean()


def test_killed_worker_raises_fast_and_cleans_up():
    """A worker killed with SIGKILL makes the loader raise within 5 s; no shm or children left."""
    loader = DataLoader(Slow(), batch_size=4, num_workers=2)
    it = iter(loader)
    next(it)
    os.kill(it.pool.procs[1].pid, signal.SIGKILL)
    t0 = time.time()
    with pytest.raises(WorkerError, match="killed by signal SIGKILL"):
        for _ in it:
            pass
    assert time.time() - t0 < 5
    _assert_clean()


def test_early_break_and_persistent_workers_clean():
    loader = DataLoader(Slow(), batch_size=8, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 3:
            break
    _assert_clean()
    pl = DataLoader(TensorDataset(ember.arange(40)), batch_size=5, num_workers=2, persistent_workers=True)
    for _ in range(3):
        assert np.concatenate([b[0].numpy() for b in pl]).tolist() == list(range(40))
    pids = [p.pid for p in pl._pool.procs]
    for i, _ in enumerate(pl):  # leaving an epoch early keeps the workers and drains their blocks
        break
    assert [p.pid for p in pl._pool.procs] == pids
    assert np.concatenate([b[0].numpy() for b in pl]).tolist() == list(range(40))
    pl._pool.shutdown()
    _assert_clean()


_SUBPROC = textwrap.dedent("""
    import faulthandler, os, sys, signal, threading, time, multiprocessing as mp
    faulthandler.dump_traceback_later(45, exit=True)  # a hang fails with every thread's stack
    # a parent started in the background (nohup, `cmd &`) leaves SIGINT ignored, and Python then
    # installs no handler: Ctrl-C would never become a KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {here!r})
    import numpy as np, ember
    from ember.data import DataLoader
    from test_data_workers import Slow
    prefix = "ember_dl_%d_" % os.getpid()
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    loader = DataLoader(Slow(), batch_size=4, num_workers=2)
    try:
        while True:  # epochs until the interrupt lands, however fast the machine is
            for b in loader:
                pass
    except KeyboardInterrupt:
        print("interrupted")
    time.sleep(0.2)
    print("children", len(mp.active_children()))
    print("shm", len([n for n in os.listdir("/dev/shm") if n.startswith(prefix)]))
""")


def test_keyboard_interrupt_cleans_up():
    """KeyboardInterrupt while waiting on workers: workers stopped, no /dev/shm leftovers."""
    r = subprocess.run([sys.executable, "-c", _SUBPROC.format(here=HERE)], capture_output=True, text=True,
                       timeout=60)
    assert "interrupted" in r.stdout, r.stdout + r.stderr
    assert "children 0" in r.stdout and "shm 0" in r.stdout, r.stdout + r.stderr
    assert "leaked" not in r.stderr, r.stderr


def test_worker_runs_ember_ops_after_parent_did():
    """Workers (forkserver) run ember ops after the parent ran ember ops: no hang."""
    a = ember.randn(64, 64)
    (a @ a).sum().item()
    ref = [EmberOps()[i] for i in range(8)]
    got = [b.numpy() for b in DataLoader(EmberOps(), batch_size=None, num_workers=2, timeout=60)]
    np.testing.assert_allclose(np.array(got), np.array(ref), rtol=1e-6)
    _assert_clean()


def test_worker_seeding_and_info():
    """Per-worker seeds: distinct per worker, reproducible under ember.manual_seed."""
    def run():
        ember.manual_seed(123)
        return np.stack([b.numpy() for b in DataLoader(SeedProbe(), batch_size=None, num_workers=2,
                                                        worker_init_fn=init_fn)])
    a, b = run(), run()
    np.testing.assert_array_equal(a, b)
    assert a[:, 0].tolist() == [0, 1] * 4
    assert a[0, 1] != a[1, 1] and a[0, 2] != a[1, 2]
    _assert_clean()


def test_iterable_dataset_workers_round_robin():
    out = [int(x) for b in DataLoader(Stream(23), batch_size=None, num_workers=3) for x in [b]]
    assert sorted(out) == list(range(23))
    assert out[:6] == [0, 1, 2, 3, 4, 5]
    batches = list(DataLoader(Stream(23), batch_size=4, num_workers=2))
    assert sorted(np.concatenate([b.numpy() for b in batches]).tolist()) == list(range(23))
    _assert_clean()


class ThreadProbe(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return np.array([ember.get_num_threads()])


def test_fork_on_request_and_stats():
    """multiprocessing_context="fork" works; forked workers run ember with one thread."""
    loader = DataLoader(ThreadProbe(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    it = iter(loader)
    assert type(it.pool.procs[0]._popen).__module__ == "multiprocessing.popen_fork"
    assert [int(b.numpy()[0]) for b in it] == [1, 1]
    loader = DataLoader(TensorDataset(ember.arange(100)), batch_size=10, num_workers=2)
    list(loader)
    st = loader.stats()
    assert [r.name for r in st][:2] == ["worker 0", "worker 1"]
    assert sum(r.items for r in st[:2]) == 10
    assert "items/s" in str(st)
    _assert_clean()


# ------------------------------------------------------------------ processes and blocks left behind
def _tagged_pids(tag):
    """Pids of live processes whose environment holds EMBER_TEST_TAG=tag (psutil-free)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if f"EMBER_TEST_TAG={tag}".encode() in f.read().split(b"\0"):
                    with open(f"/proc/{d}/stat") as g:
                        if g.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(d))
        except OSError:
            pass
    return found


def _wait_untagged(tag, timeout=10.0):
    deadline = time.time() + timeout
    while _tagged_pids(tag) and time.time() < deadline:
        time.sleep(0.1)
    return _tagged_pids(tag)


def _tag_env():
    tag = uuid.uuid4().hex
    return tag, {**os.environ, "EMBER_TEST_TAG": tag}


_KILLED = textwrap.dedent("""
    import faulthandler, time
    faulthandler.dump_traceback_later(50, exit=True)
    import numpy as np, ember
    from ember.data import DataLoader, TensorDataset
    # 2 MB of data: the loader puts it in a /dev/shm block that the workers map
    ds = TensorDataset(ember.tensor(np.ones((512, 1024), np.float32)))
    it = iter(DataLoader(ds, batch_size=16, num_workers=2))
    next(it)
    print("ready", flush=True)
    time.sleep(60)
""")


def test_sigkilled_main_blocks_are_swept_by_next_pool():
    """A SIGKILLed main process leaves its /dev/shm blocks; its workers exit; the next WorkerPool (in
    another process) unlinks the dead owner's blocks."""
    tag, env = _tag_env()
    p = subprocess.Popen([sys.executable, "-c", _KILLED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 60)
        assert ready and p.stdout.readline() == b"ready\n", p.stderr.read1().decode() if ready else "timeout"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
        p.stderr.close()
    prefix = f"{SHM_PREFIX}{p.pid}_"
    assert _shm_entries(prefix), "the kill left no blocks: this test would not catch the leak"
    assert _wait_untagged(tag) == []  # workers (and the forkserver) notice the dead main and exit
    code = ("import ember; from ember.data import DataLoader, TensorDataset\n"
            "print(len(list(DataLoader(TensorDataset(ember.arange(8)), batch_size=4, num_workers=1))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stdout.strip() == "2", r.stdout + r.stderr
    assert _shm_entries(prefix) == []


def test_orphan_sweep_never_touches_live_owners():
    """sweep_orphans: dead pid or reused pid (other start time) -> removed; a live owner, another pid
    namespace, or a name without an owner tag -> kept."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead_tag = shm.owner_tag(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    live = shm.owner_tag(os.getppid())
    ppid, start, ns = live.split("_")
    mark = uuid.uuid4().hex[:8]
    names = {f"{SHM_PREFIX}{dead_tag}_0_{mark}": False,  # owner dead
             f"{SHM_PREFIX}{ppid}_{int(start) + 1}_{ns}_0_{mark}": False,  # pid reused by another process
             f"{SHM_PREFIX}{live}_0_{mark}": True,  # owner alive
             f"{SHM_PREFIX}{dead_tag.rsplit('_', 1)[0]}_{int(ns) + 1}_0_{mark}": True,  # other namespace
             f"{SHM_PREFIX}{sleeper.pid}_{mark}": True}  # no owner tag: not ours to judge
    try:
        for n in names:
            open(f"/dev/shm/{n}", "wb").close()
        removed = shm.sweep_orphans()
        for n, kept in names.items():
            assert os.path.exists(f"/dev/shm/{n}") == kept, n
            assert (n in removed) != kept
    finally:
        for n in names:
            shm.unlink_name(n)


_UNGUARDED = textwrap.dedent("""
    import faulthandler, glob
    faulthandler.dump_traceback_later(50, exit=True)
    import numpy as np
    from ember.data import DataLoader, Dataset

    class Squares(Dataset):  # defined in __main__, used at the top level: no __name__ guard
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return np.int64(i * i)

    def children():
        return [int(c) for t in glob.glob("/proc/self/task/*/children") for c in open(t).read().split()]

    for i, b in enumerate(DataLoader(Squares(), batch_size=4, num_workers=2{kw})):
        if i == 0:
            print("children", *children())
        print(b.numpy().tolist())
    print("done")
""")


@pytest.mark.parametrize("how,ctx", [("file", None), ("stdin", None), ("-c", None),
                                     ("file", "spawn"), ("stdin", "forkserver")])
def test_unguarded_and_stdin_scripts(tmp_path, how, ctx):
    """A script without `if __name__ == "__main__":`, or read from stdin, gets its batches (fork);
    with a start method that cannot work, one short clear error. No worker outlives the script."""
    src = _UNGUARDED.format(kw="" if ctx is None else f", multiprocessing_context={ctx!r}")
    tag, env = _tag_env()
    script = tmp_path / "unguarded.py"
    script.write_text(src)
    cmd = {"file": [sys.executable, str(script)], "stdin": [sys.executable, "-"],
           "-c": [sys.executable, "-c", src]}[how]
    r = subprocess.run(cmd, input=src if how == "stdin" else None, capture_output=True, text=True,
                       timeout=60, env=env, cwd=tmp_path)
    assert len(r.stderr.splitlines()) < 15 and "multiprocessing/" not in r.stderr, r.stderr  # no mp traceback
    if ctx is None:
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[1:] == ["[0, 1, 4, 9]", "[16, 25, 36, 49]", "[64, 81]", "done"], r.stdout
        workers = [int(x) for x in out[0].split()[1:]]
        assert len(workers) >= 2, out[0]  # forked: the workers are the script's own children
    else:
        assert r.returncode == 1 and r.stdout == ""
        last = r.stderr.splitlines()[-1]
        assert last.startswith("ember.data.workers.WorkerError: DataLoader(num_workers=2) cannot start")
        assert 'if __name__ == "__main__":' in last and 'multiprocessing_context="fork"' in last, last
        workers = []
    assert _wait_untagged(tag) == []
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or pid not in _tagged_pids(tag)


_OMP_FORK = textwrap.dedent("""
    import faulthandler
    faulthandler.dump_traceback_later(50, exit=True)
    import numpy as np, ember
    from ember.data import DataLoader, Dataset
    ember.set_num_threads(2)  # the parent's OpenMP pool now has threads that a fork does not copy
    f = ember.jit(lambda a: (a * 2.0 + 1.0).exp().sum(), backend="native")
    x = ember.ones(1 << 14)
    f(x)

    class Native(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return np.float32(f(x * float(i)).item())

    print([round(float(v)) for b in DataLoader(Native(), batch_size=2, num_workers=2, timeout=30)
           for v in b.numpy()])
""")


def test_forked_workers_run_native_kernels_after_parent_openmp():
    """Fork after the parent ran a 2-thread OpenMP region: the workers' native kernels do not hang."""
    from ember.backend.cpu import compiler
    if not compiler.available():
        pytest.skip("no C compiler: no native kernels")
    r = subprocess.run([sys.executable, "-"], input=_OMP_FORK, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    expected = [round(float(np.exp(np.float32(2.0 * i + 1.0))) * (1 << 14)) for i in range(4)]
    got = eval(r.stdout.strip())
    np.testing.assert_allclose(got, expected, rtol=1e-3)
