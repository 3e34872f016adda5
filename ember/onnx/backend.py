"""ember as an `onnx.backend.base.Backend`, for onnx's backend conformance suite.

Ops ember does not implement raise `unittest.SkipTest` (never `BackendIsNotSupposedToImplementIt`,
which the onnx runner counts as a pass), so a score over the suite is honest.
"""
from __future__ import annotations

import unittest

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from .._core.state import no_grad
from .errors import UnsupportedOpError
from .importer import OnnxModule, load_model_proto, to_tensor


class EmberRep(BackendRep):
    def __init__(self, module: OnnxModule):
        self.module = module

    def run(self, inputs, **kwargs):
        m = self.module
        if isinstance(inputs, dict):
            feeds = {k: to_tensor(np.asarray(v)) for k, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = {n: to_tensor(np.asarray(v)) for n, v in zip(m.input_names, inputs)}
        try:
            with no_grad():
                out = m(feeds)
        except UnsupportedOpError as e:
            raise unittest.SkipTest(str(e)) from None
        out = out if isinstance(out, tuple) else (out,)
        return tuple(o.numpy() for o in out)


class EmberBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> EmberRep:
        if not cls.supports_device(device):
            raise unittest.SkipTest(f"ember's ONNX backend runs on CPU, not {device}")
        try:
            return EmberRep(OnnxModule(load_model_proto(model)))
        except UnsupportedOpError as e:
            raise unittest.SkipTest(str(e)) from None

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        ins = [onnx.helper.make_tensor_value_info(f"in{i}", onnx.TensorProto.UNDEFINED, None)
               for i in range(len(inputs))]
        n = onnx.helper.make_node(node.op_type, [f"in{i}" for i in range(len(inputs))], list(node.output),
                                  domain=node.domain, **{a.name: onnx.helper.get_attribute_value(a)
                                                          for a in node.attribute})
        outs = [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
        model = onnx.helper.make_model(onnx.helper.make_graph([n], "node", ins, outs))
        return cls.prepare(model, device).run(list(inputs))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = EmberBackend.prepare
run_model = EmberBackend.run_model
run_node = EmberBackend.run_node
supports_device = EmberBackend.supports_device
