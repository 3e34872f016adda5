"""Devices on the tensor side: `ember.device`, `Tensor.device`, `.to`/`.cpu`/`.cuda`, `device=` on the
creation functions, and one clear error for a device that is not available (only the CPU exists)."""
import copy
import pickle

import numpy as np
import pytest

import ember
from ember.backend import CPU, Device, as_device


def test_ember_device_names_the_cpu():
    d = ember.device("cpu")
    assert d is CPU and ember.device is Device and isinstance(d, ember.device)
    assert ember.device("cpu:0") is CPU and ember.device(d) is CPU and ember.device("cpu", 0) is CPU
    assert d.type == "cpu" and str(d) == "cpu" and repr(d) == "device(type='cpu')"
    assert d == "cpu" and d == "cpu:0" and d != "cuda" and d != "tpu" and hash(d) == hash(ember.device("cpu"))
    assert pickle.loads(pickle.dumps(d)) is CPU and copy.deepcopy(d) is CPU
    assert as_device("cpu") is CPU


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1", 0, 3])
def test_cuda_is_refused_naming_the_extra(spec):
    with pytest.raises(ember.EmberError, match=r"no CUDA device is available.*ember\[cuda\]"):
        ember.device(spec) if isinstance(spec, str) else as_device(spec)


@pytest.mark.parametrize("spec, msg", [("tpu", "unknown device 'tpu'"), ("mps:0", "unknown device"),
                                       ("cpu:1", "no device 'cpu:1'"), ("cpu:x", "bad device"),
                                       (1.5, "expected a device")])
def test_unknown_devices_are_refused(spec, msg):
    with pytest.raises(ember.EmberError, match=msg):
        as_device(spec)


def test_tensors_carry_their_device():
    for t in (ember.tensor([1.0]), ember.zeros(2, 3), ember.arange(4), ember.from_numpy(np.zeros(2)),
              ember.ones(2, requires_grad=True) * 2, ember.ones(4)[1:3], ember.ones(2).to("cpu")):
        assert t.device is CPU and t.device == "cpu" and not t.is_cuda
    net = ember.nn.Linear(2, 3)
    assert all(p.device is CPU for p in net.parameters())
    x = ember.ones(2, requires_grad=True)
    (x * 3).sum().backward()
    assert x.grad.device is CPU


def test_to_as_in_pytorch():
    t = ember.tensor([1.5, -2.5])
    assert t.to("cpu") is t and t.to(ember.device("cpu")) is t and t.to(device="cpu") is t and t.cpu() is t
    assert t.to(ember.float32) is t and t.to("float32") is t
    for u in (t.to(ember.float64), t.to("cpu", ember.float64), t.to(ember.device("cpu"), "float64"),
              t.to(device="cpu", dtype=ember.float64), t.to(ember.tensor([1.0], dtype=ember.float64)),
              t.to("cpu", dtype=ember.float64, non_blocking=True)):
        assert u.dtype is ember.float64 and u.device is CPU and u.tolist() == [1.5, -2.5]
    c = t.to("cpu", copy=True)
    assert c is not t and not np.shares_memory(c.numpy(), t.numpy()) and c.tolist() == t.tolist()
    x = ember.ones(2, requires_grad=True)
    y = x.to("cpu", ember.float64)
    y.sum().backward()  # the conversion is differentiable
    assert x.grad.tolist() == [1.0, 1.0] and x.grad.dtype is ember.float32


@pytest.mark.parametrize("make", [
    lambda: ember.ones(2).to("cuda"), lambda: ember.ones(2).to("cuda:0", ember.float64),
    lambda: ember.ones(2).to(device="cuda"), lambda: ember.ones(2).to(0), lambda: ember.ones(2).cuda(),
    lambda: ember.tensor([1.0], device="cuda"), lambda: ember.as_tensor(np.zeros(2), device="cuda"),
    lambda: ember.Tensor([1.0], device="cuda"),
    lambda: ember.zeros(2, device="cuda"), lambda: ember.ones(2, device="cuda"), lambda: ember.empty(2, device="cuda"),
    lambda: ember.full((2,), 1.0, device="cuda"), lambda: ember.arange(3, device="cuda"),
    lambda: ember.linspace(0, 1, 3, device="cuda"), lambda: ember.eye(2, device="cuda"),
    lambda: ember.zeros_like(ember.ones(2), device="cuda"), lambda: ember.ones_like(ember.ones(2), device="cuda"),
    lambda: ember.full_like(ember.ones(2), 3.0, device="cuda"), lambda: ember.empty_like(ember.ones(2), device="cuda"),
    lambda: ember.rand(2, device="cuda"), lambda: ember.randn(2, device="cuda"),
    lambda: ember.randint(0, 5, (2,), device="cuda"), lambda: ember.randperm(3, device="cuda"),
    lambda: ember.nn.Linear(2, 2, device="cuda"), lambda: ember.nn.Linear(2, 2).to("cuda"),
    lambda: ember.load(__file__, map_location="cuda"),
])
def test_an_unavailable_device_is_refused_everywhere(make):
    with pytest.raises(ember.EmberError, match="no CUDA device is available"):
        make()


def test_creation_functions_take_device():
    for t in (ember.zeros(2, device="cpu"), ember.ones(2, device=CPU), ember.empty(2, device="cpu:0"),
              ember.full((2,), 1.0, device="cpu"), ember.arange(3, device="cpu"), ember.eye(2, device="cpu"),
              ember.linspace(0, 1, 3, device="cpu"), ember.tensor([1], device="cpu"),
              ember.as_tensor(np.zeros(2), device="cpu"), ember.zeros_like(ember.ones(2), device="cpu"),
              ember.ones_like(ember.ones(2), device="cpu"), ember.full_like(ember.ones(2), 2, device="cpu"),
              ember.rand(2, device="cpu"), ember.randn(2, device="cpu"), ember.randint(0, 3, (2,), device="cpu"),
              ember.randperm(3, device="cpu")):
        assert t.device is CPU


def test_a_refused_draw_leaves_the_generator_as_it_was():
    ember.manual_seed(3)
    with pytest.raises(ember.EmberError):
        ember.randn(4, device="cuda")
    a = ember.randn(4).tolist()
    ember.manual_seed(3)
    assert ember.randn(4).tolist() == a
