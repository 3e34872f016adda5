"""Generate PyTorch reference fixtures for ember.nn modules under tests/fixtures/.

Run from the repository root with the separate torch virtualenv (torch is never an ember
dependency, not even a test one; ember's tests read the outputs with numpy and safetensors):

    /work/torchenv/bin/python tools/make_nn_fixtures.py

Outputs:
    tests/fixtures/nn_layers.safetensors   tensors (inputs, torch state dicts, outputs, gradients)
    tests/fixtures/nn_layers.json          one record per case, plus default-init specifications

Three groups of records in the JSON:

- "layers": a module built as `torch.nn.<cls>(**kwargs, dtype=...)`, its state dict overwritten
  with fixed random values (so the numbers do not depend on torch's RNG), put in `mode`
  ("train"/"eval"), called on fixed inputs; outputs, cotangents and the gradients of
  sum(out_i * gout_i) w.r.t. float inputs and parameters. BatchNorm training cases also record
  the buffers after three training forwards (inputs x, run.x1, run.x2).
- "losses": a loss module (with tensor kwargs such as weight / pos_weight) on fixed input and
  target, for each reduction; output, cotangent and the input (and float target) gradients.
- "init": default-initialisation specifications, since ember's RNG differs from torch's and the
  values cannot match bit for bit. For each (constructor, parameter) the distribution PyTorch's
  reset_parameters draws from (uniform bounds, normal std, truncated normal, constants, zero
  rows), computed from the documented formulas and checked here against a torch sample with a
  Kolmogorov-Smirnov test; ember's tests apply the same test to ember's sample.

Tensor keys: {case}.sd.{state_key}, {case}.in.{arg}, {case}.kw.{name}, {case}.out.{i},
{case}.gout.{i}, {case}.grad.in.{arg}, {case}.grad.p.{param}, {case}.run.x1/x2,
{case}.after.{buffer}. Inputs are drawn with numpy from a seed derived from the case's base name
(the float32 and float64 variants share the values). The script is deterministic and rewrites
both files from scratch.
"""
from __future__ import annotations

import json
import math
import os
import warnings
import zlib

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
BASE_SEED = 20240917
TDT = {"float32": torch.float32, "float64": torch.float64}
NPDT = {"float32": np.float32, "float64": np.float64}
KS_C = 1.949  # Kolmogorov-Smirnov critical value at alpha = 0.001

torch.manual_seed(0)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
warnings.filterwarnings("ignore", message="Using padding='same'")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(BASE_SEED + zlib.crc32(name.encode()))


def _c(a) -> np.ndarray:
    return np.array(a, order="C", copy=True)


def to_np(t: torch.Tensor) -> np.ndarray:
    return _c(t.detach().numpy())


def jsonable(v):
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v


# ====================================================================== layer cases
# (base name, class, ctor kwargs, input generator(rng) -> {arg: ndarray}, forward kwargs, modes)
# generator keys: positional args in order; bool / int arrays stay bool / int64.
def X(*shape):
    return lambda rng: {"input": rng.standard_normal(shape)}


def away_from_zero(*shape):
    def gen(rng):
        x = rng.standard_normal(shape)
        return {"input": np.where(np.abs(x) < 0.05, 0.05 * np.sign(x) + 0.05 * (x == 0), x)}
    return gen


def idx(num, *shape, must=()):
    def gen(rng):
        i = rng.integers(0, num, shape)
        for k, v in enumerate(must):
            i.flat[k] = v
        return {"input": i.astype(np.int64)}
    return gen


def mha_inputs(L, S, N, E, kdim=None, vdim=None, batch_first=False, self_attn=False, unbatched=False,
               attn_mask=None, kpm=None, H=2):
    kdim = kdim or E
    vdim = vdim or E

    def shape(T, D):
        if unbatched:
            return (T, D)
        return (N, T, D) if batch_first else (T, N, D)

    def gen(rng):
        d = {"query": rng.standard_normal(shape(L, E))}
        if not self_attn:
            d["key"] = rng.standard_normal(shape(S, kdim))
            d["value"] = rng.standard_normal(shape(S, vdim))
        if attn_mask == "bool2d":
            m = rng.random((L, S)) < 0.3
            m[:, 0] = False
            d["attn_mask"] = m
        elif attn_mask == "causal":
            d["attn_mask"] = np.triu(np.ones((L, S), bool), 1)
        elif attn_mask == "float3d":
            m = rng.standard_normal((N * H, L, S))
            m[rng.random((N * H, L, S)) < 0.2] = -np.inf
            m[..., 0] = 0.0
            d["attn_mask"] = m
        if kpm == "bool":
            m = rng.random((N, S)) < 0.3
            m[:, 0] = False
            d["key_padding_mask"] = m
        elif kpm == "float":
            m = rng.standard_normal((N, S))
            m[:, 1] = -np.inf
            d["key_padding_mask"] = m
        return d
    return gen


