"""ember.optim: optimizers, schedulers and clipping against PyTorch fixtures, plus the properties
a traced training step relies on (tensor state from construction, no value reads, no graph kept).

The fixtures come from tools/make_optim_fixtures.py, run in a separate environment with torch;
these tests read them with safetensors and never import torch.
"""
import contextlib
import json
import math
import pathlib
import weakref

import numpy as np
import pytest

import ember
import ember.optim as optim
from ember.optim import lr_scheduler as S

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "optim.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "optim.safetensors"))
PROB = META["problem"]
SHORT = {"float32": "f32", "float64": "f64"}
# float32: relative 1e-6, plus 1e-7 absolute for the few entries passing near zero (measured: at
# most a few ulps of the parameters' magnitude, from PyTorch's FMA contractions); float64: relative
# 1e-12 (measured: at most 1.5e-14)
TOL = {"float32": dict(rtol=1e-6, atol=1e-7), "float64": dict(rtol=1e-12, atol=0)}


def kwargs_of(kw):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}


# ====================================================================== fixtures: optimizers
def run_case(case, on_step=None, prob=PROB, data=DATA):
    """Run one fixture trajectory (also for tests/test_optim_extra.py, over its own fixtures)."""
    PROB, DATA = prob, data  # noqa: N806
    short = SHORT[case["dtype"]]
    n = len(PROB["shapes"])
    params = [ember.tensor(DATA[f"problem.{short}.init.p{i}"], requires_grad=True) for i in range(n)]
    targets = [ember.tensor(DATA[f"problem.{short}.target.p{i}"]) for i in range(n)]
    cls = getattr(optim, case["optimizer"])
    kw = kwargs_of(case["kwargs"])
    if case["groups"] is None:
        opt = cls(params, **kw)
    else:
        opt = cls([dict(kwargs_of(g), params=[params[i] for i in g["params"]]) for g in case["groups"]], **kw)
    sched = None
    if case["scheduler"]:
        sched = getattr(S, case["scheduler"]["type"])(opt, **case["scheduler"]["kwargs"])
    skip = {int(k): v for k, v in PROB["skip"].items()}
    for t in range(PROB["steps"]):
        for i, p in enumerate(params):
            if t in skip.get(i, []):
                p.grad = None
            else:
                noise = ember.tensor(DATA[f"problem.{short}.noise{t}.p{i}"])
                with ember.no_grad():
                    p.grad = (p - targets[i]) * PROB["c"] + noise
        opt.step()
        if sched is not None:
            sched.step()
        if on_step is not None:
            on_step(t, params, opt)
    return params, opt


@pytest.mark.parametrize("case", META["optimizers"], ids=[c["name"] for c in META["optimizers"]])
def test_optimizer_matches_pytorch(case):
    name, tol = case["name"], TOL[case["dtype"]]

    def check(t, params, opt):
        for i, p in enumerate(params):
            want = DATA[f"{name}.step{t}.p{i}"]
            assert p.dtype.name == str(want.dtype)
            np.testing.assert_allclose(p.detach().numpy(), want, **tol, err_msg=f"step {t} param {i}")

    params, opt = run_case(case, check)
    for i, p in enumerate(params):
        for key in case["state_keys"][str(i)]:
            got = opt.state[p][key]
            np.testing.assert_allclose(got.numpy(), DATA[f"{name}.state.p{i}.{key}"], **tol,
                                       err_msg=f"state {key} of param {i}")


# ====================================================================== fixtures: schedulers
LAMBDAS = {"exp": lambda e: 0.95 ** e, "warmup": lambda e: ember.clamp((e + 1) / 10, max=1.0)}


def _two_groups(lrs):
    a = ember.zeros(1, requires_grad=True)
    b = ember.zeros(1, requires_grad=True)
    return optim.SGD([{"params": [a], "lr": lrs[0]}, {"params": [b], "lr": lrs[1]}], lr=lrs[0])


def _make_sched(case, opt):
    kw = dict(case["kwargs"])
    if case["scheduler"] == "LambdaLR":
        kw["lr_lambda"] = LAMBDAS[kw["lr_lambda"]]
    return getattr(S, case["scheduler"])(opt, **kw)


