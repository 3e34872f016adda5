"""Generate tests/fixtures/linalg.{json,safetensors}: torch.linalg's values and gradients.

Run from the repository root with the separate torch virtualenv (torch is never an ember
dependency, not even a test one; see tools/make_fixtures.py for the scheme):

    /tmp/tv/bin/python tools/make_linalg_fixtures.py

Every input is drawn with numpy from a seed derived from the case's name, in float64, and cast
to the case's dtype (float32 or float64); torch runs single-threaded. Matrices are
well-conditioned: U diag(s) V^T with random orthogonal U, V and singular values spread over
[1, 3] (distinct, so SVD gradients are defined; random signs of det); symmetric positive-definite
ones (cholesky, eigh) are X X^T + n I.

Tensor keys (linalg.safetensors):
    {case}.{arg}        an input (A, B, x), named as torch's parameter
    {case}.out.{i}      the i-th output (of a named tuple, in order; one output: out.0)
    {case}.w.{i}        the fixed upstream weights of the case's loss
    {case}.grad.{arg}   d loss / d {arg}, for every input in the case's "grads"
Losses (`LOSSES`, re-implemented with ember in tests/test_linalg.py) are gauge-invariant where
the factors are defined up to signs, as PyTorch's own tests do: sign-normalised Q and R for qr;
eigenvalues, V * V and V diag(L) V^T for eigh; S, U * U, Vh * Vh and U @ Vh for svd (first
min(m, n) singular vectors when full_matrices=True).
"""
from __future__ import annotations