BOTH = ("train", "eval")
TRAIN = ("train",)

LAYERS = [
    ("linear", "Linear", dict(in_features=5, out_features=4), X(3, 5), {}, TRAIN),
    ("linear_nobias_3d", "Linear", dict(in_features=6, out_features=3, bias=False), X(2, 3, 6), {}, TRAIN),
    ("identity", "Identity", dict(), X(2, 3), {}, TRAIN),
    ("flatten", "Flatten", dict(), X(2, 3, 2, 2), {}, TRAIN),
    ("flatten_mid", "Flatten", dict(start_dim=0, end_dim=1), X(2, 3, 4), {}, TRAIN),
    ("unflatten", "Unflatten", dict(dim=1, unflattened_size=(2, 3)), X(2, 6, 2), {}, TRAIN),
    # convolutions
    ("conv1d", "Conv1d", dict(in_channels=3, out_channels=4, kernel_size=3), X(2, 3, 9), {}, TRAIN),
    ("conv1d_s2p1d2", "Conv1d", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1,
                                     dilation=2), X(2, 2, 11), {}, TRAIN),
    ("conv1d_groups", "Conv1d", dict(in_channels=4, out_channels=6, kernel_size=2, groups=2, bias=False),
     X(2, 4, 7), {}, TRAIN),
    ("conv1d_same_circular", "Conv1d", dict(in_channels=2, out_channels=2, kernel_size=4, padding="same",
                                            padding_mode="circular"), X(2, 2, 8), {}, TRAIN),
    ("conv2d", "Conv2d", dict(in_channels=3, out_channels=4, kernel_size=3), X(2, 3, 6, 6), {}, TRAIN),
    ("conv2d_s2p1", "Conv2d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
     X(2, 3, 7, 7), {}, TRAIN),
    ("conv2d_dilation", "Conv2d", dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=2),
     X(1, 2, 7, 6), {}, TRAIN),
    ("conv2d_groups_nobias", "Conv2d", dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, bias=False),
     X(2, 4, 5, 5), {}, TRAIN),
    ("conv2d_depthwise", "Conv2d", dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, padding=1),
     X(2, 3, 5, 5), {}, TRAIN),
    ("conv2d_same_even", "Conv2d", dict(in_channels=2, out_channels=3, kernel_size=4, padding="same"),
     X(2, 2, 6, 5), {}, TRAIN),
    ("conv2d_valid", "Conv2d", dict(in_channels=2, out_channels=2, kernel_size=(2, 3), padding="valid"),
     X(2, 2, 5, 6), {}, TRAIN),
    ("conv2d_rect", "Conv2d", dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(2, 1),
                                   padding=(1, 0)), X(2, 2, 7, 6), {}, TRAIN),
    ("conv2d_reflect", "Conv2d", dict(in_channels=2, out_channels=2, kernel_size=3, padding=1,
                                      padding_mode="reflect"), X(2, 2, 5, 5), {}, TRAIN),
    ("conv2d_replicate", "Conv2d", dict(in_channels=2, out_channels=2, kernel_size=3, padding=(2, 1),
                                        padding_mode="replicate"), X(1, 2, 5, 4), {}, TRAIN),
    ("conv2d_circular", "Conv2d", dict(in_channels=2, out_channels=2, kernel_size=3, padding=1,
                                       padding_mode="circular"), X(2, 2, 4, 5), {}, TRAIN),
    ("conv2d_unbatched", "Conv2d", dict(in_channels=2, out_channels=3, kernel_size=3, padding=1),
     X(2, 5, 5), {}, TRAIN),
    # pooling
    ("maxpool2d", "MaxPool2d", dict(kernel_size=2), X(2, 3, 6, 6), {}, TRAIN),
    ("maxpool2d_s2p1", "MaxPool2d", dict(kernel_size=3, stride=2, padding=1), X(2, 2, 7, 7), {}, TRAIN),
    ("maxpool2d_ceil", "MaxPool2d", dict(kernel_size=3, stride=2, ceil_mode=True), X(1, 2, 8, 8), {}, TRAIN),
    ("maxpool2d_dilation", "MaxPool2d", dict(kernel_size=2, stride=1, dilation=2), X(1, 2, 6, 6), {}, TRAIN),
    ("maxpool2d_rect", "MaxPool2d", dict(kernel_size=(2, 3), stride=(1, 2)), X(2, 1, 5, 7), {}, TRAIN),
    ("avgpool2d", "AvgPool2d", dict(kernel_size=2), X(2, 3, 6, 6), {}, TRAIN),
    ("avgpool2d_s2p1", "AvgPool2d", dict(kernel_size=3, stride=2, padding=1), X(2, 2, 7, 7), {}, TRAIN),
    ("avgpool2d_nopadcount", "AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
     X(2, 2, 7, 7), {}, TRAIN),
    ("avgpool2d_ceil", "AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), X(1, 2, 8, 8),
     {}, TRAIN),
    ("avgpool2d_divisor", "AvgPool2d", dict(kernel_size=2, divisor_override=3), X(1, 2, 4, 6), {}, TRAIN),
    ("adaptiveavgpool2d_div", "AdaptiveAvgPool2d", dict(output_size=(2, 3)), X(2, 3, 8, 9), {}, TRAIN),
    ("adaptiveavgpool2d_general", "AdaptiveAvgPool2d", dict(output_size=(3, 5)), X(2, 2, 7, 9), {}, TRAIN),
    ("adaptiveavgpool2d_none", "AdaptiveAvgPool2d", dict(output_size=(None, 2)), X(1, 2, 5, 7), {}, TRAIN),
    ("adaptiveavgpool2d_global", "AdaptiveAvgPool2d", dict(output_size=1), X(2, 4, 5, 5), {}, TRAIN),
    ("adaptiveavgpool2d_3d", "AdaptiveAvgPool2d", dict(output_size=4), X(3, 6, 5), {}, TRAIN),
    # normalisation
    ("batchnorm1d_2d", "BatchNorm1d", dict(num_features=4), X(6, 4), {}, BOTH),
    ("batchnorm1d_3d", "BatchNorm1d", dict(num_features=3), X(4, 3, 5), {}, BOTH),
    ("batchnorm1d_cma", "BatchNorm1d", dict(num_features=3, momentum=None), X(5, 3), {}, TRAIN),
    ("batchnorm1d_noaffine", "BatchNorm1d", dict(num_features=3, affine=False), X(5, 3), {}, BOTH),
    ("batchnorm1d_notrack", "BatchNorm1d", dict(num_features=3, track_running_stats=False), X(5, 3, 2), {},
     BOTH),
    ("batchnorm2d", "BatchNorm2d", dict(num_features=3), X(2, 3, 4, 4), {}, BOTH),
    ("batchnorm2d_m03_eps", "BatchNorm2d", dict(num_features=2, momentum=0.3, eps=1e-3), X(3, 2, 3, 5), {},
     BOTH),
    ("batchnorm2d_nobias", "BatchNorm2d", dict(num_features=2, bias=False), X(3, 2, 2, 3), {}, TRAIN),
    ("layernorm", "LayerNorm", dict(normalized_shape=8), X(3, 4, 8), {}, TRAIN),
    ("layernorm_2d", "LayerNorm", dict(normalized_shape=(4, 6)), X(2, 4, 6), {}, TRAIN),
    ("layernorm_noaffine", "LayerNorm", dict(normalized_shape=5, elementwise_affine=False), X(3, 5), {}, TRAIN),
    ("layernorm_nobias", "LayerNorm", dict(normalized_shape=5, bias=False, eps=1e-3), X(3, 5), {}, TRAIN),
    # dropout: random in training, so only the deterministic settings
    ("dropout_eval", "Dropout", dict(p=0.5), X(4, 5), {}, ("eval",)),
    ("dropout_p0", "Dropout", dict(p=0.0), X(4, 5), {}, TRAIN),
    # embedding
    ("embedding", "Embedding", dict(num_embeddings=7, embedding_dim=4), idx(7, 3, 5, must=(6, 0)), {}, TRAIN),
    ("embedding_padding", "Embedding", dict(num_embeddings=6, embedding_dim=3, padding_idx=2),
     idx(6, 4, 4, must=(2, 2, 5)), {}, TRAIN),
    ("embedding_padding_neg", "Embedding", dict(num_embeddings=6, embedding_dim=3, padding_idx=-1),
     idx(6, 9, must=(5, 0, 5)), {}, TRAIN),
    # activations
    ("relu", "ReLU", dict(), away_from_zero(3, 7), {}, TRAIN),
    ("leakyrelu", "LeakyReLU", dict(negative_slope=0.2), away_from_zero(3, 7), {}, TRAIN),
    ("gelu", "GELU", dict(), X(3, 7), {}, TRAIN),
    ("gelu_tanh", "GELU", dict(approximate="tanh"), X(3, 7), {}, TRAIN),
    ("silu", "SiLU", dict(), X(3, 7), {}, TRAIN),
    ("sigmoid", "Sigmoid", dict(), X(3, 7), {}, TRAIN),
    ("tanh", "Tanh", dict(), X(3, 7), {}, TRAIN),
    ("softmax", "Softmax", dict(dim=1), X(3, 7), {}, TRAIN),
    ("softmax_dim0_3d", "Softmax", dict(dim=0), X(3, 4, 2), {}, TRAIN),
    ("logsoftmax", "LogSoftmax", dict(dim=-1), X(3, 7), {}, TRAIN),
    # multi-head attention (dropout 0: deterministic)
    ("mha_self", "MultiheadAttention", dict(embed_dim=8, num_heads=2),
     mha_inputs(4, 4, 2, 8, self_attn=True), {}, TRAIN),
    ("mha_cross_batch_first_noweights", "MultiheadAttention", dict(embed_dim=8, num_heads=2, batch_first=True),
     mha_inputs(3, 5, 2, 8, batch_first=True), dict(need_weights=False), TRAIN),
    ("mha_bool_masks_per_head", "MultiheadAttention", dict(embed_dim=8, num_heads=2),
     mha_inputs(4, 5, 3, 8, attn_mask="bool2d", kpm="bool"), dict(average_attn_weights=False), TRAIN),
    ("mha_float_masks", "MultiheadAttention", dict(embed_dim=8, num_heads=2, batch_first=True),
     mha_inputs(3, 4, 2, 8, batch_first=True, attn_mask="float3d", kpm="float"), {}, TRAIN),
    ("mha_kdim_vdim_nobias", "MultiheadAttention", dict(embed_dim=8, num_heads=4, kdim=5, vdim=3, bias=False),
     mha_inputs(3, 4, 2, 8, kdim=5, vdim=3, H=4), {}, TRAIN),
    ("mha_bias_kv_zero_attn", "MultiheadAttention", dict(embed_dim=6, num_heads=2, add_bias_kv=True,
                                                         add_zero_attn=True),
     mha_inputs(3, 4, 2, 6, kpm="bool"), {}, TRAIN),
    ("mha_causal_sdpa", "MultiheadAttention", dict(embed_dim=8, num_heads=2, batch_first=True),
     mha_inputs(5, 5, 2, 8, batch_first=True, self_attn=True, attn_mask="causal"),
     dict(need_weights=False, is_causal=True), TRAIN),
    ("mha_unbatched", "MultiheadAttention", dict(embed_dim=8, num_heads=2),
     mha_inputs(3, 4, 1, 8, unbatched=True), {}, TRAIN),
]

