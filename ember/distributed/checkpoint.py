"""Checkpoint and resume for data-parallel jobs (DMLP-6).

Rank 0 writes each checkpoint with `CheckpointManager` (atomic: temp file, fsync, rename), the
other ranks wait at a barrier, so a checkpoint either exists whole or not at all, even if a rank
dies mid-save. A checkpoint holds the model, the optimizer (and scheduler), ember's default RNG
state and the data position: ``epoch``, ``step`` (global optimizer steps done), ``batch`` (batches
done in the epoch) and the sampler's ``seed``. `ember launch --resume` sets ``EMBER_RESUME=1``;
`load_checkpoint` then restores all of it on every rank (each rank reads the file: a shared
file system is assumed), and the training loop skips the batches already done in that epoch:
with a deterministic sampler the resumed run ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import os

from .process_group import group

__all__ = ["save_checkpoint", "load_checkpoint", "resume_requested"]


def resume_requested() -> bool:
    """True when the job was started with `ember launch --resume` (EMBER_RESUME=1)."""
    return os.environ.get("EMBER_RESUME", "") not in ("", "0")


def save_checkpoint(manager, step: int, model, optimizer=None, *, epoch: int = 0, batch: int = 0,
                    sampler=None, scheduler=None, extra: dict | None = None):
    """Rank 0 saves atomically; every rank returns after the file is complete (barrier)."""
    g = group()
    path = None
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
    from ..api.random import set_rng_state
    from ..tensor import tensor
    getattr(model, "module", model).load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(tensor(state["rng"]))
    data = dict(state["data"])
    if sampler is not None:
        sampler.seed = data["seed"]
        sampler.set_epoch(data["epoch"])
    return data
