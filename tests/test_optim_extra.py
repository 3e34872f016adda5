"""ember.optim, second batch: RMSprop, Adagrad, Adadelta, LBFGS, LAMB and Lion; MultiStepLR,
ExponentialLR, OneCycleLR, ReduceLROnPlateau, SequentialLR and CosineAnnealingWarmRestarts.

Book checklist PI-4 (optimizers SGD, Momentum, AdaGrad, Adadelta, RMSProp, Adam): AdaGrad,
Adadelta and RMSProp here (SGD, Momentum and Adam in tests/test_optim.py): the first three steps
on f(w) = 1/2 ||w||^2 against the closed-form updates, and the trajectories against PyTorch.

References come from tools/make_optim2_fixtures.py (tests/fixtures/optim2.*), run in a separate
environment with torch 2.13: PyTorch's RMSprop, Adagrad, Adadelta, LBFGS and schedulers, and
LAMB (You et al. 2020, apex FusedLAMB) and Lion (Chen et al. 2023, lucidrains' lion-pytorch)
written there with torch tensor ops. These tests read the fixtures with safetensors and never
import torch. Also: state-dict round trips, a jitted training step equal to eager, no value reads
in `step()`.
"""
import contextlib
import copy
import json
import math
import pathlib

import numpy as np
import pytest

import ember
import ember.optim as optim
from ember.optim import lr_scheduler as S

from test_optim import SHORT, TOL, _data, _loss, _model, kwargs_of as _kwargs, run_case  # shared with test_optim

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "optim2.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "optim2.safetensors"))
PROB = META["problem"]


def _run_case(case, on_step=None):
    return run_case(case, on_step, PROB, DATA)


# ====================================================================== fixtures: optimizers
@pytest.mark.parametrize("case", META["optimizers"], ids=[c["name"] for c in META["optimizers"]])
def test_optimizer_matches_reference(case):
    """PI-4: RMSprop, Adagrad, Adadelta (PyTorch) and LAMB, Lion (torch-op references), 10 steps."""
    name, tol = case["name"], TOL[case["dtype"]]

    def check(t, params, opt):
        for i, p in enumerate(params):
            want = DATA[f"{name}.step{t}.p{i}"]
            assert p.dtype.name == str(want.dtype)
            np.testing.assert_allclose(p.detach().numpy(), want, **tol, err_msg=f"step {t} param {i}")

    params, opt = _run_case(case, check)
    for i, p in enumerate(params):
        for key in case["state_keys"][str(i)]:
            got, want = opt.state[p][key].numpy(), DATA[f"{name}.state.p{i}.{key}"]
            # buffers normwise (relative to their largest entry): RMSprop's momentum buffer sums
            # terms g / sqrt(v) of size ~10 whose last-bit differences stay where entries cancel
            atol = max(tol["atol"], tol["rtol"] * float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=atol, err_msg=f"state {key} of param {i}")


# ====================================================================== fixtures: L-BFGS
def _lbfgs_problem(case):
    """The parameters and the loss function of an L-BFGS case (the tool's closures, op for op)."""
    short = SHORT[case["dtype"]]
    if case["closure"] == "quartic":
        n = len(PROB["shapes"])
        params = [ember.tensor(DATA[f"problem.{short}.init.p{i}"], requires_grad=True) for i in range(n)]
        targets = [ember.tensor(DATA[f"problem.{short}.target.p{i}"]) for i in range(n)]
        a = [ember.tensor(DATA[f"lbfgs.quartic.{short}.a.p{i}"]) for i in range(n)]
        b = [ember.tensor(DATA[f"lbfgs.quartic.{short}.b.p{i}"]) for i in range(n)]

        def f():
            total = None
            for i in (0, 2, 3):
                d = params[i] - targets[i]
                d2 = d * d
                term = (a[i] * d2 * 0.5 + b[i] * d2 * d2 * 0.25).sum()
                total = term if total is None else total + term
            return total
    else:
        params = [ember.tensor(x, dtype=case["dtype"], requires_grad=True) for x in META["lbfgs"]["rosenbrock_x0"]]

        def f():
            x = ember.cat([params[0], params[1]])
            lo, hi = x[:-1], x[1:]
            r = hi - lo * lo
            s = 1.0 - lo
            return (r * r * 100.0 + s * s).sum()
    return params, f


