"""Text form of a Graph (jaxpr-like):

    { lambda ; a:f32[8] b:f32[8]. let
        c:f32[8] = sin b
        d:f32[8] = mul c 3.0
        e:f32[8] = add a d
        f:f32[] = reduce_sum[axes=(0,)] e
      in (f) }

Types are `dtype[dims]`, with `~` after the dtype for weak types (`f32~[]`). Literals print as Python
numbers when their type is the default weak type of that number, else as `value:type` (`2.0:f32[]`).
Params print as `name[k=v, ...]`; dtypes as their names. A graph that updates state in place ends
with `aliases(3->1 ...)`: output 3 is written into the buffer of input 1. `print_graph(g, locations=True)` appends the
source location of each equation as a `# file:line` comment (comments are ignored by the parser).
"""
from __future__ import annotations

import math

import numpy as np

from .._core import dtypes as dt
from .core import Literal, Var, type_str


def _name(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


def _num(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (complex, np.complexfloating)):
        return f"complex({_num(v.real)},{_num(v.imag)})"
    f = float(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def _default_weak(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool~[]"
    if isinstance(v, (int, np.integer)):
        return "i64~[]"
    if isinstance(v, (complex, np.complexfloating)):
        return "c64~[]"
    return "f32~[]"


def literal_str(lit: Literal) -> str:
    t = type_str(lit.aval)
    s = _num(lit.value)
    return s if t == _default_weak(lit.value) and not isinstance(lit.value, np.generic) else f"{s}:{t}"


def param_str(v) -> str:
    if isinstance(v, dt.DType):
        return v.name
    if isinstance(v, (tuple, list)):
        inner = ", ".join(param_str(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating, complex, np.complexfloating)):
        return _num(v)
    return repr(v)


def print_graph(g, locations: bool = False) -> str:
    names: dict = {}

    def bind(v: Var) -> str:
        n = names[v] = _name(len(names))
        return f"{n}:{type_str(v.aval)}"

    def use(a) -> str:
        if isinstance(a, Literal):
            return literal_str(a)
        n = names.get(a)
        return n if n is not None else f"<undefined {a!r}>"

    head_c = " ".join(bind(v) for v in g.constvars)
    head_i = " ".join(bind(v) for v in g.invars)
    lines = [f"{{ lambda {head_c}{' ' if head_c else ''}; {head_i}. let"]
    for e in g.eqns:
        ins = " ".join(use(a) for a in e.inputs)
        p = ""
        if e.params:
            p = "[" + ", ".join(f"{k}={param_str(v)}" for k, v in e.params.items()) + "]"
        # a redefinition prints with a fresh name; the verifier is what reports it
        lhs = bind(e.out)
        line = f"    {lhs} = {e.prim.name}{p}{' ' if ins else ''}{ins}"
        if locations and e.loc:
            line += f"  # {e.loc}"
        lines.append(line)
    outs = " ".join(use(a) for a in g.outvars)
    al = ""
    if g.aliases:
        al = " aliases(" + " ".join(f"{o}->{i}" for o, i in sorted(g.aliases.items())) + ")"
    lines.append(f"  in ({outs}){al} }}")
    return "\n".join(lines)
