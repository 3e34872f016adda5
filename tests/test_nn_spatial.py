"""PI-3 (layer library): ember's spatial and transformer layers against PyTorch.

- fixtures from tools/make_spatial_fixtures.py (run with torch in a separate environment; torch is
  never imported here): transposed / 3-D convolution, GroupNorm, InstanceNorm, RMSNorm, Upsample
  and F.interpolate, PixelShuffle, Unfold / Fold, adaptive and indexed pooling, MaxUnpool2d and the
  Transformer layers — outputs, indices, input and parameter gradients and running statistics,
  float32 and float64, with torch's parameters loaded by state_dict key (strict);
- float64 gradcheck of every new functional;
- every new module under ember.jit, forward and gradients equal to eager;
- clear ember errors, naming the shapes, for bad input.
"""
from __future__ import annotations

import inspect
import json
import math
import pathlib

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.testing import gradcheck

safetensors_numpy = pytest.importorskip("safetensors.numpy")

FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "spatial.json").read_text())
DATA = safetensors_numpy.load_file(str(FIX / "spatial.safetensors"))
DT = {"float32": ember.float32, "float64": ember.float64}
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}
# wider, with the reason: the Transformer layers' float32 gradients sum products over batch, heads,
# positions and features in another order than torch's fused kernels (values O(1), differences up to ~4e-6)
WIDER = {"Transformer": {"float32": dict(rtol=1e-5, atol=5e-6), "float64": dict(rtol=1e-10, atol=1e-12)}}


def _tol(case):
    for prefix, tols in WIDER.items():
        if case["target"].startswith(prefix):
            return tols[case["dtype"]]
    return TOL[case["dtype"]]


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _kwargs(kwargs: dict, dtype) -> dict:
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, dict) and "module" in v:
            out[k] = _module(v["module"], v["kwargs"], dtype)
        else:
            out[k] = _tuples(v)
    return out


def _module(cls: str, kwargs: dict, dtype):
    ctor = getattr(nn, cls)
    extra = {"dtype": dtype} if "dtype" in inspect.signature(ctor).parameters else {}
    return ctor(**_kwargs(kwargs, dtype), **extra)


def _close(got, want, tol, what):
    got = got.detach().numpy() if isinstance(got, ember.Tensor) else got
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert str(got.dtype) == str(want.dtype), f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, err_msg=what, **tol)


def run_fixture_case(case):
    """ember's (outputs, input grads, param grads, module) for a fixture case."""
    name, dtype = case["name"], DT[case["dtype"]]
    leaves, call = {}, {}
    for k in case["inputs"]:
        leaf = ember.tensor(DATA[f"{name}.in.{k}"], requires_grad=k in case["grads_in"])
        leaves[k] = leaf
        call[k] = leaf.permute(*case["views"][k]) if k in case["views"] else leaf
        if k in case["views"]:
            assert not call[k].is_contiguous()
    m = None
    if case["kind"] == "module":
        m = _module(case["target"], case["kwargs"], dtype)
        sd = {k: DATA[f"{name}.sd.{k}"] for k in case["state_keys"]}
        assert list(m.state_dict()) == case["state_keys"], "state_dict keys or their order differ from PyTorch's"
        assert m.load_state_dict(sd) == ([], [])
        m.train(case["mode"] == "train")
        args = [call[k] for k in case["positional"]]
        kw = {k: v for k, v in call.items() if k not in case["positional"]}
        out = m(*args, **kw, **_tuples(case["forward_kwargs"]))
    else:
        out = getattr(F, case["target"])(**call, **_kwargs(case["kwargs"], dtype))
    outs = list(out) if isinstance(out, tuple) else [out]
    loss = None
    for i, o in enumerate(outs):
        if case["outputs"][i] == "float":
            term = (o * ember.tensor(DATA[f"{name}.gout.{i}"])).sum()
            loss = term if loss is None else loss + term
    params = dict(m.named_parameters()) if m is not None else {}
    wrt = [leaves[k] for k in case["grads_in"]] + [params[k] for k in case["grads_params"]]
    grads = ember.autograd.grad(loss, wrt) if wrt else []
    gin = dict(zip(case["grads_in"], grads[:len(case["grads_in"])]))
    gp = dict(zip(case["grads_params"], grads[len(case["grads_in"]):]))
    return outs, gin, gp, m


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the loss of inf / NaN outputs
@pytest.mark.parametrize("case", META["cases"], ids=[c["name"] for c in META["cases"]])
def test_pi3_layer_matches_pytorch(case):
    """PI-3: forward, indices, input and parameter gradients and updated buffers match PyTorch."""
    name, tol = case["name"], _tol(case)
    outs, gin, gp, m = run_fixture_case(case)
    assert len(outs) == len(case["outputs"])
    for i, o in enumerate(outs):
        _close(o, DATA[f"{name}.out.{i}"], tol, f"output {i}")
    for k, g in gin.items():
        _close(g, DATA[f"{name}.grad.in.{k}"], tol, f"grad of input {k}")
    for k, g in gp.items():
        _close(g, DATA[f"{name}.grad.p.{k}"], tol, f"grad of parameter {k}")
    if case["after"]:
        bufs = dict(m.named_buffers())
        for k in case["after"]:
            _close(bufs[k], DATA[f"{name}.after.{k}"], tol, f"buffer {k} after the forward")


