"""Chapter 2 (programming interface, PI-3): a character-level LSTM language model on Tiny
Shakespeare, trained with one jitted step (embedding, 2-layer nn.LSTM, linear head,
cross-entropy, AdamW), then sampled from with the LSTM's state carried character by character.

    python3 examples/ch02_lstm_language_model.py [--steps N] [--hidden H] [--seq T] [--batch B]

The text is looked for in $EMBER_DATA, ~/.cache/ember and /usr/share/datasets (tinyshakespeare.txt);
without it, a built-in paragraph is used so the example still runs.
"""
import argparse
import math
import os
from pathlib import Path

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data.text import CharTokenizer, pack_blocks

FALLBACK = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
            "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n") * 20


def load_text() -> str:
    for d in [os.environ.get("EMBER_DATA"), Path.home() / ".cache" / "ember", "/usr/share/datasets"]:
        if d and (Path(d) / "tinyshakespeare.txt").exists():
            return (Path(d) / "tinyshakespeare.txt").read_text()
    return FALLBACK


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, 64)
        self.lstm = nn.LSTM(64, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        out, state = self.lstm(self.emb(x), state)
        return self.head(out), state


def main(steps: int, hidden: int, seq: int, batch: int) -> float:
    ember.manual_seed(0)
    text = load_text()
    tok = CharTokenizer.from_text(text)
    xs, ys = pack_blocks(tok.encode(text), seq)
    model = CharLSTM(tok.vocab_size, hidden)
    opt = ember.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

    @ember.jit
    def train_step(x, y):
        opt.zero_grad()
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, tok.vocab_size), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    rng = np.random.default_rng(0)
    first = last = None
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(xs), batch)
        loss = train_step(ember.tensor(xs[idx]), ember.tensor(ys[idx])).item()
        first = loss if first is None else first
        last = loss
        if step % max(1, steps // 5) == 0 or step == steps:
            print(f"step {step:4d}  loss {loss:.3f}  ({loss / math.log(2):.2f} bits/char)")
    print(f"loss went from {first:.3f} to {last:.3f}: learning: {last < first}")
    model.eval()
    with ember.no_grad():  # sample: one character at a time, the LSTM state carried along
        x = ember.tensor(tok.encode(text[:text.index("\n") + 1])[None])  # prime with the first line
        logits, state = model(x)
        out = []
        for _ in range(80):
            p = F.softmax(logits[0, -1] / 0.8, dim=-1).numpy().astype(np.float64)
            c = int(rng.choice(len(p), p=p / p.sum()))
            out.append(c)
            logits, state = model(ember.tensor([[c]]), state)
    print("sample:", repr(tok.decode(np.array(out))))
    return last


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    main(a.steps, a.hidden, a.seq, a.batch)
