"""Ragged batches (CG-2; PyTorch's torch.nested, jagged layout): tensors whose first dimension
differs (sequences of lengths [2, 5, 3]) kept as one `values` tensor, concatenated along that
dimension, and `offsets` (batch + 1,) marking where each one starts. Nothing is padded until
`to_padded_tensor` asks for it, and `unbind` returns the original tensors (views of `values`)."""
from __future__ import annotations

import numpy as np

from ._core import dtypes as dt
from ._core.errors import ShapeError, op_error
from .api import shape as S
from .ops import lax
from .tensor import Tensor, as_tensor, from_numpy


class NestedTensor:
    """A batch of tensors that agree in all but their first dimension."""

    is_nested = True

    def __init__(self, values: Tensor, offsets: np.ndarray):
        self._values, self._offsets = values, np.asarray(offsets, np.int64)

    def values(self) -> Tensor:
        """All components concatenated along their ragged (first) dimension."""
        return self._values

    def offsets(self) -> Tensor:
        """(batch + 1,) int64: component i is values[offsets[i]:offsets[i + 1]]."""
        return from_numpy(self._offsets.copy())

    def lengths(self) -> Tensor:
        return from_numpy(np.diff(self._offsets))

    def size(self, dim: int | None = None):
        """(batch, None, *trailing): the ragged dimension has no single size (None)."""
        shape = (len(self._offsets) - 1, None) + tuple(self._values.shape[1:])
        return shape if dim is None else shape[dim]

    shape = property(size)

    @property
    def dtype(self) -> dt.DType:
        return self._values.dtype

    def dim(self) -> int:
        return self._values.ndim + 1

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def unbind(self, dim: int = 0) -> tuple:
        """The components, as views of `values`."""
        if dim != 0:
            raise op_error(ShapeError, "unbind", "a nested tensor unbinds along its batch dimension (0) only")
        return tuple(S.narrow(self._values, 0, int(a), int(b - a)) for a, b in zip(self._offsets[:-1], self._offsets[1:]))

    def __getitem__(self, i: int) -> Tensor:
        return self.unbind()[i]

    def to_padded_tensor(self, padding: float, output_size=None) -> Tensor:
        """(batch, max length, *trailing) with `padding` after each component."""
        longest = int(np.diff(self._offsets).max()) if len(self) else 0
        n = longest if output_size is None else int(output_size[1])
        if n < longest:
            raise op_error(ShapeError, "to_padded_tensor", f"output length {n} is shorter than the longest "
                           f"component ({longest})")
        rest = tuple(self._values.shape[1:])
        rows = [lax.pad(t, padding, ((0, n - t.shape[0], 0),) + ((0, 0, 0),) * len(rest)) for t in self.unbind()]
        return S.stack(rows) if rows else lax.full((0, n) + rest, padding, self.dtype)

    def __repr__(self) -> str:
        return f"nested_tensor(lengths={np.diff(self._offsets).tolist()}, values={self._values!r})"


def nested_tensor(tensor_list, *, dtype=None, requires_grad: bool = False) -> NestedTensor:
    """A ragged batch from a list of tensors (copied) that agree in all but their first dimension."""
    ts = [as_tensor(t, dtype=dtype) for t in tensor_list]
    out = as_nested_tensor([t.detach().clone() for t in ts])
    if requires_grad:
        out._values.requires_grad_()
    return out


def as_nested_tensor(tensor_list, dtype=None) -> NestedTensor:
    """A ragged batch from a list of tensors, keeping their autograd history."""
    ts = [as_tensor(t, dtype=dtype) for t in tensor_list]
    if not ts:
        raise op_error(ValueError, "nested_tensor", "needs at least one tensor")
    rest = [tuple(t.shape[1:]) for t in ts]
    if any(t.ndim == 0 for t in ts) or len(set(rest)) != 1:
        raise op_error(ShapeError, "nested_tensor", "the tensors must agree in all but their first dimension, got "
                       + ", ".join(str(tuple(t.shape)) for t in ts))
    offsets = np.concatenate([[0], np.cumsum([t.shape[0] for t in ts])])
    return NestedTensor(S.cat(ts, 0), offsets)


def nested_tensor_from_jagged(values: Tensor, offsets=None, lengths=None) -> NestedTensor:
    """A ragged batch over `values` split at `offsets` (or by `lengths`), without a copy."""
    if (offsets is None) == (lengths is None):
        raise op_error(ValueError, "nested_tensor_from_jagged", "give exactly one of offsets or lengths")
    off = np.asarray(offsets.numpy() if isinstance(offsets, Tensor) else offsets, np.int64) if offsets is not None \
        else np.concatenate([[0], np.cumsum(np.asarray(lengths.numpy() if isinstance(lengths, Tensor) else lengths))])
    if off.ndim != 1 or off[0] != 0 or (np.diff(off) < 0).any() or off[-1] != values.shape[0]:
        raise op_error(ShapeError, "nested_tensor_from_jagged", f"offsets {off.tolist()} must rise from 0 to "
                       f"the length of values ({values.shape[0]})")
    return NestedTensor(values, off)


def from_padded(padded: Tensor, lengths) -> NestedTensor:
    """The ragged batch inside a padded (batch, max length, ...) tensor, given each row's length."""
    ls = [int(n) for n in (lengths.numpy() if isinstance(lengths, Tensor) else lengths)]
    if len(ls) != padded.shape[0] or any(n < 0 or n > padded.shape[1] for n in ls):
        raise op_error(ShapeError, "from_padded", f"lengths {ls} do not fit a padded batch of shape {padded.shape}")
    return as_nested_tensor([S.narrow(padded[i], 0, 0, n) for i, n in enumerate(ls)])


__all__ = ["NestedTensor", "nested_tensor", "as_nested_tensor", "nested_tensor_from_jagged", "from_padded"]
