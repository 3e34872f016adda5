"""Anomaly mode names the first op that produced NaN/inf from finite values, eagerly and under
ember.jit (where it leaves the state untouched); it is per thread and off by default."""
import threading

import numpy as np
import pytest

import ember
from ember.autograd import AnomalyError, detect_anomaly, is_anomaly_enabled, set_detect_anomaly
from ember.backend.cpu import compiler

BACKENDS = ["numpy"] + (["native"] if compiler.available() else [])


def test_forward_op_and_line():
    x = ember.tensor([1.0, 0.0, 2.0], requires_grad=True)
    assert ember.log(x).sum().item() == -np.inf  # off: no check
    with detect_anomaly():
        with pytest.raises(AnomalyError, match=r"anomaly: log produced inf from finite inputs \(at .*test_anomaly"):
            ember.log(x)
        ember.log(ember.tensor([np.inf]))  # a non-finite input is not a new anomaly


def test_backward_names_the_forward_op():
    x = ember.tensor([1.0, 0.0, 2.0], requires_grad=True)
    with detect_anomaly():
        y = ember.sqrt(x).sum()
        with pytest.raises(AnomalyError, match=r"in the backward of sqrt \(whose forward ran at .*test_anomaly"):
            y.backward()


def test_set_detect_anomaly_and_threads():
    seen = []
    set_detect_anomaly(True)
    try:
        assert is_anomaly_enabled()
        t = threading.Thread(target=lambda: seen.append(is_anomaly_enabled()))
        t.start()
        t.join()
    finally:
        set_detect_anomaly(False)
    assert seen == [False] and not is_anomaly_enabled()
    with set_detect_anomaly(True):
        assert is_anomaly_enabled()
    assert not is_anomaly_enabled()


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_step_names_the_equation_and_keeps_the_state(backend):
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)

    @ember.jit(backend=backend)
    def step(x):
        opt.zero_grad()
        loss = (ember.log(x) * w).sum()
        loss.backward()
        opt.step()
        return loss
    step(ember.tensor([1.0, 3.0]))
    before = w.detach().numpy().copy()
    with detect_anomaly():
        with pytest.raises(AnomalyError, match=r"anomaly: log produced inf from finite inputs \(at .*test_anomaly"):
            step(ember.tensor([1.0, 0.0]))
        np.testing.assert_array_equal(w.detach().numpy(), before)
        loss = step(ember.tensor([1.0, 3.0]))  # a finite step runs (checked) and updates the state
    assert np.isfinite(loss.item()) and not np.array_equal(w.detach().numpy(), before)
    after = w.detach().numpy().copy()
    ref = after - 0.1 * np.log([1.0, 3.0])
    step(ember.tensor([1.0, 3.0]))  # and the fast path continues from there
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-6)
