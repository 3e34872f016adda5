"""`Module`: the base class of layers and models, with PyTorch's interface (book ch. 2, PI-2).

Assigning a `Parameter`, a `Module` or (for names registered with `register_buffer`) a tensor to
an attribute files it in one of three insertion-ordered dicts: `_parameters`, `_buffers`,
`_modules`. Everything else — parameter and module iteration, `state_dict` keys, `train`/`eval`,
dtype conversion, the nested repr — walks those dicts, so definition order is the order users
see everywhere.

`load_state_dict` copies values *into* the existing tensors (`copy_` under `no_grad`): the
Parameter and buffer objects, and their storages, stay the same, which optimizers and the tracer
rely on.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .._core import dtypes as dt
from .._core.state import TLS, bump_module_epoch, no_grad
from ..tensor import Tensor, as_tensor
from .parameter import Parameter

__all__ = ["Module", "RemovableHandle"]


class _IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self.missing_keys}, unexpected_keys={self.unexpected_keys})"

    __str__ = __repr__


class RemovableHandle:
    """Returned by hook registration: `remove()` (or leaving a `with` block) unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks_dict: dict, extra_dicts: tuple = ()):
        self.id = next(RemovableHandle._ids)
        self._dicts = (hooks_dict,) + tuple(extra_dicts)

    def remove(self) -> None:
        for d in self._dicts:
            d.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _addindent(s: str, n: int) -> str:
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    return lines[0] + "\n" + "\n".join(" " * n + line for line in lines[1:])


def _as_value(v) -> Tensor:
    """A state_dict value as a tensor (numpy arrays, e.g. from safetensors, are accepted)."""
    if isinstance(v, Tensor):
        return v
    return as_tensor(np.asarray(v))


