"""ember.nn.Module mechanics (PI-2) and the book's layer examples (PI-3).

Registration order, parameter/buffer/module iteration, state_dict keys and round trips, strict
loading errors, in-place loading (parameter identity), hooks, train/eval, dtype conversion,
containers, Parameter, the nested repr, and reproducible initialisation.
"""
import copy

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F


# ---------------------------------------------------------------- PI-2: the book's CNN
class BookCNN(nn.Module):
    """3x64x64 -> conv16 -> pool -> conv32 -> pool -> flatten 8192 -> 128 -> 64 -> 10 (book fig. model_build)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(8192, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = self.flatten(x)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_book_cnn_shapes_and_parameter_order():
    """PI-2: output (N, 10); conv/dense parameters listed in definition order; MaxPool has 0 params."""
    ember.manual_seed(0)
    net = BookCNN()
    x = ember.randn(2, 3, 64, 64)
    out = net(x)
    assert out.shape == (2, 10)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                     "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    shapes = [p.shape for p in net.parameters()]
    assert shapes == [(16, 3, 3, 3), (16,), (32, 16, 3, 3), (32,), (128, 8192), (128,), (64, 128), (64,),
                      (10, 64), (10,)]
    assert list(net.pool1.parameters()) == [] and list(net.pool2.parameters()) == []
    assert sum(p.numel() for p in net.parameters()) == 448 + 4640 + 1048704 + 8256 + 650
    assert [n for n, _ in net.named_children()] == ["conv1", "pool1", "conv2", "pool2", "flatten", "fc1",
                                                    "fc2", "fc3"]
    assert [n for n, _ in net.named_modules()][:3] == ["", "conv1", "pool1"]
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())


# ---------------------------------------------------------------- PI-3: the book's worked examples
def test_conv_patch_gives_12():
    """PI-3: patch [[1,2,2],[3,2,3],[4,1,3]] * kernel [[1,0,1],[0,1,0],[1,0,1]] = 12 through nn.Conv2d."""
    conv = nn.Conv2d(1, 1, 3, bias=False)
    with ember.no_grad():
        conv.weight.copy_(ember.tensor([[[[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]]]))
    patch = ember.tensor([[[[1.0, 2, 2], [3, 2, 3], [4, 1, 3]]]])
    assert conv(patch).shape == (1, 1, 1, 1)
    assert conv(patch).item() == 12.0


def test_conv_4x4_input_3x3_kernel_gives_2x2():
    """PI-3: a 4x4 input with a 3x3 kernel at stride 1 gives 2x2 (and multi-channel: out_c x in_c kernels)."""
    conv = nn.Conv2d(3, 5, 3, stride=1)
    assert conv.weight.shape == (5, 3, 3, 3)
    assert conv(ember.randn(1, 3, 4, 4)).shape == (1, 5, 2, 2)
    assert nn.Conv2d(1, 1, 3)(ember.randn(4, 4).reshape(1, 4, 4)).shape == (1, 2, 2)  # unbatched


def test_maxpool_pads_with_neg_inf_and_avgpool_with_zero():
    """PI-3: max-pool pads with -inf (an all-negative input stays negative), avg-pool pads with 0."""
    x = -1.0 - ember.arange(16, dtype=ember.float32).reshape(1, 1, 4, 4)
    mp = nn.MaxPool2d(3, stride=1, padding=1)(x)
    assert mp[0, 0, 0, 0].item() == -1.0  # max over the in-bounds values only, never a padded 0
    assert (mp < 0).all().item()
    ap = nn.AvgPool2d(3, stride=1, padding=1)(x)
    assert ap[0, 0, 0, 0].item() == pytest.approx((-1 - 2 - 5 - 6) / 9)  # padding counted as 0, divisor 9
    ap2 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(x)
    assert ap2[0, 0, 0, 0].item() == pytest.approx((-1 - 2 - 5 - 6) / 4)


# ---------------------------------------------------------------- registration and iteration
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.register_buffer("scratch", ember.zeros(2), persistent=False)
        self.scale = nn.Parameter(ember.ones(1))

    def forward(self, x):
        return self.bn(self.fc(x)) * self.scale


def test_state_dict_keys_match_pytorch_naming():
    """PI-2: keys exactly as PyTorch's: own params, own buffers, then children; non-persistent excluded."""
    model = nn.Sequential(nn.Linear(4, 4), Block())
    assert list(model.state_dict()) == [
        "0.weight", "0.bias", "1.scale", "1.fc.weight", "1.fc.bias", "1.bn.weight", "1.bn.bias",
        "1.bn.running_mean", "1.bn.running_var", "1.bn.num_batches_tracked"]
    assert [n for n, _ in model.named_buffers()] == ["1.scratch", "1.bn.running_mean", "1.bn.running_var",
                                                     "1.bn.num_batches_tracked"]
    assert model.state_dict()["1.bn.num_batches_tracked"].dtype == ember.int64
    sd = model.state_dict()
    assert not sd["0.weight"].requires_grad and isinstance(model.state_dict(keep_vars=True)["0.weight"],
                                                           nn.Parameter)
    assert np.shares_memory(sd["0.weight"].numpy(), model[0].weight.detach().numpy())


