"""`ember.serve.ReplicaSet`: N `ember serve` processes serving one model repository (DMLP-7).

Each replica is `python -m ember serve --port 0 ...` on 127.0.0.1; it prints its URL on its first
line of stdout, which is how the set learns the port. A replica watches its parent and exits when the
parent is gone (EMBER_SERVE_PARENT, see server.py), so a crashed router leaves no process behind.
`stop` sends SIGTERM (the replica drains its in-flight requests) and SIGKILL after the drain timeout.

The list of replicas is guarded by the set's lock: the autoscaler thread grows and shrinks it while
the caller's thread may read it.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .errors import ServeError


class Replica:
    """One `ember serve` process."""

    def __init__(self, name: str, proc: subprocess.Popen, log_path: str):
        self.name, self.proc, self.log_path = name, proc, log_path
        self.url = ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _wait_url(self, deadline: float) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = b""
        try:
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise ServeError(f"replica {self.name} did not start in time{self._log_tail()}")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise ServeError(f"replica {self.name} exited with {self.proc.wait()}{self._log_tail()}")
                line += chunk
        finally:
            sel.close()
        words = line.decode(errors="replace").split()
        url = next((w for w in words if w.startswith("http://")), None)
        if url is None:
            raise ServeError(f"replica {self.name} printed {line[:200]!r}, not its URL")
        self.url = url
        # keep its stdout drained so a chatty replica never blocks on a full pipe
        threading.Thread(target=self._drain, name=f"ember-replica-{self.name}-out", daemon=True).start()

    def _drain(self) -> None:
        with self.proc.stdout:
            while self.proc.stdout.read(65536):
                pass

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace").strip()
        except OSError:
            return ""
        return f": {tail}" if tail else ""

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """SIGTERM (drain, then exit); SIGKILL past the drain timeout."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(drain_timeout_s + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL at once (a crash, as far as the router can tell)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def __repr__(self) -> str:
        return f"<Replica {self.name} {self.url or 'starting'} pid={self.proc.pid}>"


class ReplicaSet:
    """`replicas` processes serving `model_repository`; `server_args` are extra `ember serve` flags."""

    def __init__(self, model_repository, replicas: int = 1, *, server_args=(), python: str = sys.executable,
                 env: dict | None = None, start_timeout_s: float = 120.0, drain_timeout_s: float = 30.0):
        if int(replicas) < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        self.model_repository = os.path.abspath(os.fspath(model_repository))
        self.initial = int(replicas)
        self.server_args, self.python = list(server_args), python
        self.env = dict(os.environ if env is None else env)
        self.start_timeout_s, self.drain_timeout_s = start_timeout_s, drain_timeout_s
        self.replicas: list = []
        self._lock = threading.Lock()
        self._next = 0
        self._logs = tempfile.TemporaryDirectory(prefix="ember-replicas-")

    def _spawn(self) -> Replica:
        with self._lock:
            name = f"r{self._next}"
            self._next += 1
        log_path = os.path.join(self._logs.name, name + ".log")
        env = dict(self.env, EMBER_SERVE_PARENT=str(os.getpid()), PYTHONUNBUFFERED="1")
        cmd = [self.python, "-m", "ember", "serve", "--model-repository", self.model_repository,
               "--host", "127.0.0.1", "--port", "0", "--log-level", "warning", *self.server_args]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env)
        return Replica(name, proc, log_path)

    def add(self, n: int = 1) -> list:
        """Start `n` more replicas (in parallel); returns them once each has bound its port."""
        new = [self._spawn() for _ in range(n)]
        deadline = time.monotonic() + self.start_timeout_s
        try:
            for r in new:
                r._wait_url(deadline)
        except BaseException:
            for r in new:
                r.kill()
            raise
        with self._lock:
            self.replicas.extend(new)
        return new

    def remove(self, replica: Replica) -> None:
        """Stop one replica (draining it) and forget it."""
        with self._lock:
            if replica in self.replicas:
                self.replicas.remove(replica)
        replica.stop(self.drain_timeout_s)

    def start(self) -> "ReplicaSet":
        """Start the initial replicas."""
        if self.initial:
            self.add(self.initial)
        return self

    def stop(self) -> None:
        """Stop every replica (SIGTERM to all at once, then wait for each). Safe to call twice."""
        with self._lock:
            rs, self.replicas = list(self.replicas), []
        for r in rs:
            if r.alive():
                r.proc.send_signal(signal.SIGTERM)
        for r in rs:
            r.stop(self.drain_timeout_s)
        self._logs.cleanup()

    def __len__(self) -> int:
        return len(self.replicas)

    def __enter__(self) -> "ReplicaSet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
