"""Packed sequences, as `torch.nn.utils.rnn`: a batch of variable-length sequences stored
time-major without padding, sorted by decreasing length (`batch_sizes[t]` sequences are still
running at step t). Lengths are host values (a list, an array or an eager tensor), as in PyTorch,
where they must live on the CPU; the tensors themselves may be traced by ember.jit.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ... import api as E
from ..._core.errors import EmberError
from ...tensor import Tensor, tensor as _tensor

__all__ = ["PackedSequence", "pack_padded_sequence", "pad_packed_sequence", "pad_sequence", "pack_sequence"]


class PackedSequence(NamedTuple):
    """data (sum of lengths, *), batch_sizes (int64, one per step), and the permutation from the
    caller's batch order to length order (`sorted_indices`) and back (`unsorted_indices`)."""

    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor | None = None
    unsorted_indices: Tensor | None = None


def _host_lengths(lengths) -> np.ndarray:
    if isinstance(lengths, Tensor):
        lengths = lengths.numpy()
    out = np.asarray(lengths)
    if out.ndim != 1 or out.dtype.kind not in "iu":
        raise EmberError(f"lengths must be a 1-d sequence of ints, got {out.dtype}{list(out.shape)}")
    return out.astype(np.int64)


def _rows(batch_sizes: np.ndarray, B: int) -> np.ndarray:
    """Row indices into a (T*B, ...) padded tensor of the packed elements, in packed order."""
    return np.concatenate([t * B + np.arange(n) for t, n in enumerate(batch_sizes)]).astype(np.int64) \
        if len(batch_sizes) else np.zeros(0, np.int64)


def pack_padded_sequence(input, lengths, batch_first: bool = False, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a padded batch (T, B, *) (or (B, T, *) with `batch_first`) of sequences of `lengths`."""
    lengths = _host_lengths(lengths)
    B = input.shape[0 if batch_first else 1]
    if len(lengths) != B:
        raise EmberError(f"expected {B} lengths (the batch size of input {tuple(input.shape)}), got {len(lengths)}")
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise EmberError("`lengths` array must be sorted in decreasing order when `enforce_sorted` is "
                             "True. You can pass `enforce_sorted=False` to pack_padded_sequence and/or "
                             "pack_sequence to sidestep this requirement if you do not need ONNX exportability.")
        sorted_idx = None
    else:
        order = np.argsort(-lengths, kind="stable")
        sorted_idx = _tensor(order.astype(np.int64))
        lengths = lengths[order]
        input = E.index_select(input, 0 if batch_first else 1, sorted_idx)
    if batch_first:
        input = E.transpose(input, 0, 1)
    T = input.shape[0]
    if len(lengths) and (lengths.min() <= 0 or lengths.max() > T):
        raise EmberError(f"every length must be in [1, {T}] (the padded length), got {lengths.tolist()}")
    batch_sizes = np.array([(lengths > t).sum() for t in range(int(lengths.max(initial=0)))], np.int64)
    flat = input.reshape(T * B, *input.shape[2:])
    data = E.index_select(flat, 0, _tensor(_rows(batch_sizes, B)))
    unsorted = None if sorted_idx is None else _tensor(np.argsort(sorted_idx.numpy()).astype(np.int64))
    return PackedSequence(data, _tensor(batch_sizes), sorted_idx, unsorted)


def _padded(data, batch_sizes: np.ndarray, T: int, padding_value) -> Tensor:
    """(T, B, *) in length order, from packed `data`."""
    B = int(batch_sizes[0]) if len(batch_sizes) else 0
    n = data.shape[0]
    # each padded position reads its packed row, padding reads row n (an appended padding row)
    src = np.full(T * B, n, np.int64)
    src[_rows(batch_sizes, B)] = np.arange(n)
    pad = E.full((1, *data.shape[1:]), padding_value, dtype=data.dtype)
    rows = E.index_select(E.cat([data, pad]), 0, _tensor(src))
    return rows.reshape(T, B, *data.shape[1:])


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = False, padding_value: float = 0.0,
                        total_length: int | None = None) -> tuple:
    """(padded batch (T, B, *) or (B, T, *), lengths as int64) in the caller's batch order."""
    batch_sizes = sequence.batch_sizes.numpy().astype(np.int64)
    T = len(batch_sizes)
    if total_length is not None:
        if total_length < T:
            raise EmberError(f"total_length={total_length} is shorter than the longest sequence ({T})")
        T = total_length
    padded = _padded(sequence.data, batch_sizes, T, padding_value)
    B = padded.shape[1]
    lengths = np.array([(batch_sizes > b).sum() for b in range(B)], np.int64)
    if sequence.unsorted_indices is not None:
        padded = E.index_select(padded, 1, sequence.unsorted_indices)
        lengths = lengths[sequence.unsorted_indices.numpy()]
    if batch_first:
        padded = E.transpose(padded, 0, 1)
    return padded, _tensor(lengths)


def padded_from_packed(sequence: PackedSequence) -> tuple:
    """(padded (T, B, *) in length order with zero padding, lengths in that order): for the RNNs."""
    batch_sizes = sequence.batch_sizes.numpy().astype(np.int64)
    B = int(batch_sizes[0]) if len(batch_sizes) else 0
    lengths = np.array([(batch_sizes > b).sum() for b in range(B)], np.int64)
    return _padded(sequence.data, batch_sizes, len(batch_sizes), 0.0), lengths


def pack_by_batch_sizes(padded, batch_sizes: Tensor, sorted_indices, unsorted_indices) -> PackedSequence:
    """The packed form of a padded (T, B, *) tensor in length order, with the given layout."""
    bs = batch_sizes.numpy().astype(np.int64)
    T, B = padded.shape[0], padded.shape[1]
    data = E.index_select(padded.reshape(T * B, *padded.shape[2:]), 0, _tensor(_rows(bs, B)))
    return PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)


def pad_sequence(sequences, batch_first: bool = False, padding_value: float = 0.0,
                 padding_side: str = "right") -> Tensor:
    """Stack sequences (L_i, *) into (L_max, B, *) (or (B, L_max, *)), padding with `padding_value`."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    sequences = list(sequences)
    if not sequences:
        raise EmberError("pad_sequence needs at least one sequence")
    L = max(s.shape[0] for s in sequences)
    rest = tuple(sequences[0].shape[1:])
    cols = []
    for s in sequences:
        if tuple(s.shape[1:]) != rest:
            raise EmberError(f"pad_sequence: sequences differ in their trailing dims: {rest} and {tuple(s.shape[1:])}")
        if s.shape[0] == L:
            cols.append(s)
            continue
        pad = E.full((L - s.shape[0], *rest), padding_value, dtype=s.dtype)
        cols.append(E.cat([s, pad] if padding_side == "right" else [pad, s]))
    return E.stack(cols, 0 if batch_first else 1)


def pack_sequence(sequences, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of sequences (L_i, *) (pad_sequence, then pack_padded_sequence)."""
    sequences = list(sequences)
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)