# tensor-valued forward arguments passed by keyword rather than position
KW_TENSORS = ("key_padding_mask", "attn_mask")


def fill_state(module: nn.Module, rng, dtype) -> dict:
    """Overwrite every state tensor with fixed values (positive variances, a nonzero batch count)."""
    sd = module.state_dict()
    new = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            new[k] = torch.tensor(5, dtype=torch.int64)
        elif k.endswith("running_var"):
            new[k] = torch.tensor(rng.uniform(0.5, 1.5, tuple(v.shape)), dtype=dtype)
        elif k.endswith("running_mean"):
            new[k] = torch.tensor(rng.standard_normal(tuple(v.shape)) * 0.3, dtype=dtype)
        else:
            new[k] = torch.tensor(rng.standard_normal(tuple(v.shape)) * 0.5, dtype=dtype)
    module.load_state_dict(new)
    return new


def run_layer(base, cls, kwargs, gen, fkw, mode, dname, tensors) -> dict:
    dtype = TDT[dname]
    name = f"{base}_{mode}_{dname}"
    rng = rng_for(base)
    ctor = getattr(nn, cls)
    extra = {} if cls in ("Identity", "Flatten", "Unflatten", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
                          "Dropout", "ReLU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softmax",
                          "LogSoftmax") else {"dtype": dtype}
    m = ctor(**kwargs, **extra)
    sd = fill_state(m, rng, dtype)
    m.train(mode == "train")
    raw = gen(rng)
    args, kw, grads_in = [], {}, []
    inputs = {}
    for k, a in raw.items():
        if a.dtype == np.bool_:
            t = torch.tensor(a)
        elif a.dtype.kind in "iu":
            t = torch.tensor(a, dtype=torch.int64)
        else:
            t = torch.tensor(a, dtype=dtype)
            if k not in KW_TENSORS:
                t.requires_grad_(True)
                grads_in.append(k)
        inputs[k] = t
        tensors[f"{name}.in.{k}"] = to_np(t)
        if k in KW_TENSORS:
            kw[k] = t
        else:
            args.append(t)
    self_attn = cls == "MultiheadAttention" and "key" not in raw
    if self_attn:
        args = [args[0], args[0], args[0]]
    out = m(*args, **kw, **fkw)
    outs = list(out) if isinstance(out, tuple) else [out]
    n_out = 0
    loss = 0
    for i, o in enumerate(outs):
        if o is None:
            continue
        n_out = i + 1
        tensors[f"{name}.out.{i}"] = to_np(o)
        g = torch.tensor(rng.standard_normal(tuple(o.shape)), dtype=o.dtype)
        tensors[f"{name}.gout.{i}"] = to_np(g)
        loss = loss + (o * g).sum()
    pgrads = []
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.backward()
        for k in grads_in:
            tensors[f"{name}.grad.in.{k}"] = to_np(inputs[k].grad)
        for pn, p in m.named_parameters():
            if p.grad is not None:
                tensors[f"{name}.grad.p.{pn}"] = to_np(p.grad)
                pgrads.append(pn)
    for k, v in sd.items():
        tensors[f"{name}.sd.{k}"] = to_np(v)
    run3 = False
    if cls.startswith("BatchNorm") and mode == "train" and getattr(m, "track_running_stats", False):
        run3 = True
        with torch.no_grad():
            for j in (1, 2):
                xj = torch.tensor(rng.standard_normal(tuple(args[0].shape)), dtype=dtype)
                tensors[f"{name}.run.x{j}"] = to_np(xj)
                m(xj)
        for bn, b in m.named_buffers():
            tensors[f"{name}.after.{bn}"] = to_np(b)
    return {
        "name": name, "cls": cls, "kwargs": jsonable(kwargs), "forward_kwargs": fkw, "dtype": dname,
        "mode": mode, "inputs": list(raw), "self_attention": self_attn, "n_out": n_out,
        "outputs": [i for i, o in enumerate(outs) if o is not None],
        "grads_in": grads_in, "grads_params": pgrads, "state_keys": list(sd), "run3": run3,
    }


