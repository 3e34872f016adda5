"""ember.deploy.prune (MD-12) and ember.deploy.compress (MD-13).

Masks are compared with torch.nn.utils.prune's, and torch.topk's choice among tied magnitudes with
torch's own, from tests/fixtures/prune.* (tools/make_prune_fixtures.py, torch 2.13 in a separate
venv). The rest checks properties: masks survive eager and jitted (native) SGD/Adam steps, filter
pruning shrinks layers without changing outputs, k-means sharing fine-tunes, and Deep Compression's
Huffman streams decode bit-exactly with optimal lengths.
"""
import copy
import heapq
import json
import pathlib

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember._core.errors import EmberError
from ember.backend.cpu import compiler
from ember.deploy import compress as C
from ember.deploy import prune as P

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "prune.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "prune.safetensors"))


def _holder(w: np.ndarray) -> nn.Module:
    m = nn.Module()
    m.weight = nn.Parameter(ember.tensor(w))
    return m


def _data(n=32, d=8, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return ember.tensor(rng.standard_normal((n, d)).astype(np.float32)), ember.tensor(rng.integers(0, c, n))


def _step(model, opt):
    """A cross-entropy training step of `model` with `opt` (to jit)."""
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


# ------------------------------------------------------------------ torch fixtures
@pytest.mark.parametrize("name", sorted(META["cases"]))
def test_md12_masks_match_torch_prune(name):
    """MD-12: l1_unstructured / global_unstructured / ln_structured masks (fractions, counts, rounds) equal torch's."""
    case = META["cases"][name]
    mods = [_holder(DATA[f"{name}.w{i}"]) for i in range(len(case["shapes"]))]
    for r, (method, kw) in enumerate(case["rounds"]):
        if method == "l1":
            P.l1_unstructured(mods[0], "weight", **kw)
        elif method == "ln":
            P.ln_structured(mods[0], "weight", **kw)
        else:
            P.global_unstructured([(m, "weight") for m in mods], **kw)
        for i, m in enumerate(mods):
            key = f"{name}.mask{r}.{i}"
            if key in DATA:
                np.testing.assert_array_equal(m.weight_mask.numpy(), DATA[key], err_msg=f"round {r} tensor {i}")
                np.testing.assert_array_equal(m.weight.detach().numpy(), DATA[f"{name}.w{i}"] * DATA[key])


def test_md12_topk_ties_match_torch():
    """MD-12: which tied entries torch.topk picks on the CPU (partial-sort and nth_element paths)."""
    for j, info in enumerate(META["topk"]):
        x, want = DATA[f"topk{j}.x"], np.flatnonzero(DATA[f"topk{j}.sel"])
        got = P._topk_set(x, info["k"], info["largest"])
        np.testing.assert_array_equal(got, want, err_msg=f"case {j}: n={x.size} {info}")


# ------------------------------------------------------------------ reparametrization and training
def test_md12_reparametrization_like_torch():
    """MD-12: weight_orig (the same Parameter object), weight_mask buffer, weight = orig * mask, state_dict keys."""
    ember.manual_seed(0)
    lin = nn.Linear(6, 5)
    w = lin.weight
    P.l1_unstructured(lin, "weight", amount=0.4)
    assert lin.weight_orig is w and "weight" not in lin._parameters
    assert list(lin.state_dict()) == ["bias", "weight_orig", "weight_mask"]
    assert type(lin).__name__ == "Linear" and isinstance(lin, nn.Linear) and P.is_pruned(lin)
    m = lin.weight_mask.numpy()
    assert m.dtype == np.float32 and int((m == 0).sum()) == round(0.4 * 30)
    np.testing.assert_array_equal(lin.weight.detach().numpy(), w.detach().numpy() * m)
    x = ember.randn(3, 6)
    want = x.numpy() @ (w.detach().numpy() * m).T + lin.bias.detach().numpy()
    np.testing.assert_allclose(lin(x).detach().numpy(), want, rtol=1e-6, atol=1e-6)
    copy.deepcopy(lin)  # the swapped class deep-copies


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("backend", ["eager", "native"])
def test_md12_pruned_weights_stay_zero_through_steps(opt_name, backend):
    """MD-12: after several SGD (momentum, weight decay) / Adam steps, eager or in a jitted native step,
    pruned weights are exactly 0."""
    if backend == "native" and not compiler.available():
        pytest.skip("needs a C compiler")
    ember.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = (ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) if opt_name == "sgd"
           else ember.optim.Adam(model.parameters(), lr=1e-2))  # built before pruning: still trains weight_orig
    P.global_unstructured([(model[0], "weight"), (model[2], "weight")], amount=0.7)
    masks = [model[i].weight_mask.numpy().copy() for i in (0, 2)]
    before = [model[i].weight.detach().numpy().copy() for i in (0, 2)]
    x, y = _data()
    step = _step(model, opt)
    f = step if backend == "eager" else ember.jit(step, backend="native")
    losses = [float(f(x, y).item()) for _ in range(6)]
    assert losses[-1] < losses[0]
    if backend == "native":
        from ember.runtime.step import StepExecutable
        (ent,) = f.cache.values()
        assert isinstance(ent.exe, StepExecutable), f.explain
    for i, m, b in zip((0, 2), masks, before):
        w = model[i].weight.detach().numpy()
        assert np.all(w[m == 0] == 0), "a pruned weight moved"
        assert not np.allclose(w[m == 1], b[m == 1]), "kept weights did not train"
        np.testing.assert_array_equal(model[i].weight_orig.grad.numpy()[m == 0], 0)


