"""PI-3: recurrent layers (RNN, LSTM, GRU, their cells, packed sequences) against PyTorch
fixtures (tools/make_rnn_fixtures.py: outputs and the gradients of every input and parameter),
float64 gradcheck, and the same step under ember.jit as eagerly."""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.nn.utils import rnn as R
from ember.testing import gradcheck

safetensors_numpy = pytest.importorskip("safetensors.numpy")
FIX = pathlib.Path(__file__).parent / "fixtures"
META = json.loads((FIX / "rnn.json").read_text())
ARR = safetensors_numpy.load_file(str(FIX / "rnn.safetensors"))
CASES = {c["name"]: c for c in META["cases"]}


def _build(case):
    m = getattr(nn, case["cls"])(**case["kwargs"], dtype=ember.float64)
    sd = {k[len(case["name"]) + 4:]: ember.tensor(v) for k, v in ARR.items() if k.startswith(case["name"] + ".sd.")}
    assert set(sd) == set(m.state_dict()), "state_dict keys differ from PyTorch's"
    m.load_state_dict(sd)
    return m


def _run(case, m, ins):
    """ember's outputs for a fixture case, flattened as the tool flattened torch's."""
    name, kw = case["name"], case["kwargs"]
    state = None
    if "h0" in ins:
        state = (ins["h0"], ins["c0"]) if "c0" in ins else ins["h0"]
    if case["packing"] is not None:
        lengths, enforce = case["packing"]
        seq = R.pack_padded_sequence(ins["x"], lengths, batch_first=kw.get("batch_first", False),
                                     enforce_sorted=enforce)
        np.testing.assert_array_equal(seq.batch_sizes.numpy(), ARR[f"{name}.batch_sizes"])
        out, hn = m(seq, state)
        padded, _ = R.pad_packed_sequence(out, batch_first=kw.get("batch_first", False))
        np.testing.assert_allclose(padded.detach().numpy(), ARR[f"{name}.padded"], rtol=1e-10, atol=1e-12)
        return [out.data] + (list(hn) if isinstance(hn, tuple) else [hn])
    res = m(ins["x"], state)
    if case["cls"].endswith("Cell"):
        return list(res) if isinstance(res, tuple) else [res]
    out, hn = res
    return [out] + (list(hn) if isinstance(hn, tuple) else [hn])


@pytest.mark.parametrize("name", sorted(CASES))
def test_pi3_matches_pytorch_forward_and_gradients(name):
    case = CASES[name]
    m = _build(case)
    ins = {k.split(".")[-1]: ember.tensor(v, requires_grad=True) for k, v in ARR.items()
           if k.startswith(name + ".in.")}
    outs = _run(case, m, ins)
    assert len(outs) == case["n_out"]
    total = 0
    for i, o in enumerate(outs):
        np.testing.assert_allclose(o.detach().numpy(), ARR[f"{name}.out.{i}"], rtol=1e-10, atol=1e-12,
                                   err_msg=f"{name} output {i}")
        total = total + (o * ember.tensor(ARR[f"{name}.gout.{i}"])).sum()
    total.backward()
    for k, t in ins.items():
        np.testing.assert_allclose(t.grad.numpy(), ARR[f"{name}.grad.in.{k}"], rtol=1e-9, atol=1e-11,
                                   err_msg=f"{name} d/d{k}")
    for k, p in m.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ARR[f"{name}.grad.p.{k}"], rtol=1e-9, atol=1e-11,
                                   err_msg=f"{name} d/d{k}")


@pytest.mark.parametrize("cls,kw", [("LSTM", dict(num_layers=2, bidirectional=True)),
                                    ("GRU", dict(batch_first=True)), ("RNN", dict(nonlinearity="relu")),
                                    ("LSTM", dict(proj_size=2))])
def test_pi3_gradcheck_float64(cls, kw):
    """Central differences in float64 through the whole recurrence (inputs and initial state)."""
    ember.manual_seed(3)
    m = getattr(nn, cls)(3, 4, dtype=ember.float64, **kw)
    x = ember.randn(2, 3, 3, dtype=ember.float64, requires_grad=True)

    def f(x):
        out, hn = m(x)
        hn = hn if isinstance(hn, tuple) else (hn,)
        return (out * out).sum() + sum((h * 1.5).sum() for h in hn)
    assert gradcheck(f, (x,))


def test_pi3_default_init_is_pytorchs_uniform():
    ember.manual_seed(0)
    m = nn.LSTM(8, 64, num_layers=2)
    bound = 1 / math.sqrt(64)
    for name, p in m.named_parameters():
        v = p.detach().numpy()
        assert v.min() >= -bound and v.max() <= bound, name
        assert abs(v.mean()) < 0.2 * bound and v.std() > 0.5 * bound / math.sqrt(3), name