import json
import os
import zlib

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")
BASE_SEED = 20240611

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _c(a) -> np.ndarray:
    """A C-contiguous copy that keeps 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return np.array(a, order="C", copy=True)


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(BASE_SEED + zlib.crc32(name.encode()))


# ---------------------------------------------------------------- inputs
def _orth(rng, *shape):
    q, r = np.linalg.qr(rng.standard_normal(shape))
    return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


def wellcond(rng, *shape):
    """Batch of m x n matrices U diag(s) V^T, s distinct in [1, 3]."""
    *batch, m, n = shape
    k = min(m, n)
    s = np.linspace(1.0, 3.0, k) if k > 1 else np.array([2.0] * k)
    s = s + rng.uniform(0.0, 0.5 / max(k, 1), tuple(batch) + (k,))
    u = _orth(rng, *batch, m, m)[..., :k]
    v = _orth(rng, *batch, n, n)[..., :k]
    return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)


def spd(rng, *shape):
    x = rng.standard_normal(shape)
    return x @ np.swapaxes(x, -1, -2) + shape[-1] * np.eye(shape[-1])


def rank_deficient(rng, *shape, rank):
    *batch, m, n = shape
    return rng.standard_normal(tuple(batch) + (m, rank)) @ rng.standard_normal(tuple(batch) + (rank, n))


# ---------------------------------------------------------------- gauge-invariant losses
def _dsign(r):
    return torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).detach()


def loss_dot(outs, ws):
    return sum((o * w).sum() for o, w in zip(outs, ws))


def loss_qr(outs, ws):
    q, r = outs
    d = _dsign(r)
    return (ws[0] * (q * d[..., None, :])).sum() + (ws[1] * (d[..., :, None] * r)).sum()


def loss_eigh(outs, ws):
    lam, v = outs
    return ((ws[0] * lam).sum() + (ws[1] * v * v).sum()
            + (ws[2] * ((v * lam[..., None, :]) @ v.mT)).sum())


def loss_svd(outs, ws):
    u, s, vh = outs
    k = s.shape[-1]
    u, vh = u[..., :, :k], vh[..., :k, :]
    return (ws[0] * s).sum() + (ws[1] * u * u).sum() + (ws[2] * vh * vh).sum() + (ws[3] * (u @ vh)).sum()


def loss_first(outs, ws):  # slogdet: logabsdet only (sign has no gradient); lstsq: the solution
    i = 1 if len(outs) == 2 else 0
    return (outs[i] * ws[0]).sum()


LOSSES = {"dot": loss_dot, "qr": loss_qr, "eigh": loss_eigh, "svd": loss_svd, "slogdet": loss_first,
          "lstsq": loss_first}


def weight_shapes(loss: str, outs) -> list:
    if loss == "qr":
        return [outs[0].shape, outs[1].shape]
    if loss == "eigh":
        n = outs[0].shape[-1]
        return [outs[0].shape, outs[1].shape, outs[1].shape[:-2] + (n, n)]
    if loss == "svd":
        u, s, vh = outs
        k = s.shape[-1]
        return [s.shape, u.shape[:-1] + (k,), vh.shape[:-2] + (k, vh.shape[-1]), u.shape[:-1] + (vh.shape[-1],)]
    if loss in ("slogdet", "lstsq"):
        return [outs[1].shape if loss == "slogdet" else outs[0].shape]
    return [o.shape for o in outs]


# ---------------------------------------------------------------- cases
def C(fn, inputs, kwargs=None, loss="dot", grads=None, values_only=False):
    return {"fn": fn, "gen": inputs, "kwargs": kwargs or {}, "loss": loss,
            "grads": [] if values_only else (grads if grads is not None else None)}


def W(*shape):
    return lambda rng: wellcond(rng, *shape)


def S(*shape):
    return lambda rng: spd(rng, *shape)


def R(*shape):
    return lambda rng: rng.standard_normal(shape)


CASES = {
    # inverses and determinants
    "inv": C("inv", {"A": W(3, 3)}), "inv_batched": C("inv", {"A": W(2, 3, 4, 4)}),
    "inv_1x1": C("inv", {"A": W(1, 1)}), "inv_empty_batch": C("inv", {"A": W(0, 3, 3)}),
    "det": C("det", {"A": W(3, 3)}), "det_batched": C("det", {"A": W(2, 3, 4, 4)}),
    "det_1x1": C("det", {"A": W(1, 1)}), "det_empty_batch": C("det", {"A": W(0, 3, 3)}),
    "slogdet": C("slogdet", {"A": W(2, 3, 4, 4)}, loss="slogdet"),
    "slogdet_1x1": C("slogdet", {"A": W(1, 1)}, loss="slogdet"),
    # solvers
    "solve": C("solve", {"A": W(2, 3, 3), "B": R(2, 3, 2)}),
    "solve_vector": C("solve", {"A": W(3, 3), "B": R(3)}),
    "solve_batched_vector": C("solve", {"A": W(2, 3, 3), "B": R(2, 3)}),
    "solve_broadcast": C("solve", {"A": W(3, 3), "B": R(2, 3, 2)}),
    "solve_right": C("solve", {"A": W(2, 3, 3), "B": R(2, 4, 3)}, {"left": False}),
    "solve_1x1": C("solve", {"A": W(1, 1), "B": R(1, 1)}),
    "solve_empty_batch": C("solve", {"A": W(0, 3, 3), "B": R(0, 3, 2)}),
    "solve_triangular_upper": C("solve_triangular", {"A": W(2, 3, 3), "B": R(2, 3, 2)}, {"upper": True}),
    "solve_triangular_lower_unit": C("solve_triangular", {"A": W(3, 3), "B": R(3, 2)},
                                     {"upper": False, "unitriangular": True}),
    "solve_triangular_right": C("solve_triangular", {"A": W(2, 3, 3), "B": R(2, 4, 3)},
                                {"upper": False, "left": False}),
    "lstsq_tall": C("lstsq", {"A": W(2, 5, 3), "B": R(2, 5, 2)}, loss="lstsq"),
    "lstsq_wide": C("lstsq", {"A": W(3, 5), "B": R(3, 2)}, loss="lstsq"),
    "lstsq_vector": C("lstsq", {"A": W(2, 5, 3), "B": R(2, 5)}, loss="lstsq"),
    "pinv_tall": C("pinv", {"A": W(4, 3)}), "pinv_wide": C("pinv", {"A": W(2, 3, 5)}),
    "pinv_hermitian": C("pinv", {"A": S(3, 3)}, {"hermitian": True}),
    "pinv_rank_deficient": C("pinv", {"A": lambda rng: rank_deficient(rng, 4, 3, rank=2)}, values_only=True),
    # decompositions
    "cholesky": C("cholesky", {"A": S(2, 3, 3)}), "cholesky_upper": C("cholesky", {"A": S(4, 4)}, {"upper": True}),
    "cholesky_1x1": C("cholesky", {"A": S(1, 1)}), "cholesky_empty_batch": C("cholesky", {"A": S(0, 3, 3)}),
    "qr_tall": C("qr", {"A": W(5, 3)}, loss="qr"), "qr_square_batched": C("qr", {"A": W(2, 3, 3, 3)}, loss="qr"),
    "qr_wide": C("qr", {"A": W(2, 3, 5)}, loss="qr"), "qr_1x1": C("qr", {"A": W(1, 1)}, loss="qr"),
    "qr_complete_tall": C("qr", {"A": W(5, 3)}, {"mode": "complete"}, loss="qr", values_only=True),
    "qr_complete_square": C("qr", {"A": W(3, 3)}, {"mode": "complete"}, loss="qr"),
    "qr_r": C("qr", {"A": W(5, 3)}, {"mode": "r"}, values_only=True),
    "eigh": C("eigh", {"A": S(2, 3, 3)}, loss="eigh"),
    "eigh_upper": C("eigh", {"A": S(4, 4)}, {"UPLO": "U"}, loss="eigh"),
    "eigh_1x1": C("eigh", {"A": S(1, 1)}, loss="eigh"), "eigh_empty_batch": C("eigh", {"A": S(0, 3, 3)}, loss="eigh"),
    "eigvalsh": C("eigvalsh", {"A": S(2, 3, 4, 4)}),
    "svd_tall": C("svd", {"A": W(5, 3)}, {"full_matrices": False}, loss="svd"),
    "svd_wide": C("svd", {"A": W(2, 3, 5)}, {"full_matrices": False}, loss="svd"),
    "svd_square_batched": C("svd", {"A": W(2, 3, 3, 3)}, {"full_matrices": False}, loss="svd"),
    "svd_full_tall": C("svd", {"A": W(5, 3)}, {"full_matrices": True}, loss="svd"),
    "svd_full_wide": C("svd", {"A": W(2, 3, 5)}, {"full_matrices": True}, loss="svd"),
    "svd_1x1": C("svd", {"A": W(1, 1)}, {"full_matrices": False}, loss="svd"),
    "svdvals": C("svdvals", {"A": W(2, 5, 3)}), "svdvals_empty_batch": C("svdvals", {"A": W(0, 3, 4)}),
    "matrix_rank": C("matrix_rank", {"A": lambda rng: rank_deficient(rng, 2, 5, 4, rank=2)}, values_only=True),
    "matrix_rank_hermitian": C("matrix_rank", {"A": lambda rng: (lambda x: x @ x.T)(rng.standard_normal((4, 3)))},
                               {"hermitian": True}, values_only=True),
    # norms
    "vector_norm": C("vector_norm", {"x": R(2, 3, 4)}),
    "vector_norm_dim": C("vector_norm", {"x": R(2, 3, 4)}, {"ord": 3, "dim": [0, 2], "keepdim": True}),
    "vector_norm_inf": C("vector_norm", {"x": R(2, 3, 4)}, {"ord": "inf", "dim": 1}),
    "vector_norm_neg_inf": C("vector_norm", {"x": R(3, 4)}, {"ord": "-inf", "dim": -1}),
    "vector_norm_1": C("vector_norm", {"x": R(3, 4)}, {"ord": 1}),
    "vector_norm_0": C("vector_norm", {"x": R(3, 4)}, {"ord": 0, "dim": 0}),
    "vector_norm_half": C("vector_norm", {"x": R(3, 4)}, {"ord": 0.5, "dim": 1}),
    "norm_default": C("norm", {"A": R(2, 3, 4)}),
    "norm_vector_ord": C("norm", {"A": R(5)}, {"ord": -2}),
    "norm_dim_int": C("norm", {"A": R(3, 4)}, {"dim": 1}),
}
for _ord in ("fro", "nuc", 2, -2, 1, -1, "inf", "-inf"):
    CASES[f"matrix_norm_{_ord}"] = C("matrix_norm", {"A": W(2, 4, 3)}, {"ord": _ord})
    CASES[f"norm_2d_{_ord}"] = C("norm", {"A": W(3, 4)}, {"ord": _ord})
CASES["matrix_norm_dims_keepdim"] = C("matrix_norm", {"A": R(3, 2, 4)}, {"ord": "nuc", "dim": [2, 0], "keepdim": True})
CASES["matrix_norm_1_dims"] = C("matrix_norm", {"A": R(3, 2, 4)}, {"ord": 1, "dim": [0, 2]})


def torch_kwargs(kwargs: dict) -> dict:
    out = {}
    for k, v in kwargs.items():
        if k == "ord" and v in ("inf", "-inf"):
            v = float(v)
        if k == "dim" and isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def run_case(name: str, case: dict, dtype: str, tensors: dict) -> dict:
    rng = rng_for(f"{name}.{dtype}")
    td = DTYPES[dtype]
    arrays = {arg: np.asarray(gen(rng), np.float64).astype(dtype) for arg, gen in case["gen"].items()}
    grads = case["grads"]
    if grads is None:
        grads = list(arrays)
    ins = {arg: torch.tensor(a, dtype=td, requires_grad=arg in grads) for arg, a in arrays.items()}
    res = getattr(torch.linalg, case["fn"])(*ins.values(), **torch_kwargs(case["kwargs"]))
    outs = list(res) if isinstance(res, tuple) else [res]
    key = f"{name}.{dtype}"
    for arg, a in arrays.items():
        tensors[f"{key}.{arg}"] = _c(a)
    for i, o in enumerate(outs):
        tensors[f"{key}.out.{i}"] = _c(o.detach().numpy())
    n_w = 0
    if grads:
        ws = [torch.tensor(rng.standard_normal(tuple(s)), dtype=td) for s in weight_shapes(case["loss"], outs)]
        n_w = len(ws)
        loss = LOSSES[case["loss"]](outs, ws)
        gs = torch.autograd.grad(loss, [ins[a] for a in grads], allow_unused=True, materialize_grads=True)
        for i, w in enumerate(ws):
            tensors[f"{key}.w.{i}"] = _c(w.numpy())
        for a, g in zip(grads, gs):
            tensors[f"{key}.grad.{a}"] = _c(g.numpy())
    return {"fn": case["fn"], "dtype": dtype, "inputs": list(arrays), "kwargs": case["kwargs"], "loss": case["loss"],
            "outputs": len(outs), "weights": n_w, "grads": grads}


def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    tensors, cases = {}, {}
    for name, case in CASES.items():
        for dtype in DTYPES:
            cases[f"{name}.{dtype}"] = run_case(name, case, dtype, tensors)
    path = os.path.join(OUT_DIR, "linalg.safetensors")
    save_file(tensors, path, metadata={"generator": f"tools/make_linalg_fixtures.py, torch {torch.__version__}"})
    os.chmod(path, 0o644)
    with open(os.path.join(OUT_DIR, "linalg.json"), "w") as f:
        json.dump({
            "torch_version": torch.__version__, "seed": BASE_SEED,
            "call": ("torch.linalg.<fn>(*[tensor[f'{case}.{arg}'] for arg in inputs], **kwargs) (ord 'inf'/'-inf' "
                     "as floats, dim lists as tuples); outputs out.0..; loss(outputs, w.0..) backward -> grad.<arg>"),
            "losses": {"dot": "sum_i <out_i, w_i>", "slogdet": "<logabsdet, w0>", "lstsq": "<solution, w0>",
                       "qr": "<Q D, w0> + <D R, w1>, D = sign(diag R) (constant)",
                       "eigh": "<L, w0> + <V * V, w1> + <V diag(L) V^T, w2>",
                       "svd": "<S, w0> + <U * U, w1> + <Vh * Vh, w2> + <U @ Vh, w3> (first k = min(m, n) vectors)"},
            "cases": cases,
        }, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"{len(cases)} cases, {len(tensors)} tensors, "
          f"{sum(t.nbytes for t in tensors.values()) / 1024:.0f} KiB -> {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
