"""Generate PyTorch reference fixtures for ember's spatial and transformer layers (PI-3).

Run from the repository root with a separate torch environment (torch is never an ember
dependency; ember's tests read the outputs with numpy and safetensors):

    /tmp/tv/bin/python tools/make_spatial_fixtures.py

Outputs tests/fixtures/spatial.safetensors (tensors) and tests/fixtures/spatial.json (one record
per case). A case is either a module (`torch.nn.<cls>(**kwargs, dtype=...)`, built after
torch.manual_seed so its parameters are torch's own initialisation; a parameter that torch
initialises to a constant (norm weights and biases, attention biases) is overwritten with fixed
random values so the affine parts are exercised) or a functional (`torch.nn.functional.<fn>`).
Every tensor argument is passed by keyword, so ember's argument names are checked too. A kwarg
value {"module": cls, "kwargs": {...}} is built as a module (TransformerEncoder's encoder_layer).

Inputs are drawn with numpy from a seed derived from the case's base name (float32 and float64
share the values); a few are non-contiguous views (`views`: the permutation applied to the stored,
C-contiguous base, whose gradient is recorded), some hold inf / -inf / NaN or ties. Recorded:
outputs, a fixed cotangent per float output, the gradients of sum(out_i * gout_i) w.r.t. the float
inputs and parameters, the state_dict, and buffers after the forward in training mode.

Tensor keys: {case}.in.{arg}, {case}.sd.{key}, {case}.out.{i}, {case}.gout.{i}, {case}.grad.in.{arg},
{case}.grad.p.{param}, {case}.after.{buffer}.
"""
from __future__ import annotations

import inspect
import json
import os
import warnings
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
BASE_SEED = 20250311
TDT = {"float32": torch.float32, "float64": torch.float64}
BOTH = ("float32", "float64")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)  # max_unpool2d is untagged; its indices are unique here
warnings.filterwarnings("ignore")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(BASE_SEED + zlib.crc32(name.encode()))


def _c(a) -> np.ndarray:
    return np.array(a, order="C", copy=True)


def to_np(t: torch.Tensor) -> np.ndarray:
    return _c(t.detach().numpy())


class NC:
    """A non-contiguous input: `base` (stored) permuted by `perm` before the call."""

    def __init__(self, base: np.ndarray, perm):
        self.base, self.perm = base, tuple(perm)


# ====================================================================== input generators
def X(*shape, scale=1.0):
    return lambda rng: {"input": rng.standard_normal(shape) * scale}


def Xnc(shape, perm):
    """A non-contiguous input of `shape`: a permuted view of a C-contiguous base."""
    inv = np.argsort(perm)
    base_shape = tuple(shape[i] for i in inv)
    return lambda rng: {"input": NC(rng.standard_normal(base_shape), perm)}


