"""EMBER_DEBUG levels (docs/design.md principle 4): each level prints what it promises on stderr
when ember.jit traces — 1 compile events and fallbacks, 2 the IR after each pass and the plan,
3 the generated source, 4 per-kernel times — and nothing at 0."""
from __future__ import annotations

import numpy as np
import pytest

import ember
from ember._core.state import debug
from ember.backend.cpu import compiler


def _trace_at(level, capsys, dtype=np.float32):
    w = ember.tensor(np.ones((4, 4), dtype))
    f = ember.jit(lambda x: ember.tanh(x @ w + float(level)).sum())
    with debug(level):
        f(ember.tensor(np.ones((3, 4), dtype)))
    return capsys.readouterr().err


def test_level_0_is_silent(capsys):
    assert _trace_at(0, capsys) == ""


def test_level_1_compile_events_and_fallbacks(capsys):
    err = _trace_at(1, capsys)
    assert "ember.jit: <lambda>: traced: first call;" in err and "units" in err
    assert "--- traced IR" not in err
    if compiler.available():
        assert "ember: compiled " in err  # a new library (the literal makes the source new)
        err16 = _trace_at(1, capsys, np.float16)  # half precision is native too
        assert "cpu executor" in err16 and "0 on the host" in err16
        f = ember.jit(lambda x: ember.sort(x).values * 2)  # a unit the CPU leaves to numpy
        with debug(1):
            f(ember.ones(4))
        err = capsys.readouterr().err
        assert "on the host, with numpy: argsort (a sort or a binary search per row" in err and "1 on the host" in err


@pytest.mark.parametrize("level", [2, 3, 4])
def test_levels_2_to_4_add_ir_source_and_times(level, capsys):
    err = _trace_at(level, capsys)
    assert "--- traced IR" in err and "--- after dce" in err and "--- memory plan" in err
    if compiler.available():
        assert ("--- generated C" in err) == (level >= 3)
        assert ("--- native kernels" in err) == (level >= 4)