def _lbfgs_closure(opt, f):
    def closure():
        opt.zero_grad()
        loss = f()
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("case", META["lbfgs"]["cases"], ids=[c["name"] for c in META["lbfgs"]["cases"]])
def test_lbfgs_matches_pytorch(case):
    """L-BFGS (plain and strong-Wolfe) against torch.optim.LBFGS: 10 step(closure) calls."""
    name, tol = case["name"], TOL[case["dtype"]]
    params, f = _lbfgs_problem(case)
    opt = optim.LBFGS(params, **case["kwargs"])
    closure = _lbfgs_closure(opt, f)
    losses = []
    for t in range(META["lbfgs"]["steps"]):
        losses.append(float(opt.step(closure)))
        for i, p in enumerate(params):
            np.testing.assert_allclose(p.detach().numpy(), DATA[f"lbfgs.{name}.step{t}.p{i}"], **tol,
                                       err_msg=f"step {t} param {i}")
    # the losses normwise (relative to the first): near the optimum the loss is a sum of tiny terms
    want = DATA[f"lbfgs.{name}.loss"]
    np.testing.assert_allclose(losses, want, rtol=tol["rtol"], atol=max(tol["atol"], tol["rtol"] * want[0]))
    st = opt.state[params[0]]
    assert (st["func_evals"], st["n_iter"], len(st["old_dirs"])) == \
        (case["func_evals"], case["n_iter"], case["history"])
    if case["dtype"] == "float64":
        # the last direction and gradient: a gradient's rounding error is about the parameters'
        # ulp times the Hessian's norm (1e-14 absolute covers these O(1) problems, where at the
        # converged quartic point the gradient is ~1e-6). Not in float32, where that product is
        # ~1e-4 for Rosenbrock and the converged gradient is rounding noise itself
        for k in ("d", "prev_flat_grad"):
            want = DATA[f"lbfgs.{name}.state.{k}"]
            np.testing.assert_allclose(st[k].numpy(), want, rtol=tol["rtol"], atol=1e-14, err_msg=k)


# ====================================================================== fixtures: schedulers
def _sched_optimizer(kind, lrs):
    a = ember.zeros(1, requires_grad=True)
    b = ember.zeros(1, requires_grad=True)
    groups = [{"params": [a], "lr": lrs[0]}, {"params": [b], "lr": lrs[1]}]
    if kind == "adam":
        return optim.Adam(groups, lr=lrs[0])
    return optim.SGD(groups, lr=lrs[0], momentum=0.9 if kind == "sgd_momentum" else 0.0)


def _build_sched(opt, spec):
    kw = dict(spec["kwargs"])
    if spec["type"] == "SequentialLR":
        kw["schedulers"] = [_build_sched(opt, s) for s in kw["schedulers"]]
    return getattr(S, spec["type"])(opt, **kw)


def _momenta(opt, kind):
    return [g["betas"][0] if kind == "adam" else g["momentum"] for g in opt.param_groups]


@pytest.mark.parametrize("case", META["schedulers"], ids=[c["name"] for c in META["schedulers"]])
def test_scheduler_matches_pytorch(case):
    """The 101 learning rates (and momenta, for OneCycleLR) of each group, as PyTorch's."""
    name = case["name"]
    opt = _sched_optimizer(case["optimizer"], case["lrs"])
    lr_tensors = [g["lr"] for g in opt.param_groups]
    sched = _build_sched(opt, case["spec"])
    metrics = DATA[f"sched.{name}.metrics"] if case.get("metrics") else None
    got, moms = [sched.get_last_lr()], [_momenta(opt, case["optimizer"])]
    for k in range(case["steps"]):
        opt.step()
        if metrics is not None:
            sched.step(float(metrics[k]))
        elif "epochs" in case:
            sched.step(case["epochs"][k])
        else:
            sched.step()
        got.append(sched.get_last_lr())
        moms.append(_momenta(opt, case["optimizer"]))
    assert all(g["lr"] is t for g, t in zip(opt.param_groups, lr_tensors))
    np.testing.assert_allclose(np.array(got), DATA[f"sched.{name}"], rtol=1e-12, atol=1e-15)
    if case.get("momentum"):
        np.testing.assert_allclose(np.array(moms), DATA[f"sched.{name}.momentum"], rtol=1e-12, atol=1e-15)