def Xspecial(*shape):
    """Normal values with +inf, -inf and NaN planted at fixed positions."""
    def gen(rng):
        x = rng.standard_normal(shape)
        flat = x.reshape(-1)
        n = flat.size
        flat[1] = np.inf
        flat[n // 3] = -np.inf
        flat[(2 * n) // 3] = np.nan
        return {"input": x}
    return gen


def Xties(*shape):
    """Small integers as floats: many equal values in a window (the tie-breaking rule)."""
    return lambda rng: {"input": rng.integers(0, 3, shape).astype(np.float64)}


def Xmaxspecial(*shape):
    """Ties, +inf, -inf everywhere in one window and NaN (two in one window: the last one wins)."""
    def gen(rng):
        x = rng.integers(0, 3, shape).astype(np.float64)
        x[0, 0, 0, :] = -np.inf
        x[0, 0, 1, 1] = np.inf
        x[0, -1, 2, 2] = np.nan
        x[0, -1, 2, 3] = np.nan
        x[-1, 0, -1, -1] = np.nan
        return {"input": x}
    return gen


def Xzero_row(*shape):
    def gen(rng):
        x = rng.standard_normal(shape)
        x[0] = 0.0
        return {"input": x}
    return gen


def seq(**shapes):
    """Named inputs; a shape tuple is a normal array, ('bool_causal', L) an upper-triangular bool mask,
    ('float_causal', L) the -inf one, ('kpm', N, S) a bool key-padding mask (key 0 never masked),
    ('float_mask', L, S) normals with -inf entries (column 0 never masked)."""
    def gen(rng):
        d = {}
        for k, s in shapes.items():
            if s[0] == "bool_causal":
                d[k] = np.triu(np.ones((s[1], s[1]), bool), 1)
            elif s[0] == "float_causal":
                d[k] = np.triu(np.full((s[1], s[1]), -np.inf), 1)
            elif s[0] == "kpm":
                m = rng.random(s[1:]) < 0.3
                m[:, 0] = False
                d[k] = m
            elif s[0] == "float_mask":
                m = rng.standard_normal(s[1:])
                m[rng.random(s[1:]) < 0.2] = -np.inf
                m[..., 0] = 0.0
                d[k] = m
            else:
                d[k] = rng.standard_normal(s)
        return d
    return gen


def unpool_inputs(shape, k, s=None, p=0):
    """MaxUnpool2d inputs: the values and indices of torch's max_pool2d on a random input."""
    def gen(rng):
        x = torch.tensor(rng.standard_normal(shape))
        v, i = F.max_pool2d(x, k, s, p, return_indices=True)
        return {"input": v.numpy(), "indices": i.numpy().astype(np.int64)}
    return gen


def with_params(gen, **shapes):
    """Add weight / bias style tensor arguments (normal values) to a generator's inputs."""
    def g(rng):
        d = gen(rng)
        for k, s in shapes.items():
            d[k] = rng.standard_normal(s) * 0.5
        return d
    return g


def layer(cls, **kwargs):
    return {"module": cls, "kwargs": kwargs}


# ====================================================================== cases
# (base, kind, target, ctor or call kwargs, generator, forward kwargs, modes)
T, E_, TE = ("train",), ("eval",), ("train", "eval")
CASES = []


def M(base, cls, kwargs, gen, fkw=None, modes=T):
    CASES.append((base, "module", cls, kwargs, gen, fkw or {}, modes))


def Fn(base, fn, kwargs, gen):
    CASES.append((base, "fn", fn, kwargs, gen, {}, T))


# transposed and 3-D convolutions
M("convt1d", "ConvTranspose1d", dict(in_channels=3, out_channels=4, kernel_size=3), X(2, 3, 7))
M("convt1d_s2p1op1d2", "ConvTranspose1d", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1,
                                                output_padding=1, dilation=2), X(2, 2, 5))
M("convt1d_groups_nobias", "ConvTranspose1d", dict(in_channels=4, out_channels=6, kernel_size=2, stride=3, groups=2,
                                                   bias=False), X(1, 4, 4))
M("convt1d_unbatched", "ConvTranspose1d", dict(in_channels=3, out_channels=2, kernel_size=2, stride=2), X(3, 6))
M("convt2d", "ConvTranspose2d", dict(in_channels=3, out_channels=4, kernel_size=3), X(2, 3, 5, 4))
M("convt2d_s2p1op1", "ConvTranspose2d", dict(in_channels=3, out_channels=2, kernel_size=3, stride=2, padding=1,
                                             output_padding=1), X(2, 3, 4, 5))
M("convt2d_rect", "ConvTranspose2d", dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(2, 1),
                                          padding=(0, 1), output_padding=(1, 0), dilation=(1, 2)), X(2, 2, 3, 6))
M("convt2d_groups_dilation", "ConvTranspose2d", dict(in_channels=4, out_channels=6, kernel_size=3, stride=2,
                                                     groups=2, dilation=2, output_padding=1), X(1, 4, 3, 3))
M("convt2d_crop", "ConvTranspose2d", dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=3),
  X(2, 2, 5, 5))
M("convt2d_size1", "ConvTranspose2d", dict(in_channels=3, out_channels=2, kernel_size=4, stride=2), X(2, 3, 1, 1))
M("convt2d_noncontig", "ConvTranspose2d", dict(in_channels=3, out_channels=2, kernel_size=2, stride=2),
  Xnc((2, 3, 4, 5), (0, 3, 1, 2)))
M("convt2d_output_size", "ConvTranspose2d", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
  X(1, 2, 4, 4), dict(output_size=[8, 7]))
M("convt2d_unbatched", "ConvTranspose2d", dict(in_channels=2, out_channels=2, kernel_size=3, stride=2), X(2, 3, 3))
M("convt3d", "ConvTranspose3d", dict(in_channels=2, out_channels=3, kernel_size=(2, 3, 2), stride=(2, 1, 2),
                                     padding=(0, 1, 0), output_padding=(1, 0, 0)), X(1, 2, 3, 4, 3))
