"""`Parameter`: a Tensor that a Module registers as one of its trainable weights (PI-2).

A Parameter is an ordinary leaf tensor (every op accepts it, results are plain Tensors) whose
type tells `Module.__setattr__` to file it under `_parameters`. It shares the storage of the data
it was built from, as in PyTorch, and requires grad unless told otherwise.
"""
from __future__ import annotations

from ..tensor import Tensor, tensor as _tensor

__all__ = ["Parameter", "is_parameter"]


class Parameter(Tensor):
    """A module weight: `Parameter(data, requires_grad=True)` shares `data`'s memory."""

    __slots__ = ()

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            data = _tensor([])
        elif not isinstance(data, Tensor):
            data = _tensor(data)
        if data._node is not None:
            data = data.detach()
        self._data = data._data
        self._dtype = data._dtype
        self._storage = data._ensure_storage()
        self._rg = False
        self._node = None
        self._grad = None
        self._base = None
        self._extra = None
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(self.detach().clone(), requires_grad=self._rg)
        if self.grad is not None:
            p.grad = self.grad.detach().clone()
        memo[id(self)] = p
        return p


def is_parameter(x) -> bool:
    return isinstance(x, Parameter)
