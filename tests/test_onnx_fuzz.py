"""Checklist MD-1 (reliability of `ember.onnx.load`): 200 mutated models, derived with a fixed seed
from three small valid models (an MLP, a conv net, an If/ConstantOfShape/Expand/Gather graph), each
either load and run on inputs of their declared shapes or raise `OnnxError`; no other exception
type, hang, crash or out-of-memory. The mutants run in a child process under `RLIMIT_AS` (and a
lowered `ember.onnx.checks.MAX_ELEMENTS`), one timer per model, so the worst case stays bounded.
Also: an `If` whose branches hold initializers and Constant nodes matches onnxruntime.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402

SEED, COUNT = 4, 200
PER_MODEL_S = 5            # a model that takes longer counts as a hang
MAX_INPUT_ELEMENTS = 1 << 16  # declared inputs bigger than this are not fed (the model is only loaded)
CHILD_MAX_ELEMENTS = 1 << 22  # the child's importer cap: every allowed tensor fits its RLIMIT_AS
CHILD_EXTRA_AS = 2 << 30      # address space the child may grow by after its imports
OPS = ["Relu", "Gemm", "Conv", "Tile", "Expand", "Reshape", "ConstantOfShape", "Range", "Pad",
       "Gather", "MaxPool", "If", "Add", "Concat", "OneHot", "Nope"]


def _f32(rng, *shape):
    return (rng.standard_normal(shape) * 0.3).astype(np.float32)


def _model(nodes, name, inputs, outputs, inits=(), opset=17, check=True):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if check:
        onnx.checker.check_model(m)
    return m


def mlp_model():
    """x[N,8] -> Gemm(16) -> Relu -> Gemm(4)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_f32(rng, 16, 8), "fc1.w"), numpy_helper.from_array(_f32(rng, 16), "fc1.b"),
             numpy_helper.from_array(_f32(rng, 4, 16), "fc2.w"), numpy_helper.from_array(_f32(rng, 4), "fc2.b")]
    nodes = [helper.make_node("Gemm", ["x", "fc1.w", "fc1.b"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "fc2.w", "fc2.b"], ["y"], transB=1, alpha=1.0, name="fc2")]
    return _model(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)