M("conv3d", "Conv3d", dict(in_channels=2, out_channels=4, kernel_size=3, padding=1), X(2, 2, 4, 5, 3))
M("conv3d_s2_groups_dilation", "Conv3d", dict(in_channels=4, out_channels=4, kernel_size=(3, 2, 3), stride=(2, 1, 2),
                                              groups=2, dilation=(1, 2, 1), bias=False), X(1, 4, 5, 5, 7))
M("conv3d_replicate", "Conv3d", dict(in_channels=2, out_channels=2, kernel_size=3, padding=1,
                                     padding_mode="replicate"), X(1, 2, 3, 4, 5))
M("conv3d_unbatched", "Conv3d", dict(in_channels=2, out_channels=3, kernel_size=2), X(2, 4, 4, 4))
Fn("f_conv_transpose2d", "conv_transpose2d", dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2,
                                                  dilation=(1, 1)),
   with_params(X(2, 4, 3, 4), weight=(4, 3, 3, 3), bias=(6,)))
Fn("f_conv_transpose1d", "conv_transpose1d", dict(stride=2, padding=2, dilation=3),
   with_params(X(2, 3, 6), weight=(3, 2, 3)))
Fn("f_conv3d", "conv3d", dict(stride=2, padding=(1, 0, 1)), with_params(X(2, 3, 5, 4, 4), weight=(2, 3, 3, 2, 3),
                                                                       bias=(2,)))

# normalisation
M("groupnorm", "GroupNorm", dict(num_groups=2, num_channels=6), X(3, 6, 4, 5))
M("groupnorm_3d_input", "GroupNorm", dict(num_groups=3, num_channels=6), X(2, 6, 7))
M("groupnorm_2d_input", "GroupNorm", dict(num_groups=2, num_channels=6), X(5, 6))
M("groupnorm_noaffine_eps_size1", "GroupNorm", dict(num_groups=1, num_channels=3, eps=1e-3, affine=False),
  X(2, 3, 1, 1))
M("groupnorm_per_channel", "GroupNorm", dict(num_groups=4, num_channels=4), X(2, 4, 3, 1))
M("groupnorm_noncontig", "GroupNorm", dict(num_groups=2, num_channels=4), Xnc((2, 4, 3, 5), (0, 1, 3, 2)))
M("instnorm1d", "InstanceNorm1d", dict(num_features=3), X(2, 3, 7))
M("instnorm1d_unbatched", "InstanceNorm1d", dict(num_features=3), X(3, 7))
M("instnorm1d_affine_track", "InstanceNorm1d", dict(num_features=3, affine=True, track_running_stats=True,
                                                    momentum=0.3), X(4, 3, 6), modes=TE)
M("instnorm2d", "InstanceNorm2d", dict(num_features=4), X(2, 4, 5, 3))
M("instnorm2d_affine_eps_size1", "InstanceNorm2d", dict(num_features=2, affine=True, eps=1e-3), X(3, 2, 1, 5))
M("instnorm2d_track", "InstanceNorm2d", dict(num_features=3, track_running_stats=True), X(2, 3, 4, 4), modes=TE)
M("instnorm2d_unbatched", "InstanceNorm2d", dict(num_features=3, affine=True), X(3, 4, 4))
M("instnorm3d", "InstanceNorm3d", dict(num_features=2, affine=True), X(1, 2, 3, 3, 2))
M("rmsnorm", "RMSNorm", dict(normalized_shape=8), X(3, 4, 8))
M("rmsnorm_2d_eps", "RMSNorm", dict(normalized_shape=(3, 5), eps=1e-4), X(2, 3, 5))
M("rmsnorm_noaffine", "RMSNorm", dict(normalized_shape=6, elementwise_affine=False), X(4, 6))
M("rmsnorm_tiny_default_eps", "RMSNorm", dict(normalized_shape=4), X(3, 4, scale=1e-4))
M("rmsnorm_zero_row", "RMSNorm", dict(normalized_shape=5), Xzero_row(3, 5))
Fn("f_group_norm", "group_norm", dict(num_groups=3, eps=1e-4), with_params(X(2, 6, 3, 2), weight=(6,), bias=(6,)))
Fn("f_instance_norm", "instance_norm", dict(eps=1e-3), with_params(X(2, 3, 5), weight=(3,), bias=(3,)))
Fn("f_rms_norm", "rms_norm", dict(normalized_shape=(2, 3)), with_params(X(4, 2, 3), weight=(2, 3)))

