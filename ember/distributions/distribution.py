"""The Distribution base class: shapes, sampling plumbing and argument checks (PyTorch's)."""
from __future__ import annotations

import numpy as np

from .._core.state import default_dtype, no_grad
from ..tensor import Tensor, as_tensor


def param(x, dtype=None) -> Tensor:
    """A parameter as a float tensor; a Python number takes `dtype` (the default float if None)."""
    if isinstance(x, Tensor):
        return x if x.dtype.kind == "f" else x.float()
    return as_tensor(x, dtype=dtype or default_dtype())


def concrete(x: Tensor) -> np.ndarray | None:
    """x's values, or None while ember.jit traces (checks then happen only eagerly)."""
    return None if x._data.__class__.__name__ == "Var" else np.asarray(x.detach().numpy(), np.float64)


class Distribution:
    """A batch of distributions of shape `batch_shape` over events of shape `event_shape`."""

    has_rsample = False

    def __init__(self, batch_shape=(), event_shape=(), validate_args: bool | None = None):
        self.batch_shape, self.event_shape = tuple(batch_shape), tuple(event_shape)
        self._validate = True if validate_args is None else bool(validate_args)

    def _check(self, name: str, x: Tensor, ok, what: str) -> None:
        v = concrete(x) if self._validate else None
        if v is not None and not ok(v).all():
            raise ValueError(f"{type(self).__name__}: expected parameter {name} of shape {tuple(x.shape)} "
                             f"to be {what}, but found invalid values:\n{x}")

    def _check_value(self, value: Tensor, ok, support: str) -> None:
        v = concrete(value) if self._validate else None
        if v is not None and not ok(v).all():
            raise ValueError(f"{type(self).__name__}: expected value of shape {tuple(value.shape)} to be within "
                             f"the support ({support}), but found invalid values:\n{value}")

    def _extended(self, sample_shape) -> tuple:
        s = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        return s + self.batch_shape + self.event_shape

    def sample(self, sample_shape=()) -> Tensor:
        """A draw of shape sample_shape + batch_shape + event_shape, outside the autograd graph."""
        with no_grad():
            return self.rsample(sample_shape).detach()

    def rsample(self, sample_shape=()) -> Tensor:
        """A reparameterised draw (gradients flow to the parameters)."""
        raise TypeError(f"{type(self).__name__} has no reparameterised sampler (has_rsample is False); "
                        "use sample()")

    @property
    def stddev(self) -> Tensor:
        return self.variance.sqrt()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={self.batch_shape}, event_shape={self.event_shape})"
