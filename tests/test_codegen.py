"""BE-1 (book ch. 5.4): fused elementwise C kernels (the CPU target's lowering of a Group) match
the numpy executor."""
from __future__ import annotations

import ctypes
import subprocess
import warnings

import numpy as np
import pytest

import ember
from ember._core import dtypes as dt
from ember.backend.contract import Unsupported
from ember.backend.cpu import CpuTarget, cmath, compiler as build
from ember.backend.cpu.c_expr import eqn_supported
from ember.backend.cpu.program import FLAGS
from ember.ir.core import Eqn, Graph, Literal, Var
from ember.jit import run_graph
from ember.ops import REGISTRY
from ember.ops.core import Aval
from ember.ops.elementwise import _erf as erf64
from ember.runtime import fusion
from ember.runtime.step import StepExecutable

needs_cc = pytest.mark.skipif(not build.available(), reason="no working C compiler (set CC)")


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("kernels"))


@pytest.fixture(autouse=True)
def _cache(_module_cache, monkeypatch):
    # one tmp cache per module: kernels with equal source compile once, and ~/.cache is untouched
    monkeypatch.setenv("EMBER_CACHE_DIR", _module_cache)


# ---------------------------------------------------------------- math functions
def _sweep() -> np.ndarray:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    dense = np.linspace(-12, 12, 100_001, dtype=np.float32)
    f = np.finfo(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, f.tiny, -f.tiny, f.smallest_subnormal,
                        -f.smallest_subnormal, 1e-40, f.max, -f.max, 88.72, 88.73, -87.3, -103.9,
                        -104.0, 1e-8, -1e-8], np.float32)
    return np.concatenate([bits, dense, special])


def _logistic64(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


REFS = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "erf": erf64, "sigmoid": _logistic64}
#: measured maximum relative error (normal results) is about half of each bound
BOUNDS = {"exp": 2e-7, "log": 2e-7, "tanh": 4e-7, "erf": 3e-7, "sigmoid": 3e-7}


@pytest.fixture(scope="module")
def sweep_lib(tmp_path_factory):
    if not build.available():
        pytest.skip("no working C compiler (set CC)")
    mp = pytest.MonkeyPatch()
    mp.setenv("EMBER_CACHE_DIR", str(tmp_path_factory.mktemp("k")))
    lib = build.load_library(cmath.sweep_source())
    mp.undo()
    return lib


@pytest.mark.parametrize("name", list(REFS))
def test_be1_float32_math_error(name, sweep_lib):
    """BE-1: ember's vectorisable float32 functions against numpy float64, special values included."""
    x = _sweep()
    y = np.empty_like(x)
    fn = getattr(sweep_lib, f"em_v{name}f")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn(x.ctypes.data, y.ctypes.data, x.size)
    with np.errstate(all="ignore"):
        ref = REFS[name](x.astype(np.float64))
        ref32 = ref.astype(np.float32)
    assert np.array_equal(np.isnan(y), np.isnan(ref)), "NaN where the reference has none, or lost"
    tiny = np.finfo(np.float32).tiny
    normal = np.isfinite(ref32) & (np.abs(ref) >= tiny)
    rel = np.abs(y[normal] - ref[normal]) / np.abs(ref[normal])
    assert rel.max() < BOUNDS[name], (name, rel.max(), x[normal][np.argmax(rel)])
    inf = np.isinf(ref32) & ~np.isnan(ref)
    assert np.array_equal(y[inf], ref32[inf])  # overflow -> +-inf
    small = ~np.isnan(ref) & (np.abs(ref) < tiny)
    assert np.all(np.abs(y[small] - ref[small]) <= np.finfo(np.float32).smallest_subnormal)
    if name in ("tanh", "erf"):  # odd functions keep the sign of zero
        z = np.array([0.0, -0.0], np.float32)
        out = np.empty_like(z)
        fn(z.ctypes.data, out.ctypes.data, 2)
        assert np.array_equal(np.signbit(out), [False, True])