def conv_model():
    """x[1,2,8,8] -> Conv(4, 3x3, pad 1) -> BatchNormalization -> Relu -> MaxPool(2) -> Reshape -> Gemm(3)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(_f32(rng, 4, 2, 3, 3), "conv.w"), numpy_helper.from_array(_f32(rng, 4), "conv.b"),
             numpy_helper.from_array(1 + _f32(rng, 4), "bn.scale"), numpy_helper.from_array(_f32(rng, 4), "bn.bias"),
             numpy_helper.from_array(_f32(rng, 4), "bn.mean"), numpy_helper.from_array(1 + abs(_f32(rng, 4)), "bn.var"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
             numpy_helper.from_array(_f32(rng, 3, 64), "fc.w"), numpy_helper.from_array(_f32(rng, 3), "fc.b")]
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"],
                         epsilon=1e-5, name="bn"),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Reshape", ["p", "flat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1, name="fc"),
    ]
    return _model(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)


def if_model():
    """c = ConstantOfShape([2,3], 0.5); z = If(flag, x + tb (tb: a then-branch initializer),
    Gather(x, [1, 0]) * c (a Constant node in the else branch, outer-scope c)); y = Expand(z, [2,2,3])."""
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "tb"], ["t_out"], name="then_add")], "then_branch", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array([1.0, -2.0, 3.0], np.float32), "tb")])
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["ei"], value=numpy_helper.from_array(np.array([1, 0], np.int64)),
                          name="else_idx"),
         helper.make_node("Gather", ["x", "ei"], ["g"], axis=0, name="else_gather"),
         helper.make_node("Mul", ["g", "c"], ["e_out"], name="else_mul")], "else_branch", [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])])
    nodes = [
        helper.make_node("Constant", [], ["shp"], value=numpy_helper.from_array(np.array([2, 3], np.int64)),
                         name="shape"),
        helper.make_node("ConstantOfShape", ["shp"], ["c"], value=numpy_helper.from_array(np.array([0.5], np.float32)),
                         name="fill"),
        helper.make_node("If", ["flag"], ["z"], then_branch=then_g, else_branch=else_g, name="branch"),
        helper.make_node("Expand", ["z", "eshape"], ["y"], name="expand"),
    ]
    return _model(nodes, "control",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                   helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 3])],
                  [numpy_helper.from_array(np.array([2, 2, 3], np.int64), "eshape")])


SEEDS = (mlp_model, conv_model, if_model)


# ------------------------------------------------------------------ mutations
def _graphs(g):
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                yield from _graphs(a.g)
            for sg in a.graphs:
                yield from _graphs(sg)


def _nodes(m):
    return [n for g in _graphs(m.graph) for n in g.node]


def _tensors(m):
    out = [t for g in _graphs(m.graph) for t in g.initializer]
    return out + [a.t for n in _nodes(m) for a in n.attribute if a.HasField("t")]


_BIG = [0, -1, -7, 2, 3, 64, 1 << 20, 1 << 31, 1 << 40, 10 ** 6]


def _mut_dims(r, m):
    t = r.choice(_tensors(m))
    k = r.randrange(3)
    if k == 0 and t.dims:
        t.dims[r.randrange(len(t.dims))] = r.choice(_BIG)
    elif k == 1:
        t.dims.append(r.choice(_BIG))
    elif t.dims:
        del t.dims[r.randrange(len(t.dims))]
    return f"dims of {t.name!r} -> {list(t.dims)}"


def _mut_dtype(r, m):
    t = r.choice(_tensors(m))
    t.data_type = r.choice(list(range(0, 29)) + [99, 12345])
    return f"data_type of {t.name!r} -> {t.data_type}"


def _mut_raw(r, m):
    ts = [t for t in _tensors(m) if t.raw_data]
    if not ts:
        return "raw_data: none"
    t = r.choice(ts)
    k, raw = r.randrange(4), t.raw_data
    if k == 0:
        t.raw_data = raw[: r.randrange(len(raw))]
    elif k == 1:
        t.raw_data = raw + bytes(r.randrange(1, 9))
    elif k == 2:
        t.ClearField("raw_data")
    else:
        t.raw_data = bytes(r.randrange(256) for _ in raw)
    return f"raw_data of {t.name!r} ({len(raw)} -> {len(t.raw_data)} bytes)"


def _mut_values(r, m):
    ts = [t for t in _tensors(m) if t.data_type == TensorProto.INT64] or _tensors(m)
    t = r.choice(ts)
    n = r.choice([1, 2, 3, 4])
    vals = np.array([r.choice(_BIG + [1 << 62]) for _ in range(n)], np.int64)
    new = numpy_helper.from_array(vals, t.name)
    t.CopyFrom(new)
    return f"values of {t.name!r} -> {vals.tolist()}"


def _mut_attr(r, m):
    nodes = [n for n in _nodes(m) if n.attribute] or _nodes(m)
    n = r.choice(nodes)
    k = r.randrange(5)
    if k == 4 or not n.attribute:
        name = r.choice(["pads", "kernel_shape", "strides", "axis", "dilations", "group", "transA", "value"])
        val = r.choice([[1 << 20] * 4, [0, 0], [-3] * 4, 99, 1 << 40, -1, 2.5])
        n.attribute.append(helper.make_attribute(name, val))
        return f"{n.op_type}: add {name}={val}"
    a = r.choice(n.attribute)
    if k == 0:
        n.attribute.remove(a)
        return f"{n.op_type}: drop {a.name}"
    if k == 1:
        a.type = r.choice([AttributeProto.FLOAT, AttributeProto.INT, AttributeProto.STRING, AttributeProto.TENSOR,
                           AttributeProto.GRAPH, AttributeProto.FLOATS, AttributeProto.INTS])
        return f"{n.op_type}: {a.name} type -> {a.type}"
    if a.ints:
        a.ints[r.randrange(len(a.ints))] = r.choice(_BIG)
    elif a.type == AttributeProto.INT:
        a.i = r.choice(_BIG)
    elif a.type == AttributeProto.FLOAT:
        a.f = r.choice([float("nan"), float("inf"), -1e30, 0.0])
    elif a.type == AttributeProto.TENSOR:
        return _mut_values(r, m)
    else:
        a.ints.extend([r.choice(_BIG)] * 3)
    return f"{n.op_type}: {a.name} value"


def _mut_inputs(r, m):
    g = r.choice(list(_graphs(m.graph)))
    if not g.node:
        return "inputs: empty graph"
    n = r.choice(g.node)
    names = [v for nn in _nodes(m) for v in list(nn.input) + list(nn.output)] + ["", "nowhere"]
    k = r.randrange(3)
    if k == 0 and n.input:
        n.input[r.randrange(len(n.input))] = r.choice(names)
    elif k == 1 and n.input:
        del n.input[r.randrange(len(n.input))]
    else:
        n.input.append(r.choice(names))
    return f"{n.op_type}: inputs -> {list(n.input)}"


def _mut_opset(r, m):
    if r.random() < 0.8:
        m.opset_import[0].version = r.choice([0, -3, 1, 5, 7, 9, 10, 11, 12, 13, 18, 21, 10 ** 6])
        return f"opset -> {m.opset_import[0].version}"
    m.ir_version = r.choice([0, 1, 3, 7, 10, 99])
    return f"ir_version -> {m.ir_version}"


def _mut_op_type(r, m):
    n = r.choice(_nodes(m))
    old, n.op_type = n.op_type, r.choice(OPS)
    return f"op_type {old} -> {n.op_type}"


def _mut_io(r, m):
    vi = r.choice(list(m.graph.input) + list(m.graph.output))
    tt = vi.type.tensor_type
    if r.random() < 0.3:
        tt.elem_type = r.choice(list(range(0, 17)) + [99])
        return f"{vi.name} elem_type -> {tt.elem_type}"
    if tt.shape.dim:
        tt.shape.dim[r.randrange(len(tt.shape.dim))].dim_value = r.choice([0, -1, 7, 1 << 40])
    else:
        tt.shape.dim.add().dim_value = r.choice([0, 3, 1 << 40])
    return f"{vi.name} dims -> {[d.dim_value or d.dim_param for d in tt.shape.dim]}"


def _mut_output_name(r, m):
    n = r.choice(_nodes(m))
    names = [v for nn in _nodes(m) for v in nn.input] + [""]
    n.output[0] = r.choice(names)
    return f"{n.op_type}: output -> {n.output[0]!r}"


PROTO = [_mut_dims, _mut_dtype, _mut_raw, _mut_values, _mut_attr, _mut_inputs, _mut_opset, _mut_op_type,
         _mut_io, _mut_output_name]


def _mut_bytes(r, data: bytes):
    b = bytearray(data)
    k = r.randrange(4)
    if k == 0:
        for _ in range(r.randrange(1, 9)):
            b[r.randrange(len(b))] = r.randrange(256)
        return bytes(b), "flip bytes"
    if k == 1:
        i = r.randrange(len(b))
        return bytes(b[:i] + bytes(r.randrange(256) for _ in range(r.randrange(1, 16))) + b[i:]), "insert bytes"
    if k == 2:
        i = r.randrange(len(b))
        return bytes(b[:i] + b[i + r.randrange(1, 32):]), "delete bytes"
    return bytes(b[: r.randrange(len(b))]), "truncate"


def mutants(seed=SEED, count=COUNT):
    """`count` (bytes, description) mutants, the same for the same seed."""
    r = random.Random(seed)
    out = []
    for i in range(count):
        make = SEEDS[i % len(SEEDS)]
        m = make()
        what = [make.__name__]
        for _ in range(r.choice([1, 1, 2, 3])):
            if r.random() < 0.8:
                what.append(r.choice(PROTO)(r, m))
        data = m.SerializeToString()
        if r.random() < 0.3 or len(what) == 1:
            data, w = _mut_bytes(r, data)
            what.append(w)
        out.append((data, "; ".join(what)))
    return out


# ------------------------------------------------------------------ the child process
class _Timeout(BaseException):
    """Raised by the per-model timer (a BaseException, so no `except Exception` swallows it)."""


def _feeds(m, rng):
    """Inputs of the declared shapes and types, or None when they cannot (or should not) be built."""
    decl = {v.name: v for v in m.model.graph.input}
    feeds = {}
    for name in m.input_names:
        tt = decl[name].type.tensor_type
        if not decl[name].type.HasField("tensor_type") or not tt.HasField("shape"):
            return None
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:  # noqa: BLE001 - undefined / unknown element type
            return None
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in tt.shape.dim]
        if dtype.kind not in "fiub" or any(s < 0 for s in shape) or int(np.prod(shape)) > MAX_INPUT_ELEMENTS:
            return None
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = np.asarray(rng.random(shape) < 0.5)
        else:
            feeds[name] = rng.integers(0, 3, shape).astype(dtype)
    return feeds


def _classify(e, stage):
    import ember.onnx as eo
    c = e
    while c is not None:
        if isinstance(c, MemoryError):
            return "memory", f"{stage}: {type(e).__name__}: {e}"
        c = c.__cause__ or c.__context__
    if isinstance(e, eo.OnnxError):
        return "onnx_error", f"{stage}: {e}"
    return "other", f"{stage}: {type(e).__name__}: {e}"


def _try(data, rng):
    import ember
    import ember.onnx as eo
    try:
        m = eo.load(data)
    except _Timeout:
        return "hang", "load"
    except BaseException as e:  # noqa: BLE001 - classifying is the point
        return _classify(e, "load")
    try:
        feeds = _feeds(m, rng)
        if feeds is None:
            return "loaded", "not run"
        with ember.no_grad():
            m(feeds)
    except _Timeout:
        return "hang", "run"
    except BaseException as e:  # noqa: BLE001
        return _classify(e, "run")
    return "loaded", "ran"


def _child(folder, start):
    """Load (and run) the mutants from index `start` on, printing one JSON line per model."""
    import ember.onnx  # noqa: F401 - imports first, then the address-space limit
    try:
        from ember.onnx import checks
        checks.MAX_ELEMENTS = CHILD_MAX_ELEMENTS
    except ImportError:  # an importer without MD-1's checks runs uncapped (RLIMIT_AS still bounds it)
        pass
    import resource
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = vm + CHILD_EXTRA_AS if hard == resource.RLIM_INFINITY else min(hard, vm + CHILD_EXTRA_AS)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    def ring(*_):
        raise _Timeout()
    signal.signal(signal.SIGALRM, ring)
    names = sorted(os.listdir(folder))
    for name in names[start:]:
        i = int(name.split(".")[0])
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        signal.setitimer(signal.ITIMER_REAL, PER_MODEL_S)
        try:
            outcome, detail = _try(data, np.random.default_rng(i))
        except _Timeout:
            outcome, detail = "hang", "between"
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(json.dumps({"i": i, "outcome": outcome, "detail": detail[:300]}), flush=True)


def run_fuzz(folder, count):
    """Run the child over `folder` until every model has an outcome; the model a child dies on is a
    crash, the one it stops answering on a hang (and a fresh child goes on after it)."""
    import ember
    results, start = {}, 0
    root = os.path.dirname(os.path.dirname(os.path.abspath(ember.__file__)))  # the child imports this ember
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    while start < count:
        try:
            p = subprocess.run([sys.executable, os.path.abspath(__file__), folder, str(start)], env=env,
                               capture_output=True, text=True, timeout=PER_MODEL_S * 2 + 60)
            out, why = p.stdout, ("crash", f"exit {p.returncode}: {p.stderr[-300:]}")
        except subprocess.TimeoutExpired as e:
            out, why = e.stdout or "", ("hang", "the child stopped answering")
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        for line in out.splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                results[rec["i"]] = (rec["outcome"], rec["detail"])
        start = max(results, default=-1) + 1
        if start < count:
            results[start] = why
            start += 1
    return results


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory guard needs Linux RLIMIT_AS")
def test_md1_fuzz_load_raises_only_onnx_error(tmp_path):
    """MD-1: 200 mutated models each load (and run) or raise OnnxError: 0 other types, hangs, crashes."""
    ms = mutants()
    for i, (data, _) in enumerate(ms):
        (tmp_path / f"{i:04d}.onnx").write_bytes(data)
    results = run_fuzz(str(tmp_path), len(ms))
    tally = {k: 0 for k in ("onnx_error", "loaded", "other", "memory", "hang", "crash")}
    ran = 0
    for outcome, detail in results.values():
        tally[outcome] += 1
        ran += detail == "ran"
    bad = [f"#{i} [{ms[i][1]}] {o}: {d}" for i, (o, d) in sorted(results.items())
           if o not in ("onnx_error", "loaded")]
    print(f"MD-1 fuzz tally: tried={len(results)} onnx_error={tally['onnx_error']} loaded={tally['loaded']} "
          f"(ran={ran}) other={tally['other']} memory={tally['memory']} hang={tally['hang']} "
          f"crash={tally['crash']}")
    assert len(results) == COUNT
    assert not bad, f"{len(bad)} of {COUNT} mutants escaped:\n" + "\n".join(bad[:40])
    assert tally["onnx_error"] >= 50 and ran >= 10, tally  # the fuzzer exercises both paths


def _i64(name, *vals):
    return numpy_helper.from_array(np.array(vals, np.int64), name)


def _scalars(dtype, **vals):
    return [numpy_helper.from_array(np.array(v, dtype), n) for n, v in vals.items()]


def bomb_models():
    """(name, model) pairs, each a few hundred bytes asking for far more than MAX_ELEMENTS elements."""
    node = helper.make_node
    x23 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    x4d = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])]
    y = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    big = 1 << 20
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    raw = TensorProto(name="t", data_type=TensorProto.FLOAT, dims=[big, big], raw_data=bytes(16))
    rng = [node("Range", ["zero", "n", "one"], ["r"])]
    to_y = [node("Identity", ["r"], ["y"])]
    outer = _scalars(np.float32, zero=0, n=1 << 17, one=1) + [_i64("col", -1, 1), _i64("row", 1, -1)]
    cases = [
        ("initializer", [node("Identity", ["t"], ["y"])], [], [raw]),
        ("constant", [node("Constant", [], ["y"], value=raw)], [], []),
        ("constant_of_shape", [node("ConstantOfShape", ["s"], ["y"])], [], [_i64("s", big, big, big)]),
        ("expand", [node("Expand", ["x", "s"], ["y"])], x23, [_i64("s", big, big, 3)]),
        ("tile", [node("Tile", ["x", "s"], ["y"])], x23, [_i64("s", big, big)]),
        ("range", rng + to_y, [], _scalars(np.int64, zero=0, n=1 << 40, one=1)),
        ("range_delta_0", rng + to_y, [], _scalars(np.int64, zero=0, n=5, one=0)),
        ("pad", [node("Pad", ["x", "p"], ["y"])], x4d, [_i64("p", 0, 0, big, big, 0, 0, big, big)]),
        ("conv_pads", [node("Conv", ["x", "w"], ["y"], pads=[big] * 4)], x4d, [w]),
        ("conv_transpose", [node("ConvTranspose", ["x", "w"], ["y"], output_shape=[big, big])], x4d, [w]),
        ("pool_pads", [node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[big] * 4)], x4d, []),
        ("one_hot", [node("OneHot", ["i", "d", "v"], ["y"])], [],
         [_i64("i", 0, 1), _i64("d", 1 << 40), numpy_helper.from_array(np.float32([0, 1]), "v")]),
        ("outer_matmul", rng + [node("Reshape", ["r", "col"], ["c"]), node("Reshape", ["r", "row"], ["w"]),
                                node("MatMul", ["c", "w"], ["y"])], [], outer),
        ("outer_add", rng + [node("Reshape", ["r", "col"], ["c"]), node("Add", ["c", "r"], ["y"])], [], outer),
    ]
    out = [(name, _model(nodes, name, ins, y, inits, check=False)) for name, nodes, ins, inits in cases]
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.float32([1]), "s"), _i64("i", 0), [1 << 40])
    m = helper.make_model(helper.make_graph([node("Identity", ["s"], ["y"])], "sparse", [], y,
                                            sparse_initializer=[sparse]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    out.append(("sparse", m))
    return out + [(name + "_hidden", _hidden(m)) for name, m in out]


def _hidden(model):
    """`model` with its initializers behind Identity nodes and symbolic input dims, so onnx shape
    inference sees no sizes and only the importer's run-time checks can refuse it."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        g.node.insert(0, helper.make_node("Identity", [t.name + ".hidden"], [t.name]))
        t.name += ".hidden"
    for v in g.input:
        for i, d in enumerate(v.type.tensor_type.shape.dim):
            d.dim_param = f"d{i}"
    return m


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory guard needs Linux RLIMIT_AS")
def test_md1_size_bombs_raise_onnx_error(tmp_path):
    """MD-1: tiny models asking for huge tensors (initializers, Constant, ConstantOfShape, Expand, Tile,
    Range, Pad, Conv/ConvTranspose/pool pads, OneHot, outer products) raise OnnxError, not MemoryError."""
    bombs = bomb_models()
    for i, (_, m) in enumerate(bombs):
        (tmp_path / f"{i:04d}.onnx").write_bytes(m.SerializeToString())
    results = run_fuzz(str(tmp_path), len(bombs))
    for i, (name, _) in enumerate(bombs):
        outcome, detail = results[i]
        assert outcome == "onnx_error", (name, outcome, detail)
        assert any(w in detail for w in ("cap", "need", "no finite length")), (name, detail)
        if name.endswith("_hidden") and not name.startswith(("initializer", "constant_", "sparse")):
            assert detail.startswith("run: node "), (name, detail)  # refused by precheck, naming the node


