"""Generate the PyTorch reference fixtures for the op long tail: tests/fixtures/longtail.{safetensors,json}.

Run from the repository root with a separate environment that has torch (never an ember
dependency):

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 numpy safetensors
    /tmp/tv/bin/python tools/make_longtail_fixtures.py

The cases live in tests/_longtail_cases.py, shared with tests/test_ops_longtail.py, which runs
the same functions with ember. Per case and dtype: the inputs, every output (a tensor, or each
tensor of a tuple/namedtuple, or a Python number), and for cases with `grads` the gradients of
sum(out_k * gout_k) over the float outputs with respect to the named inputs, gout drawn with
numpy from the case's seed. Arrays are stored C-ordered (safetensors writes the raw buffer, and
torch may return a sort of a transposed view in column-major layout). Deterministic: torch single-threaded, files rewritten from scratch.

Keys: ``{case}.{dtype}.in{i}``, ``.out{k}``, ``.gout{k}``, ``.grad{i}``; the JSON lists per case
and dtype the number of outputs, which outputs are tuples, and which inputs have gradients.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from _longtail_cases import CASES, rng_for  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def flat(out) -> tuple[list, bool]:
    if isinstance(out, torch.Tensor):
        return [out], False
    if isinstance(out, (tuple, list)):
        return list(out), True
    return [torch.tensor(out)], False


def main() -> None:
    tensors, meta = {}, {}
    for case in CASES:
        for dtype in case.dtypes:
            key = f"{case.name}.{dtype}"
            arrays = case.arrays(dtype)
            ts = [torch.from_numpy(a.copy()) for a in arrays]
            names = case.names()
            want = [i for i, n in enumerate(names) if n in case.grads]
            for i in want:
                ts[i].requires_grad_(True)
            outs, is_tuple = flat(case.fn(torch, *ts))
            for i, a in enumerate(arrays):
                tensors[f"{key}.in{i}"] = np.array(a, order="C")
            for k, o in enumerate(outs):
                tensors[f"{key}.out{k}"] = np.array(o.detach().numpy(), order="C")
            if want:
                r = rng_for(key + ".gout")
                loss = 0
                for k, o in enumerate(outs):
                    if o.dtype.is_floating_point and o.requires_grad:
                        g = r.standard_normal(tuple(o.shape)).astype(dtype)
                        tensors[f"{key}.gout{k}"] = g
                        loss = loss + (o * torch.from_numpy(g)).sum()
                grads = torch.autograd.grad(loss, [ts[i] for i in want], allow_unused=True)
                for i, g in zip(want, grads):
                    tensors[f"{key}.grad{i}"] = np.array(
                        (g if g is not None else torch.zeros_like(ts[i])).numpy(), order="C")
            meta[key] = {"outputs": len(outs), "tuple": is_tuple, "grads": want,
                         "out_dtypes": [str(o.dtype).replace("torch.", "") for o in outs]}
    os.makedirs(os.path.join(ROOT, "tests", "fixtures"), exist_ok=True)
    save_file(tensors, os.path.join(ROOT, "tests", "fixtures", "longtail.safetensors"))
    with open(os.path.join(ROOT, "tests", "fixtures", "longtail.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": meta}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(meta)} case/dtype pairs, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