@pytest.mark.parametrize("case", META["schedulers"], ids=[c["name"] for c in META["schedulers"]])
def test_scheduler_matches_pytorch(case):
    opt = _two_groups(case["lrs"])
    lr_tensors = [g["lr"] for g in opt.param_groups]
    sched = _make_sched(case, opt)
    got = [sched.get_last_lr()]
    for _ in range(case["steps"]):
        opt.step()
        sched.step()
        got.append(sched.get_last_lr())
    assert all(g["lr"] is t for g, t in zip(opt.param_groups, lr_tensors))
    np.testing.assert_allclose(np.array(got), DATA[f"sched.{case['name']}"], rtol=1e-12, atol=1e-15)


# ====================================================================== fixtures: clipping
@pytest.mark.parametrize("case", META["clip"], ids=[c["name"] for c in META["clip"]])
def test_clip_grad_norm_matches_pytorch(case):
    name = case["name"]
    tol = {"float32": dict(rtol=1e-6, atol=0), "float64": dict(rtol=1e-12, atol=0)}[case["dtype"]]
    params = []
    for i in range(case["n"]):
        g = DATA[f"clip.{name}.grads.p{i}"]
        p = ember.zeros(*g.shape, dtype=case["dtype"], requires_grad=True)
        p.grad = ember.tensor(g)
        params.append(p)
    norm_type = math.inf if case["norm_type"] == "inf" else case["norm_type"]
    total = optim.clip_grad_norm_(params, case["max_norm"], norm_type=norm_type)
    assert isinstance(total, ember.Tensor) and total.ndim == 0 and total.dtype.name == case["dtype"]
    np.testing.assert_allclose(total.numpy(), DATA[f"clip.{name}.total_norm"], **tol)
    for i, p in enumerate(params):
        np.testing.assert_allclose(p.grad.numpy(), DATA[f"clip.{name}.out.p{i}"], **tol)


# ====================================================================== PI-4: closed forms
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


W0 = np.array([1.0, -2.0, 0.5, 3.0])


def _closed_sgd(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    w, buf, out = W0.copy(), None, []
    for _ in range(3):
        g = w + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
        out.append(w)
    return out


def _closed_adam(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    w, m, v, out = W0.copy(), 0.0, 0.0, []
    for t in (1, 2, 3):
        g = w
        if weight_decay and decoupled:
            w = w * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        out.append(w)
    return out


def test_pi4_closed_form_first_steps_sgd():
    """PI-4: SGD: w_t = (1 - lr)^t w0; with momentum 0.9 (Momentum(lr=.01, m=.9) of the book)."""
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.SGD([w], lr=0.1), w)
    for t, g in enumerate(got, 1):
        np.testing.assert_allclose(g, W0 * 0.9 ** t, rtol=1e-6, atol=1e-6)
    for kw in (dict(lr=0.01, momentum=0.9), dict(lr=0.1, momentum=0.9, dampening=0.5),
               dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.5, weight_decay=0.1)):
        w = ember.tensor(W0, requires_grad=True)
        for g, want in zip(_quadratic_steps(optim.SGD([w], **kw), w), _closed_sgd(**kw)):
            np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6, err_msg=str(kw))


def test_pi4_closed_form_first_steps_adam():
    """PI-4: Adam's first step moves every coordinate by lr * sign(w) (|w| >> eps)."""
    w = ember.tensor(W0, requires_grad=True)
    got = _quadratic_steps(optim.Adam([w], lr=0.1), w)
    np.testing.assert_allclose(got[0], W0 - 0.1 * np.sign(W0), rtol=1e-6, atol=1e-6)
    for g, want in zip(got, _closed_adam(0.1)):
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6)
    for cls, kw, ref in ((optim.Adam, dict(lr=0.05, weight_decay=0.1), dict(weight_decay=0.1)),
                         (optim.AdamW, dict(lr=0.05, weight_decay=0.1), dict(weight_decay=0.1, decoupled=True)),
                         (optim.Adam, dict(lr=0.05, betas=(0.5, 0.9)), dict(b1=0.5, b2=0.9))):
        w = ember.tensor(W0, requires_grad=True)
        for g, want in zip(_quadratic_steps(cls([w], **kw), w), _closed_adam(kw["lr"], **ref)):
            np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6, err_msg=f"{cls.__name__} {kw}")