# ====================================================================== losses
def logits(n, c, *extra):
    return lambda rng: rng.standard_normal((n, c) + extra) * 1.5


def LOSS_CASES():
    cases = []

    def add(base, cls, kwargs, gen_in, gen_t, tensor_kwargs=None):
        cases.append((base, cls, kwargs, gen_in, gen_t, tensor_kwargs or {}))

    tgt = lambda n, c, *extra, must=(): (lambda rng: _targets(rng, c, (n,) + extra, must))  # noqa: E731
    probs = lambda n, c: (lambda rng: _probs(rng, n, c))  # noqa: E731
    w = lambda c: (lambda rng: rng.uniform(0.2, 2.0, (c,)))  # noqa: E731
    add("ce", "CrossEntropyLoss", {}, logits(5, 4), tgt(5, 4))
    add("ce_weight", "CrossEntropyLoss", {}, logits(6, 4), tgt(6, 4), {"weight": w(4)})
    add("ce_ignore", "CrossEntropyLoss", {"ignore_index": 1}, logits(6, 4), tgt(6, 4, must=(1, 0, 2)))
    add("ce_smooth", "CrossEntropyLoss", {"label_smoothing": 0.1}, logits(5, 4), tgt(5, 4))
    add("ce_weight_smooth_ignore", "CrossEntropyLoss", {"label_smoothing": 0.2, "ignore_index": 3},
        logits(7, 5), tgt(7, 5, must=(3, 1)), {"weight": w(5)})
    add("ce_kdim_weight", "CrossEntropyLoss", {}, logits(2, 3, 4), tgt(2, 3, 4), {"weight": w(3)})
    add("ce_probs", "CrossEntropyLoss", {}, logits(5, 4), probs(5, 4))
    add("ce_probs_weight_smooth", "CrossEntropyLoss", {"label_smoothing": 0.15}, logits(5, 4), probs(5, 4),
        {"weight": w(4)})
    add("nll", "NLLLoss", {}, lambda rng: np.log(_probs(rng, 5, 4)), tgt(5, 4))
    add("nll_weight", "NLLLoss", {}, lambda rng: np.log(_probs(rng, 6, 3)), tgt(6, 3), {"weight": w(3)})
    add("nll_ignore", "NLLLoss", {"ignore_index": 0}, lambda rng: np.log(_probs(rng, 6, 3)), tgt(6, 3, must=(0, 1)))
    add("nll_kdim", "NLLLoss", {}, lambda rng: rng.standard_normal((2, 3, 5)), tgt(2, 3, 5))
    add("mse", "MSELoss", {}, lambda rng: rng.standard_normal((4, 3)), lambda rng: rng.standard_normal((4, 3)))
    add("l1", "L1Loss", {}, lambda rng: rng.standard_normal((4, 3)), lambda rng: rng.standard_normal((4, 3)))
    bce_t = lambda rng: (rng.random((4, 3)) < 0.5).astype(np.float64)  # noqa: E731
    add("bce", "BCEWithLogitsLoss", {}, lambda rng: rng.standard_normal((4, 3)) * 2, bce_t)
    add("bce_soft", "BCEWithLogitsLoss", {}, lambda rng: rng.standard_normal((4, 3)) * 2,
        lambda rng: rng.random((4, 3)))
    add("bce_weight", "BCEWithLogitsLoss", {}, lambda rng: rng.standard_normal((4, 3)) * 2, bce_t,
        {"weight": lambda rng: rng.uniform(0.2, 2.0, (4, 3))})
    add("bce_posweight", "BCEWithLogitsLoss", {}, lambda rng: rng.standard_normal((4, 3)) * 2, bce_t,
        {"pos_weight": lambda rng: rng.uniform(0.5, 3.0, (3,))})
    add("bce_both", "BCEWithLogitsLoss", {}, lambda rng: rng.standard_normal((4, 3)) * 2,
        lambda rng: rng.random((4, 3)),
        {"weight": lambda rng: rng.uniform(0.2, 2.0, (3,)), "pos_weight": lambda rng: rng.uniform(0.5, 3.0, (3,))})
    return cases


