"""ember from many threads: eager ops, per-thread grad mode, jitted functions called at once on
both backends, traces while other calls run, the prefetching pipeline, the default generator."""
import threading

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.backend.cpu import compiler

BACKENDS = ["numpy"] + (["native"] if compiler.available() else [])


def _run_threads(fn, n=4):
    """Run fn(i) on n threads at once; re-raise the first exception any of them raised."""
    errors, start = [], threading.Barrier(n)

    def body(i):
        try:
            start.wait()
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]


def test_eager_ops_in_a_new_thread():
    out = {}

    def work(i):
        x = ember.ones(3) + i
        w = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
        (w * x).sum().backward()
        out[i] = (x.numpy().copy(), w.grad.numpy().copy())
    _run_threads(work)
    for i in range(4):
        np.testing.assert_array_equal(out[i][0], np.full(3, 1.0 + i, np.float32))
        np.testing.assert_array_equal(out[i][1], out[i][0])


def test_grad_mode_is_per_thread():
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def holder():
        with ember.no_grad():
            inside.set()
            release.wait(10)
            seen["holder"] = ember.is_grad_enabled()

    t = threading.Thread(target=holder)
    t.start()
    inside.wait(10)
    seen["main"] = ember.is_grad_enabled()  # another thread's no_grad does not reach this one
    w = ember.tensor([2.0], requires_grad=True)
    seen["records"] = (w * w).requires_grad
    release.set()
    t.join(10)
    assert seen == {"holder": False, "main": True, "records": True}


@pytest.mark.parametrize("backend", BACKENDS)
def test_pure_jit_from_four_threads(backend):
    """4 threads x 200 calls of one jitted inference function give exactly its eager results."""
    ember.manual_seed(0)
    model = ember.nn.Sequential(ember.nn.Linear(16, 32), ember.nn.ReLU(), ember.nn.Linear(32, 4))

    def f(x):
        return F.softmax(model(x), -1) * 2 + x.sum()
    jf = ember.jit(f, backend=backend)
    xs = [ember.randn(8, 16) for _ in range(4)]
    with ember.no_grad():
        ref = [f(x).numpy() for x in xs]

    def work(i):
        with ember.no_grad():
            for _ in range(200):
                np.testing.assert_allclose(jf(xs[i]).numpy(), ref[i], rtol=1e-6, atol=1e-6)
    _run_threads(work)
    assert jf.trace_count == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_traces_while_other_calls_run(backend):
    """Each thread's batch size is new to the function: traces and cached calls interleave."""
    ember.manual_seed(1)
    model = ember.nn.Sequential(ember.nn.Linear(8, 8), ember.nn.Tanh(), ember.nn.Linear(8, 3))
    jf = ember.jit(lambda x: model(x).sum(-1), backend=backend)
    xs = [ember.randn(n, 8) for n in (1, 2, 3, 5)]
    with ember.no_grad():
        ref = [model(x).sum(-1).numpy() for x in xs]

    def work(i):
        with ember.no_grad():
            for k in range(30):
                j = (i + k) % 4
                np.testing.assert_allclose(jf(xs[j]).numpy(), ref[j], rtol=1e-6, atol=1e-6)
    _run_threads(work)
    assert jf.trace_count == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_step_from_four_threads_is_serialized(backend):
    """A step that updates state runs one call at a time: 4 threads x 25 steps on the same batch
    leave the parameters exactly where 100 steps on one thread leave them."""
    def make():
        ember.manual_seed(2)
        model = ember.nn.Linear(6, 3)
        opt = ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        @ember.jit(backend=backend)
        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return model, step
    x, y = ember.randn(10, 6), ember.randint(0, 3, (10,))
    m1, s1 = make()
    for _ in range(100):
        s1(x, y)
    m2, s2 = make()
    _run_threads(lambda i: [s2(x, y) for _ in range(25)])
    for a, b in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_prefetch_map_creates_tensors():
    from ember.data import Pipeline
    p = Pipeline.range(20).map(lambda i: ember.full((2,), float(i)) * 2).prefetch(4)
    got = [t.numpy()[0] for t in p]
    assert got == [2.0 * i for i in range(20)]


def test_default_generator_draws_are_serialized():
    """Concurrent draws never reuse a counter: all 4 x 50 draws differ from each other."""
    ember.manual_seed(3)
    draws = []
    _run_threads(lambda i: draws.extend(ember.randint(0, 2 ** 32, (8,)).numpy().tobytes() for _ in range(50)))
    assert len(draws) == 200 and len(set(draws)) == 200