# ====================================================================== traceability properties
def _model(dtype=ember.float32):
    rng = np.random.default_rng(0)
    w = ember.tensor(rng.standard_normal((4, 3)), dtype=dtype, requires_grad=True)
    b = ember.tensor(rng.standard_normal(3), dtype=dtype, requires_grad=True)
    return w, b


def _loss(w, b, x, y):
    d = x @ w + b - y
    return (d * d).mean()


def _data(n=8, dtype=ember.float32, seed=1):
    rng = np.random.default_rng(seed)
    return (ember.tensor(rng.standard_normal((n, 4)), dtype=dtype),
            ember.tensor(rng.standard_normal((n, 3)), dtype=dtype))


ALL_OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.01)),
]
OPT_IDS = ["sgd", "sgd_momentum", "sgd_nesterov", "adam_amsgrad", "adamw"]


@pytest.mark.parametrize("cls,kw", ALL_OPTIMIZERS, ids=OPT_IDS)
def test_state_exists_after_construction(cls, kw):
    w, b = _model()
    opt = cls([w, b], **kw)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, ember.Tensor) and lr.ndim == 0 and lr.dtype is optim.optimizer.LR_DTYPE
    for p in (w, b):
        st = opt.state[p]
        if cls is optim.SGD and not kw.get("momentum"):
            assert st == {}
            continue
        assert all(isinstance(v, ember.Tensor) for v in st.values())
        assert st["step"].ndim == 0 and st["step"].dtype is ember.float32 and st["step"].item() == 0
        for k, v in st.items():
            if k != "step":
                assert v.shape == p.shape and v.dtype is p.dtype and not v.numpy().any()
    # the state tensors are the ones step() updates: same objects afterwards
    before = {id(p): {k: v for k, v in opt.state[p].items()} for p in (w, b)}
    x, y = _data()
    _loss(w, b, x, y).backward()
    opt.step()
    for p in (w, b):
        assert all(opt.state[p][k] is v for k, v in before[id(p)].items())


def test_lr_assignment_and_scheduler_keep_the_tensor():
    w, b = _model()
    opt = optim.Adam([w, b], lr=0.01)
    lr = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = 0.1
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.1
    opt.param_groups[0]["lr"] = ember.tensor(0.2)
    assert opt.param_groups[0]["lr"] is lr and abs(lr.item() - 0.2) < 1e-7
    opt.param_groups[0].update(lr=0.3)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.3
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.15
    opt.load_state_dict(opt.state_dict())
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.15


def test_lr_change_reaches_the_update():
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    opt.param_groups[0]["lr"] = 0.5
    w.grad = ember.tensor([1.0, 1.0])
    opt.step()
    np.testing.assert_allclose(w.detach().numpy(), [0.5, 1.5])


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


SCHEDULERS = [
    (S.StepLR, dict(step_size=2)), (S.LinearLR, dict(total_iters=3)), (S.CosineAnnealingLR, dict(T_max=3)),
    (S.LambdaLR, dict(lr_lambda=lambda e: 0.9 ** e)),
    (S.WarmupCosineLR, dict(warmup_steps=2, total_steps=5, warmup_start_factor=0.1)),
]


@pytest.mark.parametrize("cls,kw", ALL_OPTIMIZERS, ids=OPT_IDS)
def test_step_reads_no_values(cls, kw):
    """step(), scheduler.step() and clipping run on tensors only (no .item()/float()/bool()/numpy())."""
    w, b = _model()
    opt = cls([w, b], **kw)
    scheds = [c(opt, **k) for c, k in SCHEDULERS]
    x, y = _data()
    for _ in range(3):
        opt.zero_grad()
        _loss(w, b, x, y).backward()
        with no_value_reads():
            optim.clip_grad_norm_([w, b], 0.1)
            optim.clip_grad_norm_([w, b], 1.0, norm_type=math.inf)
            optim.clip_grad_value_([w, b], 0.5)
            opt.step()
            for s in scheds:
                s.step()
    with no_value_reads(), pytest.raises(AssertionError, match="read into Python"):
        float(w.sum())  # the patch does catch a read


