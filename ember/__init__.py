"""ember: a machine learning system one person can read end to end.

Layers (lower never imports higher): `_core` (dtypes, errors, global state) -> `backend` (devices)
-> `ops` (the primitive registry and `bind`) -> `tensor`/`autograd`/`eager`/`api` (eager tensors and
the PyTorch-style API) -> `nn`. See docs/architecture.md.
"""
from ._core.dtypes import (DType, bfloat16, bool_, complex64, complex128, finfo, float16,  # noqa: F401
                           float32, float64, iinfo, int8, int16, int32, int64, promote_types, uint8)
from ._core.errors import AutogradError, DTypeError, EmberError, ShapeError  # noqa: F401
from ._core.state import (default_dtype as get_default_dtype, enable_grad, is_grad_enabled,  # noqa: F401
                          get_num_threads, inference_mode, is_inference_mode_enabled, jit_backend, no_grad,
                          num_threads, set_default_dtype, set_grad_enabled, set_jit_backend, set_num_threads,
                          set_printoptions)
from .backend import Device as device  # noqa: F401
from .tensor import Tensor, as_tensor, from_dlpack, from_numpy, tensor  # noqa: F401
from . import eager as _eager  # noqa: F401  (installs the eager interpreter)
from . import autograd  # noqa: F401
from .autograd import Function, grad_fn as grad, value_and_grad  # noqa: F401
from .api import *  # noqa: F401,F403
from .api.precision import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: F401
from .api import creation as _creation, math as _math, shape as _shape  # noqa: F401
from .ops import register as register_primitive, Primitive, REGISTRY as primitives  # noqa: F401

bool = bool_  # noqa: A001  (ember.bool as in torch.bool)
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
short = int16
cfloat = complex64
cdouble = complex128

__version__ = "0.1.0"

_LAZY_ATTRS = {"save": "serialization", "load": "serialization", "make_ir": "jit", "inspect": "jit",
               "sparse_coo_tensor": "sparse"}
_LAZY_MODULES = ("nn", "amp", "distributions", "nested", "sparse", "serialization", "checkpoint", "metrics", "data", "datasets", "optim", "jit", "ir", "testing",
                 "onnx", "distributed", "serve")


def __getattr__(name):  # imported on first use, so that `import ember` stays cheap
    import importlib
    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module("." + _LAZY_ATTRS[name], __name__), name)
    if name in _LAZY_MODULES:
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