def _targets(rng, c, shape, must):
    t = rng.integers(0, c, shape)
    for k, v in enumerate(must):
        t.flat[k] = v
    return t.astype(np.int64)


def _probs(rng, n, c):
    p = rng.random((n, c)) + 0.05
    return p / p.sum(1, keepdims=True)


def run_loss(base, cls, kwargs, gen_in, gen_t, tkw, reduction, dname, tensors) -> dict:
    dtype = TDT[dname]
    name = f"{base}_{reduction}_{dname}"
    rng = rng_for(base)
    x = torch.tensor(gen_in(rng), dtype=dtype, requires_grad=True)
    t_raw = gen_t(rng)
    float_target = t_raw.dtype.kind == "f"
    t = torch.tensor(t_raw, dtype=dtype if float_target else torch.int64)
    if float_target:
        t.requires_grad_(True)
    tk = {k: torch.tensor(g(rng), dtype=dtype) for k, g in tkw.items()}
    m = getattr(nn, cls)(**kwargs, **tk, reduction=reduction)
    out = m(x, t)
    g = torch.tensor(rng.standard_normal(tuple(out.shape)), dtype=dtype)
    (out * g).sum().backward()
    tensors[f"{name}.in.input"] = to_np(x)
    tensors[f"{name}.in.target"] = to_np(t)
    for k, v in tk.items():
        tensors[f"{name}.kw.{k}"] = to_np(v)
    tensors[f"{name}.out.0"] = to_np(out)
    tensors[f"{name}.gout.0"] = to_np(g)
    tensors[f"{name}.grad.in.input"] = to_np(x.grad)
    grads = ["input"]
    if float_target and t.grad is not None:
        tensors[f"{name}.grad.in.target"] = to_np(t.grad)
        grads.append("target")
    return {"name": name, "cls": cls, "kwargs": kwargs, "tensor_kwargs": list(tk), "reduction": reduction,
            "dtype": dname, "grads_in": grads, "state_keys": list(m.state_dict())}


