"""Per-call working memory for executors called from several threads at once.

An executable's plan is fixed at build time, but its arena, the pointer table it hands the native
code and the result arrays it recycles belong to one call at a time. `ContextPool` keeps the
contexts no call is using; a call takes one (making a new one when every context is busy) and
gives it back. A single-threaded program only ever makes the first, so it pays nothing; N threads
calling at once cost N arenas, made on first need and kept for later calls.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

C = TypeVar("C")


class ContextPool(Generic[C]):
    """Free contexts of one executable; `take()` one for a call, `give(c)` it back."""

    def __init__(self, make: Callable[[], C]):
        self._make = make
        self._lock = threading.Lock()
        self.first = make()
        self._free = [self.first]

    def take(self) -> C:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._make()

    def give(self, ctx: C) -> None:
        with self._lock:
            self._free.append(ctx)
