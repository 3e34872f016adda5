"""Recurrent layers with PyTorch's names, weight layouts and semantics (PI-3): `RNN`, `LSTM`,
`GRU` (multi-layer, bidirectional, `batch_first`, dropout between layers, LSTM projections,
packed sequences) and the cells `RNNCell`, `LSTMCell`, `GRUCell`.

Each layer runs one GEMM for the input projection of every time step at once, then one small
GEMM per step for the recurrence; the loop is Python, so `ember.jit` unrolls it into the step's
graph (equal steps share their generated kernels). A `PackedSequence` runs on its padded form
with the state of a sequence frozen after its last step, which gives PyTorch's results.

Gate order and equations as PyTorch (weights `weight_ih_l{k}[_reverse]` etc., rows stacked by gate):
- LSTM (i, f, g, o): c' = f*c + i*g, h' = o*tanh(c'), and h' = W_hr h' with `proj_size`;
- GRU (r, z, n): n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), h' = (1-z)*n + z*h;
- RNN: h' = tanh or relu(W_ih x + b_ih + W_hh h + b_hh).
"""
from __future__ import annotations

import math

from .. import api as E
from .._core.errors import ShapeError
from . import functional as F
from . import init
from .module import Module
from ..tensor import tensor as _tensor
from .parameter import Parameter
from .utils.rnn import PackedSequence, pack_by_batch_sizes, padded_from_packed

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _lstm_step(xw, h, c, w_hh, b_hh, w_hr):
    """One LSTM step from the input projection `xw` (x W_ih^T + b_ih)."""
    gates = xw + F.linear(h, w_hh, b_hh)
    i, f, g, o = E.chunk(gates, 4, -1)
    c = E.sigmoid(f) * c + E.sigmoid(i) * E.tanh(g)
    h = E.sigmoid(o) * E.tanh(c)
    return (h if w_hr is None else F.linear(h, w_hr)), c


def _gru_step(xw, h, w_hh, b_hh):
    """One GRU step from the input projection `xw`."""
    xr, xz, xn = E.chunk(xw, 3, -1)
    hr, hz, hn = E.chunk(F.linear(h, w_hh, b_hh), 3, -1)
    r = E.sigmoid(xr + hr)
    z = E.sigmoid(xz + hz)
    n = E.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _rnn_step(xw, h, w_hh, b_hh, relu: bool):
    a = xw + F.linear(h, w_hh, b_hh)
    return F.relu(a) if relu else E.tanh(a)


