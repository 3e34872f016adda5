"""Tensor parallelism (DT-2; Megatron-LM's column- and row-parallel linear layers): one layer's
weight split over the ranks of the process group, each rank multiplying by its slice.

- `ColumnParallelLinear`: rank r holds output rows [r O/n, (r+1) O/n) of the weight (and of the
  bias). Its input is the full x; its output is that slice of the features, or, with
  `gather_output=True`, all of them (an all-gather forward, the slice of the gradient backward).
- `RowParallelLinear`: rank r holds input columns [r I/n, (r+1) I/n). Its input is that slice of
  x (`input_is_parallel=True`, as a column-parallel layer without gathering gives it) or the full
  x (sliced here); the partial products are all-reduced forward (the bias added once after).

- `ParallelSelfAttention`: multi-head self-attention with the heads split over the ranks: each
  rank projects q, k, v for its heads (column-parallel), attends, and multiplies by its columns
  of the output projection (row-parallel), the partial outputs all-reduced.

Megatron's MLP and attention blocks, column-parallel then row-parallel, need one all-reduce forward (the
row layer's sum) and one backward (the column layer's input gradient, through `copy_to_parallel`:
identity forward, all-reduce of the gradient backward). The conjugate pair is `reduce_from_parallel`
(all-reduce forward, identity backward). Every rank computes the same full result; the layers
hold 1/n of the weight bytes. `from_linear(linear)` slices an existing `nn.Linear`, so a sharded
layer can be checked against (and starts equal to) the unsharded one.
"""
from __future__ import annotations

import numpy as np

from .. import autograd
from ..nn import functional as F
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..tensor import Tensor, from_array
from .collectives import ReduceOp, all_gather, all_reduce
from .errors import DistributedError
from .process_group import group as _default_group

__all__ = ["ColumnParallelLinear", "RowParallelLinear", "ParallelSelfAttention", "copy_to_parallel",
           "reduce_from_parallel", "gather_from_parallel"]


def _reduced(t: Tensor, g, algorithm) -> Tensor:
    out = from_array(np.array(t._data, copy=True), t._dtype)
    all_reduce(out, op=ReduceOp.SUM, group=g, algorithm=algorithm)
    return out


class _CopyToParallel(autograd.Function):
    @staticmethod
    def forward(ctx, x, g, algorithm):
        ctx.g, ctx.algorithm = g, algorithm
        return from_array(x._data, x._dtype)

    @staticmethod
    def backward(ctx, grad):
        return _reduced(grad, ctx.g, ctx.algorithm), None, None


class _ReduceFromParallel(autograd.Function):
    @staticmethod
    def forward(ctx, x, g, algorithm):
        return _reduced(x, g, algorithm)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class _GatherFromParallel(autograd.Function):
    @staticmethod
    def forward(ctx, x, g, algorithm):
        ctx.g, ctx.k = g, x.shape[-1]
        parts = [from_array(np.empty(x.shape, x._data.dtype), x._dtype) for _ in range(g.size)]
        all_gather(parts, from_array(np.ascontiguousarray(x._data), x._dtype), group=g, algorithm=algorithm)
        return from_array(np.concatenate([p._data for p in parts], -1), x._dtype)

    @staticmethod
    def backward(ctx, grad):
        r, k = ctx.g.rank, ctx.k
        return from_array(np.ascontiguousarray(grad._data[..., r * k:(r + 1) * k]), grad._dtype), None, None


def copy_to_parallel(x: Tensor, group=None, algorithm: str = "ember") -> Tensor:
    """x forward; the all-reduce (sum) of its gradient over the ranks backward."""
    return _CopyToParallel.apply(x, group or _default_group(), algorithm)


def reduce_from_parallel(x: Tensor, group=None, algorithm: str = "ember") -> Tensor:
    """The all-reduce (sum) of x over the ranks forward; the gradient as it is backward."""
    return _ReduceFromParallel.apply(x, group or _default_group(), algorithm)


def gather_from_parallel(x: Tensor, group=None, algorithm: str = "ember") -> Tensor:
    """Every rank's x concatenated along the last dim forward; this rank's slice of the gradient backward."""
    return _GatherFromParallel.apply(x, group or _default_group(), algorithm)


def _split(n_features: int, g, what: str) -> int:
    if n_features % g.size:
        raise DistributedError(f"{what}: {n_features} features do not split evenly over {g.size} ranks")
    return n_features // g.size


class _ShardedLinear(Module):
    """The slice of an nn.Linear's weight along `axis` (0: output rows and the bias with them;
    1: input columns, the bias whole) this rank holds: of `linear`, or of a fresh default-init
    Linear (ranks seeded alike then hold the slices of one layer)."""

    axis = 0

    def __init__(self, in_features: int, out_features: int, bias: bool, linear, process_group, algorithm: str):
        super().__init__()
        g = process_group or _default_group()
        object.__setattr__(self, "_pg", g)
        self.in_features, self.out_features, self.algorithm = in_features, out_features, algorithm
        k = _split(out_features if self.axis == 0 else in_features, g, type(self).__name__)
        if linear is None:
            from ..nn import Linear
            linear = Linear(in_features, out_features, bias=bias)
        part = slice(g.rank * k, (g.rank + 1) * k)
        w = linear.weight._data
        self.weight = Parameter(from_array((w[part] if self.axis == 0 else w[:, part]).copy()))
        b = linear.bias
        self.bias = None if b is None else Parameter(from_array((b._data[part] if self.axis == 0 else b._data).copy()))


