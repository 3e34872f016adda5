"""`DistributedSampler`: each rank visits its own 1/world_size of the dataset (DT-1).

The permutation of an epoch comes from a Philox generator seeded with ``seed + epoch`` (call
`set_epoch(e)` at the start of every epoch), so every rank computes the same permutation without
communicating and a resumed run can rebuild any epoch's order from (seed, epoch). Rank r takes
indices r, r + n, r + 2n, ... of the (padded or truncated) permutation, as PyTorch does.
"""
from __future__ import annotations

import numpy as np

from ..data.sampler import Sampler

__all__ = ["DistributedSampler"]


class DistributedSampler(Sampler):
    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            from .process_group import group
            g = group()
            num_replicas = g.size if num_replicas is None else num_replicas
            rank = g.rank if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of `epoch` (the same on every rank)."""
        self.epoch = int(epoch)

    def _index_array(self) -> np.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            from ..api.random import Generator, randperm
            gen = Generator().manual_seed(self.seed + self.epoch)
            idx = randperm(n, generator=gen).numpy().astype(np.int64)
        else:
            idx = np.arange(n, dtype=np.int64)
        if self.total_size > n:
            idx = np.concatenate([idx, np.resize(idx, self.total_size - n)])
        idx = idx[:self.total_size]
        return idx[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self._index_array().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}
