"""Small synthetic data sets for demos and examples."""
from __future__ import annotations

import numpy as np


def spiral(n_per_class: int = 200, classes: int = 3, seed: int = 0):
    """(x float32 (N, 2), y int64 (N,)): `classes` interleaved noisy spirals in 2-D, as tensors."""
    from ..tensor import tensor
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(c * 4.2, (c + 1) * 4.2, n_per_class) + rng.normal(0, 0.2, n_per_class)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
        ys.append(np.full(n_per_class, c))
    return tensor(np.concatenate(xs).astype(np.float32)), tensor(np.concatenate(ys).astype(np.int64))