class Module:
    """Base class of every layer and model: subclass it, assign layers in `__init__`, write `forward`."""

    training: bool
    _version = 1

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments {args} {kwargs}")
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_non_persistent_buffers_set"] = set()
        d["_modules"] = {}
        d["_forward_hooks"] = OrderedDict()
        d["_forward_hooks_with_kwargs"] = {}
        d["_forward_pre_hooks"] = OrderedDict()
        d["_forward_pre_hooks_with_kwargs"] = {}
        d["_backward_hooks"] = OrderedDict()
        d["_backward_pre_hooks"] = OrderedDict()

    # ------------------------------------------------------------------ forward and hooks
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        d = self.__dict__
        obs = TLS.observer
        if obs is not None:  # ember.jit is tracing: it guards on this module's mode and tensors
            obs.module_called(self)
        if d["_forward_pre_hooks"]:
            for hid, hook in list(d["_forward_pre_hooks"].items()):
                if hid in d["_forward_pre_hooks_with_kwargs"]:
                    res = hook(self, args, kwargs)
                    if res is not None:
                        if not (isinstance(res, tuple) and len(res) == 2):
                            raise RuntimeError("forward pre-hook with kwargs must return None or a tuple of "
                                               f"(new_args, new_kwargs), but got {res!r}")
                        args, kwargs = res
                else:
                    res = hook(self, args)
                    if res is not None:
                        args = res if isinstance(res, tuple) else (res,)
        bw = None
        if (d.get("_backward_hooks") or d.get("_backward_pre_hooks")) and TLS.grad_enabled:
            from ._backward_hooks import BackwardHook
            bw = BackwardHook(self, list(d.get("_backward_hooks", {}).values()),
                              list(d.get("_backward_pre_hooks", {}).values()))
            args = bw.setup_inputs(args)
        out = self.forward(*args, **kwargs)
        if d["_forward_hooks"]:
            for hid, hook in list(d["_forward_hooks"].items()):
                if hid in d["_forward_hooks_with_kwargs"]:
                    res = hook(self, args, kwargs, out)
                else:
                    res = hook(self, args, out)
                if res is not None:
                    out = res
        if bw is not None:
            out = bw.setup_outputs(out)
        return out

    def register_forward_pre_hook(self, hook: Callable, *, prepend: bool = False,
                                  with_kwargs: bool = False) -> RemovableHandle:
        """Call `hook(module, args)` before forward; a returned value replaces the args.

        With `with_kwargs=True` the hook is `hook(module, args, kwargs)` and may return (args, kwargs).
        """
        return self._add_hook("_forward_pre_hooks", hook, prepend, with_kwargs)

    def register_forward_hook(self, hook: Callable, *, prepend: bool = False,
                              with_kwargs: bool = False) -> RemovableHandle:
        """Call `hook(module, args, output)` after forward; a returned value replaces the output."""
        return self._add_hook("_forward_hooks", hook, prepend, with_kwargs)

    def register_full_backward_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Call `hook(module, grad_input, grad_output)` when the gradients w.r.t. the module's inputs are
        computed; it may return a tuple replacing grad_input.

        grad_input holds one entry per positional argument (None where it is not a tensor requiring
        grad), grad_output one per output; see ember/nn/_backward_hooks.py. The hook runs when the
        backward pass runs: under ember.jit, once, while the step is traced."""
        d = self.__dict__
        hooks = d.setdefault("_backward_hooks", OrderedDict())
        h = RemovableHandle(hooks)
        hooks[h.id] = hook
        if prepend:
            hooks.move_to_end(h.id, last=False)
        return h

    def register_full_backward_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Call `hook(module, grad_output)` when the gradients w.r.t. the module's outputs are computed,
        before the module's backward pass and its full backward hooks; it may return a tuple (one entry
        per output, None for zeros) replacing grad_output, which is then what the module's backward
        pass and the full backward hooks get. Under ember.jit it runs once, while the step is traced."""
        d = self.__dict__
        hooks = d.setdefault("_backward_pre_hooks", OrderedDict())
        h = RemovableHandle(hooks)
        hooks[h.id] = hook
        if prepend:
            hooks.move_to_end(h.id, last=False)
        return h

    def _add_hook(self, table: str, hook: Callable, prepend: bool, with_kwargs: bool) -> RemovableHandle:
        d = self.__dict__
        hooks, kw = d[table], d[table + "_with_kwargs"]
        h = RemovableHandle(hooks, (kw,))
        hooks[h.id] = hook
        if with_kwargs:
            kw[h.id] = True
        if prepend:
            hooks.move_to_end(h.id, last=False)
        return h

    # ------------------------------------------------------------------ registration
    def _check_init(self, what: str) -> dict:
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call")
        return d

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a None placeholder) under `name`."""
        bump_module_epoch()
        d = self._check_init("parameter")
        self._check_name(name, "parameter", d["_parameters"])
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            "(ember.nn.Parameter or None required)")
        d["_parameters"][name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        bump_module_epoch()
        """Add a buffer: state that is not trained (running statistics). Non-persistent buffers
        are left out of `state_dict`."""
        d = self._check_init("buffer")
        self._check_name(name, "buffer", d["_buffers"])
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            "(ember Tensor or None required)")
        d["_buffers"][name] = tensor
        if persistent:
            d["_non_persistent_buffers_set"].discard(name)
        else:
            d["_non_persistent_buffers_set"].add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        """Add a child module under `name` (dots are not allowed in the name)."""
        bump_module_epoch()
        d = self._check_init("module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module", d["_modules"])
        d["_modules"][name] = module

    register_module = add_module

    def _check_name(self, name, kind, own: dict) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got: {name}')
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if name not in own and hasattr(self, name):
            raise KeyError(f"attribute '{name}' already exists")

    def __setattr__(self, name: str, value: Any) -> None:
        bump_module_epoch()
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._remove_from(name, d, keep="_parameters")
            self.register_parameter(name, value)
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(ember.nn.Parameter or None expected)")
            params[name] = None
            return
        if isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._remove_from(name, d, keep="_modules")
            d["_modules"][name] = value
            return
        modules = d.get("_modules")
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                "(ember.nn.Module or None expected)")
            modules[name] = None
            return
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(ember Tensor or None expected)")
            buffers[name] = value
            return
        object.__setattr__(self, name, value)

    @staticmethod
    def _remove_from(name, d, keep):
        d.pop(name, None)
        for k in ("_parameters", "_buffers", "_modules"):
            if k != keep:
                d[k].pop(name, None)
        d["_non_persistent_buffers_set"].discard(name)

    def __getattr__(self, name: str):
        d = self.__dict__
        for k in ("_parameters", "_buffers", "_modules"):
            own = d.get(k)
            if own is not None and name in own:
                return own[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        bump_module_epoch()
        d = self.__dict__
        for k in ("_parameters", "_buffers", "_modules"):
            if name in d.get(k, ()):
                del d[k][name]
                d["_non_persistent_buffers_set"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def get_submodule(self, target: str) -> "Module":
        """The submodule at dotted path `target` ("" is this module)."""
        mod = self
        if target == "":
            return mod
        for item in target.split("."):
            if item not in mod._modules or mod._modules[item] is None:
                raise AttributeError(f"{mod._get_name()} has no attribute `{item}`")
            mod = mod._modules[item]
        return mod

    def set_submodule(self, target: str, module: "Module") -> None:
        """Replace the submodule at dotted path `target` (its parent must exist) with `module`."""
        if target == "":
            raise ValueError("set_submodule needs a non-empty target (the module itself cannot be replaced)")
        parent, _, leaf = target.rpartition(".")
        setattr(self.get_submodule(parent), leaf, module)

    def get_parameter(self, target: str) -> Parameter:
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._parameters:
            raise AttributeError(f"{mod._get_name()} has no parameter `{name}`")
        return mod._parameters[name]

    def get_buffer(self, target: str) -> Tensor:
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._buffers:
            raise AttributeError(f"{mod._get_name()} has no buffer `{name}`")
        return mod._buffers[name]

    # ------------------------------------------------------------------ iteration
    def _named_members(self, get_members, prefix: str = "", recurse: bool = True,
                       remove_duplicate: bool = True):
        memo = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse \
            else [(prefix, self)]
        for module_prefix, module in modules:
            for k, v in get_members(module):
                if v is None or (remove_duplicate and id(v) in memo):
                    continue
                if remove_duplicate:
                    memo.add(id(v))
                yield (module_prefix + ("." if module_prefix else "") + k), v

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs in definition order; a shared parameter appears once."""
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        memo = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in memo:
                memo.add(id(m))
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True):
        """(dotted name, module) for this module and every descendant, depth first."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from m.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True) -> "Module":
        """Set training mode here and in every descendant (Dropout and BatchNorm read it)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.__dict__["training"] = mode
        bump_module_epoch()
        for m in self.children():
            m.train(mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: `train(False)`."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters (to None by default, else to zeros in place)."""
        for p in self.parameters():
            if set_to_none:  # written without reading: a traced step does not depend on it
                p.grad = None
                continue
            if p.grad is None:
                continue
            else:
                g = p.grad
                if g.grad_fn is not None:
                    g.detach_()
                else:
                    g.requires_grad_(False)
                with no_grad():
                    g.zero_()

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        """Call `fn` on every descendant (children first) and then on this module."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ conversion
    def _apply(self, fn: Callable[[Tensor], Tensor]) -> "Module":
        """Replace every parameter's data (keeping the Parameter object) and every buffer by fn(t)."""
        for m in self.children():
            m._apply(fn)
        with no_grad():
            for p in self._parameters.values():
                if p is None:
                    continue
                new = fn(p)
                if new is not p:
                    p.data = new
                if p.grad is not None:
                    g = fn(p.grad)
                    if g is not p.grad:
                        p.grad = g
            for k, b in self._buffers.items():
                if b is not None:
                    self._buffers[k] = fn(b)
        return self

    def to(self, *args, **kwargs) -> "Module":
        """`to(dtype)`, `to(device)`, `to(tensor)`: floating parameters and buffers take the dtype."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {list(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                dtype = a.dtype
            elif isinstance(a, dt.DType):
                dtype = a
            elif isinstance(a, str) and a.split(":")[0] in ("cpu", "cuda"):
                device = a
            elif a is not None and not isinstance(a, bool):
                try:
                    dtype = dt.as_dtype(a)
                except Exception:  # noqa: BLE001
                    device = a
        if device is not None:
            from ..backend import as_device
            as_device(device)
        if dtype is None:
            return self
        d = dt.as_dtype(dtype)
        if d.kind != "f":
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={d.name}")
        return self._apply(lambda t: t.to(d) if t.dtype.kind == "f" else t)

    def float(self) -> "Module":
        return self._apply(lambda t: t.to(dt.float32) if t.dtype.kind == "f" else t)

    def double(self) -> "Module":
        return self._apply(lambda t: t.to(dt.float64) if t.dtype.kind == "f" else t)

    def half(self) -> "Module":
        return self._apply(lambda t: t.to(dt.float16) if t.dtype.kind == "f" else t)

    def bfloat16(self) -> "Module":
        return self._apply(lambda t: t.to(dt.bfloat16) if t.dtype.kind == "f" else t)

    def cpu(self) -> "Module":
        return self

    # ------------------------------------------------------------------ state dict
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()

    def state_dict(self, *, destination: dict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by dotted name (PyTorch's keys and order).

        Values share memory with the module's tensors (detached unless `keep_vars`)."""
        if destination is None:
            destination = OrderedDict()
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        return destination

    def _load_from_state_dict(self, state_dict: dict, prefix: str, missing_keys: list,
                              unexpected_keys: list, error_msgs: list) -> None:
        """Copy this module's own entries from `state_dict` (subclasses may adapt old layouts)."""
        local = [(k, v) for k, v in self._parameters.items() if v is not None]
        local += [(k, v) for k, v in self._buffers.items()
                  if v is not None and k not in self._non_persistent_buffers_set]
        for name, t in local:
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            try:
                src = _as_value(state_dict[key])
            except Exception as e:  # noqa: BLE001
                error_msgs.append(f'While copying the parameter named "{key}", an exception occurred: {e}.')
                continue
            if tuple(src.shape) != tuple(t.shape):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(src.shape)} from "
                                  f"checkpoint, the shape in current model is {tuple(t.shape)}.")
                continue
            try:
                with no_grad():
                    t.copy_(src)
            except Exception as e:  # noqa: BLE001
                error_msgs.append(f'While copying the parameter named "{key}", whose dimensions in the model are '
                                  f"{tuple(t.shape)} and whose dimensions in the checkpoint are {tuple(src.shape)}, "
                                  f"an exception occurred: {e}.")

    def load_state_dict(self, state_dict, strict: bool = True) -> _IncompatibleKeys:
        """Copy `state_dict`'s values into this module's parameters and buffers, in place.

        Values may be ember tensors or numpy arrays (e.g. from `safetensors.numpy.load_file`).
        Raises RuntimeError listing every size mismatch, and with `strict` every missing and
        unexpected key; returns (missing_keys, unexpected_keys)."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}.")
        state_dict = OrderedDict(state_dict)
        missing, unexpected, errors = [], [], []
        expected = set()
        for prefix, m in self.named_modules(remove_duplicate=False):
            p = prefix + "." if prefix else ""
            m._load_from_state_dict(state_dict, p, missing, unexpected, errors)
            expected.update(p + k for k, v in m._parameters.items() if v is not None)
            expected.update(p + k for k, v in m._buffers.items()
                            if v is not None and k not in m._non_persistent_buffers_set)
        unexpected.extend(k for k in state_dict if k not in expected)
        missing = list(dict.fromkeys(missing))
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {self._get_name()}:\n\t" + "\n\t".join(errors))
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ repr
    def _get_name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in its repr (override in layers)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({k}): " + _addindent(repr(m), 2) for k, m in self._modules.items()]
        lines = extra_lines + child_lines
        s = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                s += extra_lines[0]
            else:
                s += "\n  " + "\n  ".join(lines) + "\n"
        return s + ")"
