"""The three kinds of served model, each one loaded version that runs a whole batch at a time.

- platform "ember": `model.py` exposing `build() -> ember.nn.Module` (in the version directory, or
  in the model's directory for every version), whose state dict is loaded from the version's
  `model.safetensors` (written by `ember.save(model.state_dict(), ...)` or `save_safetensors`).
- platform "onnx": the version's `model.onnx`, imported with `ember.onnx.load`.
- platform "python": `model.py` exposing `execute(inputs: dict[str, np.ndarray]) -> dict[str,
  np.ndarray]`, and optionally `initialize(args: dict)` and `finalize()`: preprocessing (decoding
  images from BYTES, tokenizing) or anything else numpy can do. It runs as written, not jitted.

The first two run under `ember.jit` with the batch padded up to a bucket (`ModelConfig.buckets`),
so every batch size replays one of a few compiled graphs; outputs are sliced back. A config with
`sharding` wraps any of them in `sharded.ShardedModel`. The model repository is trusted code:
`model.py` is imported and run as is (as Triton's python backend does).
"""
from __future__ import annotations

import importlib.util
import itertools
import logging
import os

import numpy as np

from .config import ModelConfig, TensorSpec
from .errors import ConfigError, ModelError
from .protocol import datatype_of

log = logging.getLogger("ember.serve")
_module_ids = itertools.count()

_ONNX_TYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 5: "INT16", 6: "INT32", 7: "INT64", 9: "BOOL",
               10: "FP16", 11: "FP64", 16: "BF16"}


def import_file(path: str, what: str):
    """Import a Python file as a fresh module (not kept in sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"ember_serve_model_{next(_module_ids)}", path)
    if spec is None or spec.loader is None:
        raise ModelError(f"{what}: cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - any error in user code fails this model's load only
        raise ModelError(f"{what}: importing {path} raised {type(e).__name__}: {e}") from e
    return mod


def check_outputs(config: ModelConfig, outs, batch: int, what: str) -> dict:
    """The declared outputs of a model's result, each checked for datatype and shape."""
    if not isinstance(outs, dict):
        raise ModelError(f"{what} returned {type(outs).__name__}, not a dict of outputs")
    result = {}
    for spec in config.outputs:
        if spec.name not in outs:
            raise ModelError(f"{what} returned no output {spec.name!r} (it returned {sorted(outs)[:8]})")
        a = outs[spec.name]
        if not isinstance(a, np.ndarray):
            a = np.asarray(a.numpy() if hasattr(a, "numpy") else a)
        if spec.datatype == "BYTES" and a.dtype != object:
            a = a.astype(object)
        got = datatype_of(a)
        if got != spec.datatype:
            raise ModelError(f"{what}: output {spec.name!r} is {got or a.dtype} but config.json declares "
                             f"{spec.datatype}")
        want = ([batch] if config.max_batch_size > 0 else []) + list(spec.dims)
        if a.ndim != len(want) or any(w not in (-1, s) for w, s in zip(want, a.shape)):
            raise ModelError(f"{what}: output {spec.name!r} has shape {list(a.shape)}, config.json says {want} "
                             f"(-1: any size)")
        result[spec.name] = a
    return result


def _pad(a: np.ndarray, target: int) -> np.ndarray:
    # padding repeats the last item, not zeros: a padded row then never divides by zero or takes log 0
    n = a.shape[0]
    if n == target:
        return a
    return np.concatenate([a, np.repeat(a[-1:], target - n, axis=0)])


class ServedModel:
    """One loaded model version: `run` takes the inputs of a whole batch, concatenated along dim 0."""

    kind = "?"

    def __init__(self, config: ModelConfig, version: int):
        self.config = config
        self.version = version
        self.what = f"model {config.name!r} version {version}"

    def run(self, inputs: dict, batch: int) -> dict:
        raise NotImplementedError

    def warmup(self) -> None:
        """Run every batch bucket once (compiles a jitted model's graphs before traffic comes)."""

    def close(self) -> None:
        """Release what the model holds (a python model's `finalize`)."""