# resampling
M("up_nearest_x2", "Upsample", dict(scale_factor=2), X(2, 3, 4, 5))
M("up_nearest_size", "Upsample", dict(size=(7, 3)), X(1, 2, 5, 4))
M("up_nearest_sf_frac", "Upsample", dict(scale_factor=1.7), X(1, 2, 5, 3))
M("up_nearest_sf_third", "Upsample", dict(scale_factor=(3.0, 1.0 / 3.0)), X(1, 1, 3, 7))
M("up_nearest_1d", "Upsample", dict(scale_factor=3), X(2, 2, 4))
M("up_nearest_exact", "Upsample", dict(size=(5, 7), mode="nearest-exact"), X(1, 2, 3, 4))
M("up_nearest_special", "Upsample", dict(size=(6, 5)), Xspecial(1, 2, 3, 4))
M("up_nearest_3d", "Upsample", dict(size=(3, 4, 5)), X(1, 1, 2, 3, 2))
M("up_bilinear_x2", "Upsample", dict(scale_factor=2, mode="bilinear"), X(2, 3, 4, 5))
M("up_bilinear_ac", "Upsample", dict(size=(7, 9), mode="bilinear", align_corners=True), X(1, 2, 4, 5))
M("up_bilinear_down", "Upsample", dict(size=(3, 2), mode="bilinear"), X(1, 2, 7, 5))
M("up_bilinear_to_size1_ac", "Upsample", dict(size=(1, 4), mode="bilinear", align_corners=True), X(1, 2, 3, 3))
M("up_bilinear_from_size1", "Upsample", dict(size=(3, 4), mode="bilinear"), X(1, 2, 1, 1))
M("up_bilinear_sf_frac", "Upsample", dict(scale_factor=(1.5, 2.3), mode="bilinear"), X(1, 1, 4, 3))
M("up_bilinear_recompute", "Upsample", dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
  X(1, 1, 5, 3))
M("up_bilinear_noncontig", "Upsample", dict(scale_factor=2, mode="bilinear"), Xnc((2, 3, 4, 3), (0, 1, 3, 2)))
M("up_linear", "Upsample", dict(scale_factor=2.5, mode="linear"), X(2, 3, 4))
M("up_linear_ac", "Upsample", dict(size=9, mode="linear", align_corners=True), X(2, 2, 5))
M("up_bicubic", "Upsample", dict(size=(7, 6), mode="bicubic"), X(1, 2, 4, 5))
M("up_bicubic_ac", "Upsample", dict(scale_factor=2, mode="bicubic", align_corners=True), X(1, 2, 3, 4))
M("up_bicubic_down", "Upsample", dict(size=(3, 3), mode="bicubic"), X(1, 1, 6, 5))
M("up_trilinear", "Upsample", dict(size=(3, 5, 4), mode="trilinear"), X(1, 1, 2, 3, 4))
M("upsampling_bilinear2d", "UpsamplingBilinear2d", dict(scale_factor=2), X(1, 1, 3, 3))
M("upsampling_nearest2d", "UpsamplingNearest2d", dict(size=5), X(1, 1, 2, 3))
Fn("f_interp_area", "interpolate", dict(size=(3, 2), mode="area"), X(1, 2, 7, 5))
Fn("f_interp_bilinear_ac_sf", "interpolate", dict(scale_factor=1.5, mode="bilinear", align_corners=True),
   X(2, 1, 3, 5))
Fn("f_interp_nearest_sf_noncontig", "interpolate", dict(scale_factor=(0.6, 2.5)), Xnc((1, 2, 5, 4), (0, 1, 3, 2)))
M("pixelshuffle", "PixelShuffle", dict(upscale_factor=2), X(2, 8, 3, 4))
M("pixelshuffle_unbatched_r3", "PixelShuffle", dict(upscale_factor=3), X(9, 2, 1))
M("pixelshuffle_5d_special", "PixelShuffle", dict(upscale_factor=2), Xspecial(2, 1, 4, 3, 3))
M("pixelunshuffle", "PixelUnshuffle", dict(downscale_factor=2), X(2, 3, 4, 6))
M("pixelunshuffle_r3", "PixelUnshuffle", dict(downscale_factor=3), X(1, 2, 3, 3))
M("unfold", "Unfold", dict(kernel_size=2), X(2, 3, 4, 5))
M("unfold_all_args", "Unfold", dict(kernel_size=(2, 3), dilation=(2, 1), padding=1, stride=(1, 2)), X(1, 2, 5, 6))
M("unfold_unbatched", "Unfold", dict(kernel_size=3, padding=1), X(2, 4, 4))
M("unfold_special", "Unfold", dict(kernel_size=2, stride=1), Xspecial(1, 2, 3, 4))
M("fold", "Fold", dict(output_size=(4, 5), kernel_size=2), X(2, 12, 12))
M("fold_all_args", "Fold", dict(output_size=(5, 6), kernel_size=(2, 3), dilation=(2, 1), padding=1, stride=(1, 2)),
  X(1, 12, 15))
