"""The router's backends and the three ways it picks one (DMLP-7, replicated services).

- round robin: ready backends in turn;
- least connections: the ready backend with the fewest requests in flight (ties in turn);
- consistent hash: a ring of `vnodes` points per backend; a request's key (a header) goes to the first
  ready backend clockwise from its hash, so adding or removing a backend moves only the keys it owns.

Backends are read and written on the router's event loop; the autoscaler thread adds and removes
them through `Backends`, whose list is replaced (never mutated in place) under its lock.
"""
from __future__ import annotations

import bisect
import hashlib
import threading
from dataclasses import dataclass

POLICIES = ("round_robin", "least_connections", "consistent_hash")


@dataclass(eq=False)
class Backend:
    """One replica behind the router and what the router knows of it."""

    url: str
    name: str = ""
    ready: bool = False
    draining: bool = False  # being scaled away: takes no new requests
    inflight: int = 0
    requests: int = 0  # answered by this backend
    failures: int = 0  # connection failures (each retried elsewhere)

    def usable(self) -> bool:
        return self.ready and not self.draining

    def stats(self) -> dict:
        return {"name": self.name or self.url, "url": self.url, "ready": self.ready, "draining": self.draining,
                "inflight": self.inflight, "requests": self.requests, "failures": self.failures}


def _point(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


class Backends:
    """The router's backend list, the ring over it, and the pick for a request."""

    def __init__(self, policy: str = "round_robin", vnodes: int = 64):
        if policy not in POLICIES:
            raise ValueError(f"routing policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy, self.vnodes = policy, int(vnodes)
        self._lock = threading.Lock()
        self._list: tuple = ()
        self._ring: tuple = ((), ())
        self._turn = 0

    def all(self) -> tuple:
        """The backends, in the order they were added."""
        return self._list

    def add(self, backend: Backend) -> Backend:
        with self._lock:
            self._list = self._list + (backend,)
            self._rebuild()
        return backend

    def remove(self, backend: Backend) -> None:
        with self._lock:
            self._list = tuple(b for b in self._list if b is not backend)
            self._rebuild()

    def _rebuild(self) -> None:
        points = sorted((_point(f"{b.name or b.url}#{i}"), k) for k, b in enumerate(self._list)
                        for i in range(self.vnodes))
        self._ring = (tuple(p for p, _ in points), tuple(self._list[k] for _, k in points))

    def pick(self, key: str | None = None, exclude=()) -> Backend | None:
        """The backend for the next request (None when no usable one is left)."""
        backends = [b for b in self._list if b.usable() and b not in exclude]
        if not backends:
            return None
        if self.policy == "consistent_hash" and key is not None:
            hashes, owners = self._ring
            i = bisect.bisect(hashes, _point(key))
            for j in range(len(owners)):
                b = owners[(i + j) % len(owners)]
                if b.usable() and b not in exclude:
                    return b
            return None
        self._turn += 1
        if self.policy == "least_connections":
            n = len(backends)
            return min((backends[(self._turn + j) % n] for j in range(n)), key=lambda b: b.inflight)
        return backends[self._turn % len(backends)]
