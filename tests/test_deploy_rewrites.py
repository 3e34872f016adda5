"""ember.deploy.rewrites (MD-4 lone BatchNorm -> affine, MD-5 crops before elementwise ops) and
ember.deploy.binary (MD-11 XNOR + popcount binary layers)."""
import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.deploy import binary as B
from ember.deploy import rewrites as R
from ember.ir.verify import verify
from ember.jit import PassManager, make_ir, run_graph
from ember.ops import P


# ---------------------------------------------------------------- MD-4
class _BatchNorm3d(nn.BatchNorm2d):
    """ember.nn has no BatchNorm3d yet: the same layer over (N, C, D, H, W)."""

    def _check_input_dim(self, input):
        if input.ndim != 5:
            raise ValueError(f"expected 5D input (got {input.ndim}D input)")


BN3D = getattr(nn, "BatchNorm3d", _BatchNorm3d)


def _randomize(bn, seed):
    rng = np.random.default_rng(seed)
    c = bn.num_features
    with ember.no_grad():
        bn.running_mean.copy_(ember.tensor(rng.normal(0, 0.5, c).astype(np.float32)))
        bn.running_var.copy_(ember.tensor(rng.uniform(0.5, 2.0, c).astype(np.float32)))
        if bn.weight is not None:
            bn.weight.copy_(ember.tensor(rng.uniform(0.5, 1.5, c).astype(np.float32)))
            bn.bias.copy_(ember.tensor(rng.normal(0, 0.3, c).astype(np.float32)))
    return bn


def _x(shape, seed=0):
    return ember.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.BatchNorm1d(6), (5, 6)),
    (lambda: nn.BatchNorm1d(6), (5, 6, 7)),
    (lambda: nn.BatchNorm2d(6), (3, 6, 5, 4)),
    (lambda: BN3D(6), (2, 6, 3, 4, 5)),
    (lambda: nn.BatchNorm2d(6, affine=False), (3, 6, 5, 4)),
])
def test_md4_lone_batchnorm_becomes_affine(make, shape):
    """MD-4: a BatchNorm after no conv/linear becomes scale * x + offset, equal within 1e-6 (float32)."""
    model = nn.Sequential(nn.ReLU(), _randomize(make(), 1)).eval()
    x = _x(shape)
    ref = model(x).detach().numpy()
    out = R.fold_batchnorm_alone(model)
    assert out is model and isinstance(model[1], R.ChannelAffine)
    assert not any(isinstance(m, R.BATCHNORMS) for m in model.modules())
    got = model(x).detach().numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_md4_batchnorm_after_conv_or_linear_is_left_for_conv_bn_folding():
    """MD-4: a BatchNorm right after a Conv/Linear stays (ember.onnx.export folds Conv+BN); others fold."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _randomize(nn.BatchNorm2d(4), 2), nn.ReLU(),
                          _randomize(nn.BatchNorm2d(4), 3), nn.Flatten(), nn.Linear(4 * 36, 8),
                          _randomize(nn.BatchNorm1d(8), 4)).eval()
    x = _x((2, 3, 8, 8))
    ref = model(x).detach().numpy()
    R.fold_batchnorm_alone(model)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "ChannelAffine", "Flatten", "Linear", "BatchNorm1d"]
    np.testing.assert_allclose(model(x).detach().numpy(), ref, rtol=0, atol=1e-6)


def test_md4_nested_and_whole_model():
    """MD-4: BatchNorms held by a custom module fold; a model that is one BatchNorm gives a ChannelAffine."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = _randomize(nn.BatchNorm2d(3), 5)
            self.body = nn.Sequential(nn.Tanh(), _randomize(nn.BatchNorm2d(3), 6))

        def forward(self, x):
            return self.body(self.norm(x))

    m = Block().eval()
    x = _x((2, 3, 4, 4))
    ref = m(x).detach().numpy()
    copy = R.fold_batchnorm_alone(m, inplace=False)
    assert isinstance(m.norm, nn.BatchNorm2d)  # not in place: the original is kept
    assert isinstance(copy.norm, R.ChannelAffine) and isinstance(copy.body[1], R.ChannelAffine)
    np.testing.assert_allclose(copy(x).detach().numpy(), ref, rtol=0, atol=1e-6)
    bn = _randomize(nn.BatchNorm1d(4), 7).eval()
    aff = R.fold_batchnorm_alone(bn)
    x = _x((3, 4))
    np.testing.assert_allclose(aff(x).detach().numpy(), bn(x).detach().numpy(), rtol=0, atol=1e-6)
    assert set(aff.state_dict()) == {"scale", "offset"}


