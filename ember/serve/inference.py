"""Checking a decoded infer request against the model's config, before it is queued."""
from __future__ import annotations

from .config import ModelConfig
from .errors import InvalidRequest
from .protocol import InferRequest


def _fits(shape: tuple, dims: tuple) -> bool:
    return len(shape) == len(dims) and all(d in (-1, s) for d, s in zip(dims, shape))


def check_inputs(config: ModelConfig, req: InferRequest) -> int:
    """The request's batch size (1 for a model that does not batch); InvalidRequest if an input is
    unknown, missing, of another datatype or shape, or the batch is empty or over max_batch_size."""
    specs = {s.name: s for s in config.inputs}
    for name in req.inputs:
        if name not in specs:
            raise InvalidRequest(f"model {config.name!r} has no input {name!r}; its inputs are {list(specs)}")
    missing = [n for n in specs if n not in req.inputs]
    if missing:
        raise InvalidRequest(f"model {config.name!r} needs inputs {missing}, which the request does not give")
    mbs, batch = config.max_batch_size, None
    for name, spec in specs.items():
        arr, datatype = req.inputs[name], req.datatypes[name]
        if datatype != spec.datatype:
            raise InvalidRequest(f"input {name!r} of model {config.name!r} is {spec.datatype}, the request "
                                 f"sends {datatype}")
        shape = arr.shape
        if mbs > 0:
            want = [-1] + list(spec.dims)
            if not shape or not _fits(shape[1:], spec.dims):
                raise InvalidRequest(f"input {name!r} has shape {list(shape)}; model {config.name!r} takes "
                                     f"{want} (the first dim is the batch, -1 any size)")
            if not 1 <= shape[0] <= mbs:
                raise InvalidRequest(f"input {name!r} has batch size {shape[0]}; model {config.name!r} takes "
                                     f"1 to {mbs} (max_batch_size)")
            if batch is not None and shape[0] != batch:
                raise InvalidRequest(f"the inputs have different batch sizes ({batch} and {shape[0]})")
            batch = shape[0]
        elif not _fits(shape, spec.dims):
            raise InvalidRequest(f"input {name!r} has shape {list(shape)}; model {config.name!r} takes "
                                 f"{list(spec.dims)} (-1: any size)")
    return batch or 1


def select_outputs(config: ModelConfig, req: InferRequest) -> list:
    """[(name, datatype, binary)] of the outputs to send back, in the order asked for."""
    specs = {s.name: s for s in config.outputs}
    if req.outputs is None:
        return [(s.name, s.datatype, req.binary_output) for s in config.outputs]
    out = []
    for name, binary in req.outputs:
        if name not in specs:
            raise InvalidRequest(f"model {config.name!r} has no output {name!r}; its outputs are {list(specs)}")
        out.append((name, specs[name].datatype, binary))
    return out


def timeout_us(req: InferRequest) -> int | None:
    """The request's `timeout` parameter in microseconds (used where the model allows overriding)."""
    t = req.parameters.get("timeout")
    if t is None:
        return None
    if type(t) is not int or t < 0:
        raise InvalidRequest(f"the 'timeout' parameter must be a non-negative integer (microseconds), got {t!r}")
    return t