def test_shared_parameters_listed_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(model.parameters())) == 2
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(model.named_parameters(remove_duplicate=False))) == 4
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # as PyTorch
    assert len(list(model.modules())) == 3
    tied = nn.Module()
    tied.emb = nn.Embedding(5, 3)
    tied.out = nn.Linear(3, 5, bias=False)
    tied.out.weight = tied.emb.weight
    assert [n for n, _ in tied.named_parameters()] == ["emb.weight"]


def test_setattr_rules_and_errors():
    m = nn.Module()
    m.w = nn.Parameter(ember.zeros(2))
    assert "w" in m._parameters and "w" not in m.__dict__
    with pytest.raises(TypeError, match="parameter 'w'"):
        m.w = ember.zeros(2)  # a plain tensor cannot replace a parameter
    m.w = None
    assert m.w is None and list(m.parameters()) == []
    m.register_buffer("b", ember.zeros(1))
    m.b = ember.ones(1)  # buffers are replaced by tensors
    assert m._buffers["b"].item() == 1.0
    m.plain = ember.zeros(1)  # an unregistered tensor stays a plain attribute
    assert list(m.buffers()) == [m.b]
    m.sub = nn.Linear(1, 1)
    m.sub = nn.ReLU()
    assert isinstance(m.sub, nn.ReLU) and list(m.parameters()) == []
    del m.sub
    assert list(m.children()) == []
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        m.nope
    with pytest.raises(KeyError):
        m.register_buffer("a.b", None)

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(ember.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


# ---------------------------------------------------------------- state_dict loading
def test_state_dict_round_trip_and_identity():
    """load_state_dict copies into the existing parameters: objects and storages stay the same."""
    ember.manual_seed(1)
    a = nn.Sequential(nn.Linear(4, 4), Block())
    ember.manual_seed(2)
    b = nn.Sequential(nn.Linear(4, 4), Block())
    x = ember.randn(5, 4)
    a.train()
    a(x)  # move a's running statistics
    a.eval()
    b.eval()
    params = {n: (p, p.data_ptr()) for n, p in b.named_parameters()}
    bufs = {n: (t, t.data_ptr()) for n, t in b.named_buffers()}
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    for n, p in b.named_parameters():
        assert p is params[n][0] and p.data_ptr() == params[n][1] and p.requires_grad
    for n, t in b.named_buffers():
        assert t is bufs[n][0] and t.data_ptr() == bufs[n][1]
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())
    assert b[1].bn.num_batches_tracked.item() == 1
    # numpy values (as safetensors.numpy gives) load too
    b.load_state_dict({k: v.numpy().copy() for k, v in a.state_dict().items()})
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())


def test_load_state_dict_strict_errors():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    sd = dict(model.state_dict())
    sd.pop("0.bias")
    sd["extra.weight"] = ember.zeros(1)
    with pytest.raises(RuntimeError) as e:
        model.load_state_dict(sd)
    msg = str(e.value)
    assert "Missing key(s) in state_dict: \"0.bias\"" in msg
    assert "Unexpected key(s) in state_dict: \"extra.weight\"" in msg
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert missing == ["0.bias"] and unexpected == ["extra.weight"]
    bad = dict(model.state_dict())
    bad["0.weight"] = ember.zeros(3, 5)
    with pytest.raises(RuntimeError, match=r"size mismatch for 0\.weight: copying a param with shape \(3, 5\) "
                                           r"from checkpoint, the shape in current model is \(3, 4\)"):
        model.load_state_dict(bad, strict=False)  # shape mismatches raise even when not strict