def test_md4_refuses_training_mode_and_batch_statistics():
    """MD-4: training-mode BatchNorms and ones without running statistics cannot be folded."""
    with pytest.raises(R.RewriteError, match="training mode"):
        R.fold_batchnorm_alone(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)))
    with pytest.raises(R.RewriteError, match="running statistics"):
        R.fold_batchnorm_alone(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3, track_running_stats=False)).eval())
    with pytest.raises(ValueError, match="expects"):
        R.ChannelAffine(np.ones(3, np.float32), np.zeros(3, np.float32))(_x((2, 4)))


# ---------------------------------------------------------------- MD-5
def _check_same(g, g2, args, ref):
    verify(g2, "sink_slices")
    got = run_graph(g2, [a.numpy() for a in args])
    for a, b in zip(got, ref if isinstance(ref, tuple) else (ref,)):
        np.testing.assert_array_equal(a, b.numpy())


def test_md5_crop_moves_before_elementwise_ops():
    """MD-5: a crop after mul/add/relu runs first; outputs equal, element-ops shrink to the kept elements."""
    def f(x):
        return F.relu(x * 2.0 + 1.0)[:, :, 2:6, 1:7:2]

    x = _x((2, 3, 8, 8))
    g = make_ir(f)(x)
    g2 = R.sink_slices(g)
    _check_same(g, g2, [x], f(x))
    assert g2.eqns[0].prim is P.slice and g2.eqns[0].inputs[0] is g2.invars[0]
    assert R.elementwise_ops(g) == 4 * 2 * 3 * 8 * 8
    assert R.elementwise_ops(g2) == 4 * 2 * 3 * 4 * 3
    assert all(e.out.aval.shape == (2, 3, 4, 3) for e in g2.eqns)


def test_md5_broadcast_operands_are_sliced_along_their_own_dims():
    """MD-5: a per-channel operand is sliced on the channel dim only; a size-1 broadcast dim is kept."""
    def f(x, b, s):
        return ember.exp(x - b.reshape(4, 1, 1)) * s
    x, b, s = _x((2, 4, 6, 6)), _x((4,), 1), _x((6,), 2)

    def g_fn(x, b, s):
        return f(x, b, s)[:, 1:3, ::2, 2:5]

    g = make_ir(g_fn)(x, b, s)
    g2 = R.sink_slices(g)
    _check_same(g, g2, [x, b, s], g_fn(x, b, s))
    shapes = sorted(e.out.aval.shape for e in g2.eqns if e.prim is P.slice)
    assert shapes == sorted([(2, 2, 3, 3), (2, 1, 1), (3,)])
    assert R.elementwise_ops(g2) == 3 * 2 * 2 * 3 * 3


def test_md5_slice_after_conv_is_not_moved_before_the_conv():
    """MD-5: the crop moves before the bias add and tanh, but never past the convolution."""
    def f(x, w, b):
        return ember.tanh(F.conv2d(x, w, b, padding=1) * 3.0)[:, :, 1:3]

    x, w, b = _x((2, 3, 8, 8)), _x((4, 3, 3, 3), 1), _x((4,), 2)
    g = make_ir(f)(x, w, b)
    g2 = R.sink_slices(g)
    _check_same(g, g2, [x, w, b], f(x, w, b))
    conv = next(e for e in g2.eqns if e.prim is P.conv_general)
    assert conv.out.aval.shape == (2, 4, 8, 8) and conv.inputs[0] is g2.invars[0]
    sl = [e for e in g2.eqns if e.prim is P.slice]
    assert [e.inputs[0] for e in sl] == [conv.out]
    assert R.elementwise_ops(g2) < R.elementwise_ops(g)


def test_md5_shared_values_and_pass_manager():
    """MD-5: a value with other users is not recomputed; the pass runs inside ember.jit's PassManager."""
    def f(x):
        y = x * 2.0
        return (y + 1.0)[:, :2], y.sum()

    x = _x((3, 5))
    g = make_ir(f)(x)
    g2 = PassManager([R.sink_slices, "simplify", "cse", "dce"], verify=True).run(g)
    _check_same(g, g2, [x], f(x))
    mul = next(e for e in g2.eqns if e.prim is P.mul)
    assert mul.out.aval.shape == (3, 5)  # also read by the sum: stays whole
    add = next(e for e in g2.eqns if e.prim is P.add)
    assert add.out.aval.shape == (3, 2)  # the add only feeds the crop: moved after it