# ---------------------------------------------------------------- float64 gradcheck of each functional
def _r(*shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed + sum(shape))
    return ember.tensor(rng.standard_normal(shape) * scale, dtype=ember.float64, requires_grad=True)


def _distinct(*shape, seed=0):
    """Well-separated values (no near-ties), so max pooling's choice is stable under the perturbation."""
    rng = np.random.default_rng(seed)
    v = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1
    return ember.tensor(v, dtype=ember.float64, requires_grad=True)


GRADCHECKS = {
    "conv_transpose1d": (lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2, padding=1, output_padding=1),
                         lambda: [_r(2, 2, 4), _r(2, 3, 3), _r(3)]),
    "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=(2, 1), padding=(0, 1), groups=2,
                                                            dilation=(1, 2)),
                         lambda: [_r(1, 4, 3, 3), _r(4, 1, 2, 3), _r(2)]),
    "conv_transpose3d": (lambda x, w: F.conv_transpose3d(x, w, stride=2, output_padding=1),
                         lambda: [_r(1, 2, 2, 2, 2), _r(2, 1, 2, 2, 2)]),
    "conv3d": (lambda x, w, b: F.conv3d(x, w, b, stride=(1, 2, 1), padding=1),
               lambda: [_r(1, 2, 3, 4, 3), _r(2, 2, 2, 2, 2), _r(2)]),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), lambda: [_r(2, 4, 3), _r(4), _r(4)]),
    "instance_norm": (lambda x, w, b: F.instance_norm(x, weight=w, bias=b), lambda: [_r(2, 3, 2, 3), _r(3), _r(3)]),
    "rms_norm": (lambda x, w: F.rms_norm(x, (3,), w), lambda: [_r(4, 3), _r(3)]),
    "interpolate_nearest": (lambda x: F.interpolate(x, scale_factor=1.7), lambda: [_r(1, 2, 3, 4)]),
    "interpolate_nearest_exact": (lambda x: F.interpolate(x, size=(5, 2), mode="nearest-exact"),
                                  lambda: [_r(1, 2, 3, 4)]),
    "interpolate_area": (lambda x: F.interpolate(x, size=(2, 3), mode="area"), lambda: [_r(1, 2, 5, 4)]),
    "adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 3), lambda: [_r(2, 2, 7)]),
    "interpolate_linear": (lambda x: F.interpolate(x, size=7, mode="linear"), lambda: [_r(2, 2, 4)]),
    "interpolate_bilinear": (lambda x: F.interpolate(x, size=(5, 3), mode="bilinear", align_corners=True),
                             lambda: [_r(1, 2, 3, 4)]),
    "interpolate_bicubic": (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), lambda: [_r(1, 1, 3, 3)]),
    "interpolate_trilinear": (lambda x: F.interpolate(x, size=(3, 2, 3), mode="trilinear"),
                              lambda: [_r(1, 1, 2, 3, 2)]),
    "pixel_shuffle": (lambda x: F.pixel_shuffle(x, 2), lambda: [_r(1, 8, 2, 3)]),
    "pixel_unshuffle": (lambda x: F.pixel_unshuffle(x, 2), lambda: [_r(1, 2, 4, 2)]),
    "unfold": (lambda x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)), lambda: [_r(1, 2, 4, 5)]),
    "fold": (lambda x: F.fold(x, (4, 5), (2, 2), padding=1, stride=2), lambda: [_r(1, 8, 9)]),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)), lambda: [_r(1, 2, 5, 5)]),
    "adaptive_max_pool2d": (lambda x: F.adaptive_max_pool2d(x, (2, 3)), lambda: [_distinct(1, 2, 5, 5)]),
    "max_pool2d_with_indices": (lambda x: F.max_pool2d_with_indices(x, 3, 2, 1)[0], lambda: [_distinct(1, 2, 5, 5)]),
    "max_unpool2d": (lambda x: F.max_unpool2d(x, ember.tensor(np.array([[[[0, 3], [9, 14]]]])), 2, output_size=(4, 4)),
                     lambda: [_r(1, 1, 2, 2)]),
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_pi3_gradcheck_float64(name):
    """PI-3: every new functional's gradient agrees with central differences in float64."""
    fn, make = GRADCHECKS[name]
    assert gradcheck(fn, make(), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- every new module under ember.jit
def _idx_input():
    x = ember.tensor(np.random.default_rng(3).standard_normal((2, 3, 6, 6)), dtype=ember.float32)
    v, i = F.max_pool2d_with_indices(x, 2)
    return [v.detach(), i]


def _x(*shape):
    return lambda: [ember.tensor(np.random.default_rng(len(shape)).standard_normal(shape), dtype=ember.float32)]


def _seqs(*shapes):
    return lambda: [ember.tensor(np.random.default_rng(i).standard_normal(s), dtype=ember.float32)
                    for i, s in enumerate(shapes)]


JIT = {
    "ConvTranspose1d": (lambda: nn.ConvTranspose1d(3, 2, 3, stride=2, output_padding=1), _x(2, 3, 5), {}),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, groups=1),
                        _x(2, 3, 4, 5), {}),
    "ConvTranspose3d": (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2), _x(1, 2, 2, 3, 2), {}),
    "Conv3d": (lambda: nn.Conv3d(2, 3, 3, padding=1, stride=(1, 2, 1)), _x(1, 2, 3, 4, 5), {}),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), _x(2, 4, 3, 3), {}),
    "InstanceNorm1d": (lambda: nn.InstanceNorm1d(3, affine=True), _x(2, 3, 6), {}),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(3, track_running_stats=True), _x(2, 3, 4, 4), {}),
    "InstanceNorm3d": (lambda: nn.InstanceNorm3d(2), _x(1, 2, 2, 3, 3), {}),
    "RMSNorm": (lambda: nn.RMSNorm(6), _x(3, 6), {}),
    "Upsample": (lambda: nn.Upsample(scale_factor=2), _x(1, 2, 3, 4), {}),
    "UpsamplingBilinear2d": (lambda: nn.UpsamplingBilinear2d(size=(5, 7)), _x(1, 2, 3, 4), {}),
    "UpsamplingNearest2d": (lambda: nn.UpsamplingNearest2d(scale_factor=1.5), _x(1, 2, 3, 4), {}),
    "Upsample_bicubic": (lambda: nn.Upsample(size=(5, 4), mode="bicubic"), _x(1, 1, 3, 3), {}),
    "PixelShuffle": (lambda: nn.PixelShuffle(2), _x(1, 8, 2, 3), {}),
    "PixelUnshuffle": (lambda: nn.PixelUnshuffle(2), _x(1, 2, 4, 6), {}),
    "Unfold": (lambda: nn.Unfold(3, padding=1, stride=2), _x(2, 2, 5, 5), {}),
    "Fold": (lambda: nn.Fold((4, 4), 2), _x(2, 8, 9), {}),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((3, 2)), _x(2, 2, 7, 5), {}),
    "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d((3, 2), return_indices=True), _x(2, 2, 7, 5), {}),
    "MaxPool2d": (lambda: nn.MaxPool2d(3, 2, 1, return_indices=True), _x(2, 2, 7, 7), {}),
    "MaxUnpool2d": (lambda: nn.MaxUnpool2d(2), _idx_input, {}),
    "TransformerEncoderLayer": (lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=True),
                                _seqs((5, 2, 8)), {"src_mask": nn.Transformer.generate_square_subsequent_mask(5)}),
    "TransformerDecoderLayer": (lambda: nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
                                _seqs((2, 4, 8), (2, 3, 8)), {}),
    "TransformerEncoder": (lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), 2),
                           _seqs((4, 2, 8)), {}),
    "TransformerDecoder": (lambda: nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0), 2,
                                                         nn.LayerNorm(8)), _seqs((4, 2, 8), (3, 2, 8)), {}),
    "Transformer": (lambda: nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, activation="gelu"),
                    _seqs((5, 2, 8), (4, 2, 8)),
                    {"tgt_mask": nn.Transformer.generate_square_subsequent_mask(4)}),
}