# ====================================================================== default-init specifications
def _uniform(bound):
    return {"dist": "uniform", "low": -bound, "high": bound}


def _normal(std, mean=0.0):
    return {"dist": "normal", "mean": mean, "std": std}


def _const(v):
    return {"dist": "const", "value": v}


def init_specs():
    """(name, cls, kwargs, {param: spec}) from PyTorch's documented reset_parameters formulas."""
    s = math.sqrt
    return [
        ("linear", "Linear", dict(in_features=200, out_features=150),
         {"weight": _uniform(1 / s(200)), "bias": _uniform(1 / s(200))}),
        ("linear_small_fan", "Linear", dict(in_features=3, out_features=400),
         {"weight": _uniform(1 / s(3)), "bias": _uniform(1 / s(3))}),
        ("conv2d", "Conv2d", dict(in_channels=8, out_channels=64, kernel_size=3),
         {"weight": _uniform(1 / s(72)), "bias": _uniform(1 / s(72))}),
        ("conv2d_groups", "Conv2d", dict(in_channels=8, out_channels=128, kernel_size=(3, 2), groups=4),
         {"weight": _uniform(1 / s(12)), "bias": _uniform(1 / s(12))}),
        ("conv1d", "Conv1d", dict(in_channels=6, out_channels=200, kernel_size=5),
         {"weight": _uniform(1 / s(30)), "bias": _uniform(1 / s(30))}),
        ("embedding", "Embedding", dict(num_embeddings=300, embedding_dim=40), {"weight": _normal(1.0)}),
        ("embedding_padding", "Embedding", dict(num_embeddings=300, embedding_dim=40, padding_idx=7),
         {"weight": dict(_normal(1.0), zero_rows=[7])}),
        ("batchnorm2d", "BatchNorm2d", dict(num_features=16),
         {"weight": _const(1.0), "bias": _const(0.0), "running_mean": _const(0.0), "running_var": _const(1.0),
          "num_batches_tracked": _const(0)}),
        ("batchnorm1d", "BatchNorm1d", dict(num_features=5),
         {"weight": _const(1.0), "bias": _const(0.0), "running_mean": _const(0.0), "running_var": _const(1.0),
          "num_batches_tracked": _const(0)}),
        ("layernorm", "LayerNorm", dict(normalized_shape=(4, 8)), {"weight": _const(1.0), "bias": _const(0.0)}),
        ("mha", "MultiheadAttention", dict(embed_dim=64, num_heads=4),
         {"in_proj_weight": _uniform(s(6 / (64 + 192))), "in_proj_bias": _const(0.0),
          "out_proj.weight": _uniform(1 / s(64)), "out_proj.bias": _const(0.0)}),
        ("mha_kdim_vdim_bias_kv", "MultiheadAttention", dict(embed_dim=64, num_heads=4, kdim=16, vdim=48,
                                                            add_bias_kv=True),
         {"q_proj_weight": _uniform(s(6 / 128)), "k_proj_weight": _uniform(s(6 / 80)),
          "v_proj_weight": _uniform(s(6 / 112)), "in_proj_bias": _const(0.0),
          "out_proj.weight": _uniform(1 / s(64)), "out_proj.bias": _const(0.0),
          "bias_k": _normal(s(2 / 128)), "bias_v": _normal(s(2 / 128))}),
    ]


