"""`DistributedSampler` (DP-7, DMLP-2): each replica reads its own part of the dataset.

PyTorch's semantics: with `shuffle`, every epoch draws a permutation from an ember Philox
generator seeded by ``seed + epoch`` (all replicas share `seed`, so they agree on the permutation;
call ``set_epoch(e)`` before each epoch). The index list is padded by repeating its beginning up to
a multiple of `num_replicas` (or, with `drop_last`, truncated), and replica ``rank`` takes every
`num_replicas`-th index starting at `rank`. Without padding (``len % num_replicas == 0`` or
``drop_last``) the replicas' parts are disjoint; together they always cover the (kept) dataset.
"""
from __future__ import annotations

import math

import numpy as np

from .sampler import Sampler

__all__ = ["DistributedSampler"]


class DistributedSampler(Sampler):
    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            raise ValueError("DistributedSampler: pass num_replicas and rank (ember.distributed's "
                             "DistributedSampler takes them from the process group)")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _index_array(self) -> np.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            from ..api.random import Generator, randperm
            g = Generator().manual_seed(self.seed + self.epoch)
            idx = randperm(n, generator=g).numpy().astype(np.int64)
        else:
            idx = np.arange(n, dtype=np.int64)
        if self.total_size > n:
            reps = -(-(self.total_size - n) // max(n, 1))
            idx = np.concatenate([idx] + [idx] * reps)[:self.total_size]
        else:
            idx = idx[:self.total_size]
        return idx[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self._index_array().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict:
        """What a resumed run needs to rebuild the order: the seed and the epoch."""
        return {"seed": self.seed, "epoch": self.epoch}