@pytest.mark.parametrize("name", sorted(JIT))
def test_pi3_module_under_jit_matches_eager(name):
    """PI-3: each new module traced by ember.jit (forward, then backward() filling the .grad of its
    float inputs and parameters) gives eager mode's values; running statistics update the same way."""
    make_module, make_inputs, kw = JIT[name]
    results = []
    for mode in ("eager", "jit"):
        ember.manual_seed(0)
        m = make_module()
        ins = [x.detach().requires_grad_(True) if x.dtype.kind == "f" else x for x in make_inputs()]
        leaves = [x for x in ins if x.dtype.kind == "f"] + list(m.parameters())

        def step(*xs):
            out = m(*xs, **kw)
            outs = list(out) if isinstance(out, tuple) else [out]
            loss = sum((o * (1.0 + 0.1 * k)).sum() for k, o in enumerate(outs) if o.dtype.kind == "f")
            loss.backward()
            return outs
        f = step if mode == "eager" else ember.jit(step)
        outs = f(*ins)
        assert all(t.grad is not None for t in leaves)
        results.append([o.detach().numpy() for o in outs] + [t.grad.numpy() for t in leaves]
                       + [b.detach().numpy().copy() for b in m.buffers()])
        if mode == "jit" and name != "MaxUnpool2d":  # scatter_along_axis (a write) has no CPU lowering yet
            (ent,) = f.cache.values()
            assert not getattr(ent.exe, "host_units", []), f.explain
    for a, b in zip(*results[::-1]):
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_jit_autograd_grad_through_rev():
    """A regression: d/dw sum(rev(w) * c) = rev(c) from ember.autograd.grad inside ember.jit (a
    detached view of the same shape as its base once read the base's value while tracing)."""
    from ember.ops import lax
    c = ember.tensor(np.arange(12.0).reshape(4, 3), dtype=ember.float32)
    w = ember.zeros(4, 3)

    def f(c, w):
        w = w.detach().requires_grad_(True)
        return ember.autograd.grad((lax.rev(w, (0,)) * c).sum(), [w])[0]
    np.testing.assert_array_equal(ember.jit(f)(c, w).numpy(), f(c, w).numpy())


