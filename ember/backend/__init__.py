"""Layer 1: devices. A device is an allocator, a compiler, a launcher and a few library calls.

The contract a target implements is `contract.py` (`Target`, `Program`); lowerings are
registered per primitive and target in `lowering.py` (`register_lowering`, re-exported here).
The targets are `ember.backend.cpu` (C) and `ember.backend.sim` (numpy), imported only when a
step is compiled. Only the CPU exists as a device so far: its arrays are numpy arrays.

`Device` (`ember.device`) names an *available* device: ``ember.device("cpu")`` is `CPU`, and a
device that is not available (``"cuda"``, ``"cuda:1"``, an unknown type) raises `EmberError`
where it is named, so ``zeros(2, device="cuda")`` or ``t.to("cuda")`` fail before any work.
"""
from __future__ import annotations

from .._core.errors import EmberError
from .contract import Program, Target, Unsupported  # noqa: F401
from .lowering import get_lowering, mark_unlowered, register_lowering, unlowered, unregister_lowering  # noqa: F401

_NO_CUDA = ("no CUDA device is available: this ember runs on the CPU only (the CUDA target, to come "
            "as the extra ember[cuda], is not part of this version); use device='cpu'")


class Device:
    """An available device: ``Device("cpu")``, ``Device("cpu", 0)`` or a `Device`; type and index.

    Naming a device that is not available raises `EmberError` (only the CPU exists so far)."""

    __slots__ = ("type", "index")

    def __new__(cls, type="cpu", index: int | None = None):
        if isinstance(type, Device) and index is None:
            return type
        return as_device(type if index is None else f"{type}:{index}")

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = as_device(other)
            except EmberError:
                return False
        return isinstance(other, Device) and (self.type, self.index or 0) == (other.type, other.index or 0)

    def __hash__(self):
        return hash((self.type, self.index or 0))

    def __repr__(self) -> str:
        return f"device(type='{self.type}'" + (f", index={self.index})" if self.index is not None else ")")

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __reduce__(self):
        return (Device, (self.type, self.index))


def _make(type: str, index: int | None) -> Device:
    d = object.__new__(Device)
    d.type, d.index = type, index
    return d


CPU = _make("cpu", None)


def as_device(d) -> Device:
    """The available Device that `d` names ('cpu', 'cpu:0', 'cuda:1', an int for a CUDA index, a
    Device); raises EmberError for a device that is not available."""
    if isinstance(d, Device):
        return d
    if isinstance(d, int) and not isinstance(d, bool):
        kind, index = "cuda", d
    elif isinstance(d, str):
        kind, _, idx = d.strip().partition(":")
        try:
            index = int(idx) if idx else None
        except ValueError:
            raise EmberError(f"bad device {d!r}: expected 'type' or 'type:index', e.g. 'cpu'") from None
    else:
        raise EmberError(f"expected a device ('cpu', ember.device), got {type(d).__name__}")
    if kind == "cpu" and index in (None, 0):
        return CPU
    if kind == "cuda":
        raise EmberError(_NO_CUDA)
    raise EmberError(f"unknown device {d!r}; ember knows 'cpu'" if kind != "cpu" else
                     f"no device {d!r}: the CPU is device 'cpu' (index 0)")