# ---------------------------------------------------------------- single primitives
F32, F64, I32, I64, B = (ember.float32, ember.float64, ember.int32, ember.int64, ember.bool_)
I8, I16, U8 = dt.int8, dt.int16, dt.uint8
UNARY = {"neg": (F32, F64, I32, I64, I8), "abs": (F32, F64, I32, I64, I16), "sign": (F32, I32, B, U8),
         "exp": (F32, F64, I32), "log": (F32, F64), "tanh": (F32, F64), "erf": (F32, F64),
         "logistic": (F32, F64), "sqrt": (F32, F64), "rsqrt": (F32,), "floor": (F32, I64),
         "ceil": (F64,), "round": (F32, F64), "trunc": (F32,), "isnan": (F32, I32),
         "bitwise_not": (I32, B, U8), "sin": (F32, F64), "cos": (F32, F64), "log1p": (F32, F64),
         "expm1": (F32, F64)}
BINARY = {"add": (F32, F64, I32, I64, B, U8), "sub": (F32, I32, I64, I8), "mul": (F32, F64, I32, B, I8, I16, U8),
          "div": (F32, F64, I32, U8), "max": (F32, F64, I64, B, I8), "min": (F32, F64, I32, U8),
          "eq": (F32, I64), "ne": (F64,), "lt": (F32, I32, U8), "le": (F64,), "gt": (I64, I16), "ge": (F32,),
          "bitwise_and": (I32, B, I16), "bitwise_or": (I64,), "bitwise_xor": (B,), "atan2": (F32, F64),
          "floordiv": (F32, F64), "rem": (F32, F64), "fmod": (F32, F64)}


def _values(dtype, shape, rng):
    n = int(np.prod(shape))
    if dtype.kind == "f":
        v = rng.standard_normal(n) * 3
        special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1e30, -1e30, 0.5, -2.5]
        v[: min(n, len(special))] = special[:n]
        rng.shuffle(v)
        return v.astype(dtype.np).reshape(shape)
    if dtype.kind == "b":
        return (rng.random(n) < 0.5).reshape(shape)
    info = np.iinfo(dtype.np)
    v = rng.integers(-50, 50, n)
    special = [info.min, info.max, 0, -1, 1]
    v[: min(n, len(special))] = special[:n]
    return v.astype(dtype.np).reshape(shape)


def _graph(prim, avals, params=None):
    ins = [Var(a) for a in avals]
    out = Var(prim.abstract(*avals, **(params or {})))
    return Graph([], [], ins, [Eqn(prim, ins, out, params or {})], [out])


LIBM_LIKE = ("exp", "log", "tanh", "erf", "logistic", "sin", "cos", "log1p", "expm1", "atan2")


def _step(graph) -> StepExecutable:
    """The graph as a native step whose one unit is a fused group the CPU lowered."""
    exe = StepExecutable(graph, CpuTarget())
    assert [type(u) for u in exe.units] == [fusion.Group] and not exe.host_units, exe.units
    return exe


def _check(graph, arrays):
    exe = _step(graph)
    with np.errstate(all="ignore"):
        want = run_graph(graph, arrays)
        got = exe.run([np.asarray(a) for a in arrays])
    for w, g in zip(want, got):
        assert w.dtype == g.dtype and w.shape == g.shape
        if w.dtype.kind == "f" and graph.eqns[-1].prim.name in LIBM_LIKE:
            # ember's float32 functions vs numpy's; libm vs numpy (SIMD, or Cephes erf)
            rtol, atol = (4e-7, 1e-45) if w.dtype == np.float32 else (1e-15, 1e-300)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        else:  # everything else is bit-exact (NaN payloads aside)
            assert np.array_equal(w, g, equal_nan=w.dtype.kind == "f"), (w, g)
            if w.dtype.kind == "f":
                assert np.array_equal(np.signbit(w[w == 0]), np.signbit(g[g == 0]))


SHAPES = [(0,), (1,), (7,), (1031,)]


@needs_cc
@pytest.mark.parametrize("name,dtype", [(n, d) for n, ds in UNARY.items() for d in ds])
def test_be1_unary_matches_numpy(name, dtype):
    """BE-1: each supported unary primitive's kernel equals the numpy executor."""
    rng = np.random.default_rng(1)
    for shape in SHAPES:
        x = _values(dtype, shape, rng)
        _check(_graph(REGISTRY[name], [Aval(shape, dtype)]), [x])


