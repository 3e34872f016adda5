"""Mixed precision: `autocast` (ember.api.precision) and `GradScaler`, dynamic loss scaling
(PyTorch's torch.amp.GradScaler).

float16 has 5 exponent bits: gradients below 2^-24 flush to zero. GradScaler multiplies the loss
by a large scale S before backward, so the gradients are S times larger and survive; before the
optimizer steps it divides them by S again (`unscale_`). If any gradient is inf or NaN the scale
was too large: that step is skipped and S halves (`backoff_factor`); after `growth_interval`
finite steps in a row S doubles (`growth_factor`). bfloat16 has float32's exponent range and
usually needs no scaler.

Everything is tensor arithmetic, so a jitted training step can hold the scaler: the scale and the
growth counter are tensors created up front, and a skipped step is written as
"parameters and optimizer state = where(found_inf, before, after)" instead of a Python branch on a
value the trace does not know. Eagerly, a step with non-finite gradients is not run at all.
"""
from __future__ import annotations

from .api import math as M
from .api.precision import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: F401
from .autograd import assign_
from .ops import lax
from .tensor import Tensor, tensor
from ._core import dtypes as dt
from ._core.state import no_grad

READY, UNSCALED, STEPPED = "ready", "unscaled", "stepped"


def _traced(t: Tensor) -> bool:
    return t._data.__class__.__name__ == "Var"


class GradScaler:
    """Dynamic loss scaling for float16 training: scale(loss).backward(); step(opt); update()."""

    def __init__(self, device: str = "cpu", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if growth_factor <= 1.0 or not 0.0 < backoff_factor < 1.0 or growth_interval < 1:
            raise ValueError("GradScaler: need growth_factor > 1, 0 < backoff_factor < 1, growth_interval >= 1")
        self.device, self._enabled = device, bool(enabled)
        self._growth_factor, self._backoff_factor = float(growth_factor), float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._scale = tensor(float(init_scale), dtype=dt.float32)  # state tensors exist before any trace
        self._growth_tracker = tensor(0, dtype=dt.int32)
        self._per_optimizer: dict = {}

    def is_enabled(self) -> bool:
        return self._enabled

    def scale(self, outputs):
        """outputs * scale (a tensor, or each tensor of a list/tuple)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return M.mul(outputs, self._scale)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: expected a tensor or a sequence of tensors, got {type(outputs).__name__}")

    def _state(self, optimizer) -> dict:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": READY, "found_inf": None})

    def unscale_(self, optimizer) -> None:
        """Divide this optimizer's gradients by the scale (once per step) and note any inf/NaN."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update()")
        if st["stage"] == STEPPED:
            raise RuntimeError("unscale_() is being called after step()")
        with no_grad():
            inv = lax.div(lax.full((), 1.0, dt.float64), lax.convert(self._scale, dt.float64))
            found = lax.full((), False, dt.bool_)
            for group in optimizer.param_groups:
                for p in group["params"]:
                    g = p.grad
                    if g is None:
                        continue
                    g = M.mul(g, lax.convert(inv, g.dtype))
                    p.grad = g
                    found = lax.bitwise_or(found, M.any(lax.bitwise_not(M.isfinite(g))))
        st["found_inf"], st["stage"] = found, UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step() unless a gradient is inf or NaN (then that step is skipped)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        st = self._state(optimizer)
        if st["stage"] == STEPPED:
            raise RuntimeError("step() has already been called since the last update()")
        if st["stage"] == READY:
            self.unscale_(optimizer)
        found = st["found_inf"]
        st["stage"] = STEPPED
        if not _traced(found):
            return None if bool(found) else optimizer.step(*args, **kwargs)
        # traced: step, then keep the old values wherever the gradients were not finite
        kept = [(t, lax.mul(t, 1)) for t in _state_tensors(optimizer)]
        ret = optimizer.step(*args, **kwargs)
        with no_grad():
            for t, before in kept:
                assign_(t, lax.select(found, before, t))
        return ret

    def update(self, new_scale=None) -> None:
        """Back off after a non-finite step, grow after growth_interval finite ones (or set new_scale)."""
        if not self._enabled:
            return
        with no_grad():
            if new_scale is not None:
                v = new_scale if isinstance(new_scale, Tensor) else lax.full((), float(new_scale), dt.float32)
                assign_(self._scale, lax.convert(v, dt.float32))
            else:
                founds = [s["found_inf"] for s in self._per_optimizer.values() if s["found_inf"] is not None]
                if not founds:
                    raise RuntimeError("update(): no inf checks were recorded; call step() first")
                found = founds[0]
                for f in founds[1:]:
                    found = lax.bitwise_or(found, f)
                one = lax.full((), 1, dt.int32)
                tracker = lax.select(found, lax.full((), 0, dt.int32), lax.add(self._growth_tracker, one))
                grow = lax.eq(tracker, self._growth_interval)
                scale = lax.select(found, lax.mul(self._scale, self._backoff_factor), self._scale)
                scale = lax.select(grow, lax.mul(scale, self._growth_factor), scale)
                assign_(self._scale, scale)
                assign_(self._growth_tracker, lax.select(grow, lax.full((), 0, dt.int32), tracker))
        self._per_optimizer.clear()

    def get_scale(self) -> float:
        """The current scale (a value read: call it outside a jitted function)."""
        return float(self._scale.item()) if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def state_dict(self) -> dict:
        """PyTorch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": int(self._growth_tracker.item())}

    def load_state_dict(self, state: dict) -> None:
        if not self._enabled:
            return
        if not state:
            raise RuntimeError("GradScaler.load_state_dict: the state dict is empty (saved while disabled?)")
        with no_grad():
            assign_(self._scale, lax.full((), float(state["scale"]), dt.float32))
            assign_(self._growth_tracker, lax.full((), int(state["_growth_tracker"]), dt.int32))
        self._growth_factor, self._backoff_factor = float(state["growth_factor"]), float(state["backoff_factor"])
        self._growth_interval = int(state["growth_interval"])


def _state_tensors(optimizer) -> list:
    """Every tensor an optimizer step writes: the parameters and their state."""
    out, seen = [], set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            for t in [p] + [v for v in optimizer.state.get(p, {}).values() if isinstance(v, Tensor)]:
                if id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
    return out


__all__ = ["GradScaler", "autocast", "is_autocast_enabled", "get_autocast_dtype"]