def test_md12_iterative_pruning_updates_mask_in_place_without_retrace():
    """MD-12: pruning again between jitted steps writes the same mask buffer; the step sees it, no retrace."""
    ember.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = ember.optim.SGD(model.parameters(), lr=0.1)
    P.l1_unstructured(model[0], "weight", 0.3)
    buf = model[0].weight_mask
    x, y = _data()

    f = ember.jit(_step(model, opt))
    f(x, y)
    P.l1_unstructured(model[0], "weight", 0.5)  # half of the remaining 70%
    assert model[0].weight_mask is buf and int((buf.numpy() == 0).sum()) == 38 + round(0.5 * 90)
    for _ in range(3):
        f(x, y)
    assert len(f.explain) == 1, f.explain
    w = model[0].weight.detach().numpy()
    assert np.all(w[buf.numpy() == 0] == 0)


def test_md12_remove_makes_pruning_permanent():
    """MD-12: remove() leaves a plain Parameter (the weight_orig object) holding the pruned values; no mask after."""
    ember.manual_seed(3)
    lin = nn.Linear(5, 4)
    P.l1_unstructured(lin, "weight", 8)
    orig, pruned = lin.weight_orig, lin.weight.detach().numpy().copy()
    P.remove(lin, "weight")
    assert type(lin) is nn.Linear and lin.weight is orig and isinstance(lin.weight, nn.Parameter)
    assert list(lin.state_dict()) == ["bias", "weight"] and not P.is_pruned(lin)
    np.testing.assert_array_equal(lin.weight.detach().numpy(), pruned)
    assert int((pruned == 0).sum()) == 8
    with pytest.raises(P.PruningError, match="has not been pruned"):
        P.remove(lin, "weight")


def test_md12_sparsity_report_per_layer_and_global():
    """MD-12: sparsity() counts exact zeros per tensor and globally."""
    ember.manual_seed(4)
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 5))
    P.l1_unstructured(model[0], "weight", 0.5)
    P.l1_unstructured(model[2], "weight", 10)
    rep = P.sparsity(model)
    assert rep.layers == {"0.weight": (50, 100), "2.weight": (10, 50)}
    assert rep.layer_sparsity("0.weight") == 0.5 and rep.global_sparsity == pytest.approx(60 / 150)
    assert "global" in str(rep)
    assert P.sparsity(model, names=("weight", "bias")).layers["0.bias"] == (0, 10)


# ------------------------------------------------------------------ structured filter pruning
class _Net(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3)
        self.fc = nn.Linear(8 * 5 * 5, 4)

    def forward(self, x):
        h = self.conv1(x)
        if self.kind == "bn":
            h = self.bn(h)
        h = F.relu(h)
        if self.kind == "linear":
            return self.fc(ember.flatten(h, 1))
        return self.conv2(h)


