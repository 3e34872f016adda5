"""Layer 5 distributed training over MPI (book ch9/ch10, DMLP ch3).

    import ember.distributed as dist
    dist.init_process_group()                 # under `ember launch -n 2 script.py` (mpiexec)
    dist.all_reduce(t)                        # in place, sum over ranks
    model = dist.DistributedDataParallel(model)

Collectives run on MPI's own implementation (``algorithm="mpi"``) or on ember's algorithms over
point-to-point messages (``"ring"``, ``"tree"``, ``"recursive_doubling"``, ``"ember"`` = the default
ember algorithm of each collective). Only buffer-based mpi4py calls are used: nothing is pickled.

Needs mpi4py and an MPI library: ``pip install 'ember[mpi]'`` (mpi4py + the MPICH wheel).
"""
from __future__ import annotations

try:
    import mpi4py  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("ember.distributed needs mpi4py and an MPI library: pip install 'ember[mpi]'") from e

from .errors import DistributedError, RankFailureError  # noqa: E402
from .process_group import (ProcessGroup, barrier, destroy_process_group, get_rank,  # noqa: E402
                            get_world_size, group, init_process_group, is_initialized, new_group)
from .collectives import (ReduceOp, Work, all_gather, all_gather_into_tensor, all_reduce, all_to_all,  # noqa: E402
                          broadcast, gather, irecv, isend, recv, reduce, reduce_scatter, reduce_scatter_tensor,
                          scatter, send)
from .sampler import DistributedSampler  # noqa: E402
from .ddp import DistributedDataParallel  # noqa: E402
from .zero import ZeroRedundancyOptimizer  # noqa: E402
from .fsdp import FullyShardedDataParallel  # noqa: E402
from .sharding import matmul, shard, spmd  # noqa: E402
from .planner import ParallelPlan, plan_parallelism  # noqa: E402
from .pipeline import PipelineStage  # noqa: E402
from .tensor_parallel import (ColumnParallelLinear, ParallelSelfAttention, RowParallelLinear,  # noqa: E402
                              copy_to_parallel, gather_from_parallel, reduce_from_parallel)
from .checkpoint import (load_checkpoint, load_sharded_checkpoint, resume_requested, save_checkpoint,  # noqa: E402
                         save_sharded_checkpoint)

__all__ = ["DistributedError", "RankFailureError", "ProcessGroup", "init_process_group",
           "destroy_process_group", "is_initialized", "new_group", "get_rank", "get_world_size", "barrier", "group",
           "ReduceOp", "Work", "broadcast", "reduce", "all_reduce", "gather", "all_gather", "scatter",
           "reduce_scatter", "all_gather_into_tensor", "reduce_scatter_tensor", "all_to_all", "send", "recv", "isend", "irecv",
           "DistributedSampler", "DistributedDataParallel", "ZeroRedundancyOptimizer", "FullyShardedDataParallel", "shard", "matmul", "spmd", "plan_parallelism", "ParallelPlan", "PipelineStage",
           "ColumnParallelLinear", "RowParallelLinear", "ParallelSelfAttention", "copy_to_parallel", "reduce_from_parallel",
           "gather_from_parallel",
           "save_checkpoint", "load_checkpoint", "resume_requested", "save_sharded_checkpoint",
           "load_sharded_checkpoint"]
