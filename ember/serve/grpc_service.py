"""KServe's Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, Triton's
grpc_service.proto): ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and
ModelInfer, beside the REST routes of the same server, on the same repository and batchers.

The messages are built at run time from a descriptor written here, in a descriptor pool of their
own (no generated code, no protoc; a client's generated `inference.*` classes in the same process
do not clash): field numbers and types are the .proto's, so the bytes on the wire are the same.
Handlers run on the gRPC server's thread pool; an infer request is decoded, checked and queued as
a REST one is (inference.py), and the worker waits on its batcher's future. ServeErrors become
gRPC status codes (400 INVALID_ARGUMENT, 404 NOT_FOUND, 413 / 429 RESOURCE_EXHAUSTED,
503 UNAVAILABLE, others INTERNAL); a bug answers INTERNAL, logged, and the server goes on.
Needs grpcio and protobuf: `pip install 'ember[grpc]'`.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import protocol
from .errors import InvalidRequest, MissingDependency, NotFound, ServeError, Unavailable
from .inference import model_metadata, select_outputs, submit

log = logging.getLogger("ember.serve")
SERVICE = "inference.GRPCInferenceService"

# field types of descriptor_pb2.FieldDescriptorProto
_DOUBLE, _FLOAT, _INT64, _UINT64, _INT32, _BOOL, _STRING, _MESSAGE, _BYTES, _UINT32 = 1, 2, 3, 4, 5, 8, 9, 11, 12, 13
_MAP = None  # the type of `parameters` fields: map<string, InferParameter>
_MESSAGES = {  # name -> [(field, number, type, repeated, message type or None)]
    "ServerLiveRequest": [], "ServerLiveResponse": [("live", 1, _BOOL, False, None)],
    "ServerReadyRequest": [], "ServerReadyResponse": [("ready", 1, _BOOL, False, None)],
    "ModelReadyRequest": [("name", 1, _STRING, False, None), ("version", 2, _STRING, False, None)],
    "ModelReadyResponse": [("ready", 1, _BOOL, False, None)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", 1, _STRING, False, None), ("version", 2, _STRING, False, None),
                               ("extensions", 3, _STRING, True, None)],
    "ModelMetadataRequest": [("name", 1, _STRING, False, None), ("version", 2, _STRING, False, None)],
    "ModelMetadataResponse": [("name", 1, _STRING, False, None), ("versions", 2, _STRING, True, None),
                              ("platform", 3, _STRING, False, None),
                              ("inputs", 4, _MESSAGE, True, ".inference.ModelMetadataResponse.TensorMetadata"),
                              ("outputs", 5, _MESSAGE, True, ".inference.ModelMetadataResponse.TensorMetadata")],
    "ModelMetadataResponse.TensorMetadata": [("name", 1, _STRING, False, None), ("datatype", 2, _STRING, False, None),
                                             ("shape", 3, _INT64, True, None)],
    "InferParameter": [("bool_param", 1, _BOOL, False, None), ("int64_param", 2, _INT64, False, None),
                       ("string_param", 3, _STRING, False, None), ("double_param", 4, _DOUBLE, False, None),
                       ("uint64_param", 5, _UINT64, False, None)],  # one of them (parameter_choice)
    "InferTensorContents": [("bool_contents", 1, _BOOL, True, None), ("int_contents", 2, _INT32, True, None),
                            ("int64_contents", 3, _INT64, True, None), ("uint_contents", 4, _UINT32, True, None),
                            ("uint64_contents", 5, _UINT64, True, None), ("fp32_contents", 6, _FLOAT, True, None),
                            ("fp64_contents", 7, _DOUBLE, True, None), ("bytes_contents", 8, _BYTES, True, None)],
    "ModelInferRequest": [("model_name", 1, _STRING, False, None), ("model_version", 2, _STRING, False, None),
                          ("id", 3, _STRING, False, None), ("parameters", 4, _MAP, True, None),
                          ("inputs", 5, _MESSAGE, True, ".inference.ModelInferRequest.InferInputTensor"),
                          ("outputs", 6, _MESSAGE, True, ".inference.ModelInferRequest.InferRequestedOutputTensor"),
                          ("raw_input_contents", 7, _BYTES, True, None)],
    "ModelInferRequest.InferInputTensor": [
        ("name", 1, _STRING, False, None), ("datatype", 2, _STRING, False, None), ("shape", 3, _INT64, True, None),
        ("parameters", 4, _MAP, True, None), ("contents", 5, _MESSAGE, False, ".inference.InferTensorContents")],
    "ModelInferRequest.InferRequestedOutputTensor": [("name", 1, _STRING, False, None),
                                                     ("parameters", 2, _MAP, True, None)],
    "ModelInferResponse": [("model_name", 1, _STRING, False, None), ("model_version", 2, _STRING, False, None),
                           ("id", 3, _STRING, False, None), ("parameters", 4, _MAP, True, None),
                           ("outputs", 5, _MESSAGE, True, ".inference.ModelInferResponse.InferOutputTensor"),
                           ("raw_output_contents", 6, _BYTES, True, None)],
    "ModelInferResponse.InferOutputTensor": [
        ("name", 1, _STRING, False, None), ("datatype", 2, _STRING, False, None), ("shape", 3, _INT64, True, None),
        ("parameters", 4, _MAP, True, None), ("contents", 5, _MESSAGE, False, ".inference.InferTensorContents")],
}
#: method -> (request message, response message)
METHODS = {m: (m + "Request", m + "Response") for m in
           ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")}
#: OIP datatype -> the InferTensorContents field its values travel in (FP16 / BF16: raw bytes only)
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED",
          503: "UNAVAILABLE"}


def require_grpc():
    """Import grpc and protobuf, or raise MissingDependency naming the extra to install."""
    try:
        import grpc
        import google.protobuf  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"ember serve's gRPC endpoint needs grpcio and protobuf ({e.name} is missing): "
                                f"pip install 'ember[grpc]'") from e
    return grpc


@functools.lru_cache(maxsize=1)
def messages() -> dict:
    """name -> message class, for every message of the service (built once, in a pool of their own)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="ember/serve/oip_grpc.proto", package="inference", syntax="proto3")
    protos = {}
    for name in _MESSAGES:  # parents come before their nested types in the table
        outer, _, inner = name.rpartition(".")
        protos[name] = (protos[outer].nested_type if outer else f.message_type).add(name=inner)
    for name, fields in _MESSAGES.items():
        m = protos[name]
        for fname, num, typ, rep, tname in fields:
            label = F.LABEL_REPEATED if rep else F.LABEL_OPTIONAL
            if typ is _MAP:  # a repeated entry message (key, value)
                entry = m.nested_type.add(name="ParametersEntry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_STRING, label=F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".inference.InferParameter")
                m.field.add(name=fname, number=num, type=_MESSAGE, label=F.LABEL_REPEATED,
                            type_name=f".inference.{name}.ParametersEntry")
                continue
            fd = m.field.add(name=fname, number=num, type=typ, label=label)
            if tname:
                fd.type_name = tname
            if name == "InferParameter":
                fd.oneof_index = 0
        if name == "InferParameter":
            m.oneof_decl.add(name="parameter_choice")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName("inference." + name))
            for name in _MESSAGES}