def _mask_filters(net: _Net, keep: np.ndarray) -> None:
    """The big model with the dropped filters zeroed (weight, bias and, after them, the BN's affine)."""
    drop = np.setdiff1d(np.arange(8), keep)
    with ember.no_grad():
        for mod, names in ((net.conv1, ("weight", "bias")), (net.bn, ("weight", "bias"))):
            for k in names:
                a = getattr(mod, k).detach().numpy().copy()
                a[drop] = 0
                getattr(mod, k).copy_(ember.tensor(a))


@pytest.mark.parametrize("kind,norm", [("conv", 1), ("bn", 2), ("linear", 1)])
def test_md12_prune_conv_filters_shrinks_and_keeps_output(kind, norm):
    """MD-12: conv filters of smallest L1/L2 norm removed physically; next Conv2d / BatchNorm2d+Conv2d / Linear
    after flatten shrunk; the small model's output equals the masked big model's (train and eval mode)."""
    ember.manual_seed(5)
    net = _Net(kind)
    with ember.no_grad():  # BN with non-trivial running statistics and affine parameters
        net.bn.running_mean.copy_(ember.randn(8))
        net.bn.running_var.copy_(ember.rand(8) + 0.5)
        net.bn.weight.copy_(ember.randn(8))
        net.bn.bias.copy_(ember.randn(8))
    big = copy.deepcopy(net)
    nxt = {"conv": "conv2", "bn": ["bn", "conv2"], "linear": "fc"}[kind]
    keep = P.prune_conv_filters(net, "conv1", nxt, amount=3, norm=norm)
    # the same filters as torch's ln_structured selection on conv1.weight
    probe = copy.deepcopy(big.conv1)
    P.ln_structured(probe, "weight", 3, norm, 0)
    np.testing.assert_array_equal(keep, np.flatnonzero(probe.weight_mask.numpy()[:, 0, 0, 0]))
    assert net.conv1.out_channels == 5 and tuple(net.conv1.weight.shape) == (5, 3, 3, 3)
    if kind == "linear":
        assert tuple(net.fc.weight.shape) == (4, 5 * 25) and net.fc.in_features == 125
    else:
        assert net.conv2.in_channels == 5 and tuple(net.conv2.weight.shape) == (6, 5, 3, 3)
    if kind == "bn":
        assert net.bn.num_features == 5 and tuple(net.bn.running_mean.shape) == (5,)
    _mask_filters(big, keep)
    x = ember.randn(2, 3, 5, 5)
    for mode in (True, False):
        big.train(mode)
        net.train(mode)
        np.testing.assert_allclose(net(x).detach().numpy(), big(x).detach().numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ gradual pruning
def test_md12_polynomial_schedule_zhu_gupta():
    """MD-12: PruningSchedule is s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, pruning every `frequency` steps."""
    s = P.PruningSchedule(final_sparsity=0.9, initial_sparsity=0.1, begin_step=10, end_step=110, frequency=20)
    assert s.sparsity(0) == pytest.approx(0.1) and s.sparsity(10) == pytest.approx(0.1)
    assert s.sparsity(60) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3) and s.sparsity(500) == pytest.approx(0.9)
    assert [t for t in range(130) if s.should_prune(t)] == [10, 30, 50, 70, 90, 110]
    prev = [s.sparsity(t) for t in range(0, 130, 5)]
    assert all(b >= a for a, b in zip(prev, prev[1:]))


def test_md12_schedule_prune_and_finetune_in_a_jitted_loop():
    """MD-12: iterative prune -> fine-tune: the schedule raises global sparsity to its final value in a jitted loop."""
    ember.manual_seed(6)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = ember.optim.Adam(model.parameters(), lr=1e-2)
    params = [(model[0], "weight"), (model[2], "weight")]
    sched = P.PruningSchedule(final_sparsity=0.8, begin_step=0, end_step=8, frequency=2)
    x, y = _data()

    f = ember.jit(_step(model, opt))
    seen = []
    for t in range(12):
        target = sched.step(t, params)
        if target is not None:
            seen.append(round(P.sparsity(model).global_sparsity, 4))
        f(x, y)
    rep = P.sparsity(model)
    assert rep.global_sparsity == pytest.approx(0.8, abs=1 / 384)
    assert seen == sorted(seen) and len(seen) == 5
    assert len(f.explain) == 2, f.explain  # traced unpruned, then once after the masks appeared