@pytest.mark.parametrize("cls,kw", ALL_OPTIMIZERS, ids=OPT_IDS)
def test_no_graph_kept(cls, kw):
    """The optimizer keeps no autograd graph alive (needle's test), also for create_graph grads."""
    w, b = _model()
    opt = cls([w, b], **kw)
    x, y = _data()
    for create_graph in (False, True):
        opt.zero_grad()
        loss = _loss(w, b, x, y)
        loss.backward(create_graph=create_graph)
        ref = weakref.ref(loss)
        opt.step()
        for p in (w, b):
            assert p.is_leaf and p.grad_fn is None and p.requires_grad
            for v in opt.state[p].values():
                assert not v.requires_grad and v.grad_fn is None
        for g in opt.param_groups:
            assert not g["lr"].requires_grad and g["lr"].grad_fn is None
        opt.zero_grad()
        del loss
        assert ref() is None


# ====================================================================== state dicts
@pytest.mark.parametrize("cls,kw", ALL_OPTIMIZERS, ids=OPT_IDS)
def test_state_dict_round_trip(cls, kw):
    x, y = _data(dtype=ember.float64)
    w1, b1 = _model(ember.float64)
    opt1 = cls([w1, b1], **kw)
    sched1 = optim.StepLR(opt1, step_size=2, gamma=0.5)

    def train(opt, sched, w, b, n):
        for _ in range(n):
            opt.zero_grad()
            _loss(w, b, x, y).backward()
            opt.step()
            sched.step()

    train(opt1, sched1, w1, b1, 3)
    sd, ssd = opt1.state_dict(), sched1.state_dict()
    assert sorted(sd) == ["param_groups", "state"] and sd["param_groups"][0]["params"] == [0, 1]
    assert isinstance(sd["param_groups"][0]["lr"], float) and ssd["last_epoch"] == 3
    snapshot = {k: {n: v.numpy().copy() for n, v in st.items()} for k, st in sd["state"].items()}

    w2 = ember.tensor(w1.detach().numpy(), requires_grad=True)
    b2 = ember.tensor(b1.detach().numpy(), requires_grad=True)
    opt2 = cls([w2, b2], **kw)
    sched2 = optim.StepLR(opt2, step_size=2, gamma=0.5)
    ids = {id(v) for p in (w2, b2) for v in opt2.state[p].values()}
    lr2 = opt2.param_groups[0]["lr"]
    opt2.load_state_dict({"state": {k: {n: ember.tensor(a) for n, a in st.items()} for k, st in snapshot.items()},
                          "param_groups": sd["param_groups"]})
    sched2.load_state_dict(ssd)
    assert {id(v) for p in (w2, b2) for v in opt2.state[p].values()} == ids
    assert opt2.param_groups[0]["lr"] is lr2 and lr2.item() == opt1.param_groups[0]["lr"].item()
    assert sched2.last_epoch == 3
    for p1, p2 in ((w1, w2), (b1, b2)):
        for k, v in opt1.state[p1].items():
            np.testing.assert_array_equal(opt2.state[p2][k].numpy(), v.numpy())
    train(opt1, sched1, w1, b1, 3)
    train(opt2, sched2, w2, b2, 3)
    np.testing.assert_array_equal(w1.detach().numpy(), w2.detach().numpy())
    np.testing.assert_array_equal(b1.detach().numpy(), b2.detach().numpy())
    assert opt1.param_groups[0]["lr"].item() == opt2.param_groups[0]["lr"].item()


