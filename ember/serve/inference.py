"""Checking a decoded infer request against the model's config, before it is queued."""
from __future__ import annotations

from .config import ModelConfig
from .errors import InvalidRequest, NotFound, Unloading
from .protocol import InferRequest, is_uint


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


def config_of(repo, name: str, version: str | None) -> tuple:
    """(the model's entry, the config of `version` (default: the model's), whether it is ready);
    NotFound for an unknown model or version."""
    from .repository import READY
    e = repo.entry(name)
    if version is None:
        return e, e.config, e.ready_versions() != []
    if not e.versions and e.reason:  # not loaded, or its config.json is bad: say why
        return e, e.config, False
    if not is_uint(version) or int(version) not in e.versions:
        raise NotFound(f"model {name!r} has no version {version!r}")
    ve = e.versions[int(version)]
    return e, ve.config or e.config, ve.state == READY


def model_metadata(repo, name: str, version: str | None) -> dict:
    """The OIP model metadata of a model (or one version): versions, platform, input and output specs;
    an unready one also has "state" and "reason"."""
    e, cfg, ok = config_of(repo, name, version)
    mbs = cfg.max_batch_size if cfg else 0

    def specs(ts):
        return [{"name": s.name, "datatype": s.datatype, "shape": s.shape(mbs)} for s in ts or ()]
    out = {"name": name, "versions": [str(v) for v in e.ready_versions()], "platform": cfg.platform if cfg else "",
           "inputs": specs(cfg.inputs if cfg else None), "outputs": specs(cfg.outputs if cfg else None)}
    if not ok:
        ve = e.versions.get(int(version)) if version and is_uint(version) else None
        out["state"], out["reason"] = "UNAVAILABLE", ve.reason if ve else e.why_not_ready()
    return out


def submit(repo, name: str, version: str | None, req: InferRequest) -> tuple:
    """Check `req` against the model and queue it: ((name, version label), the version entry, the
    batcher's future). The version is resolved here, with no wait before the submit, so a reload
    in poll mode cannot slip in between; a batcher stopped even so is retried once (unpinned)."""
    for attempt in (0, 1):
        ve = repo.resolve(name, version)
        batch = check_inputs(ve.config, req)
        try:
            return (name, str(ve.version)), ve, ve.batcher.submit(req.inputs, batch, timeout_us(req))
        except Unloading:
            if attempt or version is not None:
                raise
