"""CPU lowering of a row group: a softmax or a layer norm, forward or backward, as one loop over rows."""
from __future__ import annotations

from ...ops import P
from ...runtime.layout import aligned_strides, collapse, contiguous, prod
from ...runtime.memory import nbytes
from ..lowering import register_lowering
from . import loopnest as L
from .c_expr import CTYPE, c_call, c_convert, compute_of, itemsize
from .emitter import LANES, PAR_MIN, c_index, identity, round64
from ...runtime.fusion import RowGroup
from .emitter import REDUCE


def rows(r, rg: RowGroup) -> None:
    """One loop over the rows of `rg`: per row its members in order, scalars in locals,
    vectors other units do not read in a per-thread scratch row, column sums in per-thread
    partial rows added in thread order after the loop (bitwise reproducible at a fixed
    thread count)."""
    # one function on purpose (over 100 lines): the row kernel is assembled from closures that
    # share its loop variables, per-thread scratch layout and value forms; split, each piece
    # would pass most of that state along
    K, R = rg.key
    nK, nR, F = prod(K), prod(R), K + R
    refs, outs = r.refs, set(rg.outputs)
    form = {}  # Var -> ("s", C scalar) | ("v", C pointer to a contiguous row) inside the row
    pre, row, init, post = [], [], [], []
    per_thread = 0
    ext = {}
    kq = [f"kq{d}" for d in range(len(K))]
    for d in range(len(K)):
        inner = prod(K[d + 1:])
        q = f"k / {inner}" if inner > 1 else "k"
        row.append(L.Stmt(f"const int64_t kq{d} = {q}{f' % {K[d]}' if d else ''};"))

    def slot(dt):
        nonlocal per_thread
        at = per_thread
        per_thread += round64(nR * itemsize(dt))
        return at

    def base(ref, const=True):
        name = f"e{len(pre)}"
        pre.append(L.Stmt(f"{'const ' if const else ''}{CTYPE[ref.dtype]}* {name} = {r.ptr(ref)};"))
        return name

    def external(v, space):
        """(row pointer, R strides) of input `v` seen in `space` (F, or a scalar member's shape)."""
        key = (v, tuple(space))
        if key not in ext:
            ref = refs[v]
            a = aligned_strides(ref, space)
            b = base(ref)
            name = f"x{len(ext)}"
            ext[key] = (name, a[len(K):] if tuple(space) == F else [0] * len(R))
            row.append(L.Stmt(f"const {CTYPE[ref.dtype]}* {name} = {b} + {c_index(kq, a[:len(K)])};"))
        return ext[key]

    def operand(v, space):
        """('s', scalar) or ('a', pointer, R strides) for reading `v` inside the row."""
        if v in form:
            f = form[v]
            return f if f[0] == "s" else ("a", f[1], list(contiguous(R)))
        ptr, st = external(v, space)
        return ("a", ptr, st)

    def row_loop(arrays: list, stmts_of) -> list:
        """A loop nest over R reading `arrays` [(pointer, strides)]; `stmts_of(index per array)`."""
        dims = collapse(R, [st for _, st in arrays])
        rv = [f"r{d}" for d in range(len(dims))]
        idx = [c_index(rv, [d[1][j] for d in dims]) for j in range(len(arrays))]
        nest = [L.Stmt(c) for c in stmts_of(idx)]
        for d in reversed(range(len(dims))):
            nest = [L.Loop(rv[d], dims[d][0], nest, vectorize=d == len(dims) - 1)]
        return nest

    def new_vec(v):
        """Where vector `v` lives in the row: its output row, or a scratch row."""
        name = f"v{len(form)}"
        ct = CTYPE[v.aval.dtype.name]
        if v in outs:
            row.append(L.Stmt(f"{ct}* {name} = {base(refs[v], const=False)} + k * {nR};"))
        else:
            row.append(L.Stmt(f"{ct}* {name} = ({ct}*)(wsrow + {slot(v.aval.dtype.name)});"))
        form[v] = ("v", name)
        return name

    flops = 0
    for u, role in zip(rg.members, rg.roles):
        if role == "view":
            x = u.inputs[0]
            if x in form:
                form[u.out] = form[x]
            elif u.prim is P.broadcast_in_dim:
                refs[u.out] = refs[x].view(P.broadcast_in_dim, u.params, u.out.aval.shape)
            else:  # a reshape adding or dropping the size-1 dims after K
                xr = refs[x]
                shape = u.out.aval.shape
                refs[u.out] = xr.moved(xr.offset, shape, list(xr.strides[:len(K)]) + [0] * (len(shape) - len(K)))
            continue
        if role == "scalar":
            loads = []
            for v in u.inputs:
                op = operand(v, u.shape)
                loads.append(op[1] if op[0] == "s" else f"{op[1]}[0]")
            code, values = r.body(u, loads)
            row.extend(L.Stmt(c) for c in code)
            for v, val in zip(u.outputs, values):
                form[v] = ("s", val)
                if v in outs:
                    row.append(L.Stmt(f"{base(refs[v], const=False)}[k] = {val};"))
            flops += nK * len(u.eqns)
            continue
        if role == "vec":
            ops = [operand(v, F) for v in u.inputs]
            arrays = [(op[1], op[2]) for op in ops if op[0] == "a"]
            dst = [new_vec(v) for v in u.outputs]
            arrays += [(d, list(contiguous(R))) for d in dst]

            def stmts(idx, u=u, ops=ops, dst=dst):
                loads, code, j = [], [], 0
                for k, op in enumerate(ops):
                    if op[0] == "s":
                        loads.append(op[1])
                    else:
                        ct = CTYPE[u.inputs[k].aval.dtype.name]
                        code.append(f"const {ct} y{k} = {op[1]}[{idx[j]}];")
                        loads.append(f"y{k}")
                        j += 1
                c, values = r.body(u, loads)
                code += c
                code += [f"{d}[{idx[j + n]}] = {val};" for n, (d, val) in enumerate(zip(dst, values))]
                return code
            row.extend([L.Stmt("{")] + row_loop(arrays, stmts) + [L.Stmt("}")])
            flops += nK * nR * len(u.eqns)
            continue
        # a reduction over R (a scalar per row) or over K (into this thread's partial row)
        op = REDUCE[u.prim]
        x = u.inputs[0]
        xt, half = x.aval.dtype.name, u.out.aval.dtype.name
        ot = compute_of(half)  # a half result accumulates in float32, rounded once at its end
        ct = CTYPE[ot]
        src = operand(x, F)
        ident = identity(op, ot)

        def comb(a, b, op=op, ot=ot):
            return c_call(op, [(a, ot), (b, ot)], ot)[0]
        flops += nK * nR
        if role == "rowred":
            name = f"s{len(form)}"
            acc = name if ot == half else f"{name}f"
            if src[0] == "s":
                body = [L.Stmt(f"{ct} {acc} = {ident};\nfor (int64_t r = 0; r < {nR}; r++) "
                               f"{acc} = {comb(acc, c_convert(src[1], xt, ot))};")]
            else:
                body = _row_reduce(r, acc, src[1], src[2], R, op, xt, ot)
            if ot != half:
                body.append(L.Stmt(f"const {CTYPE[half]} {name} = {c_convert(acc, ot, half)};"))
            row.extend(body)
            form[u.out] = ("s", name)
            if u.out in outs:
                row.append(L.Stmt(f"{base(refs[u.out], const=False)}[k] = {name};"))
            continue
        at = slot(ot)
        part = f"c{len(form)}"
        form[u.out] = ("c", part)
        pre.append(L.Stmt(f"{ct}* {part};"))
        init.append(L.Stmt(f"{part} = ({ct}*)(wsrow + {at});\n"
                           f"for (int64_t r = 0; r < {nR}; r++) {part}[r] = {ident};"))
        if src[0] == "s":
            row.append(L.Stmt(f"for (int64_t r = 0; r < {nR}; r++) {part}[r] = "
                              f"{comb(f'{part}[r]', c_convert(src[1], xt, ot))};"))
        else:
            row.extend(row_loop([(src[1], src[2]), (part, list(contiguous(R)))],
                                lambda idx, part=part, src=src, xt=xt: [
                                    f"{part}[{idx[1]}] = {comb(f'{part}[{idx[1]}]', c_convert(f'{src[1]}[{idx[0]}]', xt, ot))};"]))
        dst = base(refs[u.out], const=False)
        post.append(L.Loop("r", nR, [L.Stmt(
            f"{ct} a = (({ct}*)(C->ws + {at}))[r];\n"
            f"for (int t = 1; t < nt; t++) a = {comb('a', f'(({ct}*)(C->ws + (size_t)t * pt + {at}))[r]')};\n"
            f"{dst}[r] = {c_convert('a', ot, half)};")], parallel=True))
    pre_ws = []
    if per_thread:
        pre_ws = r.reserve(per_thread) + [L.Stmt(f"const size_t pt = {per_thread};  /* scratch bytes per thread */\n"
                                                     "char* wsrow = C->ws + (size_t)tid * pt;")]
    body_lines = L.render(pre + pre_ws + init)
    loop = L.Loop("k", nK, row)
    if nK > 1 and nK * nR >= PAR_MIN:
        loop.parallel = True
        main = [loop]
    else:
        main = [L.Stmt("#pragma omp single\n{"), loop, L.Stmt("}")]
    text = "\n".join(["{"] + body_lines + L.render(main + post) + ["}"])
    traffic = sum(nbytes(v.aval) for v in rg.inputs + rg.outputs)
    label = "rows: " + " | ".join(" ".join(e.prim.name for e in m.eqns) if m.prim is None else m.prim.name
                                  for m, r in zip(rg.members, rg.roles) if r != "view")
    r.emit((label, text.split("\n"), flops, traffic))

