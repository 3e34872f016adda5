"""Errors of ember.distributed."""
from __future__ import annotations

from .._core.errors import EmberError


class DistributedError(EmberError, RuntimeError):
    """A collective or the process group cannot proceed."""


class RankFailureError(DistributedError):
    """A peer process died (or stopped answering) while this rank waited for it."""

    def __init__(self, msg: str, ranks=()):
        super().__init__(msg)
        self.ranks = tuple(ranks)