def test_load_pytorch_style_sgd_state():
    """PyTorch's SGD state has no step count and None for a buffer not yet created."""
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    opt = optim.SGD([w], lr=0.1, momentum=0.9, dampening=0.5)
    opt.load_state_dict({"state": {0: {"momentum_buffer": np.array([1.0, 1.0], np.float32)}},
                         "param_groups": [dict(opt.state_dict()["param_groups"][0])]})
    assert opt.state[w]["step"].item() == 1
    w.grad = ember.tensor([1.0, 1.0])
    opt.step()  # not the first step: buf = 0.9 * 1 + 0.5 * 1
    np.testing.assert_allclose(opt.state[w]["momentum_buffer"].numpy(), [1.4, 1.4], rtol=1e-6)
    opt.load_state_dict({"state": {0: {"momentum_buffer": None}},
                         "param_groups": [dict(opt.state_dict()["param_groups"][0])]})
    assert opt.state[w]["step"].item() == 0
    opt.step()  # the first step again: buf = grad
    np.testing.assert_allclose(opt.state[w]["momentum_buffer"].numpy(), [1.0, 1.0])


def test_load_state_dict_rejects_mismatches():
    w, b = _model()
    opt = optim.Adam([w, b])
    sd = opt.state_dict()
    other = optim.Adam([w])
    with pytest.raises(ValueError):
        other.load_state_dict(sd)
    bad = {"state": {0: {"exp_avg": np.zeros((2, 2), np.float32)}}, "param_groups": sd["param_groups"]}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)


