"""Text for language modelling (DP-3, text): byte and character tokenizers and packing.

    text = open("tinyshakespeare.txt").read()
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)                       # int64 token ids
    ds = LMBlockDataset(ids, block_size=128)     # ds[i] = (x, y), y is x shifted by one
    x, y = pack_blocks(ids, 128)                 # all blocks at once, (n, 128) each

A tokenizer's vocabulary is saved as JSON (``to_json``/``from_json``), never pickled.
"""
from __future__ import annotations

import json

import numpy as np

from .dataset import Dataset

__all__ = ["ByteTokenizer", "CharTokenizer", "pack_blocks", "LMBlockDataset"]


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, lossless for any text."""

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(np.asarray(ids, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")


class CharTokenizer:
    """One token per character of a fixed alphabet (sorted), as in char-level nanoGPT."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        if len(self.stoi) != len(self.chars):
            raise ValueError("CharTokenizer: duplicate characters in the alphabet")
        self._lut = None
        if all(ord(c) < 65536 for c in self.chars):
            self._lut = np.full(65536, -1, np.int64)
            for c, i in self.stoi.items():
                self._lut[ord(c)] = i

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        if self._lut is not None:
            cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            if cps.size and cps.max() < 65536:
                ids = self._lut[cps]
                if ids.size and ids.min() < 0:
                    bad = text[int(np.argmin(ids))]
                    raise KeyError(f"CharTokenizer: character {bad!r} is not in the vocabulary")
                return ids
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise KeyError(f"CharTokenizer: character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).ravel())

    def to_json(self) -> str:
        return json.dumps({"type": "char", "chars": "".join(self.chars)})

    @classmethod
    def from_json(cls, s: str) -> "CharTokenizer":
        d = json.loads(s)
        if d.get("type") != "char":
            raise ValueError("not a CharTokenizer JSON document")
        return cls(list(d["chars"]))


def pack_blocks(tokens, block_size: int, stride: int | None = None, dtype=np.int64):
    """Pack a token stream into fixed-length blocks with next-token targets.

    Block k starts at ``k * stride`` (default: `block_size`, non-overlapping):
    ``x[k] = tokens[s : s + block_size]``, ``y[k] = tokens[s + 1 : s + block_size + 1]``. Only blocks
    whose target fits are kept, so ``n = (len(tokens) - block_size - 1) // stride + 1``.
    Returns two (n, block_size) arrays (copies, built with one strided gather).
    """
    t = np.asarray(tokens)
    stride = block_size if stride is None else int(stride)
    if block_size < 1 or stride < 1:
        raise ValueError("block_size and stride must be positive")
    if len(t) < block_size + 1:
        return np.zeros((0, block_size), dtype), np.zeros((0, block_size), dtype)
    n = (len(t) - block_size - 1) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(t, block_size + 1)[::stride][:n]
    return win[:, :-1].astype(dtype), win[:, 1:].astype(dtype)


class LMBlockDataset(Dataset):
    """Map-style dataset of (x, y) blocks over a token array (no copies until indexed)."""

    def __init__(self, tokens, block_size: int, stride: int | None = None):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.block_size = int(block_size)
        self.stride = self.block_size if stride is None else int(stride)
        n = len(self.tokens) - self.block_size - 1
        self.n = 0 if n < 0 else n // self.stride + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"block {i} out of range for {self.n} blocks")
        s = i * self.stride
        return self.tokens[s:s + self.block_size].copy(), self.tokens[s + 1:s + self.block_size + 1].copy()
