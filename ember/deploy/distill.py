"""Knowledge distillation (MD-14): Hinton et al.'s KD loss, FitNet hints and attention transfer.

    crit = KDLoss(temperature=4.0, alpha=0.9)
    dist = Distiller(student, teacher, crit, hints=[("layer2", "layer3")], attention=[("layer2", "layer3")],
                     example_input=x[:1])
    opt = ember.optim.SGD(dist.parameters(), lr=0.1)   # the student and the hint regressors
    loss = dist(x, y); loss.backward(); opt.step()      # eagerly or inside ember.jit

The teacher is frozen: put in eval mode, its parameters set not to require grad (and any gradient
left from training it dropped), run under no_grad
and kept out of the Distiller's children (so `dist.train()`, `dist.parameters()` and `state_dict`
leave it alone). Intermediate features come from forward hooks on the named submodules.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

from .._core.errors import EmberError, ShapeError
from .._core.state import no_grad
from ..nn import functional as F
from ..nn.conv import Conv2d
from ..nn.containers import ModuleList
from ..nn.linear import Linear
from ..nn.module import Module
from ..tensor import Tensor

__all__ = ["DistillationError", "KDLoss", "kd_loss", "attention_map", "attention_loss", "Hint", "Distiller"]


class DistillationError(EmberError, ValueError):
    """A distillation setup that cannot work (bad temperature or alpha, unknown layer)."""


def _check_logits(student: Tensor, teacher: Tensor) -> None:
    if tuple(student.shape) != tuple(teacher.shape):
        raise ShapeError(f"KD loss: student logits of shape {tuple(student.shape)} and teacher logits of shape "
                         f"{tuple(teacher.shape)} must match (same batch and number of classes)")
    if student.ndim < 2:
        raise ShapeError(f"KD loss: logits need a batch and a class dim (N, C, ...), got shape {tuple(student.shape)}")


def _validate(temperature, alpha) -> None:
    if isinstance(temperature, bool) or not (isinstance(temperature, numbers.Real) and temperature > 0):
        raise DistillationError(f"temperature={temperature!r} must be a positive number")
    if isinstance(alpha, bool) or not (isinstance(alpha, numbers.Real) and 0.0 <= alpha <= 1.0):
        raise DistillationError(f"alpha={alpha!r} must be in [0, 1]")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None,
            temperature: float = 4.0, alpha: float = 0.9) -> Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) (batchmean) + (1 - alpha) * CE(s, target)."""
    _validate(temperature, alpha)
    if alpha < 1 and target is None:
        raise DistillationError(f"alpha={alpha} < 1 weights the cross-entropy with the labels: pass `target`")
    if alpha == 0:  # exactly the plain cross-entropy
        return F.cross_entropy(student_logits, target)
    _check_logits(student_logits, teacher_logits)
    t = teacher_logits.detach()
    kd = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.softmax(t / temperature, dim=1),
                  reduction="batchmean") * (temperature * temperature)
    if alpha == 1:
        return kd
    return kd * alpha + F.cross_entropy(student_logits, target) * (1.0 - alpha)


