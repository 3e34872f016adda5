"""ember.nn.functional against PyTorch: forward outputs and gradients from committed fixtures.

The fixtures come from tools/make_fixtures.py run in a separate environment with torch; these
tests read them with safetensors and never import torch.
"""
import json
import pathlib

import ml_dtypes  # noqa: F401
import numpy as np
import pytest

import ember
import ember.nn.functional as F

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "functional.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "functional.safetensors"))
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-10, atol=1e-12)}
# Looser tolerances, each with its reason:
WIDER = {
    # rows like 9999.973..10000.016 in float32: the variance keeps ~2 significant digits, so the
    # result depends on summation order (numpy pairwise vs PyTorch's cascade); float64 is exact
    "layer_norm_special_f32": dict(rtol=3e-2, atol=3e-2),
    "layer_norm_special_f64": dict(rtol=1e-8, atol=1e-9),  # same rows: ~8 digits lost in float64
    # logits of magnitude ~1e3 saturate the softmax: the query gradient is ~1e-6, at the float32
    # rounding floor of the ~1e2-sized terms it is formed from
    "sdpa_special_f32": dict(rtol=2e-5, atol=1e-5),
}


def _kwargs(case):
    kw = dict(case["kwargs"])
    for k, v in kw.items():
        if isinstance(v, list):
            kw[k] = tuple(v)
    return kw


@pytest.mark.parametrize("case", META["cases"], ids=[c["name"] for c in META["cases"]])
def test_functional_matches_pytorch(case):
    name = case["name"]
    args = {}
    for arg in case["inputs"]:
        arr = DATA[f"{name}.{arg}"]
        args[arg] = ember.tensor(arr, requires_grad=arg in case["grads"])
    out = getattr(F, case["function"])(**args, **_kwargs(case))
    tol = WIDER.get(name, TOL[case["dtype"]])
    want = DATA[f"{name}.out"]
    assert out.shape == want.shape
    assert out.dtype.name == str(want.dtype)
    np.testing.assert_allclose(out.detach().numpy(), want, **tol)
    if not case["grads"]:
        return
    out.backward(ember.tensor(DATA[f"{name}.gout"]))
    for arg in case["grads"]:
        g = args[arg].grad
        assert g is not None, f"no gradient reached {arg}"
        np.testing.assert_allclose(g.numpy(), DATA[f"{name}.grad.{arg}"], err_msg=f"grad of {arg}", **tol)
