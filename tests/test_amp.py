"""Mixed precision (BE-6): ember.autocast's CPU dtype policy and GradScaler's dynamic loss scaling
against torch.amp (fixtures from tools/make_amp_fixtures.py), eagerly and under ember.jit, and
float16 training that stays finite with the scaler."""
import json
import pathlib

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.amp import GradScaler

FIX = json.loads((pathlib.Path(__file__).parent / "fixtures" / "amp.json").read_text())


def _policy_ops():
    ember.manual_seed(0)
    x, w = ember.randn(2, 4), ember.randn(3, 4)
    img, k = ember.randn(1, 2, 5, 5), ember.randn(3, 2, 3, 3)
    t = ember.tensor([0, 2])
    return {
        "matmul": lambda: x @ w.T,
        "linear_no_bias": lambda: F.linear(x, w),
        "linear_bias": lambda: F.linear(x, w, ember.zeros(3)),
        "nll_loss_of_log_softmax": lambda: F.nll_loss(ember.log_softmax(x @ w.T, -1), t),
        "conv2d_no_bias": lambda: F.conv2d(img, k),
        "add": lambda: x + x,
        "softmax_of_matmul": lambda: ember.softmax(x @ w.T, -1),
        "cross_entropy_of_matmul": lambda: F.cross_entropy(x @ w.T, t),
        "mse_loss_of_matmul": lambda: F.mse_loss(x @ w.T, ember.zeros(2, 3)),
        "sum_of_matmul": lambda: (x @ w.T).sum(),
        "float64_matmul": lambda: x.double() @ w.double().T,
    }


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_dtype_policy_matches_torch(dtype):
    """Matmuls and convolutions run in the low precision, losses in float32, float64 untouched."""
    with ember.autocast("cpu", dtype=getattr(ember, dtype)):
        assert ember.is_autocast_enabled() and ember.get_autocast_dtype() is getattr(ember, dtype)
        got = {k: f().dtype.name for k, f in _policy_ops().items()}
    assert got == FIX["policy"][dtype]
    assert not ember.is_autocast_enabled()
    with ember.autocast(enabled=False):
        assert (ember.ones(2, 2) @ ember.ones(2, 2)).dtype is ember.float32


def test_autocast_gradients_reach_float32_parameters_and_jit_retraces():
    m = nn.Linear(4, 3, bias=False)
    x = ember.randn(5, 4)
    with ember.autocast():
        y = m(x)
        assert y.dtype is ember.bfloat16
        loss = F.mse_loss(y, ember.zeros(5, 3))
        assert loss.dtype is ember.float32
    loss.backward()
    assert m.weight.grad.dtype is ember.float32
    f = ember.jit(lambda t: m(t))
    assert f(x).dtype is ember.float32
    with ember.autocast():
        assert f(x).dtype is ember.bfloat16
    assert any("autocast is on (bfloat16)" in e for e in f.explain)


def _scaler_run(jit: bool):
    s = FIX["scaler"]
    w = ember.tensor(s["init"], requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)
    scaler = GradScaler(init_scale=4.0, growth_interval=3)

    def step(c):
        opt.zero_grad()
        scaler.scale((c * w).sum()).backward()
        scaler.step(opt)
        scaler.update()
    run = ember.jit(step) if jit else step
    scales, ws = [], []
    for c in s["c"]:
        run(ember.tensor(c, dtype=ember.float32))
        scales.append(scaler.get_scale())
        ws.append(w.detach().numpy().tolist())
    return scales, ws


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_grad_scaler_matches_torch(jit):
    """Skipped steps on inf/NaN gradients, backoff, growth every growth_interval finite steps."""
    scales, ws = _scaler_run(jit)
    assert scales == FIX["scaler"]["scale"]
    np.testing.assert_allclose(ws, FIX["scaler"]["w"], rtol=1e-6)


def test_grad_scaler_state_dict_and_misuse():
    s = GradScaler(init_scale=8.0, growth_interval=5)
    d = s.state_dict()
    assert d == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 5,
                 "_growth_tracker": 0}
    t = GradScaler()
    t.load_state_dict(d)
    assert t.get_scale() == 8.0 and t.get_growth_interval() == 5
    w = ember.ones(2, requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)
    s.scale(w.sum()).backward()
    s.unscale_(opt)
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 1.0])
    with pytest.raises(RuntimeError, match="already been called"):
        s.unscale_(opt)
    s.step(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        s.step(opt)
    s.update()
    with pytest.raises(RuntimeError, match="no inf checks"):
        s.update()
    off = GradScaler(enabled=False)
    assert off.scale(w.sum()) is not None and off.get_scale() == 1.0 and off.state_dict() == {}


def test_float16_training_with_scaler_stays_finite_and_learns():
    """Autocast float16 with GradScaler: a gradient scaled past float16's range is skipped and the
    scale backs off; the loss falls and the float32 parameters stay finite."""
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = ember.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = GradScaler(init_scale=2.0 ** 24, growth_interval=5)
    x = ember.randn(64, 8)
    y = (x[:, :1] * 2 - x[:, 1:2]).detach()

    @ember.jit
    def step(x, y):
        opt.zero_grad()
        with ember.autocast(dtype=ember.float16):
            loss = F.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss
    losses = [step(x, y).item() for _ in range(60)]
    assert scaler.get_scale() < 2.0 ** 24  # backed off at least once
    assert all(np.isfinite(p.detach().numpy()).all() for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]