# ====================================================================== PI-4: closed forms
W0 = np.array([1.0, -2.0, 0.5, 3.0])


def _quadratic_steps(opt, w, n=3):
    """Minimise f(w) = 0.5 * ||w||^2 (grad = w) for n steps; the iterates after each step."""
    out = []
    for _ in range(n):
        opt.zero_grad()
        loss = (w * w).sum() * 0.5
        loss.backward()
        opt.step()
        out.append(w.detach().numpy().copy())
    return out


def _closed_adagrad(lr, lr_decay=0.0, eps=1e-10, init=0.0):
    w, acc, out = W0.copy(), np.full_like(W0, init), []
    for t in (1, 2, 3):
        acc = acc + w * w
        w = w - lr / (1 + (t - 1) * lr_decay) * w / (np.sqrt(acc) + eps)
        out.append(w)
    return out


def _closed_rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
    w, v, ga, buf, out = W0.copy(), 0.0, 0.0, 0.0, []
    for _ in range(3):
        g = w
        v = alpha * v + (1 - alpha) * g * g
        ga = alpha * ga + (1 - alpha) * g
        avg = np.sqrt(v - ga * ga if centered else v) + eps
        if momentum:
            buf = momentum * buf + g / avg
            w = w - lr * buf
        else:
            w = w - lr * g / avg
        out.append(w)
    return out


def _closed_adadelta(lr=1.0, rho=0.9, eps=1e-6):
    w, v, u, out = W0.copy(), 0.0, 0.0, []
    for _ in range(3):
        g = w
        v = rho * v + (1 - rho) * g * g
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        w = w - lr * delta
        out.append(w)
    return out


def _pi4_check(cls, kw, want):
    w = ember.tensor(W0, requires_grad=True)
    for t, (g, ref) in enumerate(zip(_quadratic_steps(cls([w], **kw), w), want), 1):
        np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-6, err_msg=f"{cls.__name__} {kw} step {t}")


def test_pi4_closed_form_first_steps_adagrad():
    """PI-4 AdaGrad: the first step is w0 - lr * sign(w0) (sum = w0^2); then lr / sqrt(sum g^2)."""
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.Adagrad([w], lr=0.1), w)
    np.testing.assert_allclose(got[0], W0 - 0.1 * np.sign(W0), rtol=1e-6, atol=1e-6)
    # second step: g = w1, sum = w0^2 + w1^2
    w1 = W0 - 0.1 * np.sign(W0)
    np.testing.assert_allclose(got[1], w1 - 0.1 * w1 / np.sqrt(W0 ** 2 + w1 ** 2), rtol=1e-6, atol=1e-6)
    for kw in (dict(lr=0.1), dict(lr=0.1, lr_decay=0.5), dict(lr=0.3, initial_accumulator_value=0.25),
               dict(lr=0.05, eps=1e-3)):
        _pi4_check(optim.Adagrad, kw, _closed_adagrad(kw["lr"], kw.get("lr_decay", 0.0), kw.get("eps", 1e-10),
                                                      kw.get("initial_accumulator_value", 0.0)))


def test_pi4_closed_form_first_steps_rmsprop():
    """PI-4 RMSProp: the first step is w0 - lr * w0 / (sqrt(1 - alpha) |w0| + eps)."""
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.RMSprop([w], lr=0.01), w)
    np.testing.assert_allclose(got[0], W0 - 0.01 * np.sign(W0) / math.sqrt(0.01), rtol=1e-6, atol=1e-6)
    for kw in (dict(lr=0.01), dict(lr=0.01, alpha=0.9), dict(lr=0.01, momentum=0.9),
               dict(lr=0.001, centered=True, alpha=0.5), dict(lr=0.001, centered=True, alpha=0.3),
               dict(lr=0.001, centered=True, momentum=0.5)):
        _pi4_check(optim.RMSprop, kw, _closed_rmsprop(**kw))


