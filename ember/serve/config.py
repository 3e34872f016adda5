"""A model's `config.json`: the schema (docs/serve.md), its validation, and the version policy.

The schema follows Triton's model configuration, written as JSON: `inputs`/`outputs` (Triton's
`input`/`output` and `data_type: "TYPE_FP32"` are read too), `max_batch_size`, `dynamic_batching`,
`instance_count`, `version_policy`, `parameters`, and ember's own `sharding` and `canary`. Unknown keys are
refused, so a typo fails the load with a message instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass

from .canary import parse_canary
from .errors import ConfigError
from .protocol import DATATYPES, MAX_RANK

PLATFORMS = ("ember", "onnx", "python")
MERGES = ("concat", "sum", "mean")
DEFAULT_MAX_QUEUE_SIZE = 1024
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_TRITON_TYPES = {"TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16",
                 "TYPE_INT32": "INT32", "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32",
                 "TYPE_FP64": "FP64", "TYPE_BF16": "BF16", "TYPE_STRING": "BYTES"}


@dataclass(frozen=True)
class TensorSpec:
    """One declared input or output: `dims` leaves out the batch dim; -1 is any size."""

    name: str
    datatype: str
    dims: tuple

    def shape(self, max_batch_size: int) -> list:
        """The shape metadata reports: [-1, *dims] for a batching model."""
        return ([-1] if max_batch_size > 0 else []) + list(self.dims)

    def to_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "dims": list(self.dims)}


@dataclass(frozen=True)
class QueuePolicy:
    """How a model's request queue is bounded and how long a request may wait in it."""

    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    default_timeout_us: int = 0  # 0: no timeout
    allow_timeout_override: bool = False


@dataclass(frozen=True)
class DynamicBatching:
    """The dynamic batcher's knobs."""

    preferred_batch_size: tuple = ()
    max_queue_delay_us: int = 0


@dataclass(frozen=True)
class Sharding:
    """Split `input` along `axis` (of the request's shape) into `shards` run in parallel, each with
    `halo` extra items on either side, and merge the outputs (ember/serve/sharded.py)."""

    input: str
    axis: int
    shards: int
    halo: int = 0
    merge: str = "concat"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """A parsed, validated config.json."""

    name: str
    platform: str
    inputs: tuple | None  # None: an ONNX model's, read from its graph at load
    outputs: tuple | None
    max_batch_size: int = 0
    dynamic_batching: DynamicBatching | None = None
    queue: QueuePolicy = QueuePolicy()
    instance_count: int = 1
    version_policy: tuple = ("latest", 1)  # ("latest", n) | ("all",) | ("specific", (v, ...))
    parameters: dict = dataclasses.field(default_factory=dict)
    warmup: bool = True
    sharding: Sharding | None = None
    canary: object = None  # a CanaryPolicy (ember/serve/canary.py)

    def buckets(self) -> list:
        """The batch sizes a jitted model is padded to: the preferred sizes (powers of two when none
        are given) and max_batch_size."""
        if self.max_batch_size <= 0:
            return []
        pref = self.dynamic_batching.preferred_batch_size if self.dynamic_batching else ()
        if not pref:
            pref = [1 << k for k in range(self.max_batch_size.bit_length())]
        return sorted({p for p in pref if p <= self.max_batch_size} | {self.max_batch_size})

    def padded_size(self, n: int) -> int:
        """The bucket a batch of `n` is padded up to (n itself for a model that does not batch)."""
        for b in self.buckets():
            if b >= n:
                return b
        return n

    def with_io(self, inputs: tuple, outputs: tuple) -> "ModelConfig":
        return dataclasses.replace(self, inputs=tuple(inputs), outputs=tuple(outputs))

    def to_json(self) -> dict:
        """The config as `GET /v2/models/{m}/config` shows it (every default filled in)."""
        kind = self.version_policy[0]
        policy = {"latest": {"num_versions": self.version_policy[1]}} if kind == "latest" else \
            {"all": {}} if kind == "all" else {"specific": {"versions": list(self.version_policy[1])}}
        out = {"name": self.name, "platform": self.platform, "max_batch_size": self.max_batch_size,
               "inputs": [t.to_json() for t in self.inputs or ()],
               "outputs": [t.to_json() for t in self.outputs or ()],
               "instance_count": self.instance_count, "version_policy": policy,
               "parameters": dict(self.parameters), "warmup": self.warmup}
        if self.sharding is not None:
            out["sharding"] = self.sharding.to_json()
        if self.canary is not None:
            out["canary"] = self.canary.to_json()
        q = {"max_queue_size": self.queue.max_queue_size,
             "default_queue_policy": {"timeout_action": "REJECT",
                                      "default_timeout_microseconds": self.queue.default_timeout_us,
                                      "allow_timeout_override": self.queue.allow_timeout_override}}
        if self.dynamic_batching is not None:
            out["dynamic_batching"] = {"preferred_batch_size": list(self.dynamic_batching.preferred_batch_size),
                                       "max_queue_delay_microseconds": self.dynamic_batching.max_queue_delay_us, **q}
        else:
            out["queue"] = q
        return out