class KDLoss(Module):
    """Hinton et al. (2015) distillation loss as a module: `crit(student_logits, teacher_logits, target)`."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        _validate(temperature, alpha)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        """The loss of one batch (target may be omitted when alpha == 1)."""
        return kd_loss(student_logits, teacher_logits, target, self.temperature, self.alpha)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"


def attention_map(features: Tensor, p: float = 2) -> Tensor:
    """Zagoruyko & Komodakis: the L2-normalized mean over channels of |a|^p, flattened to (N, H*W)."""
    if features.ndim < 3:
        raise ShapeError(f"attention_map needs (N, C, H, W...) features, got shape {tuple(features.shape)}")
    a = features.abs().pow(p).mean(1)
    return F.normalize(a.reshape(a.shape[0], -1), dim=1)


def attention_loss(student_features: Tensor, teacher_features: Tensor, p: float = 2) -> Tensor:
    """Mean squared difference of the two attention maps (the reference code's at_loss)."""
    s, t = tuple(student_features.shape), tuple(teacher_features.shape)
    if s[:1] + s[2:] != t[:1] + t[2:]:
        raise ShapeError(f"attention transfer: student features {s} and teacher features {t} need the same "
                         "batch and spatial size (channels may differ)")
    d = attention_map(student_features, p) - attention_map(teacher_features.detach(), p)
    return (d * d).mean()


@dataclass
class Hint:
    """A FitNet hint: the regressed student feature at `student_layer` should match `teacher_layer`'s."""

    student_layer: str
    teacher_layer: str
    regressor: Module | None = None  # built from example_input when None: 1x1 conv or linear
    weight: float = 1.0


def _find(model: Module, name: str, which: str) -> Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise DistillationError(f"the {which} has no submodule {name!r} (it has {names})") from None


class Distiller(Module):
    """Student + frozen teacher: `dist(x, target)` returns KD loss + hint losses + attention losses."""

    def __init__(self, student: Module, teacher: Module, loss: Module | None = None, *,
                 hints: Sequence = (), attention: Sequence = (), attention_weight: float = 1000.0,
                 attention_p: float = 2, example_input: Tensor | None = None):
        super().__init__()
        if student is teacher:
            raise DistillationError("the student and the teacher must be different modules")
        self.student = student
        self.criterion = loss if loss is not None else KDLoss()
        teacher.eval()
        teacher.requires_grad_(False)
        teacher.zero_grad(set_to_none=True)  # gradients left from training it: a frozen teacher holds none
        object.__setattr__(self, "teacher", teacher)  # not a child: train()/parameters() leave it alone
        self.hints = [h if isinstance(h, Hint) else Hint(*h) for h in hints]
        self.attention = [tuple(a) for a in attention]
        self.attention_weight = float(attention_weight)
        self.attention_p = attention_p
        self._feats: dict = {}
        self._active = False
        self._handles: list = []
        for i, h in enumerate(self.hints):
            self._capture(_find(student, h.student_layer, "student"), ("hs", i))
            self._capture(_find(teacher, h.teacher_layer, "teacher"), ("ht", i))
        for i, (s, t) in enumerate(self.attention):
            self._capture(_find(student, s, "student"), ("as", i))
            self._capture(_find(teacher, t, "teacher"), ("at", i))
        if any(h.regressor is None for h in self.hints):
            if example_input is None:
                raise DistillationError("hints without a regressor need example_input to size the regressors")
            self._set_active(True)
            try:
                with no_grad():
                    student(example_input)
                    teacher(example_input)
                feats = dict(self._feats)
            finally:
                self._set_active(False)
            for i, h in enumerate(self.hints):
                if h.regressor is None:
                    h.regressor = _regressor(feats[("hs", i)], feats[("ht", i)], h)
        self.regressors = ModuleList([h.regressor for h in self.hints])

    def _capture(self, module: Module, key) -> None:
        def hook(m, args, out):
            if self.__dict__["_active"]:
                self.__dict__["_feats"][key] = out
        self._handles.append(module.register_forward_hook(hook))

    def remove_hooks(self) -> None:
        """Unregister the feature hooks from the student and the teacher (the Distiller is unusable after)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _set_active(self, on: bool) -> None:
        # written around Module.__setattr__: no module-epoch bump, so a jitted step re-checks nothing
        object.__setattr__(self, "_active", on)
        if not on:
            self.__dict__["_feats"].clear()

    def forward(self, x: Tensor, target: Tensor | None = None, return_terms: bool = False):
        """The total loss (or a dict of its terms with return_terms) for a batch `x` with labels `target`."""
        self._set_active(True)
        try:
            with no_grad():
                t_logits = self.teacher(x)
            s_logits = self.student(x)
            terms = {"kd": self.criterion(s_logits, t_logits, target)}
            total = terms["kd"]
            for i, h in enumerate(self.hints):
                fs, ft = h.regressor(self._feats[("hs", i)]), self._feats[("ht", i)]
                if tuple(fs.shape) != tuple(ft.shape):
                    raise ShapeError(f"hint {h.student_layer} -> {h.teacher_layer}: regressed student feature "
                                     f"{tuple(fs.shape)} does not match the teacher's {tuple(ft.shape)}")
                terms[f"hint{i}"] = F.mse_loss(fs, ft.detach())
                total = total + terms[f"hint{i}"] * h.weight
            for i in range(len(self.attention)):
                at = attention_loss(self._feats[("as", i)], self._feats[("at", i)], self.attention_p)
                terms[f"at{i}"] = at
                total = total + at * (self.attention_weight / 2)
        finally:
            self._set_active(False)
        if return_terms:
            terms["total"] = total
            return terms
        return total


def _regressor(fs: Tensor, ft: Tensor, h: Hint) -> Module:
    if fs.ndim == 4 and ft.ndim == 4:
        if tuple(fs.shape[2:]) != tuple(ft.shape[2:]):
            raise ShapeError(f"hint {h.student_layer} -> {h.teacher_layer}: spatial sizes {tuple(fs.shape[2:])} "
                             f"and {tuple(ft.shape[2:])} differ; pass a regressor that maps one to the other")
        return Conv2d(fs.shape[1], ft.shape[1], 1, bias=False)
    if fs.ndim == 2 and ft.ndim == 2:
        return Linear(fs.shape[1], ft.shape[1], bias=False)
    raise ShapeError(f"hint {h.student_layer} -> {h.teacher_layer}: cannot build a regressor from "
                     f"{tuple(fs.shape)} to {tuple(ft.shape)}; pass one in Hint(regressor=...)")