def test_pi4_closed_form_first_steps_adadelta():
    """PI-4 Adadelta: the first step is lr * sqrt(eps) / sqrt(0.1 w0^2 + eps) * w0 (no lr to tune)."""
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.Adadelta([w]), w)
    np.testing.assert_allclose(got[0], W0 - math.sqrt(1e-6) / np.sqrt(0.1 * W0 * W0 + 1e-6) * W0,
                               rtol=1e-6, atol=1e-6)
    for kw in (dict(), dict(lr=0.5, rho=0.5), dict(lr=2.0, eps=1e-3)):
        _pi4_check(optim.Adadelta, kw, _closed_adadelta(**kw))


def test_lamb_and_lion_closed_forms():
    """Lion moves every coordinate by exactly lr; LAMB's trust ratio is 1 at w = 0."""
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.Lion([w], lr=0.1), w)
    for t, g in enumerate(got, 1):
        np.testing.assert_allclose(g, W0 - 0.1 * t * np.sign(W0), rtol=1e-12)
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.Lion([w], lr=0.1, weight_decay=0.5), w, n=1)
    np.testing.assert_allclose(got[0], W0 * (1 - 0.05) - 0.1 * np.sign(W0), rtol=1e-12)
    # LAMB, first step: u = sign(w0) (bias-corrected Adam), ratio = ||w0|| / ||u|| = ||w0|| / 2
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.LAMB([w], lr=0.1, eps=0.0), w, n=1)
    np.testing.assert_allclose(got[0], W0 - 0.1 * np.linalg.norm(W0) / 2 * np.sign(W0), rtol=1e-12)
    z = ember.zeros(4, dtype=ember.float64, requires_grad=True)
    opt = optim.LAMB([z], lr=0.1)
    z.grad = ember.tensor([1.0, -1.0, 2.0, 0.0], dtype=ember.float64)
    opt.step()  # ||w|| = 0: ratio 1, an Adam step (sign(g) / (1 + eps))
    np.testing.assert_allclose(z.detach().numpy(), [-0.1, 0.1, -0.1, 0.0], rtol=1e-5, atol=0)
    z.grad = ember.zeros(4, dtype=ember.float64)
    before = z.detach().numpy().copy()
    opt2 = optim.LAMB([z], lr=0.1)
    opt2.step()  # ||u|| = 0: nothing moves, no NaN
    np.testing.assert_array_equal(z.detach().numpy(), before)


# ====================================================================== traceability properties
NEW_OPTIMIZERS = [
    (optim.RMSprop, dict(lr=0.01)),
    (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.01)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    (optim.Adadelta, dict(lr=1.0, weight_decay=0.01)),
    (optim.LAMB, dict(lr=0.01, weight_decay=0.01)),
    (optim.Lion, dict(lr=0.001, weight_decay=0.1)),
]
NEW_IDS = ["rmsprop", "rmsprop_centered_momentum", "adagrad", "adadelta", "lamb", "lion"]

_VALUE_READS = ("item", "__float__", "__int__", "__bool__", "__index__", "numpy", "tolist", "__array__")


@contextlib.contextmanager
def no_value_reads():
    """Make every way of reading a tensor's value into Python raise, inside the block."""
    saved = {name: ember.Tensor.__dict__[name] for name in _VALUE_READS}

    def boom(*a, **k):
        raise AssertionError("a tensor value was read into Python")
    try:
        for name in _VALUE_READS:
            setattr(ember.Tensor, name, boom)
        yield
    finally:
        for name, fn in saved.items():
            setattr(ember.Tensor, name, fn)


def _traceable_schedulers(opt):
    return [S.MultiStepLR(opt, milestones=[1, 2]), S.ExponentialLR(opt, gamma=0.9),
            S.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2),
            S.OneCycleLR(opt, max_lr=0.1, total_steps=10, cycle_momentum=False),
            S.SequentialLR(opt, [S.ExponentialLR(opt, 0.5), S.CosineAnnealingWarmRestarts(opt, T_0=2)],
                           milestones=[2])]


