"""Generate tests/fixtures/quant.{json,safetensors}: torch.ao.quantization's and onnxruntime's answers.

    /tmp/tvq/bin/python tools/make_quant_fixtures.py
    (a venv: python3 -m venv /tmp/tvq && /tmp/tvq/bin/pip install torch==2.13.0 numpy safetensors
     onnxruntime==1.31.1 onnx)

Read by tests/test_deploy_quant.py and tests/test_deploy_quant_calib.py without torch or onnxruntime.
Every input is drawn here from a fixed seed and stored with the answers. Keys:

- ``obs.{case}.x{j}``: the batches an observer saw; ``.scale`` / ``.zp``: calculate_qparams();
  ``.probe``: a tensor quantized with those qparams, ``.q`` its int_repr(), ``.dq`` its dequantize().
  torch.quantize_per_tensor / quantize_per_channel; json: the observer's class and arguments.
- ``qpt.{case}.*``: quantize_per_tensor / per_channel with explicit qparams (ties at .5 included).
- ``fq.{case}.x``, ``.out``, ``.w``, ``.grad``: torch.fake_quantize_per_tensor_affine /
  fake_quantize_per_channel_affine forward and the gradient of sum(out * w) (the straight-through
  estimator's mask times w).
- ``ort.{case}.x{j}``, ``.hist``, ``.edges``, ``.lo``, ``.hi``: onnxruntime.quantization's
  HistogramCollector ("entropy", the EntropyCalibrater's collector) after collecting each batch.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization.calibrate import HistogramCollector
from safetensors.numpy import save_file
from torch.ao.quantization import observer as tobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)
OUT: dict = {}
META: dict = {"obs": {}, "qpt": {}, "fq": {}, "ort": {}}
TDT = {"uint8": torch.quint8, "int8": torch.qint8}


def put(key: str, a) -> None:
    OUT[key] = np.array(np.asarray(a), order="C", copy=True)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def observer_case(name: str, cls: str, kwargs: dict, batches: list, probe: np.ndarray) -> None:
    kw = dict(kwargs)
    dtype = kw.pop("dtype")
    qscheme = getattr(torch, kw.pop("qscheme"))
    ob = getattr(tobs, cls)(dtype=TDT[dtype], qscheme=qscheme, **kw)
    for j, b in enumerate(batches):
        ob(torch.tensor(b))
        put(f"obs.{name}.x{j}", b)
    scale, zp = ob.calculate_qparams()
    put(f"obs.{name}.scale", scale.numpy().astype(np.float32))
    put(f"obs.{name}.zp", zp.numpy().astype(np.int64))
    t = torch.tensor(probe)
    if "ch_axis" in kwargs:
        q = torch.quantize_per_channel(t, scale.to(torch.float64), zp.to(torch.int64), kwargs["ch_axis"], TDT[dtype])
    else:
        q = torch.quantize_per_tensor(t, float(scale), int(zp), TDT[dtype])
    put(f"obs.{name}.probe", probe)
    put(f"obs.{name}.q", q.int_repr().numpy())
    put(f"obs.{name}.dq", q.dequantize().numpy())
    META["obs"][name] = {"cls": cls, "kwargs": kwargs, "n": len(batches)}


def observers() -> None:
    r = rng(1)
    base = [f32(r.normal(0.3, 2.0, (64,))) for _ in range(3)]
    probe = np.concatenate([base[0], f32([-100.0, 100.0, 0.0, -0.0])])
    for dtype, qs in (("uint8", "per_tensor_affine"), ("int8", "per_tensor_affine"),
                      ("int8", "per_tensor_symmetric"), ("uint8", "per_tensor_symmetric")):
        observer_case(f"mm_{dtype}_{qs.split('_')[-1]}", "MinMaxObserver", {"dtype": dtype, "qscheme": qs},
                      base, probe)
    observer_case("mm_uint8_rr", "MinMaxObserver", {"dtype": "uint8", "qscheme": "per_tensor_affine",
                                                   "reduce_range": True}, base, probe)
    observer_case("mm_int8_restricted", "MinMaxObserver", {"dtype": "int8", "qscheme": "per_tensor_symmetric",
                                                          "quant_min": -127, "quant_max": 127}, base, probe)
    observer_case("mm_uint8_custom_sym", "MinMaxObserver", {"dtype": "uint8", "qscheme": "per_tensor_symmetric",
                                                           "quant_min": 0, "quant_max": 127}, base, probe)
    zeros = [np.zeros(16, np.float32)]
    for dtype, qs in (("uint8", "per_tensor_affine"), ("int8", "per_tensor_affine"), ("int8", "per_tensor_symmetric")):
        observer_case(f"zeros_{dtype}_{qs.split('_')[-1]}", "MinMaxObserver", {"dtype": dtype, "qscheme": qs},
                      zeros, f32([0.0, 1e-8, -1e-6, 1.0]))
    observer_case("const5", "MinMaxObserver", {"dtype": "uint8", "qscheme": "per_tensor_affine"},
                  [np.full(8, 5.0, np.float32)], f32([0.0, 5.0, 2.5, 7.0]))
    observer_case("negative", "MinMaxObserver", {"dtype": "int8", "qscheme": "per_tensor_affine"},
                  [f32(-np.abs(r.normal(0, 3, 32)) - 1)], f32(-np.abs(r.normal(0, 3, 32))))
    observer_case("tiny", "MinMaxObserver", {"dtype": "uint8", "qscheme": "per_tensor_affine"},
                  [f32(r.normal(0, 1e-7, 32))], f32(r.normal(0, 1e-7, 32)))
    for c in (0.01, 0.3):
        observer_case(f"ma_{c}", "MovingAverageMinMaxObserver",
                      {"dtype": "uint8", "qscheme": "per_tensor_affine", "averaging_constant": c},
                      [f32(r.normal(0, 1 + j, 50)) for j in range(5)], base[1])
    ranges = np.geomspace(0.1, 10.0, 8).astype(np.float32)
    w = f32(r.uniform(-1, 1, (8, 16)) * ranges[:, None] + 0.05 * ranges[:, None])
    for dtype, qs in (("uint8", "per_channel_affine"), ("int8", "per_channel_symmetric"),
                      ("int8", "per_channel_affine")):
        observer_case(f"pc_{dtype}_{qs.split('_')[-1]}", "PerChannelMinMaxObserver",
                      {"dtype": dtype, "qscheme": qs, "ch_axis": 0}, [w], w)
    conv = f32(r.normal(0, 1, (3, 4, 3, 3)) * np.float32([0.2, 1, 3, 8])[None, :, None, None])
    observer_case("pc_axis1", "PerChannelMinMaxObserver",
                  {"dtype": "int8", "qscheme": "per_channel_symmetric", "ch_axis": 1},
                  [conv, f32(conv * 1.5)], conv)
    observer_case("pc_zero_channel", "PerChannelMinMaxObserver",
                  {"dtype": "uint8", "qscheme": "per_channel_affine", "ch_axis": 0},
                  [np.concatenate([np.zeros((1, 5), np.float32), f32(r.normal(0, 1, (2, 5)))])],
                  f32(r.normal(0, 1, (3, 5))))


def explicit() -> None:
    r = rng(2)
    ties = f32(np.arange(-300, 301) * 0.25)  # x / 0.5 = k / 2: every .5 tie, far outside the range too
    for dtype, scale, zp in (("uint8", 0.5, 3), ("int8", 0.5, 0), ("int8", 0.5, -7), ("uint8", 0.1, 128),
                             ("int8", 0.0123, 5)):
        name = f"{dtype}_{scale}_{zp}"
        x = ties if scale == 0.5 else f32(np.concatenate([ties * scale * 4, r.normal(0, 3, 50)]))
        q = torch.quantize_per_tensor(torch.tensor(x), scale, zp, TDT[dtype])
        put(f"qpt.{name}.x", x)
        put(f"qpt.{name}.q", q.int_repr().numpy())
        put(f"qpt.{name}.dq", q.dequantize().numpy())
        META["qpt"][name] = {"dtype": dtype, "scale": scale, "zp": zp, "axis": None}
    x = f32(np.arange(-60, 60).reshape(3, 40) * 0.125)
    scales, zps = np.float32([0.5, 0.25, 1.0]), np.int64([0, 3, -2])
    q = torch.quantize_per_channel(torch.tensor(x), torch.tensor(scales, dtype=torch.float64),
                                   torch.tensor(zps), 0, torch.qint8)
    put("qpt.pc_ties.x", x)
    put("qpt.pc_ties.scale", scales)
    put("qpt.pc_ties.zp", zps)
    put("qpt.pc_ties.q", q.int_repr().numpy())
    put("qpt.pc_ties.dq", q.dequantize().numpy())
    META["qpt"]["pc_ties"] = {"dtype": "int8", "axis": 0}


def fq_case(name: str, x: np.ndarray, scale, zp, qmin: int, qmax: int, axis=None) -> None:
    t = torch.tensor(x, requires_grad=True)
    if axis is None:
        y = torch.fake_quantize_per_tensor_affine(t, float(scale), int(zp), qmin, qmax)
    else:
        y = torch.fake_quantize_per_channel_affine(t, torch.tensor(scale, dtype=torch.float32),
                                                   torch.tensor(zp, dtype=torch.int32), axis, qmin, qmax)
    w = f32(rng(len(name)).normal(size=x.shape))
    (y * torch.tensor(w)).sum().backward()
    put(f"fq.{name}.x", x)
    put(f"fq.{name}.out", y.detach().numpy())
    put(f"fq.{name}.w", w)
    put(f"fq.{name}.grad", t.grad.numpy() if t.grad is not None else np.zeros_like(x))
    if axis is not None:
        put(f"fq.{name}.scale", f32(scale))
        put(f"fq.{name}.zp", np.asarray(zp, np.int64))
    META["fq"][name] = {"scale": None if axis is not None else float(scale), "zp": None if axis is not None else int(zp),
                        "qmin": qmin, "qmax": qmax, "axis": axis}


def fake_quant() -> None:
    r = rng(3)
    ties = f32(np.arange(-300, 301) * 0.25)
    fq_case("u8_ties", ties, 0.5, 3, 0, 255)
    fq_case("i8_ties", ties, 0.5, 0, -128, 127)
    fq_case("u4_ties", ties, 0.5, 8, 0, 15)
    fq_case("i4_ties", ties, 0.5, 0, -8, 7)
    fq_case("u8_random", f32(r.normal(0, 40, (5, 7))), 0.1, 128, 0, 255)
    fq_case("i8_random", f32(r.normal(0, 3, (4, 9))), 0.0137, -3, -128, 127)
    fq_case("scalar", f32(1.37), 0.1, 0, -128, 127)
    fq_case("scalar_out", f32(-1000.0), 0.1, 0, -128, 127)
    fq_case("empty", np.zeros((0, 3), np.float32), 0.1, 0, -128, 127)
    fq_case("pc_ties", f32(np.arange(-60, 60).reshape(3, 40) * 0.125), [0.5, 0.25, 1.0], [0, 3, -2], -128, 127, 0)
    fq_case("pc_axis1", f32(r.normal(0, 2, (2, 4, 5))), [0.01, 0.02, 0.05, 0.3], [0, 10, 200, 128], 0, 255, 1)
    fq_case("pc_axis_last", f32(r.normal(0, 2, (6, 3))), [0.011, 0.023, 0.07], [0, 0, 0], -8, 7, 1)


def ort_case(name: str, batches: list, num_bins: int, num_quantized_bins: int) -> None:
    col = HistogramCollector(method="entropy", symmetric=False, num_bins=num_bins,
                             num_quantized_bins=num_quantized_bins, percentile=99.999, scenario="same")
    for j, b in enumerate(batches):
        col.collect({"act": b})
        put(f"ort.{name}.x{j}", b)
    hist, edges = col.histogram_dict["act"][:2]
    lo, hi = col.compute_collection_result()["act"][:2]
    put(f"ort.{name}.hist", hist.astype(np.int64))
    put(f"ort.{name}.edges", edges)
    put(f"ort.{name}.lo", np.asarray(lo))
    put(f"ort.{name}.hi", np.asarray(hi))
    META["ort"][name] = {"n": len(batches), "num_bins": num_bins, "num_quantized_bins": num_quantized_bins}


def ort() -> None:
    r = rng(4)

    def longtail(n, k):
        x = r.normal(0, 1, n).astype(np.float32)
        idx = r.choice(n, k, replace=False)
        x[idx] = np.float32(50.0) * r.choice([-1.0, 1.0], k) * r.uniform(0.8, 1.0, k)
        return x
    ort_case("longtail", [longtail(20000, 4), longtail(20000, 2) * np.float32(1.1)], 2048, 128)
    ort_case("longtail_one", [longtail(30000, 5)], 1024, 128)
    ort_case("relu_like", [np.maximum(r.standard_t(3, 20000), 0).astype(np.float32)], 2048, 128)


def main() -> None:
    observers()
    explicit()
    fake_quant()
    ort()
    path = os.path.join(ROOT, "tests", "fixtures", "quant.safetensors")
    save_file(OUT, path)
    os.chmod(path, 0o644)
    META["versions"] = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    with open(os.path.join(ROOT, "tests", "fixtures", "quant.json"), "w") as f:
        json.dump(META, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(OUT)} tensors")


if __name__ == "__main__":
    main()
