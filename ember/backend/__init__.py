"""Layer 1: devices. A device is an allocator, a compiler, a launcher and a few library calls.

Only the CPU exists so far: its arrays are numpy arrays and its kernels numpy functions. A CUDA
device (CuPy, extra `ember[cuda]`) plugs in behind the same `Device` name later.
"""
from __future__ import annotations

from .._core.errors import EmberError


class Device:
    """A device name: type ('cpu', 'cuda') and index."""

    __slots__ = ("type", "index")

    def __init__(self, type: str = "cpu", index: int | None = None):
        if ":" in type:
            type, idx = type.split(":", 1)
            index = int(idx)
        self.type = type
        self.index = index

    def __eq__(self, other):
        other = as_device(other) if isinstance(other, str) else other
        return isinstance(other, Device) and (self.type, self.index or 0) == (other.type, other.index or 0)

    def __hash__(self):
        return hash((self.type, self.index or 0))

    def __repr__(self) -> str:
        return f"device(type='{self.type}'" + (f", index={self.index})" if self.index is not None else ")")

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


CPU = Device("cpu")


def as_device(d) -> Device:
    """Validate a device spec ('cpu', 'cuda:0', Device); only the CPU is available so far."""
    dev = d if isinstance(d, Device) else Device(str(d))
    if dev.type == "cpu":
        return CPU
    if dev.type == "cuda":
        raise EmberError("no CUDA device: ember's CUDA backend is not built yet (it will come as the "
                         "extra ember[cuda]); use device='cpu'")
    raise EmberError(f"unknown device {d!r}; ember knows 'cpu'")