def init_fn_specs():
    """(name, fn, shape, kwargs, spec) for the nn.init functions called directly."""
    s = math.sqrt
    return [
        ("uniform", "uniform_", [300, 40], dict(a=-0.5, b=2.0), {"dist": "uniform", "low": -0.5, "high": 2.0}),
        ("normal", "normal_", [300, 40], dict(mean=1.0, std=0.3), _normal(0.3, 1.0)),
        ("xavier_uniform", "xavier_uniform_", [120, 80], dict(), _uniform(s(6 / 200))),
        ("xavier_uniform_gain", "xavier_uniform_", [64, 16, 3, 3], dict(gain=2.0), _uniform(2 * s(6 / (144 + 576)))),
        ("xavier_normal", "xavier_normal_", [120, 80], dict(), _normal(s(2 / 200))),
        ("kaiming_uniform_relu", "kaiming_uniform_", [150, 100], dict(nonlinearity="relu"),
         _uniform(s(3) * s(2) / s(100))),
        ("kaiming_uniform_fan_out", "kaiming_uniform_", [150, 100], dict(mode="fan_out", a=0.2),
         _uniform(s(3) * s(2 / 1.04) / s(150))),
        ("kaiming_normal_relu_fan_out", "kaiming_normal_", [64, 32, 3, 3], dict(mode="fan_out", nonlinearity="relu"),
         _normal(s(2) / s(576))),
        ("kaiming_normal_tanh", "kaiming_normal_", [200, 60], dict(nonlinearity="tanh"), _normal(5 / 3 / s(60))),
        ("kaiming_normal_linear", "kaiming_normal_", [200, 60], dict(nonlinearity="linear"), _normal(1 / s(60))),
        ("trunc_normal", "trunc_normal_", [300, 40], dict(), {"dist": "trunc_normal", "mean": 0.0, "std": 1.0,
                                                             "a": -2.0, "b": 2.0}),
        ("trunc_normal_shifted", "trunc_normal_", [300, 40], dict(mean=0.5, std=0.2, a=0.3, b=1.0),
         {"dist": "trunc_normal", "mean": 0.5, "std": 0.2, "a": 0.3, "b": 1.0}),
        ("constant", "constant_", [7, 5], dict(val=0.25), _const(0.25)),
    ]


