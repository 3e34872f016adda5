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
from .distributed import DistributedSampler
from .pipeline import Pipeline, PipelineError
from .stats import StageStats, StatsTable
from .workers import WorkerError, WorkerInfo, get_worker_info
from . import text, transforms  # noqa: F401

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "random_split",
           "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "BatchSampler",
           "DataLoader", "default_collate", "default_convert", "DistributedSampler", "Pipeline",
           "PipelineError", "StageStats", "StatsTable", "WorkerError", "WorkerInfo", "get_worker_info",
           "text", "transforms"]