M("fold_unbatched", "Fold", dict(output_size=3, kernel_size=2), X(8, 4))
M("fold_special", "Fold", dict(output_size=(3, 3), kernel_size=2), Xspecial(1, 4, 4))
Fn("f_unfold", "unfold", dict(kernel_size=(3, 2), stride=2, padding=(1, 0)), X(2, 2, 5, 4))
Fn("f_fold", "fold", dict(output_size=(4, 4), kernel_size=(3, 2), stride=2, padding=(1, 0)), X(2, 12, 4))

# pooling
M("adaptiveavg_general", "AdaptiveAvgPool2d", dict(output_size=(3, 4)), X(2, 2, 7, 9))
M("adaptiveavg_upsample", "AdaptiveAvgPool2d", dict(output_size=(5, 3)), X(1, 2, 3, 2))
M("adaptiveavg_size1_special", "AdaptiveAvgPool2d", dict(output_size=(1, 3)), Xspecial(1, 2, 1, 5))
Fn("f_adaptive_avg_pool2d", "adaptive_avg_pool2d", dict(output_size=(None, 3)), X(2, 5, 4, 7))
M("adaptivemax", "AdaptiveMaxPool2d", dict(output_size=(3, 4)), X(2, 2, 7, 9))
M("adaptivemax_indices_ties", "AdaptiveMaxPool2d", dict(output_size=(2, 3), return_indices=True), Xties(2, 2, 5, 7))
M("adaptivemax_indices_special", "AdaptiveMaxPool2d", dict(output_size=(2, 2), return_indices=True),
  Xmaxspecial(2, 2, 4, 4))
M("adaptivemax_upsample", "AdaptiveMaxPool2d", dict(output_size=(5, 3), return_indices=True), X(1, 2, 3, 2))
M("adaptivemax_unbatched", "AdaptiveMaxPool2d", dict(output_size=2, return_indices=True), X(2, 5, 5))
Fn("f_adaptive_max_pool2d", "adaptive_max_pool2d", dict(output_size=(3, None), return_indices=True), X(1, 3, 7, 4))
M("maxpool_indices", "MaxPool2d", dict(kernel_size=2, return_indices=True), X(2, 3, 6, 6))
M("maxpool_indices_s2p1", "MaxPool2d", dict(kernel_size=3, stride=2, padding=1, return_indices=True), X(2, 2, 7, 7))
M("maxpool_indices_ceil", "MaxPool2d", dict(kernel_size=3, stride=2, ceil_mode=True, return_indices=True),
  X(1, 2, 8, 8))
M("maxpool_indices_dilation", "MaxPool2d", dict(kernel_size=2, stride=1, dilation=2, return_indices=True),
  X(1, 2, 6, 6))
M("maxpool_indices_ties", "MaxPool2d", dict(kernel_size=3, stride=1, padding=1, return_indices=True),
  Xties(2, 2, 5, 5))
M("maxpool_indices_special", "MaxPool2d", dict(kernel_size=2, return_indices=True), Xmaxspecial(2, 2, 4, 4))
M("maxpool_indices_unbatched", "MaxPool2d", dict(kernel_size=(2, 3), stride=(1, 2), return_indices=True),
  X(2, 5, 7))
Fn("f_max_pool2d_with_indices", "max_pool2d_with_indices", dict(kernel_size=3, stride=2, padding=1),
   X(1, 2, 6, 5))
M("maxunpool", "MaxUnpool2d", dict(kernel_size=2), unpool_inputs((2, 3, 6, 6), 2))
M("maxunpool_s2p1_output_size", "MaxUnpool2d", dict(kernel_size=3, stride=2, padding=1),
  unpool_inputs((1, 2, 7, 7), 3, 2, 1), dict(output_size=[8, 8]))
