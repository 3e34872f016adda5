"""Model protection: ONNX obfuscation (MD-20) and encrypted model files (MD-21).

`obfuscate` makes an ONNX model harder to read, not impossible: every node, value, initializer
and graph name becomes an anonymous one (``n3``, ``v17``, ``g``), doc strings, value_info and
metadata are dropped, and each float weight W read by a weight-taking op is stored as ``W + N``
with a random N and a ``Sub`` node that recomputes W inside the graph (so a runtime gives the same
outputs, within float32 rounding of ``(W + N) - N``). Anyone holding the file can still run it, and
fold the Subs back; for secrecy encrypt the file.

Encrypted files (`encrypt_file`, `decrypt_file`, `load_encrypted`) use AES-256-GCM from the
`cryptography` package (``pip install 'ember[protect]'``), imported only when needed. Layout::

    magic b"EMBERENC" | version u8 (1) | kdf u8 (0: raw key, 1: scrypt) |
    [kdf 1: salt 16 bytes | log2 n u8 | r u8 | p u8] | nonce 12 bytes | ciphertext | tag 16 bytes

The whole header is the associated data, so changing any byte of it, like any byte of the
ciphertext, fails authentication. A key is 32 raw bytes, or a `str` passphrase stretched with
scrypt (salt in the header). Files are written all or nothing (temporary file in the same
directory, fsync, `os.replace`); a decryption that fails authentication writes nothing.
"""
from __future__ import annotations

import io
import os
import secrets
import tempfile

import numpy as np

from .._core.errors import EmberError
from .._core.files import atomic_write

__all__ = ["ProtectError", "MissingExtraError", "obfuscate", "encrypt_bytes", "decrypt_bytes", "encrypt_file",
           "decrypt_file", "load_encrypted", "derive_key", "MAGIC", "VERSION"]

MAGIC = b"EMBERENC"
VERSION = 1
KEY_BYTES, NONCE_BYTES, SALT_BYTES, TAG_BYTES = 32, 12, 16, 16
SCRYPT_DEFAULT = (15, 8, 1)  # log2 n, r, p: 32 MiB of memory, a fraction of a second
_SCRYPT_MAX = (20, 16, 4)  # refuse headers asking for more (a crafted file must not exhaust memory)
MAX_PLAINTEXT = (1 << 31) - 1
_EXTRA = "pip install 'ember[protect]'"


class ProtectError(EmberError, ValueError):
    """A protection step failed: wrong key or corrupted file, bad key, unsupported model..."""


class MissingExtraError(EmberError, ImportError):
    """The optional `cryptography` package is not installed."""


# ---------------------------------------------------------------- MD-20: obfuscation
# ops whose float initializer inputs are plain data (weights, biases, scales), safe to recompute
_MIXABLE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div",
                      "BatchNormalization", "InstanceNormalization", "LayerNormalization", "PRelu",
                      "Einsum", "LSTM", "GRU", "RNN"})
_NOISY_DTYPES = (np.float32, np.float64)


def _as_model(src, example_inputs, opset: int):
    import onnx
    from ..nn.module import Module
    from ..onnx import export, load_model_proto
    if isinstance(src, Module) or (callable(src) and not isinstance(src, (str, bytes, os.PathLike))):
        if example_inputs is None:
            raise ProtectError("obfuscating a module needs example_inputs to export it to ONNX")
        with tempfile.TemporaryDirectory() as d:
            proto = export(src, example_inputs, os.path.join(d, "model.onnx"), opset=opset)
    else:
        proto = load_model_proto(src)
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    return m


def _subgraphs(graph):
    from onnx import AttributeProto
    for node in graph.node:
        for a in node.attribute:
            if a.type == AttributeProto.GRAPH:
                yield a.g
            elif a.type == AttributeProto.GRAPHS:
                yield from a.graphs


def _mix_weights(graph, rng: np.random.Generator, noise: float) -> int:
    """Store each mixable float initializer W as W + N, with a Sub node recomputing W; the count mixed."""
    from onnx import helper, numpy_helper
    readers: dict = {}

    def read(g):  # a subgraph reads outer values by name: its readers count too
        for node in g.node:
            for i in node.input:
                readers.setdefault(i, set()).add(node.op_type)
        for sub in _subgraphs(g):
            read(sub)

    read(graph)
    outer = {t.name for sub in _subgraphs(graph) for t in sub.initializer}  # a shadowing name: leave it
    outputs = {o.name for o in graph.output} | {i.name for i in graph.input}  # old IR lists weights as inputs
    taken = {i.name for i in graph.initializer} | {n for node in graph.node for n in node.output}
    taken |= {i.name for i in graph.input}
    new_inits, subs, k = [], [], 0
    for t in graph.initializer:
        ops = readers.get(t.name)
        w = numpy_helper.to_array(t)
        if (not ops or not ops <= _MIXABLE or t.name in outer or t.name in outputs or w.size < 2
                or w.dtype not in _NOISY_DTYPES or not np.isfinite(w).all()):
            new_inits.append(t)
            continue
        spread = float(np.std(w)) or float(np.max(np.abs(w))) or 1.0
        n = (rng.standard_normal(w.shape) * spread * noise).astype(w.dtype)
        mixed = (w.astype(np.float64) + n).astype(w.dtype)
        while f"mix{k}" in taken or f"key{k}" in taken:
            k += 1
        a, b = f"mix{k}", f"key{k}"
        taken |= {a, b}
        new_inits += [numpy_helper.from_array(mixed, a), numpy_helper.from_array(n, b)]
        subs.append(helper.make_node("Sub", [a, b], [t.name]))
        k += 1
    order = rng.permutation(len(new_inits))
    del graph.initializer[:]
    graph.initializer.extend([new_inits[i] for i in order])
    nodes = subs + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(subs)