# ====================================================================== groups, zero_grad, errors
def test_param_groups_and_zero_grad():
    w, b = _model()
    opt = optim.SGD([{"params": [w]}, {"params": b, "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert [g["lr"].item() for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[0]["lr"] is not opt.param_groups[1]["lr"]
    assert "momentum_buffer" in opt.state[b] and opt.state[w] == {}
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [w]})
    extra = ember.zeros(2, requires_grad=True)
    opt.add_param_group({"params": [extra], "lr": 0.01, "momentum": 0.5})
    assert opt.state[extra]["momentum_buffer"].shape == (2,)
    x, y = _data()
    _loss(w, b, x, y).backward()
    opt.zero_grad(set_to_none=False)
    assert w.grad is not None and not w.grad.numpy().any()
    opt.zero_grad()
    assert w.grad is None and b.grad is None
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError):
        optim.Adam([w], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([w * 2])


def test_closure_and_skipped_params():
    w, b = _model()
    opt = optim.Adam([w, b], lr=0.1)
    x, y = _data()

    def closure():
        opt.zero_grad()
        loss = _loss(w, b, x, y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, ember.Tensor)
    b.grad = None
    before = b.detach().numpy().copy()
    opt.step()
    np.testing.assert_array_equal(b.detach().numpy(), before)
    assert opt.state[b]["step"].item() == 1 and opt.state[w]["step"].item() == 2


def test_float16_params():
    w = ember.tensor([1.0, -2.0, 0.5], dtype=ember.float16, requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    w.grad = ember.tensor([1.0, -1.0, 1.0], dtype=ember.float16)
    opt.step()
    assert w.dtype is ember.float16 and opt.state[w]["exp_avg"].dtype is ember.float16
    np.testing.assert_allclose(w.detach().numpy().astype(np.float64), [0.9, -1.9, 0.4], atol=1e-3)


# ====================================================================== schedulers
def test_warmup_cosine_formula_and_hold():
    opt = _two_groups([1.0, 0.5])
    s = S.WarmupCosineLR(opt, warmup_steps=4, total_steps=12, min_lr=0.1)
    got = [s.get_last_lr()[0]]
    for _ in range(15):
        s.step()
        got.append(s.get_last_lr()[0])
    want = [t / 4 for t in range(4)]
    want += [0.1 + 0.9 * (1 + math.cos(math.pi * min(t - 4, 8) / 8)) / 2 for t in range(4, 16)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    s0 = S.WarmupCosineLR(_two_groups([1.0, 0.5]), warmup_steps=0, total_steps=10)
    assert s0.get_last_lr() == [1.0, 0.5]
    with pytest.raises(ValueError):
        S.WarmupCosineLR(opt, warmup_steps=5, total_steps=5)


def test_scheduler_step_with_epoch_uses_closed_form():
    for cls, kw, f in ((S.StepLR, dict(step_size=3, gamma=0.5), lambda e: 0.5 ** (e // 3)),
                       (S.CosineAnnealingLR, dict(T_max=10), lambda e: (1 + math.cos(math.pi * e / 10)) / 2),
                       (S.LinearLR, dict(start_factor=0.5, total_iters=4), lambda e: 0.5 + 0.5 * min(e, 4) / 4)):
        opt = _two_groups([0.1, 0.05])
        s = cls(opt, **kw)
        s.step(7)
        assert s.last_epoch == 7
        np.testing.assert_allclose(s.get_last_lr(), [0.1 * f(7), 0.05 * f(7)], rtol=1e-12)


def test_scheduler_state_dict_and_resume():
    opt = _two_groups([0.1, 0.05])
    s = S.CosineAnnealingLR(opt, T_max=20, eta_min=0.01)
    for _ in range(5):
        s.step()
    sd = s.state_dict()
    assert sd["last_epoch"] == 5 and sd["T_max"] == 20 and sd["base_lrs"] == [0.1, 0.05]
    epoch = s.epoch
    s.load_state_dict(dict(sd, last_epoch=2))
    assert s.epoch is epoch and s.last_epoch == 2
    lam = S.LambdaLR(_two_groups([0.1, 0.05]), lambda e: 0.9 ** e)
    assert lam.state_dict()["lr_lambdas"] == [None, None]


def test_scheduler_composes_with_manual_lr_change():
    """The recursive rules continue from a changed lr, as PyTorch's do."""
    opt = _two_groups([0.1, 0.05])
    s = S.StepLR(opt, step_size=2, gamma=0.5)
    s.step()
    opt.param_groups[0]["lr"] = 1.0
    s.step()
    assert s.get_last_lr() == [0.5, 0.025]


# ====================================================================== clipping
def test_clip_grad_norm_edge_cases():
    assert optim.clip_grad_norm_([ember.zeros(2, requires_grad=True)], 1.0).item() == 0.0
    p = ember.zeros(3, requires_grad=True)
    p.grad = ember.tensor([3.0, 4.0, 0.0])
    total = optim.clip_grad_norm_(p, 1.0)
    assert abs(total.item() - 5.0) < 1e-6
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)
    p.grad = ember.tensor([float("nan"), 1.0, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    r = ember.zeros(3, requires_grad=True)
    r.grad = ember.from_numpy(np.broadcast_to(np.float32(2.0), (3,)))  # read-only gradient
    optim.clip_grad_norm_([r], 1.0)
    np.testing.assert_allclose(r.grad.numpy(), np.full(3, 3 ** -0.5), rtol=1e-5)
    r.grad = ember.from_numpy(np.broadcast_to(np.float32(2.0), (3,)))
    optim.SGD([r]).zero_grad(set_to_none=False)
    assert r.grad.shape == (3,) and not r.grad.numpy().any()
    q = ember.zeros(4, requires_grad=True)
    q.grad = ember.tensor([-3.0, 0.2, 5.0, float("nan")])
    optim.clip_grad_value_([q], 1.0)
    np.testing.assert_array_equal(q.grad.numpy(), np.array([-1.0, 0.2, 1.0, np.nan], np.float32))


# ====================================================================== DT-6: gradient accumulation
@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.01))],
                         ids=["sgd", "adam"])
def test_dt6_gradient_accumulation(cls, kw):
    """DT-6: 4 micro-batches of 16 (loss/4 each, backward 4 times, one step) equal one batch of 64."""
    x, y = _data(64, dtype=ember.float64, seed=3)
    wa, ba = _model(ember.float64)
    wb, bb = _model(ember.float64)
    opt_a, opt_b = cls([wa, ba], **kw), cls([wb, bb], **kw)
    for _ in range(2):
        opt_a.zero_grad()
        _loss(wa, ba, x, y).backward()
        opt_a.step()
        opt_b.zero_grad()
        for k in range(4):
            (_loss(wb, bb, x[16 * k:16 * (k + 1)], y[16 * k:16 * (k + 1)]) / 4).backward()
        np.testing.assert_allclose(wb.grad.numpy(), wa.grad.numpy(), rtol=1e-12, atol=1e-14)
        opt_b.step()
        np.testing.assert_allclose(wb.detach().numpy(), wa.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bb.detach().numpy(), ba.detach().numpy(), rtol=1e-12, atol=1e-14)