@needs_cc
@pytest.mark.parametrize("name,dtype", [(n, d) for n, ds in BINARY.items() for d in ds])
def test_be1_binary_matches_numpy(name, dtype):
    """BE-1: each supported binary primitive, with full, scalar, row and column operands."""
    rng = np.random.default_rng(2)
    cases = [((7,), (7,)), ((1031,), ()), ((), (7,)), ((0,), (0,)), ((5, 7), (7,)), ((5, 7), (5, 1)),
             ((1, 7), (5, 1)), ((3, 1, 4), (1, 5, 4))]
    for sx, sy in cases if dtype in (F32, I64) else cases[:3]:  # broadcast layouts: two dtypes
        x, y = _values(dtype, sx, rng), _values(dtype, sy, rng)
        _check(_graph(REGISTRY[name], [Aval(sx, dtype), Aval(sy, dtype)]), [x, y])


@needs_cc
def test_be1_integer_wraparound_and_weak_literals():
    """BE-1: int overflow wraps like numpy; weak Python literals take the tensor's dtype."""
    for dtype in (I32, I64):
        info = np.iinfo(dtype.np)
        x = np.array([info.max, info.min, 3, -7], dtype.np)
        a = Var(Aval((4,), dtype))
        lit = Literal(3, Aval((), ember.int64, True))
        prim = REGISTRY["mul"]
        out = Var(prim.abstract(a.aval, lit.aval))
        _check(Graph([], [], [a], [Eqn(prim, [a, lit], out, {})], [out]), [x])


@needs_cc
@pytest.mark.parametrize("src,dst", [(F32, I32), (F64, I64), (F32, B), (I64, F32), (B, F64), (F32, F64),
                                     (F64, F32), (I32, I64), (U8, F32), (I16, F64), (I64, I8), (I32, U8),
                                     (B, U8), (I8, I16)])
def test_be1_convert_matches_numpy(src, dst):
    """BE-1: convert, including NaN/inf -> 0 for float -> int."""
    x = _values(src, (1031,), np.random.default_rng(3))
    if src.kind == "f" and dst.kind == "i":
        x = np.where(np.abs(x) < 1e9, x, np.nan).astype(src.np)
    _check(_graph(REGISTRY["convert"], [Aval((1031,), src)], {"dtype": dst}), [x])


@needs_cc
@pytest.mark.parametrize("src,dst", [(F32, I32), (I32, F32), (F64, I64), (I64, F64), (dt.uint32, F32)])
def test_be1_bitcast_matches_numpy(src, dst):
    """BE-1: a bitcast reads the same bytes as the other type (NaN payloads and -0.0 included)."""
    rng = np.random.default_rng(6)
    for shape in SHAPES:
        x = _values(src, shape, rng) if src.kind != "u" else rng.integers(0, 2**32, shape, dtype=np.uint32)
        _check(_graph(REGISTRY["bitcast"], [Aval(shape, src)], {"dtype": dst}), [x])


def test_be1_select_with_broadcast():
    """BE-1: select with a column condition and a scalar branch."""
    rng = np.random.default_rng(4)
    c, x, y = rng.random((5, 1)) < 0.5, _values(F32, (5, 7), rng), np.float32(-0.0).reshape(())
    _check(_graph(REGISTRY["select"], [Aval((5, 1), B), Aval((5, 7), F32), Aval((), F32)]), [c, x, y])


@needs_cc
def test_be1_unsupported_prims_stay_outside():
    """BE-1: integer floordiv (raises on zero in ember) is never fused."""
    g = _graph(REGISTRY["floordiv"], [Aval((7,), I32), Aval((7,), I32)])
    assert fusion.elementwise_groups(g, eqn_supported) == []


# ---------------------------------------------------------------- fusion
def _chain_graph(n=7):
    x = ember.tensor(np.zeros((5, n), np.float32))
    y = ember.tensor(np.zeros((n,), np.float32))
    return ember.make_ir(lambda x, y: ember.tanh(x * 2 + y) * ember.sigmoid(x))(x, y)


@needs_cc
def test_be1_fused_chain_is_one_kernel():
    """BE-1: tanh(x*2+y)*sigmoid(x) is one group, one kernel, and matches numpy."""
    g = _chain_graph()
    exe = _step(g)
    group = exe.units[0]
    assert [e.prim.name for e in group.eqns] == ["mul", "add", "tanh", "logistic", "mul"]
    assert group.inputs == g.invars and group.outputs == g.outvars
    assert len(exe.kernels) == 1
    rng = np.random.default_rng(5)
    x, y = _values(F32, (5, 7), rng), _values(F32, (7,), rng)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(exe.run([x, y])[0], run_graph(g, [x, y])[0], rtol=1e-6, atol=1e-7)