class ColumnParallelLinear(_ShardedLinear):
    """nn.Linear(in_features, out_features) with the output features split over the ranks."""

    axis = 0

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, gather_output: bool = True,
                 process_group=None, algorithm: str = "ember", linear=None):
        super().__init__(in_features, out_features, bias, linear, process_group, algorithm)
        self.gather_output = gather_output

    @classmethod
    def from_linear(cls, linear, *, gather_output: bool = True, process_group=None, algorithm: str = "ember"):
        """This rank's slice of an nn.Linear (its output rows)."""
        return cls(linear.in_features, linear.out_features, linear.bias is not None, gather_output=gather_output,
                   process_group=process_group, algorithm=algorithm, linear=linear)

    def forward(self, x):
        y = F.linear(copy_to_parallel(x, self._pg, self.algorithm), self.weight, self.bias)
        return gather_from_parallel(y, self._pg, self.algorithm) if self.gather_output else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features} "
                f"({self.weight.shape[0]} on this rank), gather_output={self.gather_output}")


class RowParallelLinear(_ShardedLinear):
    """nn.Linear(in_features, out_features) with the input features split over the ranks."""

    axis = 1

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, input_is_parallel: bool = True,
                 process_group=None, algorithm: str = "ember", linear=None):
        super().__init__(in_features, out_features, bias, linear, process_group, algorithm)
        self.input_is_parallel = input_is_parallel

    @classmethod
    def from_linear(cls, linear, *, input_is_parallel: bool = True, process_group=None, algorithm: str = "ember"):
        """This rank's slice of an nn.Linear (its input columns; the bias whole)."""
        return cls(linear.in_features, linear.out_features, linear.bias is not None,
                   input_is_parallel=input_is_parallel, process_group=process_group, algorithm=algorithm,
                   linear=linear)

    def forward(self, x):
        k = self.weight.shape[1]
        if not self.input_is_parallel:
            r = self._pg.rank
            x = copy_to_parallel(x, self._pg, self.algorithm)[..., r * k:(r + 1) * k]
        y = reduce_from_parallel(F.linear(x, self.weight), self._pg, self.algorithm)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features} ({self.weight.shape[1]} on this rank), "
                f"out_features={self.out_features}, input_is_parallel={self.input_is_parallel}")


class ParallelSelfAttention(Module):
    """Self-attention of `nn.MultiheadAttention` (batch first, one packed in-projection) with its
    heads split over the ranks; `from_mha(mha)` takes this rank's heads of an existing one."""

    def __init__(self, mha, *, process_group=None, algorithm: str = "ember"):
        super().__init__()
        g = process_group or _default_group()
        object.__setattr__(self, "_pg", g)
        if not getattr(mha, "_qkv_same_embed_dim", False) or getattr(mha, "bias_k", None) is not None:
            raise DistributedError("ParallelSelfAttention: needs a MultiheadAttention with one packed in-projection "
                                   "and no bias_k / bias_v")
        self.embed_dim, self.algorithm, self.batch_first = mha.embed_dim, algorithm, mha.batch_first
        if mha.num_heads % g.size:
            raise DistributedError(f"ParallelSelfAttention: {mha.num_heads} heads do not split over {g.size} ranks")
        self.heads = mha.num_heads // g.size
        e, d, r = mha.embed_dim, mha.head_dim, g.rank
        self.head_dim = d
        rows = np.concatenate([np.arange(j * e + r * self.heads * d, j * e + (r + 1) * self.heads * d)
                               for j in range(3)])  # this rank's heads in q, k and v
        w = mha.in_proj_weight._data
        self.in_weight = Parameter(from_array(w[rows].copy()))
        b = mha.in_proj_bias
        self.in_bias = Parameter(from_array(b._data[rows].copy())) if b is not None else None
        cols = slice(r * self.heads * d, (r + 1) * self.heads * d)
        self.out_weight = Parameter(from_array(mha.out_proj.weight._data[:, cols].copy()))
        ob = mha.out_proj.bias
        self.out_bias = Parameter(from_array(ob._data.copy())) if ob is not None else None

    @classmethod
    def from_mha(cls, mha, *, process_group=None, algorithm: str = "ember"):
        """This rank's heads of `mha`."""
        return cls(mha, process_group=process_group, algorithm=algorithm)

    def forward(self, x, is_causal: bool = False):
        """Self-attention of x (N, L, E) (batch first); the same full output on every rank."""
        if not self.batch_first:
            x = x.transpose(0, 1)
        n, L, _ = x.shape
        h, d = self.heads, self.head_dim
        qkv = F.linear(copy_to_parallel(x, self._pg, self.algorithm), self.in_weight, self.in_bias)
        q, k, v = (qkv[..., j * h * d:(j + 1) * h * d].reshape(n, L, h, d).transpose(1, 2) for j in range(3))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal).transpose(1, 2).reshape(n, L, h * d)
        y = reduce_from_parallel(F.linear(o, self.out_weight), self._pg, self.algorithm)
        y = y + self.out_bias if self.out_bias is not None else y
        return y if self.batch_first else y.transpose(0, 1)