# ------------------------------------------------------------------ bad input
def test_md12_bad_input_raises_clear_ember_errors():
    """MD-12: bad amounts, missing parameters, unsupported layers raise PruningError (an EmberError and ValueError)."""
    assert issubclass(P.PruningError, EmberError) and issubclass(P.PruningError, ValueError)
    lin = nn.Linear(3, 2)
    for amount, pat in ((-0.1, "range"), (1.5, "range"), (-2, "non-negative"), (7, "smaller than the number"),
                        (float("nan"), "range"), ("0.5", "int"), (True, "int")):
        with pytest.raises(P.PruningError, match=pat):
            P.l1_unstructured(lin, "weight", amount)
    with pytest.raises(P.PruningError, match="no parameter named 'wieght'"):
        P.l1_unstructured(lin, "wieght", 0.5)
    with pytest.raises(P.PruningError, match="at least 2 dims"):
        P.ln_structured(lin, "bias", 0.5, 2, 0)
    with pytest.raises(P.PruningError, match="smaller than the number"):
        P.global_unstructured([(lin, "weight"), (lin, "bias")], 9)
    net = _Net("conv")
    with pytest.raises(P.PruningError, match="Conv2d or a Linear"):
        P.prune_conv_filters(net, "conv1", "bn", 0.5)
    with pytest.raises(P.PruningError, match="remove all 8 filters"):
        P.prune_conv_filters(net, "conv1", "conv2", 1.0)
    with pytest.raises(P.PruningError, match="no submodule 'conv9'"):
        P.prune_conv_filters(net, "conv9", "conv2", 0.5)
    with pytest.raises(P.PruningError, match="final_sparsity"):
        P.PruningSchedule(final_sparsity=1.2)


# ------------------------------------------------------------------ MD-13: Deep Compression
def test_md13_kmeans_linear_init_is_lloyd():
    """MD-13: k-means with linear init converges to a Lloyd fixed point, deterministically."""
    v = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    c, lab = C.kmeans_1d(v, 8)
    c2, lab2 = C.kmeans_1d(v, 8)
    assert np.array_equal(c, c2) and np.array_equal(lab, lab2) and c.dtype == np.float32
    assert np.all(np.diff(c) > 0)
    nearest = np.argmin(np.abs(v[:, None].astype(np.float64) - c[None, :]), axis=1)
    np.testing.assert_array_equal(lab, nearest)
    for j in range(8):  # each centroid is the mean of its members
        if (lab == j).any():
            assert c[j] == pytest.approx(v[lab == j].astype(np.float64).mean(), abs=1e-6)


def test_md13_centroid_gradient_is_sum_of_weight_gradients():
    """MD-13: a shared centroid's gradient is the sum of the gradients of the weights that use it (mask respected)."""
    ember.manual_seed(7)
    lin = nn.Linear(12, 6)
    P.l1_unstructured(lin, "weight", 0.5)
    C.share_weights(lin, "weight", bits=3)
    idx, mask = lin.weight_indices.numpy(), lin.weight_mask.numpy()
    assert lin.weight_centroids.shape == (8,) and set(np.unique(idx[mask == 1])) <= set(range(8))
    r = np.random.default_rng(1).standard_normal((6, 12)).astype(np.float32)
    (lin.weight * ember.tensor(r)).sum().backward()
    want = np.bincount(idx.reshape(-1), weights=(r * mask).reshape(-1).astype(np.float64), minlength=8)
    np.testing.assert_allclose(lin.weight_centroids.grad.numpy(), want, rtol=1e-5, atol=1e-5)
    w = lin.weight.detach().numpy()
    assert np.all(w[mask == 0] == 0) and set(np.unique(w[mask == 1])) <= set(lin.weight_centroids.detach().numpy())


def _heap_cost(freqs) -> int:
    """The optimal prefix-code cost: the sum of the merged weights while building a Huffman tree."""
    h = list(freqs)
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        a, b = heapq.heappop(h), heapq.heappop(h)
        cost += a + b
        heapq.heappush(h, a + b)
    return cost


