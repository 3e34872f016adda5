"""The step's CBLAS (BE-16: sgemm through an address resolved at load): `EMBER_BLAS` picks numpy's
OpenBLAS, Intel MKL or any CBLAS library; the step's results do not depend on the choice beyond
rounding, and are bitwise reproducible with MKL too (MD-16)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.backend.cpu import blas
from ember.backend.cpu import compiler

pytestmark = pytest.mark.skipif(not compiler.available(), reason="needs a C compiler")

# a CBLAS of ember's own for the test: a plain triple loop that counts its calls
FAKE_CBLAS = r"""
#include <stdlib.h>
long fake_calls = 0;
#define GEMM(name, T)                                                                         \
void name(int order, int ta, int tb, int m, int n, int k, T alpha, const T* A, int lda,       \
          const T* B, int ldb, T beta, T* C, int ldc)                                         \
{                                                                                             \
    if (order != 101) abort();  /* ember always asks for row-major */                         \
    __atomic_fetch_add(&fake_calls, 1, __ATOMIC_RELAXED);                                     \
    for (int i = 0; i < m; i++)                                                               \
        for (int j = 0; j < n; j++) {                                                         \
            double s = 0;                                                                     \
            for (int p = 0; p < k; p++)                                                       \
                s += (double)(ta == 111 ? A[i * lda + p] : A[p * lda + i])                    \
                   * (double)(tb == 111 ? B[p * ldb + j] : B[j * ldb + p]);                   \
            C[i * ldc + j] = (T)(alpha * s + (beta == 0 ? 0 : beta * C[i * ldc + j]));        \
        }                                                                                     \
}
GEMM(cblas_sgemm, float)
GEMM(cblas_dgemm, double)
"""

STEP = """
import ctypes, sys, numpy as np, ember
from ember.backend.cpu import blas
rng = np.random.default_rng(0)
out = {}
for dt in (np.float32, np.float64):
    x = rng.standard_normal((37, 53)).astype(dt)
    w = rng.standard_normal((29, 53)).astype(dt)
    f = ember.jit(lambda x, w: ((x @ w.T).tanh().T @ x, x.T @ x), backend="native")
    a, b = (t.numpy() for t in f(ember.tensor(x), ember.tensor(w)))
    ref_a = np.tanh(x.astype(np.float64) @ w.T.astype(np.float64)).T @ x
    tol = 1e-4 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(a, ref_a, rtol=tol, atol=tol)
    np.testing.assert_allclose(b, x.T.astype(np.float64) @ x, rtol=tol, atol=tol)
print(blas.describe())
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_be16_ember_blas_path_routes_the_steps_gemms_to_that_library(tmp_path):
    src = tmp_path / "fake_cblas.c"
    src.write_text(FAKE_CBLAS)
    lib = tmp_path / "libfakecblas.so"
    subprocess.run([compiler.compiler(), "-O1", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    code = STEP + f"print('calls', ctypes.c_long.in_dll(ctypes.CDLL({str(lib)!r}), 'fake_calls').value)\n"
    r = _run(code, EMBER_BLAS=str(lib))
    assert r.returncode == 0, r.stderr
    describe, calls = r.stdout.strip().splitlines()[-2:]
    assert str(lib) in describe
    assert int(calls.split()[1]) >= 6  # three GEMMs per dtype, each at least one call


def test_be16_ember_blas_numpy_uses_numpys_openblas():
    r = _run(STEP, EMBER_BLAS="numpy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("numpy's BLAS")


def test_be16_ember_blas_that_does_not_load_is_a_clear_error():
    r = _run(STEP, EMBER_BLAS="/nonexistent/libnotblas.so")
    assert r.returncode != 0
    assert "EMBER_BLAS='/nonexistent/libnotblas.so' does not load as a CBLAS library" in r.stderr


def _mkl_installed() -> bool:
    return blas.load(blas.mkl_candidates())[0] is not None


def test_be16_mkl_when_installed_else_the_error_names_the_extra():
    r = _run(STEP, EMBER_BLAS="mkl")
    if not _mkl_installed():
        assert r.returncode != 0 and "pip install 'ember[mkl]'" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("Intel MKL")
    # MKL's GNU OpenMP layer: the process holds libgomp and no second OpenMP runtime
    maps = _run(STEP + "print(open('/proc/self/maps').read())", EMBER_BLAS="mkl").stdout
    assert "libgomp" in maps and "libiomp5" not in maps


def test_md16_step_bitwise_reproducible_whatever_the_inputs_alignment():
    """Whichever library the step calls (MKL picks kernels by alignment), the same values give the
    same bits at a fixed thread count, from buffers 4 bytes off a cache line too."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 300)).astype(np.float32)
    w = rng.standard_normal((300, 160)).astype(np.float32)

    def shifted(a, by):
        buf = np.empty(a.size + 32, np.float32)
        off = (-buf.ctypes.data % 64) // 4 + by
        v = buf[off:off + a.size].reshape(a.shape)
        v[...] = a
        return v
    f = ember.jit(lambda x, w: F.relu(x @ w).sum(0), backend="native")
    with ember.num_threads(2):
        runs = [f(ember.from_numpy(shifted(x, by)), ember.from_numpy(shifted(w, by))).numpy().copy()
                for by in (0, 1, 0, 3)]
    for r in runs[1:]:
        assert np.array_equal(runs[0], r)
    np.testing.assert_allclose(runs[0], np.maximum(x.astype(np.float64) @ w, 0).sum(0), rtol=1e-4)