class JitModel(ServedModel):
    """An ember Module (from model.py or an ONNX import) called through `ember.jit`."""

    def __init__(self, config: ModelConfig, version: int, module, by_name: bool):
        super().__init__(config, version)
        import ember
        module.eval()
        self.module = module
        self.by_name = by_name  # an OnnxModule takes one dict of inputs
        self.jitted = ember.jit(module)
        self.kind = "onnx" if by_name else "ember"

    def _call(self, fn, tensors: list):
        if self.by_name:
            return fn({s.name: t for s, t in zip(self.config.inputs, tensors)})
        return fn(*tensors)

    def run(self, inputs: dict, batch: int) -> dict:
        import ember
        from .._core.errors import ConcretizationError
        from ..jit import TraceError
        target = self.config.padded_size(batch) if self.config.max_batch_size > 0 else batch
        arrays = [inputs[s.name] for s in self.config.inputs]
        if self.config.max_batch_size > 0:
            arrays = [_pad(a, target) for a in arrays]
        with ember.no_grad():
            tensors = [ember.from_numpy(np.ascontiguousarray(a)) for a in arrays]
            try:
                out = self._call(self.jitted if self.jitted is not None else self.module, tensors)
            except (ConcretizationError, TraceError) as e:  # value-dependent Python control flow
                log.warning("%s does not trace (%s); it runs eagerly from now on", self.what, e)
                self.jitted = None
                out = self._call(self.module, tensors)
        if isinstance(out, dict):
            named = dict(out)
        elif isinstance(out, (tuple, list)):
            if len(out) != len(self.config.outputs):
                raise ModelError(f"{self.what} returned {len(out)} outputs, config.json declares "
                                 f"{len(self.config.outputs)}")
            named = {s.name: o for s, o in zip(self.config.outputs, out)}
        else:
            if len(self.config.outputs) != 1:
                raise ModelError(f"{self.what} returned one tensor, config.json declares "
                                 f"{len(self.config.outputs)} outputs")
            named = {self.config.outputs[0].name: out}
        # copies: a jitted graph's outputs may live in buffers its next replay writes
        named = {k: np.array(v.numpy() if hasattr(v, "numpy") else v, copy=True) for k, v in named.items()}
        res = check_outputs(self.config, named, target, self.what)
        if self.config.max_batch_size > 0 and target != batch:
            res = {k: v[:batch] for k, v in res.items()}
        return res

    def warmup(self) -> None:
        specs = self.config.inputs
        if not self.config.warmup or any(-1 in s.dims or s.datatype == "BYTES" for s in specs):
            return
        from .protocol import numpy_dtype
        sizes = self.config.buckets() or [None]
        for b in sizes:
            lead = [] if b is None else [b]
            zeros = {s.name: np.zeros(lead + list(s.dims), numpy_dtype(s.datatype)) for s in specs}
            try:
                self.run(zeros, b or 0)
            except ModelError as e:
                raise ModelError(f"warm-up at batch size {b}: {e}") from None
            except Exception as e:  # noqa: BLE001 - a model that cannot run fails its load, not the server
                raise ModelError(f"{self.what}: warm-up at batch size {b} raised {type(e).__name__}: {e}") from e


class PythonModel(ServedModel):
    """A model.py whose `execute(inputs) -> outputs` works on numpy arrays."""

    kind = "python"

    def __init__(self, config: ModelConfig, version: int, module):
        super().__init__(config, version)
        if not callable(getattr(module, "execute", None)):
            raise ModelError(f"{self.what}: model.py has no execute(inputs: dict) -> dict function")
        self.module = module

    def run(self, inputs: dict, batch: int) -> dict:
        return check_outputs(self.config, self.module.execute(dict(inputs)), batch, self.what)

    def close(self) -> None:
        fin = getattr(self.module, "finalize", None)
        if callable(fin):
            try:
                fin()
            except Exception as e:  # noqa: BLE001 - unloading goes on
                log.warning("%s: finalize() raised %s: %s", self.what, type(e).__name__, e)


def _model_py(model_dir: str, version_dir: str) -> str:
    for d in (version_dir, model_dir):
        p = os.path.join(d, "model.py")
        if os.path.isfile(p):
            return p
    raise ModelError(f"no model.py in {version_dir} or {model_dir}")


