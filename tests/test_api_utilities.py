"""PyTorch's small utilities: set_printoptions, inference_mode, grad-mode decorators used from many
threads at once, and ember.testing.assert_close (its default tolerances are PyTorch's)."""
import threading

import numpy as np
import pytest

import ember
from ember.testing import assert_close


@pytest.fixture
def printopts():
    yield
    ember.set_printoptions(profile="default")


def test_set_printoptions(printopts):
    x = ember.tensor([1.123456789, 2.5, 3.0])
    assert "1.1234568" in repr(x)
    ember.set_printoptions(precision=2)
    assert repr(x) == "tensor([1.12, 2.5 , 3.  ])"
    ember.set_printoptions(precision=3, sci_mode=True)
    assert repr(x) == "tensor([1.123e+00, 2.500e+00, 3.000e+00])"
    ember.set_printoptions(threshold=5, edgeitems=1)
    assert "..." in repr(ember.arange(10))
    ember.set_printoptions(profile="full")
    assert "..." not in repr(ember.arange(1000))
    ember.set_printoptions(profile="default")
    assert "..." in repr(ember.arange(1000)) and "1.1234568" in repr(x)
    with pytest.raises(ValueError, match="profile"):
        ember.set_printoptions(profile="tiny")


def test_inference_mode():
    w = ember.ones(2, requires_grad=True)
    with ember.inference_mode():
        assert not ember.is_grad_enabled() and ember.is_inference_mode_enabled()
        assert not (w * 2).requires_grad
    with ember.inference_mode(False):
        assert (w * 2).requires_grad

    @ember.inference_mode()
    def f(t):
        return t * 2
    assert not f(w).requires_grad and ember.is_grad_enabled()


def test_grad_mode_decorator_from_many_threads():
    """One @no_grad()-decorated function running in 8 threads at once restores each thread's mode."""
    barrier = threading.Barrier(8)
    seen = []

    @ember.no_grad()
    def work():
        barrier.wait(timeout=10)
        return ember.is_grad_enabled()

    def run():
        inside = work()
        seen.append((inside, ember.is_grad_enabled()))
    ts = [threading.Thread(target=run) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=20)
    assert seen == [(False, True)] * 8


def test_assert_close_defaults_and_messages():
    assert_close(ember.tensor([1.0, 2.0]), ember.tensor([1.0, 2.0 + 2e-6]))  # float32: atol 1e-5
    with pytest.raises(AssertionError, match=r"Mismatched elements: 1 / 3 \(33.3%\)"):
        assert_close(ember.tensor([1.0, 2.0, 3.0]), ember.tensor([1.0, 2.1, 3.0]))
    d = ember.tensor([1.0, 1.0 + 1e-6], dtype=ember.float64)
    with pytest.raises(AssertionError):
        assert_close(d, ember.tensor([1.0, 1.0], dtype=ember.float64))  # float64: 1e-7
    assert_close(ember.tensor([1.0], dtype=ember.bfloat16), ember.tensor([1.01], dtype=ember.bfloat16))
    with pytest.raises(AssertionError, match="nan"):
        assert_close(ember.tensor([float("nan")]), ember.tensor([float("nan")]))
    assert_close(ember.tensor([float("nan"), float("inf")]), ember.tensor([float("nan"), float("inf")]),
                 equal_nan=True)
    with pytest.raises(AssertionError, match="'dtype' do not match"):
        assert_close(ember.tensor([1]), ember.tensor([1.0]))
    assert_close(ember.tensor([1]), ember.tensor([1.0]), check_dtype=False)
    with pytest.raises(AssertionError, match="'shape' do not match"):
        assert_close(ember.ones(2), ember.ones(3))
    assert_close({"a": [ember.ones(2), 3.0]}, {"a": [np.ones(2, np.float32), 3.0]})
    assert_close(ember.tensor([1.0]), ember.tensor([1.5]), rtol=0.0, atol=0.5)
    with pytest.raises(AssertionError, match="custom"):
        assert_close(ember.ones(1), ember.zeros(1), msg="custom")
