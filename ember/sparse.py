"""Sparse COO tensors (CG-2; PyTorch's torch.sparse_coo_tensor layout): a matrix kept as its nnz
non-zero entries, `indices` (ndim, nnz) int64 and `values` (nnz,), so storage is O(nnz).

`mm(S, D)` (also `S @ D` and `S @ v`) is the gather-multiply-scatter of the entries:
out[i] += values[k] * D[j] for each entry k = (i, j), written with ember ops, so it costs O(nnz *
columns), is differentiable with respect to the values and the dense operand, and traces under
ember.jit. Duplicate entries add up, as in PyTorch; `coalesce()` sums them and sorts the indices.
"""
from __future__ import annotations

import numpy as np

from ._core import dtypes as dt
from ._core.errors import ShapeError, op_error
from .api import shape as S
from .api.creation import zeros
from .ops import lax
from .tensor import Tensor, as_tensor, from_numpy


class SparseCOOTensor:
    """A sparse tensor in coordinate format: `indices()` (ndim, nnz), `values()` (nnz,), `shape`."""

    layout = "sparse_coo"
    is_sparse = True

    def __init__(self, indices: Tensor, values: Tensor, shape: tuple, coalesced: bool = False):
        self._indices, self._values, self.shape = indices, values, tuple(int(s) for s in shape)
        self._coalesced = coalesced

    # ---- PyTorch's accessors
    def indices(self) -> Tensor:
        return self._indices

    def values(self) -> Tensor:
        return self._values

    def _nnz(self) -> int:
        return self._values.shape[0]

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> dt.DType:
        return self._values.dtype

    @property
    def requires_grad(self) -> bool:
        return self._values.requires_grad

    def is_coalesced(self) -> bool:
        return self._coalesced

    @property
    def nbytes(self) -> int:
        """Bytes held: the indices and the values (O(nnz), whatever the dense size)."""
        return self._indices.numpy().nbytes + self._values.detach().numpy().nbytes

    def _flat_index(self) -> np.ndarray:
        idx = self._indices.numpy()
        return np.ravel_multi_index(tuple(idx), self.shape) if idx.size else np.zeros(0, np.int64)

    def coalesce(self) -> "SparseCOOTensor":
        """Duplicates summed, indices sorted (row-major), as PyTorch's coalesce."""
        flat = self._flat_index()
        uniq, inv = np.unique(flat, return_inverse=True)
        vals = lax.scatter_add(zeros(len(uniq), dtype=self.dtype), from_numpy(inv.astype(np.int64)), self._values, 0)
        idx = np.stack(np.unravel_index(uniq, self.shape)).astype(np.int64) if len(uniq) else \
            np.zeros((self.ndim, 0), np.int64)
        return SparseCOOTensor(from_numpy(idx.reshape(self.ndim, -1)), vals, self.shape, True)

    def to_dense(self) -> Tensor:
        """The dense tensor (duplicates added)."""
        flat = lax.full((int(np.prod(self.shape)),), 0, self.dtype)
        out = lax.scatter_add(flat, from_numpy(self._flat_index().astype(np.int64)), self._values, 0)
        return lax.reshape(out, self.shape)

    def t(self) -> "SparseCOOTensor":
        if self.ndim != 2:
            raise op_error(ShapeError, "t", f"expects a 2-D sparse tensor, got shape {self.shape}")
        return SparseCOOTensor(S.flip(self._indices, 0), self._values, self.shape[::-1])

    def __mul__(self, other) -> "SparseCOOTensor":
        if isinstance(other, Tensor) and other.ndim:
            raise TypeError("a sparse tensor times a dense tensor is only supported for scalars")
        return SparseCOOTensor(self._indices, self._values * other, self.shape, self._coalesced)

    __rmul__ = __mul__

    def __add__(self, other):
        if isinstance(other, SparseCOOTensor):
            if other.shape != self.shape:
                raise op_error(ShapeError, "add", f"sparse shapes {self.shape} and {other.shape} differ")
            return SparseCOOTensor(S.cat([self._indices, other._indices], 1), S.cat([self._values, other._values]),
                                   self.shape)
        return self.to_dense() + other

    def __matmul__(self, other):
        return mm(self, other)

    def sum(self):
        return self._values.sum()

    def to_sparse(self) -> "SparseCOOTensor":
        return self

    def __repr__(self) -> str:
        return (f"sparse_coo_tensor(indices={self._indices!r},\n       values={self._values!r},\n"
                f"       size={self.shape}, nnz={self._nnz()}, layout=ember.sparse_coo)")