@pytest.mark.parametrize("cls,kw", NEW_OPTIMIZERS, ids=NEW_IDS)
def test_state_exists_after_construction_and_step_reads_no_values(cls, kw):
    """State tensors from construction (kept by step()); step(), scheduler.step() read no value."""
    w, b = _model()
    opt = cls([w, b], **kw)
    before = {id(p): dict(opt.state[p]) for p in (w, b)}
    for p in (w, b):
        st = opt.state[p]
        assert st and all(isinstance(v, ember.Tensor) for v in st.values())
        for k, v in st.items():
            if k == "step":
                assert v.ndim == 0 and v.dtype is ember.float32 and v.item() == 0
            else:
                assert v.shape == p.shape and v.dtype is p.dtype
    scheds = _traceable_schedulers(opt)
    plateau = S.ReduceLROnPlateau(opt, patience=0)
    x, y = _data()
    for _ in range(3):
        opt.zero_grad()
        loss = _loss(w, b, x, y)
        loss.backward()
        with no_value_reads():
            opt.step()
            for s in scheds:
                s.step()
            plateau.step(loss.detach())
    for p in (w, b):
        assert all(opt.state[p][k] is v for k, v in before[id(p)].items())
        assert p.is_leaf and p.grad_fn is None
        assert not any(v.requires_grad for v in opt.state[p].values())


