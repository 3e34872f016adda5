"""ember against PyTorch on the edge cases of tests/_edge_cases.py (fixtures from
tools/make_edge_fixtures.py): gradients at special points, inputs PyTorch accepts (empty, 0-d,
one-element padding), float64 weak scalars, and half precision accumulating in float32 (BE-6),
eagerly and, where marked, under ember.jit on both backends."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

import ember
import ember.nn.functional as F
from ember.backend.cpu import compiler
from _edge_cases import CASES

HERE = os.path.join(os.path.dirname(__file__), "fixtures")
REF = load_file(os.path.join(HERE, "edge.safetensors"))
META = {c["name"]: c for c in json.load(open(os.path.join(HERE, "edge.json")))["cases"]}
BACKENDS = ["numpy"] + (["native"] if compiler.available() else [])
TOL = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-14}


def _check(name, got, want):
    got = np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, got.dtype, want.shape, want.dtype)
    if want.dtype.kind == "f":
        tol = TOL[want.dtype.type]
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol,
                                   equal_nan=True, err_msg=name)
        zeros = (want == 0) & (got == 0)
        np.testing.assert_array_equal(np.signbit(got[zeros]), np.signbit(want[zeros]), err_msg=f"{name}: sign of 0")
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


def _tensors(inputs, grad):
    return {k: ember.tensor(v, requires_grad=k in grad) for k, v in inputs.items()}


@pytest.mark.parametrize("name,inputs,grad,jit,fn", CASES, ids=[c[0] for c in CASES])
def test_matches_pytorch(name, inputs, grad, jit, fn):
    assert name in META, "stale fixtures: run tools/make_edge_fixtures.py"
    ts = _tensors(inputs, grad)
    out = fn(ember, F, **ts)
    _check(name, out.detach().numpy(), REF[f"{name}.out"])
    if grad:
        out.backward(ember.ones_like(out))
        for k in grad:
            _check(f"{name} d/d{k}", ts[k].grad.numpy(), REF[f"{name}.grad.{k}"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,inputs,fn", [(c[0], c[1], c[4]) for c in CASES if c[3]], ids=[c[0] for c in CASES if c[3]])
def test_jit_matches_pytorch(name, inputs, fn, backend):
    ts = _tensors(inputs, ())
    f = ember.jit(lambda **kw: fn(ember, F, **kw), backend=backend)
    _check(f"{name} jit {backend}", f(**ts).numpy(), REF[f"{name}.out"])