# ---------------------------------------------------------------- requests and responses
def _params(m) -> dict:
    out = {}
    for k, p in m.items():
        which = p.WhichOneof("parameter_choice")
        out[k] = getattr(p, which) if which else None
    return out


def _set_param(dst, key: str, value) -> None:
    p = dst[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def _contents(t, datatype: str, shape: tuple, what: str) -> np.ndarray:
    """An input's array from its typed `contents` field."""
    field = CONTENTS.get(datatype)
    if field is None:
        raise InvalidRequest(f"{what}: {datatype} values travel only in raw_input_contents")
    values = getattr(t.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidRequest(f"{what}: shape {list(shape)} needs {count} values, contents.{field} has {len(values)}")
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    npd = protocol.numpy_dtype(datatype)
    raw = np.asarray(values, dtype=np.int64 if npd.kind in "iu" else npd)
    if npd.kind in "iu" and count:
        info = np.iinfo(npd)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidRequest(f"{what}: a value is out of range for {datatype}")
    return raw.astype(npd).reshape(shape)


def decode_request(m) -> protocol.InferRequest:
    """An InferRequest from a ModelInferRequest (inputs raw, or typed contents when there are no raw)."""
    raw = list(m.raw_input_contents)
    if raw and len(raw) != len(m.inputs):
        raise InvalidRequest(f"raw_input_contents has {len(raw)} entries for {len(m.inputs)} inputs")
    inputs, datatypes = {}, {}
    for k, t in enumerate(m.inputs):
        what = f"input {t.name!r}"
        if t.name in inputs:
            raise InvalidRequest(f"{what} is given twice")
        if t.datatype not in protocol.DATATYPES:
            raise InvalidRequest(f"{what}: unknown datatype {t.datatype!r}; OIP datatypes are {list(protocol.DATATYPES)}")
        shape = tuple(t.shape)
        if len(shape) > protocol.MAX_RANK or any(d < 0 for d in shape):
            raise InvalidRequest(f"{what}: bad shape {list(shape)}")
        arr = (protocol.decode_binary(raw[k], t.datatype, shape, what) if raw
               else _contents(t, t.datatype, shape, what))
        inputs[t.name], datatypes[t.name] = arr, t.datatype
    params = _params(m.parameters)
    outputs = [(o.name, True) for o in m.outputs] or None
    return protocol.InferRequest(inputs, datatypes, m.id or None, params, outputs, True)


def encode_response(msgs: dict, name: str, version: str, request_id: str | None, items: list):
    """A ModelInferResponse with every output's bytes in raw_output_contents (as Triton sends them)."""
    r = msgs["ModelInferResponse"](model_name=name, model_version=version, id=request_id or "")
    for oname, datatype, arr, _ in items:
        arr = np.asarray(arr)
        r.outputs.add(name=oname, datatype=datatype, shape=list(arr.shape))
        r.raw_output_contents.append(protocol.encode_binary(arr, datatype))
    return r


# ---------------------------------------------------------------- the service
class Service:
    """The six methods, on a Repository; `is_ready()` the server's readiness, `limiter` its rate limit."""

    def __init__(self, repo, metrics, *, is_ready, version: str, limiter=None):
        self.repo, self.metrics, self.is_ready, self.version, self.limiter = repo, metrics, is_ready, version, limiter
        self.msgs = messages()

    def ServerLive(self, req, ctx):
        return self.msgs["ServerLiveResponse"](live=True)

    def ServerReady(self, req, ctx):
        return self.msgs["ServerReadyResponse"](ready=bool(self.is_ready()))

    def ModelReady(self, req, ctx):
        try:
            self.repo.resolve(req.name, req.version or None)
            ok = True
        except (NotFound, Unavailable):
            ok = False
        return self.msgs["ModelReadyResponse"](ready=ok)

    def ServerMetadata(self, req, ctx):
        return self.msgs["ServerMetadataResponse"](name="ember", version=self.version,
                                                   extensions=protocol.EXTENSIONS)

    def ModelMetadata(self, req, ctx):
        md = model_metadata(self.repo, req.name, req.version or None)
        r = self.msgs["ModelMetadataResponse"](name=md["name"], versions=md["versions"], platform=md["platform"])
        for key in ("inputs", "outputs"):
            for s in md[key]:
                getattr(r, key).add(name=s["name"], datatype=s["datatype"], shape=s["shape"])
        return r

    def ModelInfer(self, m, ctx):
        t0 = time.monotonic_ns()
        if self.limiter is not None:
            self.limiter.admit()
        name, version = m.model_name, m.model_version or None
        ve = self.repo.resolve(name, version, route=False)
        labels = (name, str(ve.version))
        try:
            req = decode_request(m)
            labels, ve, fut = submit(self.repo, name, version, req)
            wanted = select_outputs(ve.config, req)
            outs = fut.result()
            r = encode_response(self.msgs, name, labels[1], req.id, [(n, d, outs[n], b) for n, d, b in wanted])
        except BaseException:
            self.metrics.request(*labels, False, time.monotonic_ns() - t0)
            raise
        self.metrics.request(*labels, True, time.monotonic_ns() - t0)
        return r


def _handler(grpc, fn, name: str, parse):
    """`fn` as a method handler on the request's bytes: bytes that are not its message, and
    ServeErrors, become their status code; anything else INTERNAL (logged)."""
    from google.protobuf.message import DecodeError

    def call(data, ctx):
        try:
            try:
                req = parse(data)
            except DecodeError as e:
                raise InvalidRequest(f"the {name} request is not a valid protobuf message: {e}") from None
            return fn(req, ctx)
        except ServeError as e:
            code = getattr(grpc.StatusCode, _CODES.get(e.status, "INTERNAL"))
            after = getattr(e, "retry_after", None)
            if after is not None:
                ctx.set_trailing_metadata((("retry-after", str(max(math.ceil(after), 1))),))
            ctx.abort(code, str(e))
        except Exception as e:  # noqa: BLE001 - a bug answers INTERNAL; the server goes on
            log.exception("internal error serving gRPC %s", name)
            ctx.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")
    return call


class GrpcServer:
    """A grpc.Server running `Service` on host:port (port 0: a free one), `workers` handler threads."""

    def __init__(self, service: Service, host: str, port: int, *, max_message_bytes: int, workers: int = 32):
        grpc = require_grpc()
        msgs = service.msgs
        handlers = {m: grpc.unary_unary_rpc_method_handler(  # requests parsed in the handler, to answer bad ones
            _handler(grpc, getattr(service, m), m, msgs[rq].FromString),
            response_serializer=msgs[rs].SerializeToString) for m, (rq, rs) in METHODS.items()}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ember-serve-grpc")
        self._server = grpc.server(self._pool, handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
                                   options=[("grpc.max_receive_message_length", int(max_message_bytes)),
                                            ("grpc.max_send_message_length", -1),
                                            ("grpc.so_reuseport", 0)])
        self.host = host
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self._server.add_insecure_port(target)
        except RuntimeError as e:
            self.port = 0
            why = str(e)
        else:
            why = "the port is taken or the address is not this machine's"
        if not self.port:
            self._pool.shutdown(wait=False)
            raise ServeError(f"gRPC could not bind {target}: {why}")
        self._server.start()

    @property
    def target(self) -> str:
        """host:port, as gRPC clients are given it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish (up to `grace` seconds), join the handler threads."""
        self._server.stop(grace).wait()
        self._pool.shutdown(wait=True)
