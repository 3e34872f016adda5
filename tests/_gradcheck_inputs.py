"""Input builders shared by the gradcheck test files: float64 leaves, int64 indices, seeded RNGs."""
import numpy as np
from hypothesis import strategies as st

import ember


def T(a, requires_grad=True):
    """A float64 tensor (a leaf that requires grad by default)."""
    return ember.tensor(np.asarray(a, np.float64), dtype=ember.float64, requires_grad=requires_grad)


def I(a):
    """An int64 tensor (indices, targets)."""
    return ember.tensor(np.asarray(a, np.int64), dtype=ember.int64)


def rng_from(data) -> np.random.Generator:
    """A numpy generator seeded by hypothesis (so failures shrink and replay)."""
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
