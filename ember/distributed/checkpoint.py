"""Checkpoint and resume for data-parallel jobs (DMLP-6).

Rank 0 writes each checkpoint with `CheckpointManager` (atomic: temp file, fsync, rename), the
other ranks wait at a barrier, so a checkpoint either exists whole or not at all, even if a rank
dies mid-save. A checkpoint holds the model, the optimizer (and scheduler), ember's default RNG
state and the data position: ``epoch``, ``step`` (global optimizer steps done), ``batch`` (batches
done in the epoch) and the sampler's ``seed``. `ember launch --resume` sets ``EMBER_RESUME=1``;
`load_checkpoint` then restores all of it on every rank (each rank reads the file: a shared
file system is assumed), and the training loop skips the batches already done in that epoch:
with a deterministic sampler the resumed run ends bit-identical to an uninterrupted one.

Sharded checkpoints (`save_sharded_checkpoint`, for `FullyShardedDataParallel` and its optimizer
over the shards): every rank writes its own shard file (atomic) under ``<directory>/shards/``,
all wait at a barrier, then rank 0 writes the checkpoint itself (the data position, the RNG, the
world size), which is what makes the step exist: a job killed before it leaves only shard files,
which the next save of that step replaces and pruning removes. `load_sharded_checkpoint` may run
on a different number of ranks: each rank reads every old shard file and takes its new range of
each unit's flat vector, and of each optimizer state tensor of a shard's shape (Adam's moments);
scalars (the step count) come from rank 0's file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .errors import DistributedError
from .process_group import group

__all__ = ["save_checkpoint", "load_checkpoint", "resume_requested", "save_sharded_checkpoint",
           "load_sharded_checkpoint"]


def resume_requested() -> bool:
    """True when the job was started with `ember launch --resume` (EMBER_RESUME=1)."""
    return os.environ.get("EMBER_RESUME", "") not in ("", "0")


def save_checkpoint(manager, step: int, model, optimizer=None, *, epoch: int = 0, batch: int = 0,
                    sampler=None, scheduler=None, extra: dict | None = None):
    """Rank 0 saves atomically; every rank returns after the file is complete (barrier)."""
    g = group()
    path = None
    if hasattr(model, "sharded_state"):
        raise DistributedError("save_checkpoint: a FullyShardedDataParallel model keeps its parameters and "
                               "optimizer state in shards; use save_sharded_checkpoint")
    if g.rank == 0:
        from ..api.random import get_rng_state
        module = getattr(model, "module", model)
        state = {"model": module.state_dict(),
                 "data": {"epoch": int(epoch), "step": int(step), "batch": int(batch),
                          "seed": int(getattr(sampler, "seed", 0))},
                 "rng": get_rng_state().numpy().copy(), "world_size": g.size}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if extra:
            state["extra"] = extra
        path = manager.save(state, step)
    g.barrier()
    return path


def load_checkpoint(manager, model, optimizer=None, *, scheduler=None, sampler=None):
    """Restore the newest checkpoint on every rank; returns its ``data`` dict (None if none)."""
    state = manager.load_latest()
    g = group()
    g.barrier()
    if state is None:
        return None
    getattr(model, "module", model).load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return _restore_position(state, scheduler, sampler)


def _restore_position(state: dict, scheduler, sampler) -> dict:
    """The scheduler, the RNG and the sampler as saved; returns the ``data`` position."""
    from ..api.random import set_rng_state
    from ..tensor import tensor
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(tensor(state["rng"]))
    data = dict(state["data"])
    if sampler is not None:
        sampler.seed = data["seed"]
        sampler.set_epoch(data["epoch"])
    return data


def _shard_path(manager, step: int, rank: int, world: int) -> Path:
    return Path(manager.directory) / "shards" / f"{manager.prefix}-{int(step):08d}.{rank}-of-{world}.safetensors"


def _prune_shards(manager) -> None:
    keep = set(manager.steps())
    d = Path(manager.directory) / "shards"
    pat = re.compile(re.escape(manager.prefix) + r"-(\d{8})\.\d+-of-\d+\.safetensors")
    for f in d.iterdir():
        m = pat.fullmatch(f.name)
        if m and int(m.group(1)) not in keep:
            f.unlink(missing_ok=True)


def save_sharded_checkpoint(manager, step: int, model, optimizer=None, *, epoch: int = 0, batch: int = 0,
                            sampler=None, scheduler=None, extra: dict | None = None):
    """Every rank saves its shard, then rank 0 the checkpoint that completes the step (atomic)."""
    from .. import serialization as _ser
    g = group()
    shard = {"model": model.sharded_state()}
    if optimizer is not None:
        shard["optimizer"] = optimizer.state_dict()
    path = _shard_path(manager, step, g.rank, g.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    _ser.save(shard, path, sidecar=False)
    g.barrier()
    out = None
    if g.rank == 0:
        from ..api.random import get_rng_state
        state = {"data": {"epoch": int(epoch), "step": int(step), "batch": int(batch),
                          "seed": int(getattr(sampler, "seed", 0))},
                 "rng": get_rng_state().numpy().copy(), "world_size": g.size, "shard_step": int(step)}
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if extra:
            state["extra"] = extra
        out = manager.save(state, step)
        _prune_shards(manager)
    g.barrier()
    return out


def _array(v):
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def _reshard_optimizer(states: list, optimizer, model) -> dict:
    """The optimizer state_dict of this rank's new shards, from every old rank's state_dicts."""
    from .fsdp import reshard
    g = model.group
    unit_of = {id(u.shard): u for u in model.units}
    order = [p for grp in optimizer.param_groups for p in grp["params"]]
    old_S = states[0]["model"]["layout"]["S"]
    out = {"param_groups": states[0]["optimizer"]["param_groups"], "state": {}}
    for k, st in states[0]["optimizer"]["state"].items():
        u = unit_of.get(id(order[int(k)]))
        if u is None:
            raise DistributedError("load_sharded_checkpoint: the optimizer must be built on the model's "
                                   "shards (fsdp.parameters())")
        new = {}
        for name, v in st.items():
            a = _array(v)
            if a.shape == (old_S[u.index],):
                new[name] = reshard([_array(s["optimizer"]["state"][k][name]) for s in states], u.total, g.size, g.rank)
            else:
                new[name] = a
        out["state"][k] = new
    return out


def load_sharded_checkpoint(manager, model, optimizer=None, *, scheduler=None, sampler=None):
    """Restore the newest sharded checkpoint on every rank, on any number of ranks; returns its
    ``data`` dict (None if none)."""
    from .. import serialization as _ser
    state = manager.load_latest()
    g = group()
    g.barrier()
    if state is None:
        return None
    step, world = int(state["shard_step"]), int(state["world_size"])
    paths = [_shard_path(manager, step, i, world) for i in range(world)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DistributedError(f"load_sharded_checkpoint: step {step} was saved by {world} ranks but "
                               f"shard files are missing: {missing}")
    olds = [_ser.load(p) for p in paths]
    model.load_sharded_state([o["model"] for o in olds])
    if optimizer is not None:
        optimizer.load_state_dict(_reshard_optimizer(olds, optimizer, model))
    return _restore_position(state, scheduler, sampler)
