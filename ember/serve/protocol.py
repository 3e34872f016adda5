"""KServe Open Inference Protocol v2 (REST): datatypes, and decoding/encoding inference requests and
responses in the JSON tensor format and the binary tensor data extension.

Everything a client sends is checked here before any array is made from it: the JSON, the header
length, each input's name, datatype, shape (non-negative ints) and data (element count, element
types, value ranges, binary sizes, BOOL bytes, BYTES length prefixes). A problem raises
`InvalidRequest` with a message that names the input.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from .._core import dtypes as dt
from .errors import InvalidRequest

#: the header of the binary tensor data extension: the length of the JSON part of the body
HEADER_LENGTH = "Inference-Header-Content-Length"
#: the protocol extensions the server metadata names (REST and gRPC)
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]

#: OIP datatype -> ember dtype (None: BYTES, numpy object arrays of `bytes`, for python models)
EMBER_DTYPES = {
    "BOOL": dt.bool_, "UINT8": dt.uint8, "INT8": dt.int8, "INT16": dt.int16, "INT32": dt.int32,
    "INT64": dt.int64, "FP16": dt.float16, "FP32": dt.float32, "FP64": dt.float64, "BF16": dt.bfloat16,
    "BYTES": None,
}
DATATYPES = tuple(EMBER_DTYPES)
_INTS = {"UINT8", "INT8", "INT16", "INT32", "INT64"}
_FLOATS = {"FP16", "FP32", "FP64", "BF16"}
MAX_RANK = 32


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype arrays of an OIP datatype have (object for BYTES)."""
    d = EMBER_DTYPES[datatype]
    return np.dtype(object) if d is None else np.dtype(d.np)


def datatype_of(arr: np.ndarray) -> str | None:
    """The OIP datatype of a numpy array's dtype, or None if it has none."""
    if arr.dtype == object or arr.dtype.kind in "SU":
        return "BYTES"
    for name, d in EMBER_DTYPES.items():
        if d is not None and arr.dtype == d.np:
            return name
    return None


@dataclass
class InferRequest:
    """A decoded inference request: inputs in request order, and what outputs to send back how."""

    inputs: dict  # name -> np.ndarray
    datatypes: dict  # name -> OIP datatype
    id: str | None = None
    parameters: dict = field(default_factory=dict)
    outputs: list | None = None  # [(name, binary: bool)], None: every output
    binary_output: bool = False  # the default for outputs not named (`binary_data_output`)