def _row_reduce(r, name, ptr, strides, R, op, xt, ot) -> list:
    """Statements setting scalar `name` to the reduction of row `ptr` (R strides `strides`):
    float sums over a contiguous row in LANES partial sums (vectorised, fixed order)."""
    ct = CTYPE[ot]
    dims = collapse(R, [strides])
    ident = identity(op, ot)

    def load(i):
        return c_convert(f"{ptr}[{i}]", xt, ot)
    if ot in ("float32", "float64") and len(dims) == 1 and dims[0][1][0] == 1 and dims[0][0] >= 2 * LANES:
        # LANES partial results, combined in lane order (a max or min picks the same value as
        # a sequential loop, up to which of -0.0 and 0.0 a tie keeps)
        n = dims[0][0]

        def comb(a, b):
            return c_call(op, [(a, ot), (b, ot)], ot)[0]
        tail = f"\nfor (; j < {n}; j++) tail = {comb('tail', load('j'))};" if n % LANES else ""
        return [L.Stmt(f"{ct} {name};\n{{\n{ct} lane[{LANES}];\n"
                       f"for (int l = 0; l < {LANES}; l++) lane[l] = {ident};\n{ct} tail = {ident};\n"
                       f"int64_t j = 0;\nfor (; j + {LANES} <= {n}; j += {LANES}) {{"),
                L.Loop("l", LANES, [L.Stmt(f"lane[l] = {comb('lane[l]', load('j + l'))};")], vectorize=True),
                L.Stmt(f"}}{tail}\n{ct} acc = {ident};\nfor (int l = 0; l < {LANES}; l++) acc = {comb('acc', 'lane[l]')};\n"
                       f"{name} = {comb('acc', 'tail')};\n}}")]
    rv = [f"r{d}" for d in range(len(dims))]
    nest = [L.Stmt(f"{name} = {c_call(op, [(name, ot), (load(c_index(rv, [d[1][0] for d in dims])), ot)], ot)[0]};")]
    for d in reversed(range(len(dims))):
        nest = [L.Loop(rv[d], dims[d][0], nest)]
    return [L.Stmt(f"{ct} {name} = {ident};")] + nest

register_lowering(RowGroup, "cpu", rows)
