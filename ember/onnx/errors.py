"""Errors of the ONNX importer."""
from __future__ import annotations

from .._core.errors import EmberError


class OnnxError(EmberError):
    """A model that cannot be read or run: a truncated or corrupted file, a malformed graph."""


class UnsupportedOpError(OnnxError, NotImplementedError):
    """An ONNX op (or an attribute value of it) that ember does not implement."""

    def __init__(self, op_type: str, domain: str = "", opset: int | None = None, detail: str = ""):
        self.op_type, self.domain, self.opset = op_type, domain or "ai.onnx", opset
        msg = f"ONNX op {op_type!r} (domain {self.domain!r}, opset {opset}) is not supported by ember"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