Fn("f_max_unpool2d", "max_unpool2d", dict(kernel_size=2, output_size=(5, 7)), unpool_inputs((2, 2, 5, 7), 2))

# transformers: eval with the default dropout, train with dropout 0
TEL = dict(d_model=8, nhead=2, dim_feedforward=16)
TDL = dict(d_model=8, nhead=2, dim_feedforward=12)


def no_dropout(kwargs: dict) -> dict:
    """The same constructor arguments with every dropout (also of a nested layer) set to 0."""
    kw = {k: (layer(v["module"], **no_dropout(v["kwargs"])) if isinstance(v, dict) and "module" in v else v)
          for k, v in kwargs.items()}
    if "d_model" in kw:
        kw["dropout"] = 0.0
    return kw


def MT(base, cls, kwargs, gen):
    M(base, cls, kwargs, gen, modes=E_)
    M(base + "_dropout0", cls, no_dropout(kwargs), gen, modes=T)


MT("tel_post", "TransformerEncoderLayer", TEL, seq(src=(5, 2, 8)))
MT("tel_prenorm_gelu_bf_masks", "TransformerEncoderLayer",
   dict(TEL, norm_first=True, activation="gelu", batch_first=True),
   seq(src=(2, 5, 8), src_mask=("bool_causal", 5), src_key_padding_mask=("kpm", 2, 5)))
MT("tel_float_masks_nobias_eps", "TransformerEncoderLayer", dict(TEL, bias=False, layer_norm_eps=1e-3),
   seq(src=(5, 3, 8), src_mask=("float_mask", 5, 5)))
MT("tel_unbatched", "TransformerEncoderLayer", TEL, seq(src=(4, 8)))
MT("tdl_post", "TransformerDecoderLayer", TDL,
   seq(tgt=(4, 2, 8), memory=(6, 2, 8), tgt_mask=("bool_causal", 4), memory_key_padding_mask=("kpm", 2, 6)))
MT("tdl_prenorm_bf", "TransformerDecoderLayer", dict(TDL, norm_first=True, batch_first=True),
   seq(tgt=(2, 4, 8), memory=(2, 3, 8), memory_mask=("float_mask", 4, 3), tgt_key_padding_mask=("kpm", 2, 4)))
MT("tenc", "TransformerEncoder", dict(encoder_layer=layer("TransformerEncoderLayer", **TEL), num_layers=2,
                                      norm=layer("LayerNorm", normalized_shape=8)),
   seq(src=(5, 2, 8), src_key_padding_mask=("kpm", 2, 5)))
MT("tdec", "TransformerDecoder", dict(decoder_layer=layer("TransformerDecoderLayer", **TDL, norm_first=True),
                                      num_layers=2),
   seq(tgt=(3, 2, 8), memory=(5, 2, 8), tgt_mask=("float_causal", 3)))
MT("transformer", "Transformer", dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                                      dim_feedforward=16),
   seq(src=(5, 2, 8), tgt=(4, 2, 8), tgt_mask=("float_causal", 4), src_key_padding_mask=("kpm", 2, 5),
       memory_key_padding_mask=("kpm", 2, 5)))
MT("transformer_bf_prenorm_gelu", "Transformer", dict(d_model=8, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                                                      dim_feedforward=8, batch_first=True, norm_first=True,
                                                      activation="gelu"),
   seq(src=(2, 3, 8), tgt=(2, 4, 8), tgt_mask=("bool_causal", 4)))


# ====================================================================== running a case
def build_kwargs(kwargs: dict, dtype) -> dict:
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, dict) and "module" in v:
            out[k] = build_module(v["module"], v["kwargs"], dtype)
        elif isinstance(v, list):
            out[k] = tuple(v)
        else:
            out[k] = v
    return out


def build_module(cls: str, kwargs: dict, dtype):
    ctor = getattr(nn, cls)
    extra = {"dtype": dtype} if "dtype" in inspect.signature(ctor).parameters else {}
    return ctor(**build_kwargs(kwargs, dtype), **extra)


def randomise_constant_params(m: nn.Module, rng) -> None:
    """Parameters torch initialises to one constant get fixed random values (to test the affine parts)."""
    with torch.no_grad():
        for _, p in m.named_parameters():
            if p.numel() and bool((p == p.reshape(-1)[0]).all()):
                const = float(p.reshape(-1)[0])
                p.copy_(torch.tensor(const + 0.5 * rng.standard_normal(tuple(p.shape)), dtype=p.dtype))


