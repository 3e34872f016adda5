"""Record PyTorch's results for the edge cases in tests/_edge_cases.py.

Run from the repository root in a separate virtualenv that has torch (never an ember dependency):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy safetensors
    /tmp/torchenv/bin/python tools/make_edge_fixtures.py

Writes tests/fixtures/edge.safetensors ({case}.out and {case}.grad.{input}, the gradients of
out.backward(ones)) and tests/fixtures/edge.json (the torch version and each case's keys).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from _edge_cases import CASES  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def main() -> None:
    tensors, records = {}, []
    for name, inputs, grad, _, fn in CASES:
        ts = {k: torch.tensor(v, requires_grad=k in grad) for k, v in inputs.items()}
        out = fn(torch, F, **ts)
        rec = {"name": name, "out_dtype": str(out.dtype).replace("torch.", ""), "grads": list(grad)}
        tensors[f"{name}.out"] = np.array(out.detach().numpy(), order="C")  # (ascontiguousarray makes 0-d 1-d)
        if grad:
            out.backward(torch.ones_like(out))
            for k in grad:
                tensors[f"{name}.grad.{k}"] = np.array(ts[k].grad.numpy(), order="C")
        records.append(rec)
    out_dir = os.path.join(ROOT, "tests", "fixtures")
    save_file(tensors, os.path.join(out_dir, "edge.safetensors"))
    with open(os.path.join(out_dir, "edge.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": records}, f, indent=1)
        f.write("\n")
    print(f"{len(records)} cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
