"""A sharded service (DMLP-8): one request split along a dimension, shards run in parallel, merged.

A model whose config.json has

    "sharding": {"input": "image", "axis": 2, "shards": 4, "halo": 3, "merge": "concat"}

is served as a `ShardedModel` around the loaded model (any platform). For each batch it:

1. cuts `input` along `axis` (a dim of the request's shape, batch dim included) into `shards`
   contiguous pieces of near-equal length (`length * i // shards` boundaries), each widened by `halo`
   items on either side where the input has them (clipped at the edges). Other inputs go to every
   shard whole;
2. runs the pieces on the model's shard pool (`shards` threads for each of the version's
   `instance_count` batcher threads), all at once;
3. merges: "concat" crops each shard's outputs back to its own piece (the halo is dropped) and
   concatenates them along the same axis; "sum" adds the shards' outputs; "mean" averages them
   weighted by each piece's length, so a global average pool merges to the whole input's.

With "concat" and a halo, each output must keep the input's length along the axis (a "same"-padded,
stride-1 fully convolutional model). A model whose receptive field reaches r items on each side
then gives exactly the whole input's output when `halo >= r`: every kept output item sees the same
inputs it would see in the whole, and the zero padding at the image's edges is the same padding.

A shard that fails fails the request: the other shards' results are dropped, the shards not yet
started are cancelled, and the error names the shard and its range. It keeps the shard's status (400
for an `InvalidRequest` a python model raised, else 500). No partial output is ever returned.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np

from .config import Sharding
from .errors import ConfigError, ModelError, ServeError
from .models import ServedModel, check_outputs


class ShardError(ModelError):
    """A shard of a sharded request failed; `status` is the failed shard's (400 or 500)."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


def shard_ranges(length: int, shards: int, halo: int = 0) -> list:
    """[(lo, hi, in_lo, in_hi)]: each non-empty shard's own items [lo, hi) and the input it reads,
    widened by `halo` on either side and clipped to [0, length)."""
    out = []
    for i in range(shards):
        lo, hi = length * i // shards, length * (i + 1) // shards
        if hi > lo:
            out.append((lo, hi, max(lo - halo, 0), min(hi + halo, length)))
    return out


def _axis_slice(axis: int, lo: int, hi: int) -> tuple:
    return (slice(None),) * axis + (slice(lo, hi),)