# ---------------------------------------------------------------- MD-11
def test_md11_binarize_and_packing():
    """MD-11: sign to ±1 with 0 -> +1; packing puts element 64k+i in bit i of word k, padding 0."""
    w = np.array([0.0, -0.0, -2.0, 3.0, -1e-30], np.float32)
    np.testing.assert_array_equal(B.binarize(w), [1, 1, -1, 1, -1])
    assert B.binarize(ember.tensor(w)).dtype == np.float32
    with pytest.raises(B.BinaryError, match="NaN"):
        B.binarize(np.array([1.0, np.nan]))
    bits = B.pack_bits(np.array([1, -1, 1, 1] + [-1] * 60 + [1], np.float32))
    assert bits.dtype == np.uint64 and bits.shape == (2,)
    assert int(bits[0]) == 0b1101 and int(bits[1]) == 1
    rng = np.random.default_rng(0)
    for n in (1, 63, 64, 65, 130):
        x = rng.standard_normal((3, n))
        np.testing.assert_array_equal(B.unpack_bits(B.pack_bits(x), n), B.binarize(x))


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_md11_xnor_popcount_dot_equals_pm1_dot(n):
    """MD-11: n - 2 popcount(a XOR b) is exactly the ±1 dot product (lengths 1, 63, 64, 65, 1000)."""
    rng = np.random.default_rng(n)
    for _ in range(20):
        a, b = rng.standard_normal(n), rng.standard_normal(n)
        want = int(np.dot(B.binarize(a).astype(np.int64), B.binarize(b).astype(np.int64)))
        assert B.xnor_popcount_dot(B.pack_bits(a), B.pack_bits(b), n) == want
    assert B.xnor_popcount_dot(B.pack_bits(a), B.pack_bits(a), n) == n
    assert B.xnor_popcount_dot(B.pack_bits(a), B.pack_bits(-a - (a == 0)), n) == -n
    A, W = rng.standard_normal((7, n)), rng.standard_normal((5, n))
    np.testing.assert_array_equal(B.xnor_popcount_matmul(B.pack_bits(A), B.pack_bits(W), n, chunk=8),
                                  B.binarize(A).astype(np.int64) @ B.binarize(W).astype(np.int64).T)


def test_md11_popcount_fallback(monkeypatch):
    """MD-11: the byte-table popcount (numpy < 2) agrees with np.bitwise_count."""
    words = np.random.default_rng(0).integers(0, 2**63, 50, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    want = np.array([bin(int(w)).count("1") for w in words])
    np.testing.assert_array_equal(B.popcount(words), want)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(B.popcount(words), want)
    with pytest.raises(B.BinaryError, match="words"):
        B.xnor_popcount_dot(B.pack_bits(np.ones(65)), B.pack_bits(np.ones(64)), 65)


def test_md11_binary_linear_matches_float_pm1_computation():
    """MD-11: BinaryLinear on packed bits equals alpha * (sign(x) . sign(W)^T) + b in float, exactly."""
    ember.manual_seed(0)
    m = B.BinaryLinear(100, 6)
    x = _x((2, 3, 100), 3)
    w = m.weight.detach().numpy()
    alpha = np.abs(w).mean(axis=1, dtype=np.float32)
    ref = (B.binarize(x) @ B.binarize(w).T) * alpha + m.bias.detach().numpy()
    with ember.no_grad():
        y = m(x).detach().numpy()
    assert y.shape == (2, 3, 6)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    y_graph = m(x)  # the weight requires grad: the ember-op (straight-through) path
    assert y_graph.requires_grad
    np.testing.assert_array_equal(y_graph.detach().numpy(), y)
    lin = nn.Linear(100, 6)
    m2 = B.BinaryLinear.from_linear(lin)
    np.testing.assert_array_equal(m2.weight.detach().numpy(), lin.weight.detach().numpy())


def test_md11_straight_through_training_step():
    """MD-11: training passes gradients through the signs as clamp(x, -1, 1) does."""
    ember.manual_seed(1)
    m = B.BinaryLinear(8, 3, bias=False)
    x = ember.tensor(np.array([[0.5, -2.0, 0.1, 3.0, -0.3, 0.0, 0.9, -0.9]], np.float32), requires_grad=True)
    m(x).sum().backward()
    gx = x.grad.numpy()
    assert gx[0, 1] == 0 and gx[0, 3] == 0  # |x| > 1: clipped
    assert np.all(gx[0, [0, 2, 4, 5, 6, 7]] != 0)
    assert m.weight.grad is not None and np.abs(m.weight.grad.numpy()).sum() > 0
    opt = ember.optim.SGD(m.parameters(), lr=0.1)
    before = m.weight.detach().numpy().copy()
    opt.step()
    assert not np.array_equal(before, m.weight.detach().numpy())
