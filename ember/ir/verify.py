"""The IR verifier: SSA well-formedness and type agreement with each primitive's shape rule."""
from __future__ import annotations

from .._core.errors import EmberError
from .core import Literal, Var, type_str


class VerifyError(EmberError, ValueError):
    """A graph breaks an IR invariant."""


def verify(g, where: str = "") -> None:
    """Raise VerifyError unless every var is defined once before use and every equation's output
    type is what its primitive's abstract rule gives (a weak result may be stored strongly typed)."""
    ctx = f" (after {where})" if where else ""
    defined = set()

    def define(v, what):
        if not isinstance(v, Var):
            raise VerifyError(f"{what} is not a Var: {v!r}{ctx}")
        if v in defined:
            raise VerifyError(f"variable {v!r} is defined more than once ({what}){ctx}")
        defined.add(v)

    def check_use(a, what):
        if isinstance(a, Literal):
            return
        if not isinstance(a, Var):
            raise VerifyError(f"{what}: operand {a!r} is neither a Var nor a Literal{ctx}")
        if a not in defined:
            raise VerifyError(f"{what}: variable {a!r} is used before it is defined{ctx}")

    for v in g.constvars:
        define(v, "constvar")
    for v in g.invars:
        define(v, "input")
    for i, e in enumerate(g.eqns):
        what = f"equation {i} ({e.prim.name}{', ' + e.loc if e.loc else ''})"
        for a in e.inputs:
            check_use(a, what)
        try:
            exp = e.prim.abstract(*[a.aval for a in e.inputs], **e.params)
        except EmberError as err:
            raise VerifyError(f"{what}: its shape rule rejects the operands: {err}{ctx}") from None
        got = e.out.aval
        if got.shape != exp.shape or got.dtype is not exp.dtype or (got.weak and not exp.weak):
            raise VerifyError(f"{what}: result typed {type_str(got)} but {e.prim.name} gives "
                              f"{type_str(exp)}{ctx}")
        define(e.out, what)
    for a in g.outvars:
        check_use(a, "graph output")
    for o, i in g.aliases.items():
        if not (0 <= o < len(g.outvars) and 0 <= i < len(g.invars)):
            raise VerifyError(f"alias {o}->{i} names no output/input{ctx}")
        if g.outvars[o].aval.shape != g.invars[i].aval.shape or g.outvars[o].aval.dtype is not g.invars[i].aval.dtype:
            raise VerifyError(f"output {o} ({type_str(g.outvars[o].aval)}) cannot overwrite input {i} "
                              f"({type_str(g.invars[i].aval)}){ctx}")