def test_batchnorm_checkpoint_without_num_batches_tracked_loads():
    """As PyTorch for checkpoints without version metadata: a missing num_batches_tracked is not an error."""
    bn = nn.BatchNorm2d(3)
    sd = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    assert bn.load_state_dict(sd) == ([], [])


# ---------------------------------------------------------------- hooks, modes, gradients
def test_forward_hooks_and_removal():
    lin = nn.Linear(2, 2)
    calls = []
    h1 = lin.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    h2 = lin.register_forward_hook(lambda m, args, out: out + 1)
    h3 = lin.register_forward_hook(lambda m, args, out: calls.append("first"), prepend=True)
    out = lin(ember.ones(1, 2))
    np.testing.assert_allclose(out.detach().numpy(), (lin.bias + 1).detach().numpy()[None])
    assert calls == ["first"]
    h1.remove()
    h2.remove()
    h3.remove()
    h3.remove()  # removing twice is harmless
    np.testing.assert_allclose(lin(ember.ones(1, 2)).detach().numpy(),
                               F.linear(ember.ones(1, 2), lin.weight, lin.bias).detach().numpy())
    seen = {}
    with lin.register_forward_hook(lambda m, a, kw, o: seen.update(kw), with_kwargs=True):
        lin(input=ember.ones(1, 2))
    assert "input" in seen
    assert not lin._forward_hooks
    h = lin.register_forward_pre_hook(lambda m, a, kw: ((), {"input": ember.zeros(1, 2)}), with_kwargs=True)
    np.testing.assert_allclose(lin(ember.ones(1, 2)).detach().numpy(), lin.bias.detach().numpy()[None])
    h.remove()


def test_train_eval_propagates_and_changes_behaviour():
    ember.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(4)))
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    x = ember.randn(6, 4)
    np.testing.assert_array_equal(model(x).detach().numpy(), model(x).detach().numpy())
    model.train()
    assert all(m.training for m in model.modules())
    assert model[2][0].num_batches_tracked.item() == 0
    model(x)
    assert model[2][0].num_batches_tracked.item() == 1
    with pytest.raises(ValueError):
        model.train("yes")


def test_dropout_statistics_and_reproducibility():
    d = nn.Dropout(0.3)
    x = ember.ones(200, 100)
    ember.manual_seed(7)
    y = d(x).numpy()
    frac = (y == 0).mean()
    assert abs(frac - 0.3) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    ember.manual_seed(7)
    np.testing.assert_array_equal(d(x).numpy(), y)
    assert not np.array_equal(d(x).numpy(), y)
    d.eval()
    assert d(x) is x


def test_zero_grad_and_requires_grad():
    lin = nn.Linear(3, 2)
    lin(ember.ones(1, 3)).sum().backward()
    g = lin.weight.grad
    lin.zero_grad(set_to_none=False)
    assert lin.weight.grad is g and not g.numpy().any()
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None
    lin.requires_grad_(False)
    assert not lin.weight.requires_grad and not lin(ember.ones(1, 3)).requires_grad
    lin.requires_grad_()
    assert lin.weight.requires_grad


def test_apply_and_init():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    seen = []

    def init_weights(m):
        seen.append(type(m).__name__)
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)
            nn.init.zeros_(m.bias)

    assert model.apply(init_weights) is model
    assert seen == ["Linear", "ReLU", "Linear", "Sequential"]
    assert (model[2].weight == 0.5).all().item()
    assert model[0].weight.requires_grad and model[0].weight.grad_fn is None


def test_to_dtype_keeps_parameter_objects():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    w = model[0].weight
    model.double()
    assert model[0].weight is w and w.dtype == ember.float64 and w.requires_grad
    assert model[1].running_mean.dtype == ember.float64
    assert model[1].num_batches_tracked.dtype == ember.int64  # integer buffers keep their dtype
    out = model(ember.randn(4, 3, dtype=ember.float64))
    assert out.dtype == ember.float64
    model.to(ember.float32)
    assert w.dtype == ember.float32
    model.float()
    with pytest.raises(TypeError):
        model.to(ember.int32)


