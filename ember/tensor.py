"""Layer 3: the Tensor, its storage, and its constructors.

A Tensor is a view onto a Storage. numpy does the striding (the payload `_data` is an ndarray that
may be a view), ember keeps the aliasing: every Tensor that shares memory shares one Storage,
whose version counter is bumped by every in-place write. Autograd compares versions to catch a
saved tensor that changed; the tracer uses the same facts to turn mutation into data flow.

Constructors: `from_array` wraps an array as it is (no copy, no checks: ember's own code, on
arrays it made); `tensor`, `as_tensor`, `from_numpy` and `from_dlpack` build tensors from user
data. The eager interpreter that runs ops on tensors is `ember.eager`; the tape is `ember.autograd`
(this module imports neither: Tensor's autograd methods import it when they run).
"""
from __future__ import annotations

import warnings

import numpy as np

from ._core import dtypes as dt
from ._core.errors import AutogradError, DTypeError
from ._core.state import TLS, print_options
from .backend import CPU, Device, as_device
from . import ops as _ops  # noqa: F401  (registers the primitives)

# numpy reports overflow/invalid/divide through warnings; ember follows PyTorch and stays silent
# about IEEE special values, but only for warnings raised from ember's own kernels
warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"ember\.")

_BY_NP = dt._BY_NP


class Storage:
    """Identity and version counter of one buffer shared by a tensor and its views."""

    __slots__ = ("version", "__weakref__")

    def __init__(self):
        self.version = 0


