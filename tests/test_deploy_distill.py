"""ember.deploy.distill (MD-14): the KD loss and attention transfer against torch fixtures
(tests/fixtures/prune.*, tools/make_prune_fixtures.py), the frozen teacher, FitNet hints, and a
jitted distillation step whose loss falls."""
import json
import pathlib

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember._core.errors import EmberError, ShapeError
from ember.backend.cpu import compiler
from ember.deploy import distill as D

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "prune.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "prune.safetensors"))


@pytest.mark.parametrize("j", range(len(META["kd"])))
def test_md14_kd_loss_matches_torch(j):
    """MD-14: alpha * T^2 * kl_div(log_softmax(s/T), softmax(t/T), batchmean) + (1 - alpha) * CE: value and grad."""
    info = META["kd"][j]
    s = ember.tensor(DATA[f"kd{j}.s"], requires_grad=True)
    crit = D.KDLoss(info["temperature"], info["alpha"])
    loss = crit(s, ember.tensor(DATA[f"kd{j}.t"]), ember.tensor(DATA[f"kd{j}.y"]))
    np.testing.assert_allclose(loss.detach().numpy(), DATA[f"kd{j}.loss"], rtol=2e-5, atol=1e-6)
    loss.backward()
    np.testing.assert_allclose(s.grad.numpy(), DATA[f"kd{j}.grad"], rtol=2e-4, atol=1e-6)


def test_md14_alpha_zero_is_plain_cross_entropy_exactly():
    """MD-14: KDLoss(alpha=0) equals F.cross_entropy bit for bit, value and gradient."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    y = ember.tensor(rng.integers(0, 5, 7))
    a, b = ember.tensor(x, requires_grad=True), ember.tensor(x, requires_grad=True)
    la = D.KDLoss(temperature=3.0, alpha=0.0)(a, ember.randn(7, 5), y)
    lb = F.cross_entropy(b, y)
    assert np.array_equal(la.detach().numpy(), lb.detach().numpy())
    la.backward()
    lb.backward()
    assert np.array_equal(a.grad.numpy(), b.grad.numpy())


def test_md14_attention_transfer_matches_reference():
    """MD-14: attention_loss equals Zagoruyko & Komodakis's at_loss (normalized channel mean of a^2): value, grad."""
    s = ember.tensor(DATA["at.s"], requires_grad=True)
    loss = D.attention_loss(s, ember.tensor(DATA["at.t"]))
    np.testing.assert_allclose(loss.detach().numpy(), DATA["at.loss"], rtol=1e-5, atol=1e-9)
    loss.backward()
    np.testing.assert_allclose(s.grad.numpy(), DATA["at.grad"], rtol=1e-4, atol=1e-9)
    m = D.attention_map(ember.tensor(DATA["at.s"])).numpy()
    q = (DATA["at.s"].astype(np.float64) ** 2).sum(1).reshape(3, -1)  # sum or mean over channels: same after norm
    np.testing.assert_allclose(m, q / np.linalg.norm(q, axis=1, keepdims=True), rtol=1e-5)


class _CNN(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, 3)

    def forward(self, x):
        h = self.block2(self.block1(x))
        return self.head(h.mean((2, 3)))


def _problem(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].sum((1, 2)) > 0).astype(np.int64) + (x[:, 0, 3:].sum((1, 2)) > 0)
    return ember.tensor(x), ember.tensor(y)


def test_md14_teacher_frozen_after_a_step():
    """MD-14: the teacher stays in eval mode, requires no grad, accumulates no grad and does not change."""
    ember.manual_seed(0)
    teacher, student = _CNN(8), _CNN(4)
    teacher.train()
    dist = D.Distiller(student, teacher, D.KDLoss(4.0, 0.7))
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    ids = {id(p) for p in teacher.parameters()}
    assert not ids & {id(p) for p in dist.parameters()}
    assert not any(k.startswith("teacher") for k in dist.state_dict())
    before = [p.detach().numpy().copy() for p in teacher.parameters()]
    opt = ember.optim.SGD(dist.parameters(), lr=0.1)
    x, y = _problem()
    dist.train()
    loss = dist(x, y)
    loss.backward()
    opt.step()
    assert not teacher.training and student.training
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    for b, p in zip(before, teacher.parameters()):
        np.testing.assert_array_equal(b, p.detach().numpy())