def _load_ember(config: ModelConfig, model_dir: str, version: int, vdir: str) -> ServedModel:
    what = f"model {config.name!r} version {version}"
    mod = import_file(_model_py(model_dir, vdir), what)
    build = getattr(mod, "build", None)
    if not callable(build):
        raise ModelError(f"{what}: model.py has no build() -> ember.nn.Module function")
    from ..nn.module import Module
    try:
        module = build()
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{what}: build() raised {type(e).__name__}: {e}") from e
    if not isinstance(module, Module):
        raise ModelError(f"{what}: build() returned {type(module).__name__}, not an ember.nn.Module")
    weights = os.path.join(vdir, "model.safetensors")
    if not os.path.isfile(weights):
        raise ModelError(f"{what}: no model.safetensors in {vdir}")
    from .. import serialization
    try:
        state = serialization.load(weights)
        if not isinstance(state, dict):
            raise ModelError(f"{what}: model.safetensors holds a {type(state).__name__}, not a state dict")
        module.load_state_dict(state)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - CheckpointError, key or size mismatches
        raise ModelError(f"{what}: loading model.safetensors: {type(e).__name__}: {e}") from e
    return JitModel(config, version, module, by_name=False)


def onnx_io(graph, max_batch_size: int) -> tuple:
    """(inputs, outputs) TensorSpecs read from an ONNX graph (the batch dim dropped when batching)."""
    inits = {i.name for i in graph.initializer}

    def spec(v):
        tt = v.type.tensor_type
        if tt.elem_type not in _ONNX_TYPES:
            raise ConfigError(f"ONNX value {v.name!r} has element type {tt.elem_type}, which ember does not serve")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if max_batch_size > 0:
            if not dims:
                raise ConfigError(f"ONNX value {v.name!r} is a scalar but max_batch_size > 0 needs a batch dim")
            dims = dims[1:]
        return TensorSpec(v.name, _ONNX_TYPES[tt.elem_type], tuple(dims))
    return (tuple(spec(v) for v in graph.input if v.name not in inits), tuple(spec(v) for v in graph.output))


def _load_onnx(config: ModelConfig, version: int, vdir: str) -> tuple:
    what = f"model {config.name!r} version {version}"
    path = os.path.join(vdir, "model.onnx")
    if not os.path.isfile(path):
        raise ModelError(f"{what}: no model.onnx in {vdir}")
    try:
        from .. import onnx as eonnx
    except ImportError as e:
        raise ModelError(f"{what}: {e}") from None
    try:
        module = eonnx.load(path)
    except Exception as e:  # noqa: BLE001 - OnnxError, UnsupportedOpError
        raise ModelError(f"{what}: {type(e).__name__}: {e}") from e
    ins, outs = onnx_io(module.model.graph, config.max_batch_size)
    if config.inputs is None:
        config = config.with_io(ins, config.outputs or outs)
    if config.outputs is None:
        config = config.with_io(config.inputs, outs)
    for kind, declared, graph in (("inputs", config.inputs, ins), ("outputs", config.outputs, outs)):
        if kind == "inputs" and {s.name for s in declared} != {s.name for s in graph}:
            raise ConfigError(f"{what}: config.json inputs {[s.name for s in declared]} are not the ONNX "
                              f"graph's {[s.name for s in graph]}")
        if kind == "outputs" and not {s.name for s in declared} <= {s.name for s in graph}:
            raise ConfigError(f"{what}: config.json outputs {[s.name for s in declared]} are not all in the "
                              f"ONNX graph's {[s.name for s in graph]}")
    return JitModel(config, version, module, by_name=True), config


def _load_python(config: ModelConfig, model_dir: str, version: int, vdir: str) -> ServedModel:
    what = f"model {config.name!r} version {version}"
    mod = import_file(_model_py(model_dir, vdir), what)
    model = PythonModel(config, version, mod)
    init = getattr(mod, "initialize", None)
    if callable(init):
        try:
            init({"model_name": config.name, "model_version": str(version), "version_dir": vdir,
                  "model_config": config.to_json()})
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{what}: initialize() raised {type(e).__name__}: {e}") from e
    return model


def load_version(config: ModelConfig, model_dir: str, version: int) -> tuple:
    """(the loaded, warmed-up model, its config with an ONNX graph's inputs/outputs filled in)."""
    vdir = os.path.join(model_dir, str(version))
    if config.platform == "onnx":
        model, config = _load_onnx(config, version, vdir)
    elif config.platform == "ember":
        model = _load_ember(config, model_dir, version, vdir)
    else:
        model = _load_python(config, model_dir, version, vdir)
    if config.platform != "python" and any(s.datatype == "BYTES" for s in config.inputs + config.outputs):
        raise ConfigError(f"model {config.name!r}: BYTES tensors are for python models only")
    if config.sharding is not None:
        from .sharded import ShardedModel
        model = ShardedModel(model)
        config = model.config
    try:
        model.warmup()
    except BaseException:
        model.close()  # a sharded model's shard threads
        raise
    return model, config