@pytest.mark.parametrize("cls,kw", NEW_OPTIMIZERS, ids=NEW_IDS)
def test_jitted_training_step_equals_eager(cls, kw):
    """RMSprop/Adagrad/Adadelta/LAMB/Lion inside an ember.jit training step: the eager parameters
    and state after 5 steps, traced once (the step counts advance over replays)."""
    x, y = _data()
    runs = []
    for jit in (False, True):
        w, b = _model()
        opt = cls([w, b], **kw)

        def step(x, y):
            opt.zero_grad()
            loss = _loss(w, b, x, y)
            loss.backward()
            opt.step()
            return loss
        fn = ember.jit(step) if jit else step
        losses = [fn(x * (1 + 0.1 * i), y).item() for i in range(5)]
        runs.append((w, b, opt, losses, fn))
    (w1, b1, o1, l1, _), (w2, b2, o2, l2, jitted) = runs
    assert jitted.trace_count == 1, jitted.explain
    np.testing.assert_allclose(l2, l1, rtol=1e-5, atol=1e-6)
    for p1, p2 in ((w1, w2), (b1, b2)):
        np.testing.assert_allclose(p2.detach().numpy(), p1.detach().numpy(), rtol=1e-5, atol=1e-6)
        for k, v in o1.state[p1].items():
            np.testing.assert_allclose(o2.state[p2][k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_jitted_step_with_plateau_and_sequential_schedules():
    """ReduceLROnPlateau fed the traced loss and a SequentialLR step inside the jitted step."""
    x, y = _data()
    runs = []
    for jit in (False, True):
        w, b = _model()
        opt_a = optim.RMSprop([w], lr=0.05)
        opt_b = optim.Adagrad([b], lr=0.1)
        plateau = S.ReduceLROnPlateau(opt_a, factor=0.5, patience=0, threshold=0.5)
        seq = S.SequentialLR(opt_b, [S.LinearLR(opt_b, 0.5, total_iters=2), S.ExponentialLR(opt_b, 0.8)],
                             milestones=[2])

        def step(x, y):
            opt_a.zero_grad()
            opt_b.zero_grad()
            loss = _loss(w, b, x, y)
            loss.backward()
            opt_a.step()
            opt_b.step()
            plateau.step(loss)
            seq.step()
            return loss
        fn = ember.jit(step) if jit else step
        lrs = []
        for _ in range(6):
            fn(x, y)
            lrs.append((opt_a.param_groups[0]["lr"].item(), opt_b.param_groups[0]["lr"].item()))
        runs.append((w, b, lrs, fn, plateau))
    (w1, b1, lrs1, _, p1), (w2, b2, lrs2, jitted, p2) = runs
    assert jitted.trace_count == 1, jitted.explain
    np.testing.assert_allclose(lrs2, lrs1, rtol=1e-12)
    assert len({a for a, _ in lrs1}) > 1 and len({b for _, b in lrs1}) > 1  # both schedules moved
    assert (p2.num_bad_epochs, p2.cooldown_counter, p2.last_epoch) == (p1.num_bad_epochs, p1.cooldown_counter, 6)
    np.testing.assert_allclose(w2.detach().numpy(), w1.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b2.detach().numpy(), b1.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_lbfgs_refuses_to_be_traced():
    """L-BFGS reads values by design: inside ember.jit it raises an ember error naming the line."""
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.LBFGS([w])

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    @ember.jit
    def step():
        return opt.step(closure)
    with pytest.raises(ember.EmberError, match="LBFGS.step.*cannot be traced"):
        step()
    opt.step(closure)  # eagerly it works
    assert opt.state[w]["func_evals"] > 0


def test_onecycle_cycle_momentum_refuses_to_be_traced():
    """cycle_momentum writes Python momenta (read from the epoch): eager only, with a clear error."""
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([w], lr=0.1, momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    with pytest.raises(ember.EmberError, match="OneCycleLR.step.*cycle_momentum=False"):
        ember.jit(lambda: sched.step())()
    traced = S.OneCycleLR(optim.SGD([w], lr=0.1), max_lr=1.0, total_steps=10, cycle_momentum=False)
    ember.jit(lambda: traced.step())()
    assert traced.last_epoch == 1


# ====================================================================== state dicts
def _train(opt, sched, w, b, x, y, n):
    for _ in range(n):
        opt.zero_grad()
        _loss(w, b, x, y).backward()
        opt.step()
        if sched is not None:
            sched.step()


@pytest.mark.parametrize("cls,kw", NEW_OPTIMIZERS, ids=NEW_IDS)
def test_state_dict_round_trip(cls, kw):
    """Save after 3 steps, load (as numpy arrays) into a fresh optimizer: identical next steps."""
    x, y = _data(dtype=ember.float64)
    w1, b1 = _model(ember.float64)
    opt1 = cls([w1, b1], **kw)
    sched1 = S.ExponentialLR(opt1, gamma=0.9)
    _train(opt1, sched1, w1, b1, x, y, 3)
    sd, ssd = opt1.state_dict(), sched1.state_dict()
    assert sorted(sd) == ["param_groups", "state"] and sd["param_groups"][0]["params"] == [0, 1]
    assert sorted(sd["state"][0]) == sorted(opt1.state[w1])
    snapshot = {k: {n: v.numpy().copy() for n, v in st.items()} for k, st in sd["state"].items()}

    w2 = ember.tensor(w1.detach().numpy(), requires_grad=True)
    b2 = ember.tensor(b1.detach().numpy(), requires_grad=True)
    opt2 = cls([w2, b2], **kw)
    sched2 = S.ExponentialLR(opt2, gamma=0.9)
    ids = {id(v) for p in (w2, b2) for v in opt2.state[p].values()}
    opt2.load_state_dict({"state": snapshot, "param_groups": sd["param_groups"]})
    sched2.load_state_dict(ssd)
    assert {id(v) for p in (w2, b2) for v in opt2.state[p].values()} == ids
    for p1, p2 in ((w1, w2), (b1, b2)):
        for k, v in opt1.state[p1].items():
            np.testing.assert_array_equal(opt2.state[p2][k].numpy(), v.numpy())
    _train(opt1, sched1, w1, b1, x, y, 2)
    _train(opt2, sched2, w2, b2, x, y, 2)
    np.testing.assert_array_equal(w1.detach().numpy(), w2.detach().numpy())
    np.testing.assert_array_equal(b1.detach().numpy(), b2.detach().numpy())


def test_pytorch_state_keys():
    """State dict keys are PyTorch's (LAMB/Lion: those of apex FusedLAMB / lion-pytorch)."""
    w = ember.zeros(2, requires_grad=True)
    keys = {
        optim.RMSprop([w]): ["step", "square_avg"],
        optim.RMSprop([w], momentum=0.9, centered=True): ["step", "square_avg", "momentum_buffer", "grad_avg"],
        optim.Adagrad([w]): ["step", "sum"],
        optim.Adadelta([w]): ["step", "square_avg", "acc_delta"],
        optim.LAMB([w]): ["step", "exp_avg", "exp_avg_sq"],
        optim.Lion([w]): ["exp_avg"],
    }
    for opt, want in keys.items():
        assert list(opt.state_dict()["state"][0]) == want, type(opt).__name__
    sd = optim.Adagrad([w], lr=0.3, lr_decay=0.1).state_dict()["param_groups"][0]
    assert {k: sd[k] for k in ("lr", "lr_decay", "eps", "initial_accumulator_value")} == \
        dict(lr=0.3, lr_decay=0.1, eps=1e-10, initial_accumulator_value=0.0)


def test_lbfgs_state_dict_round_trip():
    """Save L-BFGS after 2 calls, load into a fresh one: the third call gives the same result."""
    case = next(c for c in META["lbfgs"]["cases"] if c["name"] == "quartic_short_history_f64")
    p1, f1 = _lbfgs_problem(case)
    o1 = optim.LBFGS(p1, **case["kwargs"])
    c1 = _lbfgs_closure(o1, f1)
    for _ in range(2):
        o1.step(c1)
    sd = o1.state_dict()
    assert {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad",
            "prev_loss", "al"} <= set(sd["state"][0])
    p2, f2 = _lbfgs_problem(case)
    for a, b in zip(p1, p2):
        with ember.no_grad():
            b.copy_(a)
    o2 = optim.LBFGS(p2, **case["kwargs"])
    o2.load_state_dict(sd)
    c2 = _lbfgs_closure(o2, f2)
    o1.step(c1)
    o2.step(c2)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert o2.state[p2[0]]["n_iter"] == o1.state[p1[0]]["n_iter"]
    assert o1.state[p1[0]]["old_dirs"][0] is not o2.state[p2[0]]["old_dirs"][0]  # copies, not shared


def test_lbfgs_checks():
    w = ember.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [w]}, {"params": [ember.zeros(1, requires_grad=True)]}])
    with pytest.raises(ValueError, match="strong_wolfe"):
        optim.LBFGS([w], line_search_fn="armijo")
    assert optim.LBFGS([w], max_iter=8).param_groups[0]["max_eval"] == 10


def _step_n(sched, opt, n, metrics=None):
    for k in range(n):
        opt.step()
        sched.step(metrics[k]) if metrics is not None else sched.step()


@pytest.mark.parametrize("make", [
    lambda o: S.MultiStepLR(o, milestones=[2, 5], gamma=0.5),
    lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.01),
    lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=20),
    lambda o: S.SequentialLR(o, [S.ExponentialLR(o, 0.9), S.CosineAnnealingWarmRestarts(o, T_0=4)], [3]),
    lambda o: S.ReduceLROnPlateau(o, patience=1, cooldown=1),
], ids=["multistep", "cawr", "onecycle", "sequential", "plateau"])
def test_scheduler_state_dict_round_trip(make):
    """A scheduler restored from state_dict() continues exactly as the original."""
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    o1 = _sched_optimizer("sgd", [0.1, 0.05])
    s1 = make(o1)
    plateau = isinstance(s1, S.ReduceLROnPlateau)
    _step_n(s1, o1, 5, metrics if plateau else None)
    sd = copy.deepcopy(s1.state_dict())
    assert not [k for k, v in sd.items() if isinstance(v, ember.Tensor)]  # Python values only
    o2 = _sched_optimizer("sgd", [0.1, 0.05])
    s2 = make(o2)
    tensors = [t for t in s2._state_tensors()]
    s2.load_state_dict(sd)
    for g1, g2 in zip(o1.param_groups, o2.param_groups):
        g2["lr"] = g1["lr"]
        if "momentum" in g1:
            g2["momentum"] = g1["momentum"]
    assert all(a is b for a, b in zip(s2._state_tensors(), tensors))
    _step_n(s1, o1, 6, metrics[5:] if plateau else None)
    _step_n(s2, o2, 6, metrics[5:] if plateau else None)
    assert s1.get_last_lr() == s2.get_last_lr() and s1.last_epoch == s2.last_epoch