def ncdf(x, mean=0.0, std=1.0):
    return 0.5 * (1 + math.erf((x - mean) / (std * math.sqrt(2))))


def spec_cdf(spec):
    d = spec["dist"]
    if d == "uniform":
        lo, hi = spec["low"], spec["high"]
        return lambda x: min(max((x - lo) / (hi - lo), 0.0), 1.0)
    if d == "normal":
        return lambda x: ncdf(x, spec["mean"], spec["std"])
    if d == "trunc_normal":
        lo, hi = ncdf(spec["a"], spec["mean"], spec["std"]), ncdf(spec["b"], spec["mean"], spec["std"])
        return lambda x: min(max((ncdf(x, spec["mean"], spec["std"]) - lo) / (hi - lo), 0.0), 1.0)
    raise ValueError(d)


def check_sample(values: np.ndarray, spec) -> float:
    """Kolmogorov-Smirnov statistic of `values` against `spec` (0 for exact constants); raises if it fails."""
    v = np.asarray(values, np.float64).ravel()
    if spec.get("zero_rows"):
        rows = np.asarray(values).reshape(values.shape[0], -1)
        assert np.all(rows[spec["zero_rows"]] == 0)
        v = np.delete(rows, spec["zero_rows"], axis=0).ravel()
    if spec["dist"] == "const":
        assert np.all(v == spec["value"]), (v[:5], spec)
        return 0.0
    if spec["dist"] in ("uniform", "trunc_normal"):
        lo = spec.get("low", spec.get("a"))
        hi = spec.get("high", spec.get("b"))
        assert v.min() >= lo and v.max() <= hi, (v.min(), v.max(), spec)
    x = np.sort(v)
    n = len(x)
    cdf = spec_cdf(spec)
    f = np.array([cdf(t) for t in x])
    d = max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))
    assert d < KS_C / math.sqrt(n), (d, KS_C / math.sqrt(n), spec)
    return float(d)


def make_init() -> dict:
    torch.manual_seed(1234)
    modules = []
    for name, cls, kwargs, params in init_specs():
        m = getattr(nn, cls)(**kwargs)
        sd = dict(m.state_dict())
        ks = {}
        for pn, spec in params.items():
            ks[pn] = check_sample(sd[pn].numpy(), spec)
        assert set(params) == set(sd), (name, set(sd) - set(params))
        modules.append({"name": name, "cls": cls, "kwargs": jsonable(kwargs), "params": params,
                        "torch_ks": ks, "shapes": {k: list(v.shape) for k, v in sd.items()}})
    fns = []
    for name, fn, shape, kwargs, spec in init_fn_specs():
        t = torch.empty(shape)
        getattr(nn.init, fn)(t, **kwargs)
        ks = check_sample(t.numpy(), spec)
        fns.append({"name": name, "fn": fn, "shape": shape, "kwargs": kwargs, "spec": spec, "torch_ks": ks})
    gains = {}
    for nl, p in (("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                  ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)):
        gains[f"{nl},{p}"] = nn.init.calculate_gain(nl, p)
    fans = {}
    for shape in ([5, 3], [8, 4, 3, 3], [6, 2, 5], [7, 1]):
        fans[",".join(map(str, shape))] = list(nn.init._calculate_fan_in_and_fan_out(torch.empty(shape)))
    return {"modules": modules, "functions": fns, "gains": gains, "fans": fans, "ks_c": KS_C}


# ====================================================================== main
def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    layers = []
    for base, cls, kwargs, gen, fkw, modes in LAYERS:
        for mode in modes:
            for dname in TDT:
                layers.append(run_layer(base, cls, kwargs, gen, fkw, mode, dname, tensors))
    losses = []
    for base, cls, kwargs, gen_in, gen_t, tkw in LOSS_CASES():
        for reduction in ("none", "mean", "sum"):
            for dname in TDT:
                losses.append(run_loss(base, cls, kwargs, gen_in, gen_t, tkw, reduction, dname, tensors))
    meta = {
        "torch_version": torch.__version__,
        "generator": "tools/make_nn_fixtures.py",
        "layers": layers,
        "losses": losses,
        "init": make_init(),
    }
    tensors = {k: _c(v) for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT_DIR, "nn_layers.safetensors"),
              metadata={"torch_version": torch.__version__, "generator": "tools/make_nn_fixtures.py"})
    os.chmod(os.path.join(OUT_DIR, "nn_layers.safetensors"), 0o644)
    with open(os.path.join(OUT_DIR, "nn_layers.json"), "w") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"{len(layers)} layer cases, {len(losses)} loss cases, {len(meta['init']['modules'])} init modules, "
          f"{len(meta['init']['functions'])} init functions, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
