"""ONNX import: `ember.onnx.load(model) -> OnnxModule`, an `ember.nn.Module` that runs the graph eagerly;
export: `ember.onnx.export(model, example_inputs, path)` from ember.jit's traced IR (`export.py`).

Needs the optional `onnx` package (`pip install 'ember[onnx]'`); `import ember` never imports it.
Every ONNX op is one small handler in `ember/onnx/ops.py` (and the `ops_*.py` modules it imports),
written in ember ops so autograd (and later jit) see through it; the handlers are registered in `OPS`, keyed by
(domain, op_type) with the opset version each handler applies from. `checks.py` validates a model
at load and each node's sizes before it runs, so a bad model raises `OnnxError`. `host.py` folds
shape arithmetic (Shape -> Gather -> Concat -> Reshape...) at trace time, so imported models jit.
See `docs/onnx.md`.
"""
from __future__ import annotations

try:
    import onnx as _onnx  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("ember.onnx needs the 'onnx' package: pip install 'ember[onnx]'") from e

from .errors import OnnxError, UnsupportedOpError  # noqa: E402,F401
from .ops import OPS, register, lookup  # noqa: E402,F401
from .importer import OnnxModule, load, load_model_proto  # noqa: E402,F401
from .export import ExportError, export  # noqa: E402,F401

__all__ = ["load", "OnnxModule", "OnnxError", "UnsupportedOpError", "OPS", "register", "lookup",
           "load_model_proto", "export", "ExportError"]