# ====================================================================== scheduler details
def test_closed_forms_and_checks():
    o = _sched_optimizer("sgd", [0.1, 0.05])
    s = S.MultiStepLR(o, milestones=[2, 4, 4], gamma=0.5)
    s.step(5)
    np.testing.assert_allclose(s.get_last_lr(), [0.1 * 0.5 ** 3, 0.05 * 0.5 ** 3], rtol=1e-12)
    s = S.ExponentialLR(_sched_optimizer("sgd", [0.1, 0.05]), gamma=0.9)
    s.step(7)
    np.testing.assert_allclose(s.get_last_lr(), [0.1 * 0.9 ** 7, 0.05 * 0.9 ** 7], rtol=1e-12)
    s = S.CosineAnnealingWarmRestarts(_sched_optimizer("sgd", [0.1, 0.05]), T_0=4, T_mult=2)
    s.step(6.5)  # in the second period (length 8), 2.5 epochs in
    assert (s.T_i, s.T_cur, s.last_epoch) == (8, 2.5, 6)
    np.testing.assert_allclose(s.get_last_lr()[0], 0.1 * (1 + math.cos(math.pi * 2.5 / 8)) / 2, rtol=1e-12)
    s.step()
    assert (s.T_i, s.T_cur, s.last_epoch) == (8, 3.5, 7)
    with pytest.raises(ValueError):
        S.CosineAnnealingWarmRestarts(o, T_0=0)
    s = S.OneCycleLR(_sched_optimizer("sgd", [0.1, 0.05]), max_lr=1.0, total_steps=3, cycle_momentum=False)
    for _ in range(3):
        s.step()
    with pytest.raises(ValueError, match="total steps"):
        s.step()
    with pytest.raises(ValueError, match="momentum or beta1"):
        S.OneCycleLR(optim.Adagrad([ember.zeros(1, requires_grad=True)]), max_lr=1.0, total_steps=3)
    with pytest.raises(ValueError, match="total_steps OR"):
        S.OneCycleLR(o, max_lr=1.0)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        S.SequentialLR(o, [S.ExponentialLR(o, 0.9), S.ReduceLROnPlateau(o)], milestones=[3])
    with pytest.raises(ValueError, match="number of milestone"):
        S.SequentialLR(o, [S.ExponentialLR(o, 0.9)], milestones=[3])
    with pytest.raises(ValueError, match="Factor"):
        S.ReduceLROnPlateau(o, factor=1.0)