def run_case(base, kind, target, kwargs, gen, fkw, mode, dname, tensors) -> dict:
    dtype = TDT[dname]
    name = f"{base}_{mode}_{dname}"
    rng = rng_for(base)
    if kind == "module":
        torch.manual_seed(zlib.crc32(base.encode()))
        m = build_module(target, kwargs, dtype)
        randomise_constant_params(m, rng)
        m.train(mode == "train")
    raw = gen(rng)
    call, leaves, views, grads_in = {}, {}, {}, []
    for k, a in raw.items():
        base_arr = a.base if isinstance(a, NC) else a
        if base_arr.dtype == np.bool_:
            t = torch.tensor(base_arr)
        elif base_arr.dtype.kind in "iu":
            t = torch.tensor(base_arr, dtype=torch.int64)
        else:
            t = torch.tensor(base_arr, dtype=dtype)
            if "mask" not in k:
                t.requires_grad_(True)
                grads_in.append(k)
        leaves[k] = t
        tensors[f"{name}.in.{k}"] = to_np(t)
        if isinstance(a, NC):
            views[k] = list(a.perm)
            call[k] = t.permute(a.perm)
            assert not call[k].is_contiguous()
        else:
            call[k] = t
    static = build_kwargs(kwargs, dtype)
    # modules: the non-mask tensors positionally (forward's names differ: input, x, src), masks by keyword;
    # functionals: every argument by keyword
    positional = [k for k in raw if "mask" not in k] if kind == "module" else []
    if kind == "module":
        out = m(*[call[k] for k in positional], **{k: v for k, v in call.items() if k not in positional}, **fkw)
    else:
        out = getattr(F, target)(**call, **static)
    outs = list(out) if isinstance(out, tuple) else [out]
    loss, out_kinds = 0, []
    for i, o in enumerate(outs):
        tensors[f"{name}.out.{i}"] = to_np(o)
        if o.is_floating_point():
            g = torch.tensor(rng.standard_normal(tuple(o.shape)), dtype=o.dtype)
            tensors[f"{name}.gout.{i}"] = to_np(g)
            loss = loss + (o * g).sum()
            out_kinds.append("float")
        else:
            out_kinds.append("int")
    pgrads, state_keys, after = [], [], []
    if kind == "module":
        sd_before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.backward()
        for k in grads_in:
            tensors[f"{name}.grad.in.{k}"] = to_np(leaves[k].grad)
        if kind == "module":
            for pn, p in m.named_parameters():
                if p.grad is not None:
                    tensors[f"{name}.grad.p.{pn}"] = to_np(p.grad)
                    pgrads.append(pn)
    if kind == "module":
        # the state_dict before the forward (what ember loads); buffers the forward changed, after it
        state_keys = list(sd_before)
        for k, v in sd_before.items():
            tensors[f"{name}.sd.{k}"] = to_np(v)
        for bn, b in m.named_buffers():
            if not torch.equal(b, sd_before[bn]):
                tensors[f"{name}.after.{bn}"] = to_np(b)
                after.append(bn)
    return {"name": name, "base": base, "kind": kind, "target": target, "kwargs": kwargs, "forward_kwargs": fkw,
            "dtype": dname, "mode": mode, "inputs": list(raw), "positional": positional, "views": views,
            "outputs": out_kinds,
            "grads_in": grads_in, "grads_params": pgrads, "state_keys": state_keys, "after": after}


def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    records = []
    for base, kind, target, kwargs, gen, fkw, modes in CASES:
        for mode in modes:
            for dname in BOTH:
                records.append(run_case(base, kind, target, kwargs, gen, fkw, mode, dname, tensors))
    names = [r["name"] for r in records]
    assert len(names) == len(set(names)), "duplicate case names"
    meta = {"torch_version": torch.__version__, "generator": "tools/make_spatial_fixtures.py", "cases": records}
    tensors = {k: _c(v) for k, v in tensors.items()}
    path = os.path.join(OUT_DIR, "spatial.safetensors")
    save_file(tensors, path, metadata={"torch_version": torch.__version__,
                                       "generator": "tools/make_spatial_fixtures.py"})
    os.chmod(path, 0o644)
    with open(os.path.join(OUT_DIR, "spatial.json"), "w") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"{len(records)} cases, {len(tensors)} tensors, "
          f"{os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
