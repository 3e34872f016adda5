"""`MultiheadAttention` with PyTorch's parameter layout, key names, masks and outputs.

Parameters (and so state_dict keys) are those of torch.nn.MultiheadAttention: `in_proj_weight`
(3E, E) packing the q, k, v projections (or `q_proj_weight`, `k_proj_weight`, `v_proj_weight` when
kdim/vdim differ from embed_dim), `in_proj_bias` (3E), `out_proj.weight`, `out_proj.bias`, and
`bias_k`, `bias_v` with add_bias_kv.
"""
from __future__ import annotations

import math

from .. import api as E
from .._core import dtypes as dt
from ..ops import lax
from . import functional as F
from . import init
from .linear import Linear
from .module import Module
from .parameter import Parameter

__all__ = ["MultiheadAttention", "NonDynamicallyQuantizableLinear"]


class NonDynamicallyQuantizableLinear(Linear):
    """A Linear (named as PyTorch's MHA output projection, so reprs match)."""


def _float_mask(mask, name: str, dtype):
    """A bool mask (True = masked out) becomes 0 / -inf in `dtype`; a float mask is used as is."""
    if mask is None:
        return None
    if mask.dtype is dt.bool_:
        return lax.select(mask, lax.full((), float("-inf"), dtype), lax.full((), 0.0, dtype))
    if mask.dtype.kind != "f":
        raise AssertionError(f"only bool and floating types of {name} are supported")
    return mask


def _pad_last(mask):
    """Append one zero (= attend) column to a float mask."""
    return F.pad(mask, (0, 1)) if mask is not None else None


class MultiheadAttention(Module):
    """Multi-head attention (Vaswani et al.): softmax(q k^T / sqrt(d) + mask) v per head, then out_proj.

    `forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)` returns (output, weights or None). Inputs are
    (L, N, E), or (N, L, E) with batch_first, or unbatched (L, E). Bool masks mark positions that
    may NOT be attended; float masks are added to the scores. `is_causal` without an attn_mask
    builds the causal mask (PyTorch requires the mask and treats the flag as a hint).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None):
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} "
                             f"and num_heads={num_heads} instead")
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        kw = dict(dtype=dtype, device=device)
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(E.empty((embed_dim, embed_dim), **kw))
            self.k_proj_weight = Parameter(E.empty((embed_dim, self.kdim), **kw))
            self.v_proj_weight = Parameter(E.empty((embed_dim, self.vdim), **kw))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(E.empty((3 * embed_dim, embed_dim), **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(E.empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **kw)
        if add_bias_kv:
            self.bias_k = Parameter(E.empty((1, 1, embed_dim), **kw))
            self.bias_v = Parameter(E.empty((1, 1, embed_dim), **kw))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """xavier_uniform_ on the input projections, zeros on the biases, xavier_normal_ on bias_k/v."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            init.xavier_normal_(self.bias_v)

    def _projections(self):
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            ws = (E.narrow(w, 0, 0, e), E.narrow(w, 0, e, e), E.narrow(w, 0, 2 * e, e))
        else:
            ws = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        b = self.in_proj_bias
        bs = (None,) * 3 if b is None else (E.narrow(b, 0, 0, e), E.narrow(b, 0, e, e), E.narrow(b, 0, 2 * e, e))
        return ws, bs

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        batched = query.ndim == 3
        if batched:
            if not self.batch_first:  # work in (N, L, E)
                query, key, value = (E.transpose(t, 0, 1) for t in (query, key, value))
        else:
            if query.ndim != 2:
                raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but received "
                                     f"{query.ndim}-D query tensor")
            query, key, value = (E.unsqueeze(t, 0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = E.unsqueeze(key_padding_mask, 0)
        n, tgt_len, e = query.shape
        src_len = key.shape[1]
        if e != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {e}")
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                                 f"{value.shape[:2]}")
        h, hd = self.num_heads, self.head_dim
        dtype = query.dtype

        key_padding_mask = _float_mask(key_padding_mask, "key_padding_mask", dtype)
        if attn_mask is None and is_causal:
            i = lax.iota((tgt_len, src_len), 0, dt.int64)
            j = lax.iota((tgt_len, src_len), 1, dt.int64)
            attn_mask = lax.gt(j, i)
        attn_mask = _float_mask(attn_mask, "attn_mask", dtype)
        if attn_mask is not None:
            if attn_mask.ndim == 2:
                if tuple(attn_mask.shape) != (tgt_len, src_len):
                    raise RuntimeError(f"The shape of the 2D attn_mask is {tuple(attn_mask.shape)}, but should be "
                                       f"{(tgt_len, src_len)}.")
            elif attn_mask.ndim == 3:
                if tuple(attn_mask.shape) != (n * h, tgt_len, src_len):
                    raise RuntimeError(f"The shape of the 3D attn_mask is {tuple(attn_mask.shape)}, but should be "
                                       f"{(n * h, tgt_len, src_len)}.")
            else:
                raise RuntimeError(f"attn_mask's dimension {attn_mask.ndim} is not supported")
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (n, src_len):
            raise AssertionError(f"expecting key_padding_mask shape of {(n, src_len)}, but got "
                                 f"{tuple(key_padding_mask.shape)}")

        (wq, wk, wv), (bq, bk, bv) = self._projections()
        q = F.linear(query, wq, bq)
        k = F.linear(key, wk, bk)
        v = F.linear(value, wv, bv)
        if self.bias_k is not None and self.bias_v is not None:
            k = E.cat([k, E.expand(self.bias_k, (n, 1, e))], 1)
            v = E.cat([v, E.expand(self.bias_v, (n, 1, e))], 1)
            attn_mask = _pad_last(attn_mask)
            key_padding_mask = _pad_last(key_padding_mask)
        q = E.transpose(E.reshape(q, (n, tgt_len, h, hd)), 1, 2)
        k = E.transpose(E.reshape(k, (n, k.shape[1], h, hd)), 1, 2)
        v = E.transpose(E.reshape(v, (n, v.shape[1], h, hd)), 1, 2)
        if self.add_zero_attn:
            zeros = lax.full((n, h, 1, hd), 0.0, k.dtype)
            k = E.cat([k, zeros], 2)
            v = E.cat([v, zeros], 2)
            attn_mask = _pad_last(attn_mask)
            key_padding_mask = _pad_last(key_padding_mask)
        s_len = k.shape[2]

        mask = None
        if attn_mask is not None:
            mask = attn_mask if attn_mask.ndim == 2 else E.reshape(attn_mask, (n, h, tgt_len, s_len))
        if key_padding_mask is not None:
            kpm = E.reshape(key_padding_mask, (n, 1, 1, s_len))
            mask = kpm if mask is None else E.add(mask, kpm)

        scores = E.matmul(E.mul(q, math.sqrt(1.0 / hd)), E.transpose(k, -2, -1))
        if mask is not None:
            scores = E.add(scores, mask)
        weights = F.softmax(scores, -1)
        if self.training and self.dropout > 0.0:
            weights = F.dropout(weights, self.dropout, True)
        out = E.matmul(weights, v)  # (N, H, L, hd)
        out = E.reshape(E.transpose(out, 1, 2), (n, tgt_len, e))
        out = self.out_proj(out)

        if batched:
            if not self.batch_first:
                out = E.transpose(out, 0, 1)
        else:
            out = E.squeeze(out, 0)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = E.mean(weights, 1)
        if not batched:
            weights = E.squeeze(weights, 0)
        return out, weights