def test_md13_huffman_lengths_are_optimal_and_decode():
    """MD-13: Huffman total bits equal the optimal cost from an independent heapq merge; codes decode."""
    rng = np.random.default_rng(3)
    for alphabet, n in ((2, 50), (5, 1000), (33, 4000), (256, 20000)):
        p = rng.dirichlet(np.ones(alphabet) * 0.5)
        sym = rng.choice(alphabet, n, p=p)
        data, nbits, lengths = C.huffman_encode(sym)
        counts = np.bincount(sym)
        assert nbits == sum(counts[s] * L for s, L in lengths.items()) == _heap_cost(counts[counts > 0].tolist())
        assert sum(2.0 ** -L for L in lengths.values()) <= 1.0  # Kraft
        np.testing.assert_array_equal(C.huffman_decode(data, nbits, lengths, n), sym)
    data, nbits, lengths = C.huffman_encode(np.full(7, 3))
    assert nbits == 7 and lengths == {3: 1}


def test_md13_deep_compression_round_trip_bit_exact():
    """MD-13: prune 90% -> share (5-bit fc) -> fine-tune in a jitted step -> compress -> decode equals the model's
    quantized weights bit for bit; the report's sizes add up and the ratio is large."""
    ember.manual_seed(8)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    P.global_unstructured([(model[0], "weight"), (model[2], "weight")], 0.9)
    for i in (0, 2):
        C.share_weights(model[i], "weight", bits=5)
    opt = ember.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data(64, 64, 10)

    f = ember.jit(_step(model, opt))
    cents = model[0].weight_centroids.detach().numpy().copy()
    losses = [float(f(x, y).item()) for _ in range(4)]
    assert losses[-1] < losses[0] and not np.array_equal(cents, model[0].weight_centroids.detach().numpy())
    rep = C.compress(model)
    assert set(rep.layers) == {"0", "2"}
    for name, i in (("0", 0), ("2", 2)):
        w = model[i].weight.detach().numpy()
        got = rep.decode(name)
        assert got.dtype == w.dtype and np.array_equal(got.view(np.uint32), (w + 0.0).view(np.uint32))
        lr = rep.layers[name]
        assert lr.original_bytes == w.size * 4 and lr.nonzero == int(model[i].weight_mask.numpy().sum())
        assert lr.compressed_bytes == lr.encoded.nbytes and lr.ratio > 5  # small layers: the codebook weighs
    assert rep.other_bytes == (48 + 10) * 4
    assert rep.original_bytes == (64 * 48 + 48 * 10 + 58) * 4 and rep.ratio > 8
    assert "total" in str(rep)


def test_md13_compress_unshared_dense_and_long_gaps():
    """MD-13: an unshared layer is clustered on the fly (conv 8-bit); a dense layer has no gap stream; gaps longer
    than 2**gap_bits - 1 take filler zeros and still decode exactly."""
    ember.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    with ember.no_grad():  # a very sparse fc: long runs of zeros
        w = np.zeros((3, 64), np.float32)
        w[0, 0], w[1, 40], w[2, 63] = 0.5, -0.25, 1.0
        model[2].weight.copy_(ember.tensor(w))
    rep = C.compress(model, gap_bits=3)
    conv = rep.layers["0"]
    assert conv.bits == 8 and conv.encoded.gap_stream is None
    q = rep.decode("0")
    assert set(np.unique(q)) <= set(conv.encoded.centroids.tolist())
    np.testing.assert_allclose(q, model[0].weight.detach().numpy(), atol=5e-3)  # 72 weights, 256 centroids
    np.testing.assert_array_equal(rep.decode("2"), w)
    assert rep.layers["2"].encoded.count > 3  # fillers were needed
    with pytest.raises(C.CompressionError, match="bits"):
        C.compress(model, bits=0)
    with pytest.raises(C.CompressionError, match="no Linear/Conv layer"):
        C.compress(model, layers=["7"])
    C.share_weights(model[2], bits=2)
    with pytest.raises(C.CompressionError, match="already shared"):
        C.share_weights(model[2], bits=2)
    C.unshare(model[2])
    assert isinstance(model[2].weight, nn.Parameter) and type(model[2]) is nn.Linear