def test_be1_intermediate_used_outside_is_output():
    """BE-1: a fused value that a non-fusible op reads becomes a group output; no cycles."""
    def f(x):
        a = ember.exp(x)
        s = a.sum()           # a reduction reads the intermediate
        return ember.tanh(a) + 1, s
    g = ember.make_ir(f)(ember.tensor(np.ones((4,), np.float32)))
    groups = fusion.elementwise_groups(g, eqn_supported)
    assert len(groups) == 1
    assert groups[0].eqns[0].out in groups[0].outputs
    order = fusion.schedule(g, groups)
    assert len(order) == len(g.eqns) - len(groups[0].eqns) + 1


def test_be1_no_group_through_an_outside_op():
    """BE-1: exp(x) and exp(x) + sum(exp(x)) would form a cycle through the reduction: two groups."""
    def f(x):
        a = ember.exp(x)
        return a * 2 + a.sum()
    g = ember.make_ir(f)(ember.tensor(np.ones((4,), np.float32)))
    groups = fusion.elementwise_groups(g, eqn_supported)
    fusion.schedule(g, groups)  # raises on a cycle
    if build.available():
        x = np.linspace(-1, 1, 4, dtype=np.float32)
        exe = StepExecutable(g, CpuTarget())
        assert sum(isinstance(u, fusion.Group) for u in exe.units) == 2
        np.testing.assert_allclose(exe.run([x])[0], run_graph(g, [x])[0], rtol=1e-6)


# ---------------------------------------------------------------- build
@needs_cc
def test_be1_hot_loop_vectorises(tmp_path):
    """BE-1: GCC reports the fused loop (with exp/tanh/sigmoid inlined) vectorized.

    The row is 64 wide: a 7-wide row is shorter than one AVX-512 vector, so GCC only
    vectorizes parts of the unrolled block there, which says nothing about the hot loop."""
    out = subprocess.run(["gcc", "--version"], capture_output=True, text=True)
    if out.returncode != 0 or "GCC" not in out.stdout + out.stderr and "gcc" not in out.stdout:
        pytest.skip("needs gcc for -fopt-info")
    src = tmp_path / "k.c"
    src.write_text(_step(_chain_graph(64)).source)
    r = subprocess.run(["gcc", *FLAGS, "-fopt-info-vec-optimized", "-o", str(tmp_path / "k.so"),
                        str(src), "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "loop vectorized" in r.stderr, r.stderr


@needs_cc
def test_be1_loading_kernels_keeps_subnormals():
    """BE-1: no -ffast-math: after loading a kernel library numpy still produces subnormals."""
    _step(_chain_graph())
    tiny = np.finfo(np.float32).smallest_subnormal
    r = np.array([tiny], np.float32) * np.float32(1.0)
    assert r[0] == tiny and r[0] != 0


@needs_cc
def test_be1_cache_is_reused(tmp_path, monkeypatch):
    """BE-1: a second compile of the same source hits the content-hashed cache."""
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "c"))
    source = _step(_chain_graph()).source
    p1 = build.build_library(source, FLAGS)
    mtime = p1.stat().st_mtime_ns
    assert build.build_library(source, FLAGS) == p1 and p1.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_be1_unsafe_flags_refused():
    """BE-1: -ffast-math is never accepted."""
    with pytest.raises(ValueError):
        build.build_library("int x;", build.FLAGS + ("-ffast-math",))


def test_be1_no_compiler_warns_once(monkeypatch):
    """BE-1: CC=/nonexistent -> the CPU target cannot compile (ember.jit then keeps the numpy
    executor), with exactly one warning."""
    monkeypatch.setenv("CC", "/nonexistent")
    monkeypatch.setattr(build, "_warned", False)
    g = _chain_graph()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(2):
            with pytest.raises(Unsupported, match="no working C compiler"):
                StepExecutable(g, CpuTarget())
    assert len(w) == 1 and "falling back to numpy" in str(w[0].message)