def test_deepcopy_gives_independent_parameters():
    lin = nn.Linear(2, 2)
    lin2 = copy.deepcopy(lin)
    assert isinstance(lin2.weight, nn.Parameter) and lin2.weight is not lin.weight
    np.testing.assert_array_equal(lin2.weight.detach().numpy(), lin.weight.detach().numpy())
    with ember.no_grad():
        lin2.weight.zero_()
    assert lin.weight.detach().numpy().any()


# ---------------------------------------------------------------- Parameter
def test_parameter_is_a_tensor_subclass():
    base = ember.ones(2, 2)
    p = nn.Parameter(base)
    assert isinstance(p, ember.Tensor) and p.requires_grad and p.is_leaf
    assert np.shares_memory(p.detach().numpy(), base.numpy())
    assert not nn.Parameter(ember.ones(1), requires_grad=False).requires_grad
    y = p * 3 + 1
    assert type(y) is ember.Tensor and y.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), np.full((2, 2), 3.0, np.float32))
    assert repr(p).startswith("Parameter containing:\ntensor(")
    assert not hasattr(p, "__dict__")


# ---------------------------------------------------------------- containers
def test_sequential_indexing_slicing_and_append():
    from collections import OrderedDict
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(sub.state_dict()) == ["2.weight", "2.bias"]  # slicing keeps the names, as PyTorch
    s.append(nn.Sigmoid())
    assert len(s) == 4 and s(ember.ones(5, 2)).shape == (5, 1)
    del s[1]
    assert [n for n, _ in s.named_children()] == ["0", "1", "2"]
    named = nn.Sequential(OrderedDict([("enc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert list(named.state_dict()) == ["enc.weight", "enc.bias"] and named[1] is named.act
    with pytest.raises(IndexError):
        s[5]


def test_modulelist_and_moduledict():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.append(nn.ReLU())
    layers.extend([nn.Tanh()])
    assert len(layers) == 5 and isinstance(layers[-1], nn.Tanh)
    assert len(list(layers.parameters())) == 6
    assert list(layers.state_dict())[:2] == ["0.weight", "0.bias"]
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    d = nn.ModuleDict({"a": nn.Linear(1, 1)})
    d["b"] = nn.ReLU()
    assert list(d.keys()) == ["a", "b"] and "a" in d and len(d) == 2
    assert list(d.state_dict()) == ["a.weight", "a.bias"]
    assert isinstance(d.pop("b"), nn.ReLU) and len(d) == 1


# ---------------------------------------------------------------- repr
EXPECTED_REPR = """Net(
  (features): Sequential(
    (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    (2): ReLU(inplace=True)
    (3): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  )
  (pool): AdaptiveAvgPool2d(output_size=(1, 1))
  (blocks): ModuleList(
    (0-2): 3 x Linear(in_features=8, out_features=8, bias=True)
    (3): GELU(approximate='tanh')
  )
  (heads): ModuleDict(
    (cls): Linear(in_features=8, out_features=10, bias=True)
    (drop): Dropout(p=0.1, inplace=False)
  )
  (norm): LayerNorm((8,), eps=1e-05, elementwise_affine=True, bias=True)
  (emb): Embedding(5, 8, padding_idx=0)
  (attn): MultiheadAttention(
    (out_proj): NonDynamicallyQuantizableLinear(in_features=8, out_features=8, bias=True)
  )
  (act): LeakyReLU(negative_slope=0.2)
  (sm): Softmax(dim=-1)
  (flat): Flatten(start_dim=1, end_dim=-1)
  (unflat): Unflatten(dim=1, unflattened_size=(2, 4))
  (c1): Conv1d(4, 4, kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,), groups=2, padding_mode=circular)
  (ap): AvgPool2d(kernel_size=3, stride=2, padding=1)
  (bn1): BatchNorm1d(4, eps=1e-05, momentum=None, affine=False, bias=False, track_running_stats=True)
  (loss): CrossEntropyLoss()
)"""


def test_repr_matches_pytorch():
    """The nested repr, byte for byte as torch 2.13 prints the same model."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                          nn.ReLU(inplace=True), nn.MaxPool2d(2))
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)] + [nn.GELU(approximate="tanh")])
            self.heads = nn.ModuleDict({"cls": nn.Linear(8, 10), "drop": nn.Dropout(0.1)})
            self.norm = nn.LayerNorm(8)
            self.emb = nn.Embedding(5, 8, padding_idx=0)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.act = nn.LeakyReLU(0.2)
            self.sm = nn.Softmax(dim=-1)
            self.flat = nn.Flatten()
            self.unflat = nn.Unflatten(1, (2, 4))
            self.c1 = nn.Conv1d(4, 4, 3, stride=2, padding=1, dilation=2, groups=2, padding_mode="circular")
            self.ap = nn.AvgPool2d(3, stride=2, padding=1)
            self.bn1 = nn.BatchNorm1d(4, momentum=None, affine=False)
            self.loss = nn.CrossEntropyLoss(label_smoothing=0.1)

    assert repr(Net()) == EXPECTED_REPR


# ---------------------------------------------------------------- initialisation and layers
def test_initialisation_is_reproducible_with_manual_seed():
    ember.manual_seed(42)
    a = BookCNN()
    ember.manual_seed(42)
    b = BookCNN()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy(), err_msg=n)
    ember.manual_seed(43)
    c = nn.Linear(8192, 128)
    assert not np.array_equal(c.weight.detach().numpy(), a.fc1.weight.detach().numpy())


def test_embedding_padding_and_from_pretrained():
    emb = nn.Embedding(5, 3, padding_idx=1)
    assert not emb.weight[1].detach().numpy().any()
    idx = ember.tensor([[1, 2], [1, 4]])
    emb(idx).sum().backward()
    assert not emb.weight.grad[1].numpy().any() and emb.weight.grad[2].numpy().all()
    table = ember.randn(4, 2)
    frozen = nn.Embedding.from_pretrained(table)
    assert not frozen.weight.requires_grad and np.shares_memory(frozen.weight.detach().numpy(), table.numpy())
    np.testing.assert_array_equal(frozen(ember.tensor([3, 0])).numpy(), table.numpy()[[3, 0]])
    assert nn.Embedding.from_pretrained(table, freeze=False).weight.requires_grad


def test_mha_is_causal_builds_the_causal_mask():
    ember.manual_seed(5)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = ember.randn(2, 4, 8)
    causal = ember.tensor(np.triu(np.ones((4, 4), bool), 1))
    a, wa = mha(x, x, x, is_causal=True)
    b, wb = mha(x, x, x, attn_mask=causal)
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6)
    assert not np.triu(wa.detach().numpy()[0], 1).any()  # no weight on the future
    np.testing.assert_allclose(wa.detach().numpy().sum(-1), 1.0, rtol=1e-6)


def test_batchnorm_eval_uses_running_stats_and_errors():
    bn = nn.BatchNorm1d(2)
    with ember.no_grad():
        bn.running_mean.copy_(ember.tensor([1.0, -1.0]))
        bn.running_var.copy_(ember.tensor([4.0, 0.25]))
    bn.eval()
    y = bn(ember.tensor([[3.0, 0.0]]))
    np.testing.assert_allclose(y.detach().numpy(), [[2 / np.sqrt(4 + 1e-5), 1 / np.sqrt(0.25 + 1e-5)]], rtol=1e-6)
    bn.train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(ember.ones(1, 2))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bn(ember.ones(1, 2, 3, 4))


def test_losses_accept_module_style_calls():
    ce = nn.CrossEntropyLoss()
    logits = ember.randn(4, 3, requires_grad=True)
    loss = ce(logits, ember.tensor([0, 2, 1, 2]))
    assert loss.shape == ()
    loss.backward()
    assert logits.grad.shape == (4, 3)
    w = ember.tensor([1.0, 2.0, 3.0])
    assert list(nn.CrossEntropyLoss(weight=w).state_dict()) == ["weight"]
    assert nn.MSELoss(reduction="sum")(ember.ones(3), ember.zeros(3)).item() == 3.0
    with pytest.raises(ValueError):
        nn.L1Loss(reduction="avg")


def test_get_and_set_submodule_by_dotted_path():
    """get_submodule / set_submodule as PyTorch: dotted paths, a missing parent raises, "" is refused."""
    m = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    assert m.get_submodule("1.1") is m[1][1] and m.get_submodule("") is m
    new = nn.Linear(3, 4)
    m.set_submodule("1.1", new)
    assert m[1][1] is new and m.get_submodule("1.1") is new
    with pytest.raises(AttributeError):
        m.set_submodule("7.0", nn.ReLU())
    with pytest.raises(ValueError):
        m.set_submodule("", nn.ReLU())