def _anonymize(graph, names: dict, counters: dict, keep: set, top: bool) -> None:
    def value(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            names[name] = f"v{len(names)}"
        return names[name]

    if top:
        graph.name = "g"
    else:
        counters["g"] = counters.get("g", 0) + 1
        graph.name = f"g{counters['g']}"
    graph.doc_string = ""
    del graph.value_info[:]
    for v in list(graph.input) + list(graph.output):
        v.name = value(v.name)
        v.doc_string = ""
    for t in graph.initializer:
        t.name = value(t.name)
        t.doc_string = ""
    for s in graph.sparse_initializer:
        s.values.name = value(s.values.name)
        s.indices.name = ""
    for node in graph.node:
        node.name = f"n{counters.setdefault('n', 0)}"
        counters["n"] += 1
        node.doc_string = ""
        node.input[:] = [value(i) for i in node.input]
        node.output[:] = [value(o) for o in node.output]
        for a in node.attribute:
            a.doc_string = ""
            if a.HasField("t"):
                a.t.name, a.t.doc_string = "", ""
            for t in a.tensors:
                t.name, t.doc_string = "", ""
    for sub in _subgraphs(graph):  # inner scopes see the outer names: one shared mapping
        _anonymize(sub, names, counters, keep, False)


def obfuscate(model_or_onnx, example_inputs=None, *, seed: int | None = None, noise: float = 1.0,
              keep_io_names: bool = False, opset: int = 17, path=None):
    """An ONNX ModelProto of a Module (exported) or ONNX model with anonymous names and noise-mixed weights (MD-20)."""
    import onnx
    if not noise >= 0:
        raise ProtectError(f"noise must be a non-negative number, got {noise!r}")
    m = _as_model(model_or_onnx, example_inputs, opset)
    for t in list(m.graph.initializer):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ProtectError("the model keeps initializers in external data files: load it with its "
                               "external data (onnx.load(path, load_external_data=True)) before obfuscating")
    rng = np.random.default_rng(seed)
    if noise > 0:
        _mix_weights(m.graph, rng, noise)
    g = m.graph
    inits = {t.name for t in g.initializer}
    keep = {v.name for v in list(g.input) + list(g.output) if v.name not in inits} if keep_io_names else set()
    _anonymize(g, {}, {}, keep, True)
    m.doc_string, m.domain, m.producer_name, m.producer_version, m.model_version = "", "", "", "", 0
    del m.metadata_props[:]
    for f in m.functions:
        f.doc_string = ""
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:  # pragma: no cover - a bug here, not in the input
        raise ProtectError(f"the obfuscated model is not valid ONNX: {e}") from e
    if path is not None:
        data = m.SerializeToString()
        atomic_write(os.fspath(path), lambda f: f.write(data))
    return m


# ---------------------------------------------------------------- MD-21: encrypted files
def _aesgcm():
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:
        raise MissingExtraError(f"encrypted model files need the 'cryptography' package: {_EXTRA}") from e
    return AESGCM


def derive_key(passphrase: str, salt: bytes, log2_n: int = SCRYPT_DEFAULT[0], r: int = SCRYPT_DEFAULT[1],
               p: int = SCRYPT_DEFAULT[2]) -> bytes:
    """A 32-byte key from a passphrase with scrypt (n = 2**log2_n)."""
    _aesgcm()
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    if not isinstance(passphrase, str) or not passphrase:
        raise ProtectError("the passphrase must be a non-empty str")
    return Scrypt(salt=bytes(salt), length=KEY_BYTES, n=1 << log2_n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _raw_key(key) -> bytes:
    if isinstance(key, (bytes, bytearray, memoryview)):
        k = bytes(key)
        if len(k) != KEY_BYTES:
            raise ProtectError(f"an AES-256 key is {KEY_BYTES} bytes, got {len(k)} (pass a str to use a passphrase)")
        return k
    raise ProtectError(f"key must be {KEY_BYTES} bytes or a str passphrase, got {type(key).__name__}")


def encrypt_bytes(data: bytes, key, *, scrypt: tuple = SCRYPT_DEFAULT) -> bytes:
    """`data` encrypted with AES-256-GCM in ember's file format (the header is the associated data)."""
    AESGCM = _aesgcm()
    data = bytes(data)
    if len(data) > MAX_PLAINTEXT:
        raise ProtectError(f"{len(data)} bytes is more than the {MAX_PLAINTEXT} one file may hold")
    if isinstance(key, str):
        scrypt = tuple(int(v) for v in scrypt)
        if len(scrypt) != 3 or not all(1 <= v <= m for v, m in zip(scrypt, _SCRYPT_MAX)):
            raise ProtectError(f"scrypt=(log2 n, r, p) must lie within 1..{_SCRYPT_MAX}, got {scrypt}")
        salt = secrets.token_bytes(SALT_BYTES)
        k = derive_key(key, salt, *scrypt)
        head = MAGIC + bytes([VERSION, 1]) + salt + bytes(scrypt)
    else:
        k = _raw_key(key)
        head = MAGIC + bytes([VERSION, 0])
    nonce = secrets.token_bytes(NONCE_BYTES)
    head += nonce
    return head + AESGCM(k).encrypt(nonce, data, head)


def _parse_header(blob: bytes, what: str) -> tuple:
    base = len(MAGIC) + 2
    if len(blob) < len(MAGIC) or blob[:len(MAGIC)] != MAGIC:
        raise ProtectError(f"{what}: not an ember encrypted file (bad magic bytes)")
    if len(blob) < base:
        raise ProtectError(f"{what}: wrong key or corrupted file (truncated header)")
    version, kdf = blob[len(MAGIC)], blob[len(MAGIC) + 1]
    if version != VERSION:
        raise ProtectError(f"{what}: encrypted-file version {version} is not supported (this ember reads {VERSION})")
    if kdf not in (0, 1):
        raise ProtectError(f"{what}: wrong key or corrupted file (unknown key derivation {kdf})")
    end = base + (SALT_BYTES + 3 if kdf else 0) + NONCE_BYTES
    if len(blob) < end + TAG_BYTES:
        raise ProtectError(f"{what}: wrong key or corrupted file (truncated: {len(blob)} bytes)")
    salt = params = None
    if kdf:
        salt = blob[base:base + SALT_BYTES]
        params = tuple(blob[base + SALT_BYTES:base + SALT_BYTES + 3])
        if not all(1 <= v <= m for v, m in zip(params, _SCRYPT_MAX)):
            raise ProtectError(f"{what}: wrong key or corrupted file (scrypt parameters {params} out of range)")
    return kdf, salt, params, blob[end - NONCE_BYTES:end], end


def decrypt_bytes(blob: bytes, key, what: str = "encrypted data") -> bytes:
    """The plaintext of `encrypt_bytes` output; ProtectError on a wrong key or any changed byte."""
    AESGCM = _aesgcm()
    from cryptography.exceptions import InvalidTag
    blob = bytes(blob)
    kdf, salt, params, nonce, end = _parse_header(blob, what)
    if kdf:
        if not isinstance(key, str):
            raise ProtectError(f"{what} was encrypted with a passphrase: pass it as a str")
        k = derive_key(key, salt, *params)
    else:
        if isinstance(key, str):
            raise ProtectError(f"{what} was encrypted with a raw {KEY_BYTES}-byte key, not a passphrase")
        k = _raw_key(key)
    try:
        return AESGCM(k).decrypt(nonce, blob[end:], blob[:end])
    except InvalidTag:
        raise ProtectError(f"{what}: wrong key or corrupted file (authentication failed)") from None


def _read(path) -> bytes:
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read()
    except OSError as e:
        raise ProtectError(f"{os.fspath(path)}: cannot read ({e.strerror or e})") from None


def encrypt_file(src, dst, key, *, scrypt: tuple = SCRYPT_DEFAULT) -> None:
    """Encrypt the file `src` to `dst` (written atomically); `key` is 32 bytes or a str passphrase."""
    blob = encrypt_bytes(_read(src), key, scrypt=scrypt)
    atomic_write(os.fspath(dst), lambda f: f.write(blob))


def decrypt_file(src, dst, key) -> None:
    """Decrypt `src` to `dst`; authentication is checked before anything is written (atomically)."""
    data = decrypt_bytes(_read(src), key, os.fspath(src))
    atomic_write(os.fspath(dst), lambda f: f.write(data))


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    return 0 < n <= len(data) - 8 and data[8:9] == b"{"


def load_encrypted(path, key, *, map_location=None):
    """Decrypt `path` in memory and load it: an ember checkpoint as `ember.load` would, ONNX as an OnnxModule."""
    data = decrypt_bytes(_read(path), key, os.fspath(path))
    if _is_safetensors(data):
        from ..serialization import load
        return load(io.BytesIO(data), map_location=map_location)
    import onnx
    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
        proto = None
    if proto is None or not proto.HasField("graph"):
        raise ProtectError(f"{os.fspath(path)}: decrypted, but it is neither a safetensors checkpoint nor an "
                           "ONNX model")
    from ..onnx import load as onnx_load
    return onnx_load(proto)
