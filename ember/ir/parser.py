"""Parse the text form written by `printer.print_graph` back into a Graph (constants' values are
unknown after parsing: `graph.consts` holds None for each constvar)."""
from __future__ import annotations

import ast
import re

import numpy as np

from .._core import dtypes as dt
from .._core.errors import EmberError
from ..ops.core import REGISTRY, Aval
from .core import Eqn, Graph, Literal, Var, dtype_from_str

_TYPE = re.compile(r"^([a-z]+[0-9]*)(~?)\[([0-9,]*)\]$")


class ParseError(EmberError, ValueError):
    """The text is not a well-formed ember graph."""


def parse_type(s: str) -> Aval:
    m = _TYPE.match(s)
    if not m:
        raise ParseError(f"bad type {s!r}")
    dims = tuple(int(x) for x in m.group(3).split(",") if x)
    return Aval(dims, dtype_from_str(m.group(1)), bool(m.group(2)))


def _number(s: str):
    if s in ("True", "False"):
        return s == "True"
    if s.startswith("complex(") and s.endswith(")"):
        re, im = s[8:-1].split(",")
        return complex(_number(re), _number(im))
    if s in ("nan", "inf", "-inf"):
        return float(s)
    try:
        return int(s)
    except ValueError:
        return float(s)


def _param_value(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_param_value(x) for x in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_param_value(node.operand)
    if isinstance(node, ast.Name):
        if node.id in ("nan", "inf"):
            return float(node.id)
        return dt.as_dtype(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "complex":
        re, im = (_param_value(a) for a in node.args)
        return complex(re, im)
    raise ParseError(f"bad parameter {ast.dump(node)}")


def _tokens(s: str) -> list:
    """Split on whitespace outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch.isspace() and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def parse_graph(text: str) -> Graph:
    lines = [ln.split("#", 1)[0].rstrip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    head = lines[0].strip()
    m = re.match(r"^\{ lambda (.*);(.*)\. let$", head)
    if not m:
        raise ParseError(f"bad graph header {head!r}")
    env: dict = {}

    def define(tok: str) -> Var:
        name, _, t = tok.partition(":")
        if name in env:
            raise ParseError(f"variable {name} is defined twice")
        v = env[name] = Var(parse_type(t))
        return v

    def use(tok: str):
        if tok in env:
            return env[tok]
        name, _, t = tok.partition(":")
        if name and (name[0].isdigit() or name[0] == "-" or name in ("True", "False", "nan", "inf")):
            val = _number(name)
            if t:
                aval = parse_type(t)
                if not aval.weak:
                    val = np.array(val, aval.dtype.np)[()]
                return Literal(val, aval)
            from .core import literal
            return literal(val)
        raise ParseError(f"undefined variable {tok!r}")

    constvars = [define(t) for t in m.group(1).split()]
    invars = [define(t) for t in m.group(2).split()]
    last = lines[-1].strip()
    mo = re.match(r"^in \((.*?)\)(?: aliases\(([0-9> -]*)\))? \}$", last)
    if not mo:
        raise ParseError(f"bad graph footer {last!r}")
    eqns = []
    for ln in lines[1:-1]:
        lhs, eq, rhs = ln.strip().partition(" = ")
        if not eq:
            raise ParseError(f"bad equation {ln!r}")
        toks = _tokens(rhs)
        head = toks[0]
        params = {}
        if "[" in head:
            pname, _, rest = head.partition("[")
            call = ast.parse(f"f({rest[:-1]})", mode="eval").body
            params = {kw.arg: _param_value(kw.value) for kw in call.keywords}
        else:
            pname = head
        if pname not in REGISTRY:
            raise ParseError(f"unknown primitive {pname!r}")
        ins = [use(t) for t in toks[1:]]
        eqns.append(Eqn(REGISTRY[pname], ins, define(lhs), params))
    outs = [use(t) for t in mo.group(1).split()]
    aliases = {}
    for pair in (mo.group(2) or "").split():
        o, _, i = pair.partition("->")
        aliases[int(o)] = int(i)
    return Graph(constvars, None, invars, eqns, outs, aliases)
