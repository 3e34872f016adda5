"""ember's PyTorch-named functions against torch results recorded in tests/fixtures/ops.*.

The fixtures (tools/make_fixtures.py, run with torch in a separate environment) hold the cases
where PyTorch's semantics are the reference and numpy's may differ: floor division and remainder
with negative operands, round-half-even, NaN and signed zeros in maximum/minimum/sign, integer pow
overflow, float16/bfloat16 arithmetic and accumulation, the dtypes of integer reductions, var/std
corrections, logsumexp's infinities, argmax ties and NaN, clamp and where promotion.

Each torch op maps to the ember function of the same name (`OPS`); a fixture op without a mapping
fails. Results must match exactly (value, dtype, shape, signed zeros; NaN compares equal to NaN
whatever its sign bit) except the float32 reductions whose summation order differs from torch's
(`TOL`, with the reason) and float64 logsumexp, whose last bit depends on the CPU's libm (`TOL64`). Where ember deliberately differs from PyTorch the case is listed in
`DIFFERENCES` with the reason and the exact expected ember result, and the test asserts that
difference (so a stale entry fails too). PyTorch governs the Tensor API, so the differences found
while writing these tests were fixed in ember instead; the dict is empty.
"""
import json
import pathlib

import ml_dtypes
import numpy as np
import pytest

import ember

safetensors_numpy = pytest.importorskip("safetensors.numpy")

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "ops.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "ops.safetensors"))

# torch.<op> -> the ember function with PyTorch's name (torch.true_divide is torch.div's alias)
OPS = {
    "floor_divide": ember.floor_divide, "remainder": ember.remainder, "fmod": ember.fmod,
    "div": ember.div, "true_divide": ember.div, "round": ember.round,
    "maximum": ember.maximum, "minimum": ember.minimum, "fmax": ember.fmax, "fmin": ember.fmin,
    "sign": ember.sign, "signbit": ember.signbit, "pow": ember.pow,
    "add": ember.add, "mul": ember.mul, "exp": ember.exp,
    "sum": ember.sum, "prod": ember.prod, "mean": ember.mean, "var": ember.var, "std": ember.std,
    "logsumexp": ember.logsumexp, "cumsum": ember.cumsum,
    "argmax": ember.argmax, "argmin": ember.argmin, "amax": ember.amax,
    "clamp": ember.clamp, "where": ember.where,
}

# float32 reductions: numpy's pairwise summation vs torch's cascade differ in the last bits
_SUM_ORDER = dict(rtol=1e-6, atol=1e-6)
TOL = {op: _SUM_ORDER for op in ("mean", "var", "std", "logsumexp", "cumsum")}
# float64 logsumexp: neither library rounds exp/log correctly, and numpy's float64 exp/log are
# SVML on AVX-512 machines and libm elsewhere, so the last bit depends on the CPU
TOL64 = {"logsumexp": dict(rtol=4e-16, atol=0)}

# case name -> (reason, ember's expected output as a list): deliberate differences from PyTorch
DIFFERENCES: dict = {}


def _arr(case, key):
    a = DATA[key]
    return a.view(ml_dtypes.bfloat16) if key in case["bf16_bits"] else a


def _run(case):
    args = {a: ember.tensor(_arr(case, f"{case['name']}.{a}")) for a in case["inputs"]}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in case["kwargs"].items()}
    op = case["op"].removeprefix("torch.")
    return OPS[op](**args, **kwargs)


def _same(got: np.ndarray, want: np.ndarray, tol=None):
    """Equal values (signed zeros too; NaN == NaN) or, with `tol`, close ones; the mask of mismatches."""
    if want.dtype.kind in "iub":
        return got != want
    g, w = got.astype(np.float64), want.astype(np.float64)
    gn, wn = np.isnan(g), np.isnan(w)
    bad = gn != wn
    ok = ~gn & ~wn
    if tol is None:
        bad |= ok & ((g != w) | (np.signbit(g) != np.signbit(w)))
    else:
        bad |= ok & ~np.isclose(g, w, rtol=tol["rtol"], atol=tol["atol"])
        bad |= ok & ~np.isfinite(w) & (g != w)
    return bad


def test_every_fixture_op_is_mapped():
    ops = {c["op"].removeprefix("torch.") for c in META["cases"]}
    assert ops <= set(OPS), f"fixture ops without an ember mapping: {sorted(ops - set(OPS))}"
    assert set(DIFFERENCES) <= {c["name"] for c in META["cases"]}


@pytest.mark.parametrize("case", META["cases"], ids=[c["name"] for c in META["cases"]])
def test_op_matches_pytorch(case):
    name = case["name"]
    out = _run(case)
    want = _arr(case, f"{name}.out")
    assert out.dtype.name == case["out_dtype"], f"dtype {out.dtype.name}, torch {case['out_dtype']}"
    assert list(out.shape) == case["out_shape"]
    got = out.numpy()
    assert got.dtype == want.dtype
    op = case["op"].removeprefix("torch.")
    tol = {"float32": TOL, "float64": TOL64}.get(case["out_dtype"], {}).get(op)
    bad = _same(got, want, tol)
    if name in DIFFERENCES:
        reason, expected = DIFFERENCES[name]
        assert bad.any(), f"{name} now matches PyTorch: drop it from DIFFERENCES ({reason})"
        assert not _same(got, np.array(expected, dtype=want.dtype)).any(), f"{name}: {reason}"
        return
    if bad.any():
        idx = np.argwhere(bad)[:8]
        inputs = {a: _arr(case, f"{name}.{a}") for a in case["inputs"]}
        lines = [f"  at {tuple(i)}: got {got[tuple(i)]!r}, torch {want[tuple(i)]!r}, inputs " +
                 ", ".join(f"{a}={v[tuple(i)] if v.shape == got.shape else '...'}" for a, v in inputs.items())
                 for i in idx]
        pytest.fail(f"{name}: {int(bad.sum())} of {bad.size} elements differ from PyTorch\n" + "\n".join(lines))


def test_comparison_is_strict():
    """The comparison notices a flipped zero sign and a last-bit change (it can fail)."""
    w = np.array([0.0, 1.0, np.nan], np.float32)
    assert _same(np.array([-0.0, 1.0, np.nan], np.float32), w).any()
    assert _same(np.array([0.0, np.nextafter(np.float32(1), np.float32(2)), np.nan], np.float32), w).any()
    assert not _same(np.array([0.0, 1.0, -np.nan], np.float32), w).any()


def test_fmod_and_trunc_division_are_exact_for_large_values():
    """fmod is exact (no rem(x, y) - y rounding); integer trunc division does not go through float32."""
    x = ember.tensor(np.array([-1e-3, 1e-3, -7.25, 2.0 ** 40 + 3], np.float32))
    np.testing.assert_array_equal(ember.fmod(x, 1.0).numpy(), np.fmod(x.numpy(), np.float32(1.0)))
    big = ember.tensor(np.array([2 ** 62 + 1, -(2 ** 62) - 1, 7, -7], np.int64))
    q = ember.div(big, ember.tensor(np.array([3, 3, -2, -2], np.int64)), rounding_mode="trunc")
    assert q.dtype is ember.int64
    assert q.tolist() == [(2 ** 62 + 1) // 3, -((2 ** 62 + 1) // 3), -3, 3]