# ---------------------------------------------------------------- errors
def test_pi3_errors_name_the_shapes():
    """PI-3: bad input raises an ember error that names the shapes involved."""
    with pytest.raises(ValueError, match=r"\(2, 5, 4, 4\).*5 channels.*in_channels=3"):
        nn.ConvTranspose2d(3, 4, 3)(ember.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match=r"output_padding \(2, 2\) must be smaller than either stride \(2, 2\)"):
        nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2)(ember.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"output_padding \(1,\).*stride \(1,\).*\(1, 3, 4\)"):
        F.conv_transpose1d(ember.randn(1, 3, 4), ember.randn(3, 2, 3), output_padding=1)
    with pytest.raises(ValueError, match=r"valid sizes range from \(7, 7\) to \(8, 8\)"):
        nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)(ember.randn(1, 2, 4, 4), output_size=(9, 8))
    with pytest.raises(ValueError, match=r"input of shape \(1, 2, 4, 4, 4\) does not fit weight of shape "
                                         r"\(3, 4, 3, 3, 3\)"):
        nn.Conv3d(4, 3, 3)(ember.randn(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match=r"num_channels=6.*\(2, 4, 3\)"):
        nn.GroupNorm(2, 6)(ember.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"4 channels.*\(2, 4, 3\).*num_groups=3"):
        F.group_norm(ember.randn(2, 4, 3), 3)
    with pytest.raises(ValueError, match=r"num_features \(3\).*got: 4"):
        nn.InstanceNorm2d(3, affine=True)(ember.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"more than 1 spatial element"):
        nn.InstanceNorm2d(3)(ember.randn(2, 3, 1, 1))
    with pytest.raises(ValueError, match=r"normalized_shape \(5,\).*\(3, 4\)"):
        nn.RMSNorm(5)(ember.randn(3, 4))
    with pytest.raises(ValueError, match=r"\(1, 5, 2, 2\).*divisible by upscale_factor\*\*2 = 4"):
        nn.PixelShuffle(2)(ember.randn(1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"\(5, 4\).*divisible by downscale_factor = 2"):
        nn.PixelUnshuffle(2)(ember.randn(1, 1, 5, 4))
    with pytest.raises(ValueError, match=r"3 \* 4 = 12 sliding blocks.*\(1, 8, 10\)"):
        F.fold(ember.randn(1, 8, 10), (4, 5), 2)
    with pytest.raises(ValueError, match=r"divisible by the product of kernel_size"):
        F.fold(ember.randn(1, 5, 12), (4, 5), 2)
    with pytest.raises(ValueError, match=r"spatial size \(2, 2\).*kernel_size=\(3, 3\)"):
        F.unfold(ember.randn(1, 1, 2, 2), 3)
    with pytest.raises(ValueError, match=r"mode 'bilinear' needs a 4-D input"):
        F.interpolate(ember.randn(1, 2, 3), scale_factor=2, mode="bilinear")
    with pytest.raises(ValueError, match=r"align_corners option can only be set"):
        F.interpolate(ember.randn(1, 2, 3, 3), scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match=r"only one of size or scale_factor"):
        F.interpolate(ember.randn(1, 2, 3, 3), size=4, scale_factor=2)
    with pytest.raises(ValueError, match=r"indices of shape \(1, 1, 2, 3\) must match input of shape \(1, 1, 2, 2\)"):
        F.max_unpool2d(ember.randn(1, 1, 2, 2), ember.zeros(1, 1, 2, 3, dtype=ember.int64), 2)
    with pytest.raises(ValueError, match=r"invalid output_size"):
        nn.MaxUnpool2d(2)(ember.randn(1, 1, 2, 2), ember.zeros(1, 1, 2, 2, dtype=ember.int64), output_size=(7, 4))
    with pytest.raises(ValueError, match=r"\(seq, batch, 8\).*got shape \(5, 2, 6\)"):
        nn.TransformerEncoderLayer(8, 2, 16)(ember.randn(5, 2, 6))
    with pytest.raises(RuntimeError, match=r"batch number of src and tgt must be equal"):
        nn.Transformer(8, 2, 1, 1, 16)(ember.randn(5, 2, 8), ember.randn(4, 3, 8))
    with pytest.raises(ValueError, match=r'Only "zeros" padding mode'):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")


# ---------------------------------------------------------------- construction, keys, defaults
def test_pi3_transposed_conv_layout_init_and_repr():
    """ConvTranspose weights are (in, out / groups, *k) with PyTorch's default init bound 1/sqrt(fan_in),
    fan_in = (out / groups) * prod(k) (torch's rule reads dim 1)."""
    ember.manual_seed(0)
    m = nn.ConvTranspose2d(16, 32, (3, 2), stride=2, groups=4, output_padding=1)
    assert m.weight.shape == (16, 8, 3, 2) and m.bias.shape == (32,)
    bound = 1 / math.sqrt(8 * 6)
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(b).max() <= bound
    assert repr(m) == ("ConvTranspose2d(16, 32, kernel_size=(3, 2), stride=(2, 2), output_padding=(1, 1), "
                       "groups=4)")
    assert nn.Conv3d(2, 4, 3).weight.shape == (4, 2, 3, 3, 3)
    assert list(nn.GroupNorm(2, 4).state_dict()) == ["weight", "bias"]
    assert list(nn.InstanceNorm1d(3).state_dict()) == []
    assert list(nn.InstanceNorm2d(3, track_running_stats=True).state_dict()) == [
        "running_mean", "running_var", "num_batches_tracked"]
    assert list(nn.RMSNorm(4).state_dict()) == ["weight"]
    assert repr(nn.Upsample(scale_factor=2, mode="bilinear")) == "Upsample(scale_factor=2.0, mode='bilinear')"


def test_pi3_transformer_keys_defaults_and_square_mask():
    """Transformer: PyTorch's state_dict keys (so a torch state_dict maps 1:1), xavier-uniform init of
    every matrix, and generate_square_subsequent_mask."""
    ember.manual_seed(0)
    t = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=24)
    keys = list(t.state_dict())
    want = [c for c in META["cases"] if c["name"] == "transformer_dropout0_train_float32"][0]["state_keys"]
    small = nn.Transformer(8, 2, 2, 1, 16)
    assert list(small.state_dict()) == want
    assert keys[0] == "encoder.layers.0.self_attn.in_proj_weight" and keys[-1] == "decoder.norm.bias"
    w = t.state_dict()["decoder.layers.0.linear1.weight"].numpy()
    assert np.abs(w).max() <= math.sqrt(6 / (16 + 24))
    layer = nn.TransformerEncoderLayer(16, 4)
    assert layer.linear1.out_features == 2048 and layer.dropout.p == 0.1 and not layer.norm_first
    assert layer.self_attn.batch_first is False and layer.norm1.eps == 1e-5
    mask = nn.Transformer.generate_square_subsequent_mask(3).numpy()
    np.testing.assert_array_equal(mask, np.triu(np.full((3, 3), -np.inf, np.float32), 1))
    assert mask.dtype == np.float32


def test_pi3_max_pool_indices_round_trip_through_unpool():
    """MaxPool2d(return_indices=True) + MaxUnpool2d keep each window's maximum in place, zeros elsewhere."""
    x = ember.tensor(np.random.default_rng(0).permutation(36).reshape(1, 1, 6, 6).astype(np.float32))
    out, idx = nn.MaxPool2d(2, return_indices=True)(x)
    back = nn.MaxUnpool2d(2)(out, idx).numpy()[0, 0]
    xn = x.numpy()[0, 0]
    for i in range(3):
        for j in range(3):
            blk = xn[2 * i:2 * i + 2, 2 * j:2 * j + 2]
            got = back[2 * i:2 * i + 2, 2 * j:2 * j + 2]
            np.testing.assert_array_equal(got, np.where(blk == blk.max(), blk, 0))
    np.testing.assert_array_equal(F.max_pool2d(x, 2).numpy(), out.numpy())  # the reduce_window form agrees