def _dict(v, what: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InvalidRequest(f"{what} must be a JSON object, got {type(v).__name__}")
    return v


def _bool_param(params: dict, key: str, what: str, default: bool = False) -> bool:
    v = params.get(key, default)
    if not isinstance(v, bool):
        raise InvalidRequest(f"{what} parameter {key!r} must be true or false, got {v!r}")
    return v


def _shape(v, what: str) -> tuple:
    if not isinstance(v, list):
        raise InvalidRequest(f"{what}: 'shape' must be a list of non-negative integers, got {_short(v)}")
    if len(v) > MAX_RANK:
        raise InvalidRequest(f"{what}: shape has {len(v)} dims, more than {MAX_RANK}")
    for d in v:
        if type(d) is not int or d < 0:
            raise InvalidRequest(f"{what}: shape {_short(v)} has {_short(d)}; dims must be non-negative integers")
    return tuple(v)


def _short(v, n: int = 60) -> str:
    try:
        s = json.dumps(v) if isinstance(v, (list, dict, str, int, float, bool, type(None))) else repr(v)
    except (RecursionError, ValueError):  # a value nested deeper than Python's recursion limit
        s = f"a {type(v).__name__} nested too deeply to show"
    return s if len(s) <= n else s[:n] + "..."


def is_uint(s: str) -> bool:
    """True for a string of ASCII digits (str.isdigit alone also takes '²' and other scripts' digits)."""
    return s.isascii() and s.isdigit()


def parse_header_length(value: str | None, body_len: int) -> int | None:
    """The JSON part's length from the `Inference-Header-Content-Length` header (None: no header)."""
    if value is None:
        return None
    v = value.strip()
    if not is_uint(v) or len(v) > 18:
        raise InvalidRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {value[:40]!r}")
    n = int(v)
    if n > body_len:
        raise InvalidRequest(f"{HEADER_LENGTH} is {n} but the body has only {body_len} bytes")
    return n


try:  # orjson (in ember[serve]) parses a request 10x faster; json.loads stays the reference
    from orjson import loads as _fast_loads
except ImportError:
    _fast_loads = None


def parse_json(data: bytes, what: str = "request body") -> dict:
    """A JSON object from bytes, or InvalidRequest."""
    if _fast_loads is not None:
        try:
            obj = _fast_loads(data)
        except Exception:  # noqa: BLE001 - what orjson refuses (NaN, huge ints, bad input) json decides
            obj = None
        if isinstance(obj, dict):
            return obj
    try:
        obj = json.loads(data)
    except RecursionError:
        raise InvalidRequest(f"{what} nests too deeply") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidRequest(f"{what} is not valid JSON: {str(e)[:120]}") from None
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def decode_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Decode an OIP v2 infer request body (JSON, or JSON + binary tensor data)."""
    n = parse_header_length(header_length, len(body))
    js, binary = (body, b"") if n is None else (body[:n], memoryview(body)[n:])
    obj = parse_json(js)
    unknown = set(obj) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise InvalidRequest(f"unknown request fields {sorted(unknown)}")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidRequest(f"'id' must be a string, got {_short(rid)}")
    params = _dict(obj.get("parameters"), "request 'parameters'")
    binary_output = _bool_param(params, "binary_data_output", "request")
    inputs_js = obj.get("inputs")
    if not isinstance(inputs_js, list) or not inputs_js:
        raise InvalidRequest("'inputs' must be a non-empty list of tensors")
    inputs, datatypes, offset = {}, {}, 0
    for i, t in enumerate(inputs_js):
        if not isinstance(t, dict):
            raise InvalidRequest(f"inputs[{i}] must be a JSON object, got {_short(t)}")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"inputs[{i}] needs a 'name' string")
        what = f"input {name!r}"
        if name in inputs:
            raise InvalidRequest(f"{what} is given twice")
        extra = set(t) - {"name", "shape", "datatype", "parameters", "data"}
        if extra:
            raise InvalidRequest(f"{what}: unknown fields {sorted(extra)}")
        datatype = t.get("datatype")
        if datatype not in EMBER_DTYPES:
            raise InvalidRequest(f"{what}: unknown datatype {_short(datatype)}; ember serves {', '.join(DATATYPES)}")
        shape = _shape(t.get("shape"), what)
        tp = _dict(t.get("parameters"), f"{what} 'parameters'")
        size = tp.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise InvalidRequest(f"{what}: binary_data_size must be a non-negative integer, got {_short(size)}")
            if "data" in t:
                raise InvalidRequest(f"{what} has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise InvalidRequest(f"{what}: binary_data_size {size} runs past the binary data "
                                     f"({len(binary) - offset} bytes left after the JSON header)")
            arr = decode_binary(binary[offset:offset + size], datatype, shape, what)
            offset += size
        elif "data" in t:
            arr = decode_json_data(t["data"], datatype, shape, what)
        else:
            raise InvalidRequest(f"{what} has neither 'data' nor parameters.binary_data_size")
        inputs[name], datatypes[name] = arr, datatype
    if offset != len(binary):
        raise InvalidRequest(f"the body has {len(binary) - offset} bytes of binary data that no input's "
                             f"binary_data_size accounts for")
    outputs = None
    if "outputs" in obj:
        outs_js = obj["outputs"]
        if not isinstance(outs_js, list):
            raise InvalidRequest("'outputs' must be a list")
        outputs, seen = [], set()
        for i, o in enumerate(outs_js):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidRequest(f"outputs[{i}] must be an object with a 'name' string")
            if o["name"] in seen:
                raise InvalidRequest(f"output {o['name']!r} is requested twice")
            seen.add(o["name"])
            op = _dict(o.get("parameters"), f"output {o['name']!r} 'parameters'")
            if "classification" in op:
                raise InvalidRequest("the classification extension is not supported")
            outputs.append((o["name"], _bool_param(op, "binary_data", f"output {o['name']!r}", binary_output)))
    return InferRequest(inputs, datatypes, rid, params, outputs, binary_output)


def _flatten(data, shape: tuple, what: str) -> list:
    """The scalars of an input's JSON data, in row-major order: a flat list, or lists nested exactly
    as the shape (a scalar stands for itself)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    out, stack = [], [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth >= len(shape) or len(node) != shape[depth]:
            raise InvalidRequest(f"{what}: nested 'data' does not follow shape {list(shape)} (send the "
                                 f"shape's nesting, or one flat list)")
        if depth == len(shape) - 1:
            if any(isinstance(x, list) for x in node):
                raise InvalidRequest(f"{what}: nested 'data' is deeper than shape {list(shape)}")
            out.extend(node)
            continue
        for x in reversed(node):
            if not isinstance(x, list):
                raise InvalidRequest(f"{what}: nested 'data' does not follow shape {list(shape)}")
            stack.append((x, depth + 1))
    return out


def decode_json_data(data, datatype: str, shape: tuple, what: str) -> np.ndarray:
    """An array from an input's JSON 'data' (flat or nested), checked against shape and datatype."""
    count = math.prod(shape)
    flat = _flatten(data, shape, what)
    if len(flat) != count:
        raise InvalidRequest(f"{what}: shape {list(shape)} holds {count} elements but 'data' has {len(flat)}")
    kinds = set(map(type, flat))
    if datatype == "BOOL":
        ok = kinds <= {bool}
    elif datatype in _INTS:
        ok = kinds <= {int}
    elif datatype in _FLOATS:
        ok = kinds <= {int, float}
    else:
        ok = kinds <= {str}
    if not ok:
        bad = next(x for x in flat if type(x) not in ({bool} if datatype == "BOOL" else {int} if datatype in _INTS
                                                      else {int, float} if datatype in _FLOATS else {str}))
        raise InvalidRequest(f"{what}: {datatype} data holds {_short(bad)}")
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = [s.encode("utf-8") for s in flat]
        return arr.reshape(shape)
    try:
        return np.array(flat, dtype=numpy_dtype(datatype)).reshape(shape)
    except OverflowError as e:
        raise InvalidRequest(f"{what}: a value is out of range for {datatype} ({e})") from None


def decode_binary(chunk, datatype: str, shape: tuple, what: str) -> np.ndarray:
    """An array from an input's raw little-endian bytes (BYTES: 4-byte length-prefixed items)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes(bytes(chunk), count, what).reshape(shape)
    npd = numpy_dtype(datatype)
    if len(chunk) != count * npd.itemsize:
        raise InvalidRequest(f"{what}: shape {list(shape)} of {datatype} needs {count * npd.itemsize} bytes, "
                             f"binary_data_size is {len(chunk)}")
    if datatype == "BOOL" and count and np.frombuffer(chunk, np.uint8).max() > 1:
        raise InvalidRequest(f"{what}: BOOL bytes must be 0 or 1")
    return np.frombuffer(chunk, npd.newbyteorder("<")).astype(npd).reshape(shape)


def _decode_bytes(b: bytes, count: int, what: str) -> np.ndarray:
    if count * 4 > len(b):
        raise InvalidRequest(f"{what}: {count} BYTES elements need at least {count * 4} bytes, got {len(b)}")
    out, pos = np.empty(count, dtype=object), 0
    for i in range(count):
        if pos + 4 > len(b):
            raise InvalidRequest(f"{what}: BYTES element {i} has no length prefix (the data ends)")
        (n,) = struct.unpack_from("<I", b, pos)
        pos += 4
        if pos + n > len(b):
            raise InvalidRequest(f"{what}: BYTES element {i} says {n} bytes but only {len(b) - pos} are left")
        out[i] = b[pos:pos + n]
        pos += n
    if pos != len(b):
        raise InvalidRequest(f"{what}: {len(b) - pos} bytes are left after the {count} BYTES elements")
    return out


# ---------------------------------------------------------------- responses
def _as_bytes(x) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview, np.bytes_)):
        return bytes(x)
    raise TypeError(f"a BYTES element must be bytes or str, got {type(x).__name__}")


def encode_binary(arr: np.ndarray, datatype: str) -> bytes:
    """The raw little-endian bytes of an output (BYTES: 4-byte length prefix per element)."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in map(_as_bytes, arr.reshape(-1)))
    return np.ascontiguousarray(arr, numpy_dtype(datatype).newbyteorder("<")).tobytes()


def encode_json_data(arr: np.ndarray, datatype: str, name: str) -> list:
    """An output as a flat JSON list (BYTES as UTF-8 strings)."""
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        try:
            return [_as_bytes(x).decode("utf-8") for x in flat]
        except UnicodeDecodeError:
            raise InvalidRequest(f"output {name!r} holds bytes that are not UTF-8; ask for it with "
                                 f"binary_data: true") from None
    if datatype == "BF16":
        flat = flat.astype(np.float32)
    return flat.tolist()


def encode_infer_response(model_name: str, model_version: str, request_id: str | None,
                          outputs: list) -> tuple:
    """(body, header length or None) of an infer response; `outputs` is [(name, datatype, array,
    binary)]. With any binary output the body is the JSON header then the outputs' raw bytes."""
    outs, blobs = [], []
    for name, datatype, arr, binary in outputs:
        o = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            b = encode_binary(arr, datatype)
            o["parameters"] = {"binary_data_size": len(b)}
            blobs.append(b)
        else:
            o["data"] = encode_json_data(arr, datatype, name)
        outs.append(o)
    resp = {"model_name": model_name, "model_version": model_version, "outputs": outs}
    if request_id is not None:
        resp["id"] = request_id
    head = dumps(resp)
    if not blobs:
        return head, None
    return b"".join([head] + blobs), len(head)


def dumps(obj) -> bytes:
    """Compact UTF-8 JSON (NaN and Infinity as Python writes them, which the Triton clients read)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(message: str) -> bytes:
    """The OIP error object."""
    return dumps({"error": message})