def test_md14_fitnet_hints_and_attention_terms():
    """MD-14: hooks capture the named layers' features; a 1x1-conv regressor maps student to teacher channels; the
    hint term is the MSE of the regressed feature; the attention term is attention_loss; gradients reach both."""
    ember.manual_seed(1)
    teacher, student = _CNN(8), _CNN(4)
    x, y = _problem(8)
    dist = D.Distiller(student, teacher, D.KDLoss(2.0, 0.5), hints=[("block1", "block2")],
                       attention=[("block2", "block2")], attention_weight=1000.0, example_input=x[:2])
    reg = dist.regressors[0]
    assert isinstance(reg, nn.Conv2d) and (reg.in_channels, reg.out_channels, reg.kernel_size) == (4, 16, (1, 1))
    assert {id(p) for p in reg.parameters()} <= {id(p) for p in dist.parameters()}
    terms = dist(x, y, return_terms=True)
    with ember.no_grad():
        fs, ft = student.block1(x), teacher.block2(teacher.block1(x))
        hint = F.mse_loss(reg(fs), ft)
        at = D.attention_loss(student.block2(fs), ft)
        kd = D.kd_loss(student(x), teacher(x), y, 2.0, 0.5)
    np.testing.assert_allclose(terms["hint0"].detach().numpy(), hint.numpy(), rtol=1e-5)
    np.testing.assert_allclose(terms["at0"].detach().numpy(), at.numpy(), rtol=1e-5)
    np.testing.assert_allclose(terms["total"].detach().numpy(), (kd + hint + at * 500).numpy(), rtol=1e-5)
    terms["total"].backward()
    assert reg.weight.grad is not None and float(np.abs(student.block1[0].weight.grad.numpy()).sum()) > 0
    assert not dist._feats  # features are not kept after the step
    dist.remove_hooks()
    assert not student.block1._forward_hooks and not teacher.block2._forward_hooks


@pytest.mark.parametrize("backend", ["eager", "jit"])
def test_md14_distillation_loss_falls(backend):
    """MD-14: a few distillation steps (KD + hint + attention) on a tiny problem, eagerly or as one jitted (native)
    step, lower the loss; the jitted step traces once."""
    ember.manual_seed(2)
    teacher, student = _CNN(8), _CNN(4)
    x, y = _problem(32)
    topt = ember.optim.Adam(teacher.parameters(), lr=3e-2)
    for _ in range(15):  # a teacher somewhat better than chance
        topt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        topt.step()
    dist = D.Distiller(student, teacher, D.KDLoss(4.0, 0.8), hints=[("block2", "block2")],
                       attention=[("block1", "block1")], example_input=x[:1])
    opt = ember.optim.Adam(dist.parameters(), lr=1e-2)

    def step(x, y):
        opt.zero_grad()
        loss = dist(x, y)
        loss.backward()
        opt.step()
        return loss
    f = step if backend == "eager" else ember.jit(step)
    losses = [float(f(x, y).item()) for _ in range(12)]
    assert losses[-1] < 0.8 * losses[0], losses
    if backend == "jit":
        assert len(f.explain) == 1, f.explain
        if compiler.available():
            from ember.runtime.step import StepExecutable
            (ent,) = f.cache.values()
            assert isinstance(ent.exe, StepExecutable)
    assert all(p.grad is None for p in teacher.parameters())


def test_md14_bad_input_raises_clear_ember_errors():
    """MD-14: mismatched logits, bad temperature/alpha, a missing target or layer raise EmberError ValueErrors."""
    assert issubclass(D.DistillationError, EmberError) and issubclass(D.DistillationError, ValueError)
    crit = D.KDLoss(4.0, 0.5)
    y = ember.tensor([0, 1])
    with pytest.raises(ShapeError, match=r"student logits of shape \(2, 3\) and teacher logits of shape \(2, 4\)"):
        crit(ember.randn(2, 3), ember.randn(2, 4), y)
    with pytest.raises(ShapeError, match="must match"):
        D.KDLoss(4.0, 1.0)(ember.randn(2, 3), ember.randn(3, 3))
    for t, a, pat in ((0.0, 0.5, "temperature"), (-1, 0.5, "temperature"), (2.0, 1.5, "alpha"), (2.0, -0.1, "alpha")):
        with pytest.raises(D.DistillationError, match=pat):
            D.KDLoss(t, a)
    with pytest.raises(D.DistillationError, match="pass `target`"):
        crit(ember.randn(2, 3), ember.randn(2, 3))
    with pytest.raises(D.DistillationError, match="no submodule 'block9'"):
        D.Distiller(_CNN(4), _CNN(8), hints=[("block9", "block1")], example_input=ember.randn(1, 1, 6, 6))
    with pytest.raises(D.DistillationError, match="example_input"):
        D.Distiller(_CNN(4), _CNN(8), hints=[("block1", "block1")])
    with pytest.raises(ShapeError, match="spatial size"):
        D.attention_loss(ember.randn(2, 3, 4, 4), ember.randn(2, 3, 2, 2))