class RNNBase(Module):
    """The common part of RNN, LSTM and GRU: parameters, shapes, layers and directions."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__()
        if not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout}")
        if hidden_size <= 0 or num_layers <= 0:
            raise ValueError(f"hidden_size and num_layers must be positive, got {hidden_size} and {num_layers}")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, proj_size
        gate = _GATES[mode] * hidden_size
        out = proj_size or hidden_size
        dirs = 2 if bidirectional else 1
        self._flat_weights_names = []
        for layer in range(num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                fin = input_size if layer == 0 else out * dirs
                shapes = [("weight_ih", (gate, fin)), ("weight_hh", (gate, out))]
                if bias:
                    shapes += [("bias_ih", (gate,)), ("bias_hh", (gate,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for name, shape in shapes:
                    setattr(self, name + sfx, Parameter(E.empty(shape, dtype=dtype, device=device)))
                    self._flat_weights_names.append(name + sfx)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name in self._flat_weights_names:
            init.uniform_(getattr(self, name), -bound, bound)

    def _weights(self, layer: int, d: int) -> dict:
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = lambda n: getattr(self, n + sfx, None)  # noqa: E731
        return {"w_ih": get("weight_ih"), "w_hh": get("weight_hh"), "b_ih": get("bias_ih"),
                "b_hh": get("bias_hh"), "w_hr": get("weight_hr")}

    def _check_hidden(self, h, shape, what: str):
        if tuple(h.shape) != tuple(shape):
            raise ShapeError(f"{type(self).__name__}: expected {what} of shape {tuple(shape)}, got {tuple(h.shape)}")

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = padded_from_packed(input)  # (T, B, F) in sorted order, lengths sorted
            batched = True
            if hx is not None and input.sorted_indices is not None:
                hx = self._permute(hx, input.sorted_indices)
        else:
            batched = input.ndim == 3
            if input.ndim not in (2, 3):
                raise ShapeError(f"{type(self).__name__}: expected input of 2 (unbatched) or 3 dims, "
                                 f"got shape {tuple(input.shape)}")
            x = input if batched else E.unsqueeze(input, 1)
            if batched and self.batch_first:
                x = E.transpose(x, 0, 1)
            if hx is not None and not batched:
                hx = tuple(E.unsqueeze(h, 1) for h in hx) if isinstance(hx, tuple) else E.unsqueeze(hx, 1)
            lengths = None
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"{type(self).__name__}: input has {x.shape[-1]} features, expected "
                             f"input_size={self.input_size} (input shape {tuple(x.shape)})")
        out, h_n, c_n = self._run(x, hx, lengths)
        if packed:
            out = pack_by_batch_sizes(out, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
            if input.unsorted_indices is not None:
                h_n = E.index_select(h_n, 1, input.unsorted_indices)
                c_n = None if c_n is None else E.index_select(c_n, 1, input.unsorted_indices)
        else:
            if self.batch_first and batched:
                out = E.transpose(out, 0, 1)
            if not batched:
                out, h_n = E.squeeze(out, 1), E.squeeze(h_n, 1)
                c_n = None if c_n is None else E.squeeze(c_n, 1)
        return out, ((h_n, c_n) if self.mode == "LSTM" else h_n)

    @staticmethod
    def _permute(hx, index):
        if isinstance(hx, tuple):
            return tuple(E.index_select(h, 1, index) for h in hx)
        return E.index_select(hx, 1, index)

    def _run(self, x, hx, lengths):
        """(output (T, B, D*H_out), h_n, c_n or None) of the padded, time-major `x`."""
        T, B = x.shape[0], x.shape[1]
        dirs = 2 if self.bidirectional else 1
        out_size = self.proj_size or self.hidden_size
        lstm = self.mode == "LSTM"
        n = self.num_layers * dirs
        if hx is None:
            h0 = E.zeros((n, B, out_size), dtype=x.dtype)
            c0 = E.zeros((n, B, self.hidden_size), dtype=x.dtype) if lstm else None
        elif lstm:
            if not isinstance(hx, tuple) or len(hx) != 2:
                raise TypeError("LSTM expects hx as a tuple (h_0, c_0)")
            h0, c0 = hx
            self._check_hidden(h0, (n, B, out_size), "h_0")
            self._check_hidden(c0, (n, B, self.hidden_size), "c_0")
        else:
            h0, c0 = hx, None
            self._check_hidden(h0, (n, B, out_size), "hx")
        masks = None
        if lengths is not None:  # (T, B, 1) booleans: step t is inside sequence b
            steps = E.arange(T).reshape(T, 1, 1)
            masks = steps < _tensor(lengths).reshape(1, B, 1)
        hs, cs = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                y, h, c = self._direction(layer_in, self._weights(layer, d), h0[k], c0[k] if lstm else None,
                                          reverse=bool(d), masks=masks)
                outs.append(y)
                hs.append(h)
                cs.append(c)
            layer_in = outs[0] if dirs == 1 else E.cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        return layer_in, E.stack(hs), (E.stack(cs) if lstm else None)

    def _direction(self, x, w, h, c, reverse: bool, masks):
        """One layer in one direction: outputs (T, B, H_out) and the final h (and c)."""
        T = x.shape[0]
        xw = F.linear(x, w["w_ih"], w["b_ih"])  # every step's input projection: one GEMM
        ys = [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            if self.mode == "LSTM":
                h_new, c_new = _lstm_step(xw[t], h, c, w["w_hh"], w["b_hh"], w["w_hr"])
            elif self.mode == "GRU":
                h_new, c_new = _gru_step(xw[t], h, w["w_hh"], w["b_hh"]), None
            else:
                h_new, c_new = _rnn_step(xw[t], h, w["w_hh"], w["b_hh"], self.mode == "RNN_RELU"), None
            if masks is not None:  # a sequence's state stays as it was after its last step
                m = masks[t]
                h_new = E.where(m, h_new, h)
                c_new = None if c is None else E.where(m, c_new, c)
                ys[t] = E.where(m, h_new, 0.0)
            else:
                ys[t] = h_new
            h, c = h_new, c_new
        return E.stack(ys), h, c

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN with tanh or relu: `RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', ...)`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, device=device, dtype=dtype)


class LSTM(RNNBase):
    """Long short-term memory, with PyTorch's gate order (i, f, g, o) and optional `proj_size`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """Gated recurrent unit, with PyTorch's gate order (r, z, n)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


# ---------------------------------------------------------------- cells
class RNNCellBase(Module):
    """One step: `weight_ih` (G*hidden, input), `weight_hh` (G*hidden, hidden), biases."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, gates: int, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = Parameter(E.empty((gates * hidden_size, input_size), dtype=dtype, device=device))
        self.weight_hh = Parameter(E.empty((gates * hidden_size, hidden_size), dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(E.empty(gates * hidden_size, dtype=dtype, device=device))
            self.bias_hh = Parameter(E.empty(gates * hidden_size, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _input(self, input, hx, n_states: int):
        """(batched input (N, F), states (N, H) each, whether the input was unbatched)."""
        if input.ndim not in (1, 2):
            raise ShapeError(f"{type(self).__name__}: expected input of 1 or 2 dims, got shape {tuple(input.shape)}")
        unbatched = input.ndim == 1
        x = E.unsqueeze(input, 0) if unbatched else input
        if hx is None:
            zero = E.zeros((x.shape[0], self.hidden_size), dtype=x.dtype)
            states = [zero] * n_states
        else:
            states = list(hx) if n_states > 1 else [hx]
            states = [E.unsqueeze(s, 0) if unbatched else s for s in states]
        return x, states, unbatched

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(RNNCellBase):
    """h' = tanh or relu(W_ih x + b_ih + W_hh h + b_hh)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)

    def forward(self, input, hx=None):
        x, (h,), unbatched = self._input(input, hx, 1)
        h = _rnn_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh,
                      self.nonlinearity == "relu")
        return E.squeeze(h, 0) if unbatched else h


class LSTMCell(RNNCellBase):
    """One LSTM step: returns (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        x, (h, c), unbatched = self._input(input, hx, 2)
        h, c = _lstm_step(F.linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh, self.bias_hh, None)
        return (E.squeeze(h, 0), E.squeeze(c, 0)) if unbatched else (h, c)


class GRUCell(RNNCellBase):
    """One GRU step: returns h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        x, (h,), unbatched = self._input(input, hx, 1)
        h = _gru_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)
        return E.squeeze(h, 0) if unbatched else h