def test_reduce_on_plateau_counters_and_tensor_metric():
    o = _sched_optimizer("sgd", [0.1, 0.05])
    s = S.ReduceLROnPlateau(o, patience=1, cooldown=2, min_lr=[0.02, 0.0])
    assert s.best == math.inf and s.num_bad_epochs == 0 and not s.in_cooldown
    s.step(ember.tensor(1.0))
    s.step(ember.tensor([1.0]))  # a one-element tensor works too
    assert s.num_bad_epochs == 1 and s.get_last_lr() == [0.1, 0.05]
    s.step(2.0)
    assert s.get_last_lr() == pytest.approx([0.02, 0.005]) and s.in_cooldown and s.cooldown_counter == 2
    s.step(3.0)
    s.step(3.0)
    assert s.cooldown_counter == 0 and s.num_bad_epochs == 0
    s.step(3.0)
    s.step(3.0)  # group 0 is at its min_lr (no change), group 1 goes down by factor 0.1 again
    assert s.get_last_lr() == pytest.approx([0.02, 0.0005])
    with pytest.raises(ValueError, match="one-element"):
        s.step(ember.ones(2))


def test_lbfgs_single_parameter_zero_grad_in_place():
    """One parameter and a closure that zeroes .grad in place (not to None): the same iterates as
    with set_to_none (L-BFGS keeps copies of the gradients, as PyTorch's cat makes)."""
    results = []
    for set_to_none in (True, False):
        w = ember.tensor([3.0, -1.0, 2.0], dtype=ember.float64, requires_grad=True)
        opt = optim.LBFGS([w], history_size=5, max_iter=10, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=set_to_none)
            loss = ((w - 1.0) * (w - 1.0) * ember.tensor([1.0, 2.0, 3.0], dtype=ember.float64)).sum()
            loss.backward()
            return loss
        opt.step(closure)
        results.append(w.detach().numpy().copy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], [1.0, 1.0, 1.0], atol=1e-5)
