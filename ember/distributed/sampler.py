"""`DistributedSampler` whose replica count and rank default to the MPI process group (DT-1).

The sampling itself is `ember.data.DistributedSampler` (seed + epoch Philox permutation, padded or
truncated to a multiple of the world size, rank r takes every n-th index from r).
"""
from __future__ import annotations

from ..data.distributed import DistributedSampler as _Base

__all__ = ["DistributedSampler"]


class DistributedSampler(_Base):
    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            from .process_group import group
            g = group()
            num_replicas = g.size if num_replicas is None else num_replicas
            rank = g.rank if rank is None else rank
        super().__init__(dataset, num_replicas, rank, shuffle, seed, drop_last)