def test_pi3_noncontiguous_input_and_state():
    """A transposed (non-contiguous) input gives the contiguous input's results."""
    case = CASES["lstm_2layer"]
    m = _build(case)
    x = ARR["lstm_2layer.in.x"]
    xt = ember.tensor(np.ascontiguousarray(x.transpose(1, 0, 2))).transpose(0, 1)  # a view
    assert not xt.is_contiguous()
    out, _ = m(xt, (ember.tensor(ARR["lstm_2layer.in.h0"]), ember.tensor(ARR["lstm_2layer.in.c0"])))
    np.testing.assert_allclose(out.detach().numpy(), ARR["lstm_2layer.out.0"], rtol=1e-10, atol=1e-12)


def test_pi3_dropout_between_layers_only_in_training():
    ember.manual_seed(1)
    m = nn.GRU(3, 8, num_layers=2, dropout=0.5)
    x = ember.randn(4, 2, 3)
    m.eval()
    a, b = m(x)[0].detach().numpy(), m(x)[0].detach().numpy()
    np.testing.assert_array_equal(a, b)
    m.train()
    c = m(x)[0].detach().numpy()
    assert not np.allclose(a, c)


def test_pi3_errors_name_the_shapes():
    m = nn.LSTM(3, 4)
    with pytest.raises(ember.ShapeError, match=r"input has 5 features, expected input_size=3"):
        m(ember.randn(2, 1, 5))
    with pytest.raises(ember.ShapeError, match=r"expected h_0 of shape \(1, 2, 4\), got \(1, 3, 4\)"):
        m(ember.randn(2, 2, 3), (ember.zeros(1, 3, 4), ember.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        nn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="only supported for LSTM"):
        nn.RNNBase("GRU", 3, 4, proj_size=2)
    with pytest.raises(ember.EmberError, match="sorted in decreasing order"):
        R.pack_padded_sequence(ember.randn(3, 2, 1), [1, 3])


def test_pi3_pad_sequence_and_pack_sequence_round_trip():
    seqs = [ember.tensor(np.arange(n * 2, dtype=np.float32).reshape(n, 2)) for n in (3, 1, 2)]
    padded = R.pad_sequence(seqs, batch_first=True, padding_value=-1.0)
    assert padded.shape == (3, 3, 2)
    np.testing.assert_array_equal(padded.numpy()[1], [[0, 1], [-1, -1], [-1, -1]])
    left = R.pad_sequence(seqs, padding_side="left")
    np.testing.assert_array_equal(left.numpy()[:, 1], [[-0.0, 0.0], [0, 0], [0, 1]])
    packed = R.pack_sequence(seqs, enforce_sorted=False)
    np.testing.assert_array_equal(packed.batch_sizes.numpy(), [3, 2, 1])
    back, lengths = R.pad_packed_sequence(packed, batch_first=True, total_length=4)
    np.testing.assert_array_equal(lengths.numpy(), [3, 1, 2])
    assert back.shape == (3, 4, 2)
    for s, row, n in zip(seqs, back.numpy(), (3, 1, 2)):
        np.testing.assert_array_equal(row[:n], s.numpy())
        assert not row[n:].any()


def test_pi3_lstm_training_step_under_jit_matches_eager():
    """An LSTM language-model step (embedding, 2-layer LSTM, head, AdamW) traced whole: the same
    losses and parameters as eagerly."""
    res = []
    for backend in ("eager", "jit"):
        ember.manual_seed(5)
        emb, lstm, head = nn.Embedding(11, 6), nn.LSTM(6, 8, num_layers=2, batch_first=True), nn.Linear(8, 11)
        params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
        opt = ember.optim.AdamW(params, lr=1e-2)

        def step(x, y):
            opt.zero_grad()
            out, _ = lstm(emb(x))
            loss = nn.functional.cross_entropy(head(out).reshape(-1, 11), y.reshape(-1))
            loss.backward()
            opt.step()
            return loss
        f = step if backend == "eager" else ember.jit(step)
        rng = np.random.default_rng(0)
        data = [(ember.tensor(rng.integers(0, 11, (3, 7))), ember.tensor(rng.integers(0, 11, (3, 7))))
                for _ in range(3)]
        losses = [float(f(x, y).item()) for x, y in data]
        res.append((losses, [p.detach().numpy().copy() for p in params]))
        if backend == "jit":
            (ent,) = f.cache.values()
            assert not getattr(ent.exe, "host_units", []), f.explain
    np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-5)
    for a, b in zip(res[1][1], res[0][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
