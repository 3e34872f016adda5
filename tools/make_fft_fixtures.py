"""Generate tests/fixtures/fft.{json,safetensors}: torch.fft's and torch's complex ops' values and gradients.

    /tmp/tv/bin/python tools/make_fft_fixtures.py   (a venv with torch, numpy, safetensors)

The cases live in tests/_fft_cases.py, shared with tests/test_fft.py. Per case: the inputs, the
output, the weights `w` of the real loss sum(Re(out * conj(w))) (sum(out * w) for a real output;
drawn from a seed per case) and the loss's gradient with respect to every floating or complex
input. safetensors has no complex dtype, so a complex array is stored as a real one with a
trailing dimension of 2 (real, imaginary) and the json lists which keys are complex.
Keys: ``{case}.in{i}``, ``.out``, ``.w``, ``.grad{i}``. The json also records torch's dtype
promotion wherever a complex dtype or a Python complex takes part ("promotion").
"""
from __future__ import annotations

import json
import os
import sys
import zlib

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from _fft_cases import CASES  # noqa: E402

torch.set_num_threads(1)


def store(out: dict, complex_keys: list, key: str, a: np.ndarray) -> None:
    a = np.asarray(a)
    if a.dtype.kind == "c":
        complex_keys.append(key)
        a = np.stack([a.real, a.imag], -1)
    out[key] = np.array(a, order="C", copy=True)


NAMES = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool",
         "complex64", "complex128"]


def promotion() -> dict:
    """torch.result_type of 1-d tensors (a pair with a complex dtype) and with Python scalars."""
    vec = lambda n: torch.ones(3, dtype=getattr(torch, n))  # noqa: E731
    name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
    pairs = {f"{a},{b}": name(torch.result_type(vec(a), vec(b)))
             for a in NAMES for b in NAMES if "complex" in a + b}
    scalar = {f"{a},{k}": name(torch.result_type(vec(a), s)) for a in NAMES
              for k, s in (("bool", True), ("int", 2), ("float", 2.5), ("complex", 1j))
              if "complex" in a or k == "complex"}
    return {"pairs": pairs, "scalar": scalar}


def main() -> None:
    out, meta = {}, {}
    for name, fn, inputs, grads in CASES:
        ck: list = []
        ts = [torch.tensor(x, requires_grad=grads and x.dtype.kind in "fc") for x in inputs]
        y = fn(torch, *ts)
        for i, x in enumerate(inputs):
            store(out, ck, f"{name}.in{i}", x)
        store(out, ck, f"{name}.out", y.detach().resolve_conj().numpy())
        if grads:
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            w = rng.standard_normal(tuple(y.shape))
            if y.is_complex():
                w = w + 1j * rng.standard_normal(tuple(y.shape))
            wt = torch.tensor(w, dtype=y.dtype)
            loss = torch.real(y * wt.conj()).sum()
            need = [t for t in ts if t.requires_grad]
            gs = torch.autograd.grad(loss, need, allow_unused=True) if need else ()
            store(out, ck, f"{name}.w", w.astype(wt.numpy().dtype))
            it = iter(gs)
            for i, t in enumerate(ts):
                if t.requires_grad:
                    g = next(it)
                    store(out, ck, f"{name}.grad{i}", (g if g is not None else torch.zeros_like(t)).resolve_conj().numpy())
        meta[name] = {"complex": ck, "n_inputs": len(inputs), "grads": grads}
    save_file(out, os.path.join(ROOT, "tests", "fixtures", "fft.safetensors"))
    with open(os.path.join(ROOT, "tests", "fixtures", "fft.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": meta, "promotion": promotion()}, f, indent=1,
                  sort_keys=True)
        f.write("\n")
    print(f"{len(CASES)} cases, {len(out)} tensors")


if __name__ == "__main__":
    main()