def test_md1_mutants_are_deterministic():
    """MD-1: the fuzz corpus is fixed by its seed."""
    a, b = mutants(count=12), mutants(count=12)
    assert [d for d, _ in a] == [d for d, _ in b]


@pytest.mark.parametrize("make", SEEDS, ids=lambda f: f.__name__)
def test_md1_seed_models_match_onnxruntime(make):
    """MD-1: the unmutated seed models load and agree with onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    import ember.onnx as eo
    model = make()
    m = eo.load(model.SerializeToString())
    feeds = _feeds(m, np.random.default_rng(0))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    np.testing.assert_allclose(m(feeds).detach().numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flag", [True, False])
def test_md1_if_subgraph_initializers_match_onnxruntime(flag):
    """MD-1: an If whose branches hold an initializer, a Constant node and outer-scope reads runs both ways."""
    ort = pytest.importorskip("onnxruntime")
    import ember.onnx as eo
    model = if_model()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    feeds = {"x": x, "flag": np.array(flag)}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    got = eo.load(model)(feeds).detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    want = np.broadcast_to(x + [1, -2, 3] if flag else x[[1, 0]] * 0.5, (2, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_md1_nested_if_matches_onnxruntime():
    """MD-1: an If inside an If branch reads its own initializer, the outer branch's Constant and the graph input."""
    ort = pytest.importorskip("onnxruntime")
    import ember.onnx as eo
    out = lambda name: [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3])]  # noqa: E731
    inner_then = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["a"])], "inner_then", [], out("a"),
                                   [numpy_helper.from_array(np.float32([2.0]), "k")])
    inner_else = helper.make_graph([helper.make_node("Sub", ["x", "ob"], ["b"])], "inner_else", [], out("b"))
    outer_then = helper.make_graph(
        [helper.make_node("Constant", [], ["ob"], value=numpy_helper.from_array(np.float32([5, 6, 7]))),
         helper.make_node("If", ["f2"], ["r"], then_branch=inner_then, else_branch=inner_else)], "outer_then", [],
        out("r"))
    outer_else = helper.make_graph([helper.make_node("Neg", ["x"], ["n"])], "outer_else", [], out("n"))
    model = _model([helper.make_node("If", ["f1"], ["y"], then_branch=outer_then, else_branch=outer_else)], "nested",
                   out("x") + [helper.make_tensor_value_info(f, TensorProto.BOOL, []) for f in ("f1", "f2")], out("y"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    m = eo.load(model)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for f1 in (True, False):
        for f2 in (True, False):
            feeds = {"x": x, "f1": np.array(f1), "f2": np.array(f2)}
            np.testing.assert_allclose(m(feeds).detach().numpy(), sess.run(None, feeds)[0], rtol=1e-6)


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