class ShardedModel(ServedModel):
    """A loaded model whose every run is split into shards along one input's axis, run in parallel
    on the shard pool, and merged (see the module docstring)."""

    def __init__(self, inner: ServedModel, sharding: Sharding | None = None):
        config = inner.config
        sh = sharding or config.sharding
        if sh is None:
            raise ConfigError(f"{inner.what}: no sharding configured")
        specs = {s.name: s for s in config.inputs}
        if sh.input not in specs:
            raise ConfigError(f"{inner.what}: sharding.input {sh.input!r} is not one of the inputs {list(specs)}")
        batching = config.max_batch_size > 0
        rank = len(specs[sh.input].dims) + batching
        if not -rank <= sh.axis < rank or (batching and sh.axis % rank == 0):
            raise ConfigError(f"{inner.what}: sharding.axis {sh.axis} is not a non-batch dim of input "
                              f"{sh.input!r} (rank {rank})")
        sh = dataclasses.replace(sh, axis=sh.axis % rank)
        config = dataclasses.replace(config, sharding=sh)
        super().__init__(config, inner.version)
        self.inner, self.sharding, self.kind = inner, sh, inner.kind
        # the model itself sees pieces: the sharded dims of its input (and, when concatenating, its
        # outputs) are any size to it, which also skips its own whole-size warm-up
        inner.config = dataclasses.replace(config, sharding=None,
                                           inputs=tuple(self._relax(s) if s.name == sh.input else s
                                                        for s in config.inputs),
                                           outputs=tuple(self._relax(s) if sh.merge == "concat" else s
                                                         for s in config.outputs))
        # every instance thread of the batcher may run a sharded batch at the same time
        self._pool = ThreadPoolExecutor(sh.shards * config.instance_count,
                                        thread_name_prefix=f"ember-serve-{config.name}-v{inner.version}-shard")

    def _relax(self, spec):
        d = self.sharding.axis - (self.config.max_batch_size > 0)
        if d >= len(spec.dims):
            return spec  # an output without that dim: concat reports it when it runs
        return dataclasses.replace(spec, dims=spec.dims[:d] + (-1,) + spec.dims[d + 1:])

    # ---- one request
    def run(self, inputs: dict, batch: int) -> dict:
        sh = self.sharding
        x = inputs[sh.input]
        ranges = shard_ranges(x.shape[sh.axis], sh.shards, sh.halo)
        if not ranges:
            raise ModelError(f"{self.what}: input {sh.input!r} is empty along axis {sh.axis}; nothing to shard")
        futures = [self._pool.submit(self._run_shard, inputs, x, r, batch) for r in ranges]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending and any(f.exception() is not None for f in done):
            for f in pending:
                f.cancel()  # not started yet: never runs
            wait(pending)  # the running ones finish before the request answers
        failed = [(i, f.exception()) for i, f in enumerate(futures) if not f.cancelled() and f.exception()]
        if failed:
            raise self._failure(failed, ranges)
        outs = [f.result() for f in futures]
        return check_outputs(self.config, self._merge(outs, ranges, x.shape[sh.axis]), batch, self.what)

    def _run_shard(self, inputs: dict, x: np.ndarray, r: tuple, batch: int) -> dict:
        lo, hi, in_lo, in_hi = r
        axis = self.sharding.axis
        piece = dict(inputs)
        piece[self.sharding.input] = np.ascontiguousarray(x[_axis_slice(axis, in_lo, in_hi)])
        outs = self.inner.run(piece, batch)
        if self.sharding.merge != "concat":
            return outs
        cropped = {}
        for name, a in outs.items():
            if a.ndim <= axis:
                raise ModelError(f"{self.what}: output {name!r} has rank {a.ndim}; merge 'concat' along axis "
                                 f"{axis} needs that axis")
            if self.sharding.halo and a.shape[axis] != in_hi - in_lo:
                raise ModelError(f"{self.what}: output {name!r} has {a.shape[axis]} items along axis {axis} for "
                                 f"a piece of {in_hi - in_lo}; a halo needs a model that keeps the length")
            if self.sharding.halo:
                a = a[_axis_slice(axis, lo - in_lo, hi - in_lo)]
            cropped[name] = a
        return cropped

    def _failure(self, failed: list, ranges: list) -> ShardError:
        i, e = failed[0]
        lo, hi, in_lo, in_hi = ranges[i]
        more = f" (and {len(failed) - 1} more shard(s) failed)" if len(failed) > 1 else ""
        msg = (f"{self.what}: shard {i} of {len(ranges)} ({self.sharding.input!r}[{lo}:{hi}] along axis "
               f"{self.sharding.axis}, read as [{in_lo}:{in_hi}]) failed: {type(e).__name__}: {e}{more}; "
               f"the request fails whole, no partial output is returned")
        return ShardError(msg, e.status if isinstance(e, ServeError) and e.status < 500 else 500)

    def _merge(self, outs: list, ranges: list, length: int) -> dict:
        sh, merged = self.sharding, {}
        for name in outs[0]:
            parts = [o[name] for o in outs]
            try:
                if sh.merge == "concat":
                    merged[name] = np.concatenate(parts, axis=sh.axis)
                elif sh.merge == "sum":
                    merged[name] = np.sum(np.stack(parts), axis=0, dtype=parts[0].dtype)
                else:
                    w = [(hi - lo) / length for lo, hi, _, _ in ranges]
                    total = sum(p.astype(np.float64) * wi for p, wi in zip(parts, w))
                    merged[name] = total.astype(parts[0].dtype)
            except ValueError as e:  # shards whose outputs do not line up
                raise ModelError(f"{self.what}: merging output {name!r} of the shards ({sh.merge}): {e}") from None
        return merged

    # ---- lifecycle
    def warmup(self) -> None:
        """Trace every shard shape of a jitted model at each batch bucket (python models: nothing)."""
        cfg = self.config
        if self.kind not in ("ember", "onnx") or not cfg.warmup or \
                any(-1 in s.dims or s.datatype == "BYTES" for s in cfg.inputs):
            return
        from .protocol import numpy_dtype
        for b in cfg.buckets() or [None]:
            lead = [] if b is None else [b]
            zeros = {s.name: np.zeros(lead + list(s.dims), numpy_dtype(s.datatype)) for s in cfg.inputs}
            try:
                self.run(zeros, b or 0)
            except ServeError as e:
                raise ModelError(f"warm-up at batch size {b}: {e}") from None
            except Exception as e:  # noqa: BLE001 - a model that cannot run fails its load
                raise ModelError(f"{self.what}: warm-up at batch size {b} raised {type(e).__name__}: {e}") from e

    def close(self) -> None:
        """Join the shard threads, then close the model."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.inner.close()