def _int(v, what: str, lo: int = 0) -> int:
    if type(v) is not int or v < lo:
        raise ConfigError(f"{what} must be an integer >= {lo}, got {v!r}")
    return v


def _obj(v, what: str, allowed: set) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(v).__name__}")
    unknown = set(v) - allowed
    if unknown:
        raise ConfigError(f"{what}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    return v


def _tensors(v, what: str) -> tuple:
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{what} must be a non-empty list of {{name, datatype, dims}}")
    out, names = [], set()
    for i, t in enumerate(v):
        t = _obj(t, f"{what}[{i}]", {"name", "datatype", "data_type", "dims"})
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{what}[{i}] needs a 'name'")
        if name in names:
            raise ConfigError(f"{what}: {name!r} is declared twice")
        names.add(name)
        datatype = t.get("datatype", _TRITON_TYPES.get(t.get("data_type"), t.get("data_type")))
        if datatype not in DATATYPES:
            raise ConfigError(f"{what} {name!r}: unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
        dims = t.get("dims")
        if not isinstance(dims, list) or len(dims) > MAX_RANK or \
                any(type(d) is not int or d < -1 for d in dims):
            raise ConfigError(f"{what} {name!r}: 'dims' must be a list of integers >= -1 (-1: any size), got {dims!r}")
        out.append(TensorSpec(name, datatype, tuple(dims)))
    return tuple(out)


def _version_policy(v) -> tuple:
    v = _obj(v, "version_policy", {"latest", "all", "specific"})
    if len(v) != 1:
        raise ConfigError(f"version_policy must have exactly one of latest, all, specific; got {sorted(v)}")
    kind, body = next(iter(v.items()))
    if kind == "latest":
        body = _obj(body, "version_policy.latest", {"num_versions"})
        return ("latest", _int(body.get("num_versions", 1), "version_policy.latest.num_versions", 1))
    if kind == "all":
        _obj(body, "version_policy.all", set())
        return ("all",)
    body = _obj(body, "version_policy.specific", {"versions"})
    vs = body.get("versions")
    if not isinstance(vs, list) or not vs:
        raise ConfigError("version_policy.specific.versions must be a non-empty list of version numbers")
    return ("specific", tuple(sorted({_int(x, "a version number", 1) for x in vs})))


def _queue(q: dict, what: str) -> QueuePolicy:
    size = _int(q.get("max_queue_size", 0), f"{what}.max_queue_size")
    pol = _obj(q.get("default_queue_policy", {}), f"{what}.default_queue_policy",
               {"timeout_action", "default_timeout_microseconds", "allow_timeout_override"})
    action = pol.get("timeout_action", "REJECT")
    if action != "REJECT":
        raise ConfigError(f"{what}.default_queue_policy.timeout_action {action!r}: only REJECT is supported")
    override = pol.get("allow_timeout_override", False)
    if not isinstance(override, bool):
        raise ConfigError(f"{what}.default_queue_policy.allow_timeout_override must be true or false")
    return QueuePolicy(size or DEFAULT_MAX_QUEUE_SIZE,
                       _int(pol.get("default_timeout_microseconds", 0),
                            f"{what}.default_queue_policy.default_timeout_microseconds"), override)


_TOP = {"name", "platform", "backend", "inputs", "outputs", "input", "output", "max_batch_size",
        "dynamic_batching", "queue", "instance_count", "version_policy", "parameters", "warmup",
        "sharding", "canary"}
_QUEUE = {"max_queue_size", "default_queue_policy"}


def _sharding(v, inputs: tuple | None, mbs: int) -> Sharding:
    v = _obj(v, "sharding", {"input", "axis", "shards", "halo", "merge"})
    name = v.get("input")
    if not isinstance(name, str) or not name:
        raise ConfigError("sharding.input must name the input to split")
    if inputs is not None and name not in {s.name for s in inputs}:
        raise ConfigError(f"sharding.input {name!r} is not one of the inputs {[s.name for s in inputs]}")
    axis = v.get("axis")
    if type(axis) is not int:
        raise ConfigError(f"sharding.axis must be an integer (a dim of the request's shape), got {axis!r}")
    if inputs is not None:
        rank = len(next(s for s in inputs if s.name == name).dims) + (mbs > 0)
        if not -rank <= axis < rank:
            raise ConfigError(f"sharding.axis {axis} is out of range for input {name!r} of rank {rank}")
        axis %= rank
        if mbs > 0 and axis == 0:
            raise ConfigError("sharding.axis 0 is the batch dim; shard another dim (instance_count runs "
                              "batches in parallel)")
    halo, merge = _int(v.get("halo", 0), "sharding.halo"), v.get("merge", "concat")
    if merge not in MERGES:
        raise ConfigError(f"sharding.merge must be one of {', '.join(MERGES)}, got {merge!r}")
    if halo and merge != "concat":
        raise ConfigError(f"sharding.halo needs merge 'concat' (a halo would count items twice in {merge!r})")
    return Sharding(name, axis, _int(v.get("shards"), "sharding.shards", 2), halo, merge)


def parse_config(raw: dict, model_name: str) -> ModelConfig:
    """Validate a config.json object for the model directory `model_name`."""
    raw = _obj(raw, f"model {model_name!r}: config.json", _TOP)
    name = raw.get("name", model_name)
    if name != model_name:
        raise ConfigError(f"config.json names the model {name!r} but its directory is {model_name!r}")
    platform = raw.get("platform", raw.get("backend"))
    if platform not in PLATFORMS:
        raise ConfigError(f"platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
    mbs = _int(raw.get("max_batch_size", 0), "max_batch_size")
    io = {}
    for key, alias in (("inputs", "input"), ("outputs", "output")):
        if key in raw and alias in raw:
            raise ConfigError(f"config.json has both {key!r} and {alias!r}")
        v = raw.get(key, raw.get(alias))
        if v is None and platform != "onnx":
            raise ConfigError(f"config.json needs {key!r} for a {platform} model (only an ONNX model's are "
                              f"read from its graph)")
        io[key] = None if v is None else _tensors(v, key)
    db, queue = None, QueuePolicy()
    if "dynamic_batching" in raw:
        d = _obj(raw["dynamic_batching"], "dynamic_batching",
                 {"preferred_batch_size", "max_queue_delay_microseconds"} | _QUEUE)
        if mbs == 0:
            raise ConfigError("dynamic_batching needs max_batch_size > 0")
        pref = d.get("preferred_batch_size", [])
        if not isinstance(pref, list):
            raise ConfigError("dynamic_batching.preferred_batch_size must be a list of batch sizes")
        pref = tuple(sorted({_int(p, "a preferred batch size", 1) for p in pref}))
        if pref and pref[-1] > mbs:
            raise ConfigError(f"preferred batch size {pref[-1]} is over max_batch_size {mbs}")
        db = DynamicBatching(pref, _int(d.get("max_queue_delay_microseconds", 0),
                                        "dynamic_batching.max_queue_delay_microseconds"))
        queue = _queue(d, "dynamic_batching")
    if "queue" in raw:
        if db is not None:
            raise ConfigError("put the queue settings inside dynamic_batching when it is there")
        queue = _queue(_obj(raw["queue"], "queue", _QUEUE), "queue")
    params = raw.get("parameters", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ConfigError("parameters must be a JSON object")
    warmup = raw.get("warmup", True)
    if not isinstance(warmup, bool):
        raise ConfigError("warmup must be true or false")
    sharding = _sharding(raw["sharding"], io["inputs"], mbs) if "sharding" in raw else None
    canary = parse_canary(raw["canary"]) if "canary" in raw else None
    return ModelConfig(name, platform, io["inputs"], io["outputs"], mbs, db, queue,
                       _int(raw.get("instance_count", 1), "instance_count", 1),
                       _version_policy(raw.get("version_policy", {"latest": {"num_versions": 1}})),
                       dict(params), warmup, sharding, canary)


def read_config(model_dir: str) -> ModelConfig:
    """Read and validate `<model_dir>/config.json`."""
    path = os.path.join(model_dir, "config.json")
    name = os.path.basename(os.path.normpath(model_dir))
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"model {name!r} has no config.json") from None
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"model {name!r}: config.json is unreadable: {str(e)[:200]}") from None
    return parse_config(raw, name)


def available_versions(model_dir: str) -> list:
    """The version numbers that have a directory under the model's, ascending."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return []
    return sorted(int(n) for n in names
                  if n.isascii() and n.isdigit() and int(n) > 0 and os.path.isdir(os.path.join(model_dir, n)))


def select_versions(policy: tuple, available: list) -> list:
    """The versions a policy serves out of the available ones, ascending."""
    if policy[0] == "latest":
        return sorted(available)[-policy[1]:]
    if policy[0] == "all":
        return sorted(available)
    return [v for v in policy[1] if v in set(available)]
