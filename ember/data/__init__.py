"""Layer 5 data pipeline: datasets, samplers, `default_collate` and the `DataLoader` (PyTorch names).

    from ember.data import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    for xb, yb in loader: ...

Shuffling draws from ember's Philox generator (seed with ``ember.manual_seed`` or pass
``generator=ember.Generator().manual_seed(s)``). A TensorDataset is batched by whole-array gathers.
"""
from .dataset import ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset, random_split
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler
from .dataloader import DataLoader, default_collate, default_convert

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "random_split",
           "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "BatchSampler",
           "DataLoader", "default_collate", "default_convert"]