class Tensor:
    """An n-dimensional array on a device, with autograd."""

    __slots__ = ("_data", "_dtype", "_storage", "_rg", "_node", "_grad", "_base", "_extra", "__weakref__")
    __array_priority__ = 1000  # numpy defers to Tensor's reflected operators

    def __init__(self, data=None, *, dtype=None, device=None, requires_grad: bool = False):
        t = tensor(data if data is not None else [], dtype=dtype, device=device, requires_grad=requires_grad)
        self._data, self._dtype, self._storage = t._data, t._dtype, None
        self._rg, self._node, self._grad, self._base, self._extra = t._rg, None, None, None, None

    @property
    def grad(self):
        """The gradient accumulated by `backward()` (None until then)."""
        w = TLS.observer
        if w is not None:
            w.grad_access(self, False)
        return self._grad

    @grad.setter
    def grad(self, value):
        w = TLS.observer
        if w is not None:
            w.grad_access(self, True)
        self._grad = value

    # ---- basic properties
    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self) -> dt.DType:
        return self._dtype

    @property
    def device(self) -> Device:
        """Where the data lives. It follows from the payload, so it is not stored per tensor: a
        numpy array (or a trace's value, which the CPU executors run) is on the CPU, the only
        device so far."""
        return CPU

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        """Number of dimensions."""
        return self._data.ndim

    def size(self, dim: int | None = None):
        """The shape, or the size of one dim."""
        return self._data.shape if dim is None else self._data.shape[dim]

    def numel(self) -> int:
        """Number of elements."""
        return self._data.size

    def element_size(self) -> int:
        return self._dtype.itemsize

    def __len__(self) -> int:
        if not self._data.ndim:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def requires_grad(self) -> bool:
        return self._rg

    @requires_grad.setter
    def requires_grad(self, value: bool):
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Mark a leaf tensor as needing gradients (floating and complex dtypes only)."""
        if self._node is not None and not requires_grad:
            raise AutogradError("you can only change requires_grad of leaf tensors; use detach()")
        if requires_grad and self._dtype.kind not in "fc":
            raise AutogradError(f"only floating-point and complex tensors can require gradients, "
                                f"got {self._dtype.name}")
        self._rg = bool(requires_grad)
        return self

    @property
    def grad_fn(self):
        return self._node

    @property
    def data(self) -> "Tensor":
        return self.detach()

    @data.setter
    def data(self, value: "Tensor"):
        self._data = value._data
        self._dtype = value._dtype
        self._storage = value._storage

    def is_contiguous(self) -> bool:
        """True when the elements are laid out in row-major order without gaps."""
        return self._data.flags.c_contiguous

    def stride(self, dim: int | None = None):
        """Strides in elements (like PyTorch)."""
        s = tuple(b // self._dtype.itemsize for b in self._data.strides)
        return s if dim is None else s[dim]

    def data_ptr(self) -> int:
        return self._data.__array_interface__["data"][0]

    def storage_version(self) -> int:
        """The version counter of the underlying storage (bumped by in-place writes)."""
        return self._storage.version if self._storage is not None else 0

    _version = property(storage_version)

    # ---- conversions
    def numpy(self, *, force: bool = False) -> np.ndarray:
        """The data as a numpy array, sharing memory (refused for tensors that require grad)."""
        if self._rg and not force:
            raise AutogradError("can't call numpy() on a tensor that requires grad; use detach().numpy()")
        if not isinstance(self._data, np.ndarray):  # a Var while tracing (ember.jit): raises
            return self._data.__array__()
        return self._data

    def __array__(self, dtype=None, copy=None):
        a = self._data
        return a if dtype is None else a.astype(dtype)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self._data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self._data.reshape(()).item() if self._dtype is not dt.bfloat16 else float(self._data.reshape(()))

    def tolist(self):
        """The data as (nested) Python lists."""
        if self._dtype is dt.bfloat16:
            return self._data.astype(np.float32).tolist()
        return self._data.tolist()

    def __dlpack__(self, *, stream=None, **kwargs):
        if self._dtype is dt.bfloat16:
            raise DTypeError("bfloat16 tensors cannot be exported through DLPack by numpy")
        # pass max_version/dl_device/copy on: without them consumers fall back to a legacy,
        # read-only capsule
        return self._data.__dlpack__(stream=stream, **kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    def to(self, *args, dtype=None, device=None, non_blocking: bool = False, copy: bool = False) -> "Tensor":
        """Convert dtype and/or device, as in PyTorch: `t.to(ember.float64)`, `t.to("cpu")`,
        `t.to(device, dtype)`, `t.to(other)` (other's device and dtype). Returns `self` when nothing
        changes, unless `copy`. A device that is not available raises `EmberError`."""
        for a in args:
            if isinstance(a, Tensor):
                dtype, device = a._dtype, a.device
            elif isinstance(a, (Device, int)) and not isinstance(a, bool) or isinstance(a, str) and not _is_dtype(a):
                device = a
            else:
                dtype = a
        if device is not None:
            as_device(device)  # the tensor is on the CPU, the only device so far: nothing to move
        out = self
        if dtype is not None and dt.as_dtype(dtype) is not self._dtype:
            from .api.math import convert
            out = convert(self, dt.as_dtype(dtype))
        elif copy:
            out = self.clone()
        return out

    def cpu(self) -> "Tensor":
        """This tensor on the CPU (itself: ember's tensors live there)."""
        return self

    def cuda(self, device=None) -> "Tensor":
        """This tensor on a CUDA device (raises: no CUDA backend is available)."""
        return self.to(as_device("cuda" if device is None else device))

    @property
    def is_cuda(self) -> bool:
        """Whether the tensor is on a CUDA device (never, so far)."""
        return False

    def detach(self) -> "Tensor":
        """A tensor sharing this one's storage but outside the autograd graph."""
        t = from_array(self._data, self._dtype)
        t._storage = self._ensure_storage()
        interp = TLS.interpreters[-1]
        if interp.level:  # tracing: the detached tensor reads what this one reads (a view stays one)
            interp.alias(t, self)
        return t

    def detach_(self) -> "Tensor":
        """Remove this tensor from the autograd graph in place."""
        self._node = None
        self._rg = False
        return self

    def _ensure_storage(self) -> Storage:
        s = self._storage
        if s is None:
            s = self._storage = Storage()
        return s

    # ---- autograd
    def backward(self, gradient=None, retain_graph: bool | None = None, create_graph: bool = False,
                 inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into the `.grad` of every leaf that requires grad."""
        from .autograd import backward
        backward([self], [gradient], retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)

    def register_hook(self, hook):
        """Call `hook(grad)` when this tensor's gradient is computed; a returned tensor replaces it."""
        from .autograd import register_tensor_hook
        return register_tensor_hook(self, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call `hook(tensor)` after a leaf's `.grad` has been fully accumulated in a backward pass."""
        from .autograd import register_post_accumulate_hook
        return register_post_accumulate_hook(self, hook)

    def retain_grad(self) -> None:
        """Keep `.grad` for a non-leaf tensor."""
        from .autograd import retain_grad
        retain_grad(self)

    def __format__(self, spec: str) -> str:
        """A 0-d tensor formats as its value (`f"{loss:.4f}"`), as in PyTorch."""
        if self._data.__class__ is np.ndarray and self._data.ndim == 0:
            return format(self.item(), spec)
        if spec and self._data.__class__ is not np.ndarray:
            self.item()  # raises: the value is not known while tracing
        return object.__format__(self, spec)

    def __repr__(self) -> str:
        if self._data.__class__ is not np.ndarray:  # a tracer's value (print inside ember.jit)
            return (f"tensor(<traced {self._dtype.name}{list(self.shape)}: its values are not known while "
                    "ember.jit traces; return it from the function to see them>)")
        po = print_options
        data = self._data if self._dtype is not dt.bfloat16 else self._data.astype(np.float32)
        sci = po["sci_mode"]
        fmt = {"float_kind": (lambda v: f"{v:.{po['precision']}e}")} if sci and data.dtype.kind == "f" else None
        body = np.array2string(data, separator=", ", prefix="tensor(", precision=po["precision"],
                               threshold=po["threshold"], edgeitems=po["edgeitems"], max_line_width=po["linewidth"],
                               suppress_small=sci is False, formatter=fmt)
        extra = ""
        if self._dtype is not dt.float32 and self._dtype is not dt.int64 and self._dtype is not dt.bool_:
            extra += f", dtype={self._dtype!r}"
        if self._node is not None:
            extra += f", grad_fn=<{self._node.name}>"
        elif self._rg:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self._data.size} elements is ambiguous")
        return bool(self._data)

    def __int__(self):
        return int(self.item())

    def __float__(self):
        return float(self.item())

    def __index__(self):
        if self._dtype.kind not in "iub":
            raise TypeError("only integer tensors can be used as an index")
        return int(self.item())

    def __hash__(self):
        return id(self)

    __deepcopy__ = None  # replaced below (needs clone)


_new = object.__new__


def _is_dtype(name: str) -> bool:
    try:
        dt.as_dtype(name)
    except TypeError:
        return False
    return True


def from_array(data, dtype: dt.DType | None = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding `data` itself: no copy, no conversion, outside any autograd graph.

    `data` is an ndarray whose numpy dtype is `dtype`'s (taken from it when `dtype` is None), or,
    while ember.jit traces, a tracer's value. This is the constructor for arrays ember made itself
    (kernel results, gradients, batches); user data goes through `tensor`, `as_tensor` or
    `from_numpy`, which also make it a constant of a trace in progress.
    """
    t = _new(Tensor)
    t._data = data
    t._dtype = dt.from_numpy_dtype(data.dtype) if dtype is None else dtype
    t._storage = None
    t._rg = False
    t._node = None
    t._grad = None
    t._base = None
    t._extra = None
    if requires_grad:
        t.requires_grad_(True)
    return t


def make_view(out: Tensor, src: Tensor, prim, params) -> None:
    """Record that `out`, the result of view primitive `prim` on `src`, shares `src`'s memory: one
    Storage, the base tensor, and the chain of view primitives that rebuilds `out` from the base."""
    base = src._base if src._base is not None else src
    out._storage = src._ensure_storage()
    out._base = base
    parent = src._extra.get("view_fn") if src._extra and src._base is not None else None
    step = (prim, params)
    out._extra = {"view_fn": (parent or ()) + (step,), "view_version": out._storage.version}


# ---------------------------------------------------------------- creation of tensors from data
def tensor(data, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Copy `data` (nested lists, numbers, numpy arrays or tensors) into a new tensor."""
    if device is not None:
        as_device(device)
    d = dt.as_dtype(dtype) if dtype is not None else None
    if isinstance(data, Tensor):
        arr = data._data.astype((d or data._dtype).np, copy=True)
    else:
        arr = _to_array(data, d)
    t = trace_constant(from_array(arr, _BY_NP[arr.dtype]))
    if requires_grad:
        t.requires_grad_(True)
    return t


def trace_constant(t: Tensor) -> Tensor:
    """`t`, just made from data: while ember.jit traces a function, it becomes a constant of the
    trace (not outside state the function reads). Returns `t`."""
    interp = TLS.interpreters[-1]
    if interp.level:
        t._data = interp.const(t._data, t._dtype)
    return t


def _to_array(data, d):
    if isinstance(data, np.ndarray):
        if d is None:
            d = _infer_np(data)
        return np.array(data, dtype=d.np, copy=True)
    arr = np.array(data)
    if arr.dtype == object:
        raise TypeError(f"cannot build a tensor from {type(data).__name__} (ragged or non-numeric data)")
    if d is None:
        d = _infer_np(arr, from_python=True)
    return np.array(arr, dtype=d.np)


def _infer_np(arr: np.ndarray, from_python: bool = False) -> dt.DType:
    k = arr.dtype.kind
    if from_python:  # Python data: bool, int64 or the default float (PyTorch)
        if k == "b":
            return dt.bool_
        if k in "iu":
            return dt.int64
        if k == "f":
            from ._core.state import default_dtype
            return default_dtype()
        if k == "c":
            from ._core.state import default_dtype
            return dt.weak_scalar_dtype("c", default_dtype())
    try:
        return _BY_NP[arr.dtype]
    except KeyError:
        if k == "f":
            return dt.float64
        raise TypeError(f"ember does not support numpy dtype {arr.dtype}") from None


def from_numpy(arr: np.ndarray) -> Tensor:
    """A tensor sharing memory with a numpy array (its dtype must be one ember supports)."""
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    return trace_constant(from_array(arr, dt.from_numpy_dtype(arr.dtype)))


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like `tensor`, but shares memory with a tensor or numpy array when no conversion is needed."""
    if device is not None:
        as_device(device)
    if isinstance(data, Tensor):
        return data if dtype is None else data.to(dtype)
    if isinstance(data, np.ndarray) and (dtype is None or dt.as_dtype(dtype).np == data.dtype) \
            and data.dtype in _BY_NP:
        return from_numpy(data)
    return tensor(data, dtype=dtype, device=device)


def from_dlpack(obj) -> Tensor:
    """Import a tensor from any DLPack producer (zero-copy)."""
    if isinstance(obj, Tensor):
        return obj
    return from_numpy(np.from_dlpack(obj))
