"""Generate PyTorch reference fixtures for ember's recurrent layers (RNN, LSTM, GRU, their cells,
packed sequences) under tests/fixtures/.

Run from the repository root with the separate torch virtualenv (torch is never an ember
dependency; ember's tests read the outputs with numpy and safetensors):

    /tmp/tv/bin/python tools/make_rnn_fixtures.py

Outputs tests/fixtures/rnn.safetensors (arrays) and tests/fixtures/rnn.json (one record per
case: class, constructor kwargs, how the input is given). Each case's module gets a state dict of
fixed random values U(-0.5, 0.5) (so numbers do not depend on torch's RNG) and runs in float64 on
fixed inputs; the arrays are {case}.sd.{key}, {case}.in.{x, h0, c0}, {case}.out.{i}, {case}.gout.{i}
and the gradients of sum(out_i * gout_i) w.r.t. the inputs ({case}.grad.in.{name}) and the
parameters ({case}.grad.p.{key}). Packed cases also store {case}.batch_sizes and the padded output.
"""
from __future__ import annotations

import json
import os
import zlib

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn
from torch.nn.utils import rnn as R

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
torch.set_num_threads(1)

# (name, class, kwargs, T, B (None: unbatched), with initial state, packing: None | (lengths, enforce_sorted))
CASES = [
    ("rnn_tanh", "RNN", dict(input_size=3, hidden_size=5), 4, 2, True, None),
    ("rnn_relu_bi_bf", "RNN", dict(input_size=3, hidden_size=4, num_layers=2, nonlinearity="relu",
                                   bidirectional=True, batch_first=True), 5, 3, False, None),
    ("rnn_nobias_unbatched", "RNN", dict(input_size=2, hidden_size=3, bias=False), 3, None, True, None),
    ("lstm_2layer", "LSTM", dict(input_size=3, hidden_size=4, num_layers=2), 5, 2, True, None),
    ("lstm_bi_bf_proj", "LSTM", dict(input_size=3, hidden_size=5, bidirectional=True, batch_first=True,
                                     proj_size=2), 4, 3, True, None),
    ("lstm_unbatched", "LSTM", dict(input_size=3, hidden_size=4), 6, None, False, None),
    ("lstm_size1", "LSTM", dict(input_size=1, hidden_size=1), 1, 1, False, None),
    ("gru_2layer_bi", "GRU", dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True), 4, 2, True, None),
    ("gru_bf", "GRU", dict(input_size=2, hidden_size=3, batch_first=True), 3, 4, False, None),
    ("lstm_packed_unsorted_bi", "LSTM", dict(input_size=3, hidden_size=4, bidirectional=True), 5, 3, True,
     ([2, 5, 1], False)),
    ("gru_packed_sorted", "GRU", dict(input_size=3, hidden_size=4, num_layers=2), 4, 3, False, ([4, 3, 1], True)),
    ("rnn_packed_bf", "RNN", dict(input_size=2, hidden_size=3, batch_first=True), 3, 2, False, ([1, 3], False)),
    ("rnncell_tanh", "RNNCell", dict(input_size=3, hidden_size=4), None, 2, True, None),
    ("rnncell_relu_unbatched", "RNNCell", dict(input_size=3, hidden_size=4, nonlinearity="relu"), None, None,
     True, None),
    ("lstmcell", "LSTMCell", dict(input_size=3, hidden_size=4), None, 3, True, None),
    ("lstmcell_nostate", "LSTMCell", dict(input_size=2, hidden_size=3), None, 2, False, None),
    ("grucell", "GRUCell", dict(input_size=3, hidden_size=4), None, 2, True, None),
    ("grucell_unbatched", "GRUCell", dict(input_size=3, hidden_size=2, bias=False), None, None, True, None),
]


def rng_for(name):
    return np.random.default_rng(20261202 + zlib.crc32(name.encode()))


def main():
    arrays, records = {}, []
    for name, cls, kw, T, B, with_state, packing in CASES:
        rng = rng_for(name)
        m = getattr(nn, cls)(**kw).double()
        sd = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in m.state_dict().items()}
        m.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
        for k, v in sd.items():
            arrays[f"{name}.sd.{k}"] = v
        cell = cls.endswith("Cell")
        F_in = kw["input_size"]
        H = kw["hidden_size"]
        bf = kw.get("batch_first", False)
        if cell:
            xs = (F_in,) if B is None else (B, F_in)
        else:
            xs = (T, F_in) if B is None else ((B, T, F_in) if bf else (T, B, F_in))
        x = rng.standard_normal(xs)
        inputs = {"x": x}
        if with_state:
            if cell:
                hs = (H,) if B is None else (B, H)
                inputs["h0"] = rng.standard_normal(hs)
                if cls == "LSTMCell":
                    inputs["c0"] = rng.standard_normal(hs)
            else:
                D = 2 if kw.get("bidirectional") else 1
                L = kw.get("num_layers", 1)
                Hout = kw.get("proj_size", 0) or H
                hs = (D * L, Hout) if B is None else (D * L, B, Hout)
                inputs["h0"] = rng.standard_normal(hs)
                if cls == "LSTM":
                    inputs["c0"] = rng.standard_normal(hs[:-1] + (H,))
        tin = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
        for k, v in inputs.items():
            arrays[f"{name}.in.{k}"] = v
        state = None
        if "h0" in tin:
            state = (tin["h0"], tin["c0"]) if "c0" in tin else tin["h0"]
        rec = {"name": name, "cls": cls, "kwargs": kw, "state": with_state, "packing": packing}
        if packing is not None:
            lengths, enforce = packing
            seq = R.pack_padded_sequence(tin["x"], lengths, batch_first=bf, enforce_sorted=enforce)
            arrays[f"{name}.batch_sizes"] = seq.batch_sizes.numpy().astype(np.int64)
            out, hn = m(seq, state)
            padded, lens = R.pad_packed_sequence(out, batch_first=bf)
            arrays[f"{name}.padded"] = padded.detach().numpy()
            outs = [out.data] + (list(hn) if isinstance(hn, tuple) else [hn])
        else:
            res = m(tin["x"], state)
            if cell:
                outs = list(res) if isinstance(res, tuple) else [res]
            else:
                out, hn = res
                outs = [out] + (list(hn) if isinstance(hn, tuple) else [hn])
        total = 0
        for i, o in enumerate(outs):
            g = rng.standard_normal(tuple(o.shape))
            arrays[f"{name}.out.{i}"] = o.detach().numpy().copy()
            arrays[f"{name}.gout.{i}"] = g
            total = total + (o * torch.tensor(g)).sum()
        total.backward()
        for k, t in tin.items():
            arrays[f"{name}.grad.in.{k}"] = t.grad.numpy().copy()
        for k, p in m.named_parameters():
            arrays[f"{name}.grad.p.{k}"] = p.grad.numpy().copy()
        rec["n_out"] = len(outs)
        records.append(rec)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, os.path.join(OUT, "rnn.safetensors"))
    with open(os.path.join(OUT, "rnn.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": records}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(records)} cases, {len(arrays)} arrays")


if __name__ == "__main__":
    main()
