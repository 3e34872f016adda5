"""`einsum` (PyTorch's): Einstein summation lowered to `dot_general`, reductions and transposes.

The equation is parsed into one label string per operand (an ellipsis becomes fresh labels,
right-aligned and broadcast across operands as PyTorch does). Each operand first loses its
repeated labels (a diagonal) and the labels no one else needs (a sum); then operands are
contracted left to right, two at a time: labels the pair shares become batch dims if the output
or a later operand still needs them and contracting dims otherwise. Every contraction is a
GEMM (the native step's BLAS path), and the whole thing is differentiable.
"""
from __future__ import annotations

from .._core.errors import ShapeError, op_error
from ..ops import lax
from ..tensor import Tensor, as_tensor
from .diagonals import diagonal
from .shape import expand

_FRESH = [chr(c) for c in range(0x100, 0x100 + 64)]  # labels for ellipsis dims, never typed by a user


def _parse(equation: str, ops: list) -> tuple[list, str]:
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ops):
        raise op_error(ValueError, "einsum", f"the equation {equation!r} names {len(terms)} operands, "
                       f"but {len(ops)} were given")
    nell = 0
    for t, x in zip(terms, ops):
        if t.count("...") > 1 or "." in t.replace("...", ""):
            raise op_error(ValueError, "einsum", f"malformed subscript {t!r} in {equation!r}")
        named = len(t.replace("...", ""))
        if ("..." in t and named > x.ndim) or ("..." not in t and named != x.ndim):
            raise op_error(ShapeError, "einsum", f"subscript {t!r} does not fit an operand of shape {x.shape}")
        if "..." in t:
            nell = max(nell, x.ndim - named)
        if not all(c.isalpha() for c in t.replace("...", "")):
            raise op_error(ValueError, "einsum", f"subscripts must be letters, got {t!r}")
    ell = "".join(_FRESH[:nell])
    terms = [t.replace("...", ell[nell - (x.ndim - len(t.replace("...", ""))):]) for t, x in zip(terms, ops)]
    if arrow:
        out = out.replace("...", ell)
        if len(set(out)) != len(out) or any(c not in "".join(terms) for c in out):
            raise op_error(ValueError, "einsum", f"output subscript {out!r} repeats a label or names one "
                           "no operand has")
    else:  # implicit output: the ellipsis, then the labels seen once, in alphabetical order
        every = "".join(terms)
        out = ell + "".join(sorted(c for c in set(every) if every.count(c) == 1 and c not in ell))
    return terms, out


def _sizes(terms: list, ops: list) -> dict:
    """Each label's size; a size-1 dim broadcasts against the others."""
    size: dict = {}
    for t, x in zip(terms, ops):
        for c, n in zip(t, x.shape):
            prev = size.get(c)
            if prev is None or prev == 1:
                size[c] = n
            elif n != 1 and n != prev:
                raise op_error(ShapeError, "einsum", f"label {c!r} has sizes {prev} and {n} "
                               f"(operand shapes {', '.join(str(o.shape) for o in ops)})")
    return size


def _prepare(x: Tensor, t: str, keep: set) -> tuple[Tensor, str]:
    """`x` with repeated labels reduced to their diagonal and labels outside `keep` summed."""
    while len(set(t)) != len(t):
        c = next(c for c in t if t.count(c) > 1)
        i, j = t.index(c), t.index(c, t.index(c) + 1)
        x = diagonal(x, 0, i, j)  # the diagonal goes last
        t = t[:i] + t[i + 1:j] + t[j + 1:] + c
    drop = tuple(i for i, c in enumerate(t) if c not in keep)
    if drop:
        x = lax.reduce_sum(x, drop)
        t = "".join(c for c in t if c in keep)
    return x, t


def _broadcast(x: Tensor, t: str, size: dict, labels: str) -> Tensor:
    want = tuple(size[c] if c in labels else n for c, n in zip(t, x.shape))
    return x if want == x.shape else expand(x, want)


def einsum(equation: str, *operands) -> Tensor:
    """Einstein summation over the operands as the equation says ("ij,jk->ik", "...ij->...ji", "ii")."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ops = [as_tensor(x) for x in operands]
    if not ops:
        raise op_error(ValueError, "einsum", "needs at least one operand")
    terms, out = _parse(equation, ops)
    size = _sizes(terms, ops)
    later = ["".join(terms[i + 1:]) for i in range(len(terms))]
    x, tx = _prepare(ops[0], terms[0], set(out) | set(later[0]))
    for k in range(1, len(ops)):
        y, ty = _prepare(ops[k], terms[k], set(out) | set(later[k]) | set(tx))
        need = set(out) | set(later[k])
        # a label only one side has and nobody needs later is summed first
        x, tx = _prepare(x, tx, need | set(ty))
        shared = [c for c in tx if c in ty]
        x, y = _broadcast(x, tx, size, shared), _broadcast(y, ty, size, shared)
        batch = [c for c in shared if c in need]
        contract = [c for c in shared if c not in need]
        x = lax.dot_general(x, y, ([tx.index(c) for c in contract], [ty.index(c) for c in contract]),
                            ([tx.index(c) for c in batch], [ty.index(c) for c in batch]))
        tx = "".join(batch) + "".join(c for c in tx if c not in shared) + "".join(c for c in ty if c not in shared)
    x, tx = _prepare(x, tx, set(out))
    for c in out:  # a size-1 broadcast label the result must show at full size
        if c in tx and x.shape[tx.index(c)] != size[c]:
            x = _broadcast(x, tx, size, c)
    perm = [tx.index(c) for c in out]
    return x if perm == list(range(len(perm))) else lax.transpose(x, perm)


__all__ = ["einsum"]
