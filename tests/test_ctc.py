"""CTC loss (PI-4, losses) against PyTorch's F.ctc_loss fixtures (tools/make_ctc_fixtures.py):
values and gradients for padded and concatenated targets, repeats, empty and impossible targets,
unbatched input, a non-zero blank (gradients through a log_softmax: see the tool's docstring for
why); float64 gradcheck of d loss / d log_probs itself; ember.jit; errors."""
import json
import pathlib

import numpy as np
import pytest

import ember
from ember.nn.ctc import CTCLoss, ctc_loss
from ember.testing import gradcheck

safetensors_numpy = pytest.importorskip("safetensors.numpy")
FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "ctc.json").read_text())["cases"]
REF = safetensors_numpy.load_file(str(FIX / "ctc.safetensors"))
CASES = [(n, d) for n in META for d in ("float32", "float64")]
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-12)}


def _args(name):
    c = META[name]
    return dict(targets=c["targets"], input_lengths=c["il"], target_lengths=c["tl"], blank=c.get("blank", 0),
                reduction=c.get("reduction", "mean"), zero_infinity=c.get("zero_infinity", False))


@pytest.mark.parametrize("name,dtype", CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_ctc_matches_pytorch(name, dtype):
    key = f"{name}.{dtype}"
    logits = ember.tensor(REF[f"{key}.logits"], requires_grad=True)
    loss = ctc_loss(ember.log_softmax(logits, -1), **_args(name))
    np.testing.assert_allclose(loss.detach().numpy(), REF[f"{key}.loss"], **TOL[dtype])
    ember.where(ember.isfinite(loss), loss, 0.0).sum().backward()
    want = REF[f"{key}.grad"]
    # PyTorch's gradient for an infinite (impossible) loss is NaN; ember's is 0 there (the loss
    # does not change with those logits), and the same as PyTorch's everywhere else
    want = np.where(np.isnan(want), 0.0, want)
    np.testing.assert_allclose(logits.grad.numpy(), want, **TOL[dtype])


def test_ctc_gradcheck_and_module_and_jit():
    a = _args("padded_mean")
    x = ember.tensor(REF["padded_mean.float64.logits"], requires_grad=True)
    gradcheck(lambda t: ctc_loss(ember.log_softmax(t, -1), **a), [x])
    lp = ember.log_softmax(x, -1).detach().requires_grad_()
    gradcheck(lambda t: ctc_loss(t, **a), [lp])
    m = CTCLoss(reduction="sum")
    lp = ember.log_softmax(ember.tensor(REF["padded_sum.float32.logits"]), -1)
    eager = m(lp, a["targets"], a["input_lengths"], a["target_lengths"])
    jitted = ember.jit(lambda t: m(t, a["targets"], a["input_lengths"], a["target_lengths"]))(lp)
    np.testing.assert_allclose(jitted.numpy(), eager.numpy(), rtol=1e-6)


def test_ctc_errors():
    lp = ember.randn(4, 2, 3).log_softmax(-1)
    with pytest.raises(ValueError, match="other than the blank"):
        ctc_loss(lp, [[0, 1], [1, 1]], [4, 4], [2, 2])
    with pytest.raises(ember.ShapeError, match="one length per batch element"):
        ctc_loss(lp, [[1], [1]], [4], [1, 1])
    with pytest.raises(ValueError, match=r"input_lengths \[5, 4\] must lie in \[0, 4\]"):
        ctc_loss(lp, [[1], [1]], [5, 4], [1, 1])
    with pytest.raises(ember.ShapeError, match="do not match target_lengths"):
        ctc_loss(lp, [1, 2, 1], [4, 4], [1, 1])