def sparse_coo_tensor(indices, values, size=None, *, dtype=None, requires_grad: bool = False,
                      is_coalesced: bool = False) -> SparseCOOTensor:
    """A COO tensor from (ndim, nnz) indices and (nnz,) values; size inferred as max index + 1."""
    idx = as_tensor(indices, dtype=dt.int64) if not isinstance(indices, Tensor) else indices.long()
    vals = values if isinstance(values, Tensor) else as_tensor(values, dtype=dtype)
    if dtype is not None and vals.dtype is not dt.as_dtype(dtype):
        vals = vals.to(dtype)
    if idx.ndim != 2 or vals.ndim != 1 or idx.shape[1] != vals.shape[0]:
        raise op_error(ShapeError, "sparse_coo_tensor", f"indices of shape {idx.shape} and values of shape "
                       f"{vals.shape} do not fit (need (ndim, nnz) and (nnz,))")
    ii = idx.numpy()
    if size is None:
        size = tuple(int(m) + 1 for m in ii.max(1)) if ii.size else (0,) * idx.shape[0]
    size = tuple(size)
    if len(size) != idx.shape[0]:
        raise op_error(ShapeError, "sparse_coo_tensor", f"size {size} has {len(size)} dims, indices have "
                       f"{idx.shape[0]}")
    if ii.size and ((ii < 0).any() or (ii >= np.array(size)[:, None]).any()):
        raise op_error(IndexError, "sparse_coo_tensor", f"an index is out of bounds for size {size}")
    if requires_grad:
        vals = vals.detach().requires_grad_()
    return SparseCOOTensor(idx, vals, size, is_coalesced)


def to_sparse(dense: Tensor) -> SparseCOOTensor:
    """The COO form of a dense tensor (its non-zeros, coalesced)."""
    a = dense.detach().numpy()
    if a.ndim == 0:
        raise op_error(ShapeError, "to_sparse", "needs a tensor with at least one dimension")
    nz = np.nonzero(a)
    flat = np.ravel_multi_index(nz, a.shape)
    vals = lax.gather(lax.reshape(dense, (a.size,)), from_numpy(flat.astype(np.int64)), 0)
    idx = np.stack(nz).astype(np.int64)
    return SparseCOOTensor(from_numpy(idx), vals, dense.shape, True)


def mm(sparse: SparseCOOTensor, dense: Tensor) -> Tensor:
    """sparse (M, N) @ dense (N, K) or (N,) -> dense, in O(nnz * K)."""
    if not isinstance(sparse, SparseCOOTensor):
        raise TypeError(f"ember.sparse.mm: the first operand must be sparse, got {type(sparse).__name__}")
    dense = as_tensor(dense)
    vec = dense.ndim == 1
    if sparse.ndim != 2 or dense.ndim not in (1, 2) or dense.shape[0] != sparse.shape[1]:
        raise op_error(ShapeError, "sparse.mm", f"cannot multiply sparse {sparse.shape} by dense {dense.shape}")
    d = lax.reshape(dense, (dense.shape[0], 1)) if vec else dense
    rows, cols = sparse._indices[0], sparse._indices[1]
    picked = lax.gather(d, cols, 0)                          # (nnz, K): the dense rows each entry reads
    contrib = picked * lax.reshape(sparse._values, (sparse._nnz(), 1))  # times the entry's value
    out = lax.scatter_add(lax.full((sparse.shape[0], d.shape[1]), 0, contrib.dtype), rows, contrib, 0)
    return lax.reshape(out, (sparse.shape[0],)) if vec else out


__all__ = ["SparseCOOTensor", "sparse_coo_tensor", "to_sparse", "mm"]
