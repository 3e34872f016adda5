"""`ember.nn.utils`, as `torch.nn.utils`: packed sequences (`rnn`), gradient clipping, and
parameters flattened into one vector and back."""
from __future__ import annotations

from ... import api as E
from ..._core.state import no_grad
from ...optim.clip import clip_grad_norm_, clip_grad_value_  # noqa: F401
from . import rnn  # noqa: F401

__all__ = ["rnn", "clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def parameters_to_vector(parameters):
    """The parameters flattened and concatenated into one 1-d tensor (a copy)."""
    return E.cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec, parameters) -> None:
    """Copy consecutive slices of the 1-d `vec` into the parameters, in order."""
    if vec.ndim != 1:
        raise TypeError(f"expected a 1-d vector, got shape {tuple(vec.shape)}")
    parameters = list(parameters)
    total = sum(p.numel() for p in parameters)
    if vec.shape[0] != total:
        raise ValueError(f"the vector has {vec.shape[0]} elements, the parameters {total}")
    at = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(vec[at:at + n].reshape(p.shape))
            at += n

