"""Bitwise hashes of three jitted training steps (MD-16: results are bitwise identical run to run at
a fixed thread count), the guard `tests/test_step_hashes.py` checks a refactor of the jit, the
runtime or the CPU backend against.

Each of the MLP, CNN and GPT of the benchmark harness (bench/bench_models.py through
tests/_bench_models.py, at the small sizes of `CFGS`) is built from fixed seeds,
run for 3 optimizer steps through `ember.jit` on the native backend at a fixed thread count, and
summarised as sha256 of the raw bytes of the 3 losses and of every parameter after the 3 steps.

The models are this checkout's (tests/_bench_models.py), whichever tree's ember is measured: any
tree with the same public API can be compared.

GEMM results depend on the BLAS library and the kernels it picks for the CPU, so the hashes are
stored per machine fingerprint, one string:

    "<CBLAS> | <machine> cpu:<8 hex> | threads=<n>"
    e.g. "OpenBLAS 0.3.31.188.0 SkylakeX | x86_64 cpu:4c1d09e2 | threads=1"

<CBLAS> is the step's CBLAS (`step_library()` of ember/backend/cpu/blas.py, before the split
ember/_core/blas.py): OpenBLAS's version and the core its
DYNAMIC_ARCH dispatch chose, MKL's version string, or the library file's name; cpu: is the first
8 hex digits of sha256 over the sorted SIMD flags of /proc/cpuinfo that change code paths
(`SIMD_FLAGS`). The compiler and its -march=native are recorded beside the hashes, not in the key.

Usage (the ember measured is the tree's, run with cwd and PYTHONPATH = the tree):

    python tools/make_step_hashes.py                        # this checkout: print, compare with the fixture
    python tools/make_step_hashes.py --tree /tmp/base       # another tree (e.g. `git archive HEAD`)
    python tools/make_step_hashes.py --tree /tmp/base --tree .   # two trees: print where they differ
    python tools/make_step_hashes.py --tree /tmp/base --write    # add/replace this machine's entries
                                                                 # in tests/fixtures/step_hashes.json
    options: --threads 1,2 (default), --json (print the raw result)
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "step_hashes.json")
STEPS = 3
THREADS = (1, 2)
SEED = 1234

# /proc/cpuinfo flags that change which kernels BLAS or -march=native code uses
SIMD_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd",
              "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
              "asimd", "asimdhp", "sve", "sve2", "sme")  # the last ones: aarch64's "Features"

CFGS = {
    "mlp": dict(batch=8, opt="adam", lr=1e-3, wd=0.0, sizes=(64, 96, 64, 10)),
    "cnn": dict(batch=8, opt="sgd", lr=1e-2, wd=0.0, c1=4, c2=8, hw=12),
    "gpt": dict(batch=8, opt="adamw", lr=3e-4, wd=0.01, L=2, d=32, H=2, T=16, V=64),
}


# ---------------------------------------------------------------- the models
def _models():
    """tests/_bench_models.py of this checkout (the harness's models, built with ember's public API)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_step_hash_models", os.path.join(REPO, "tests", "_bench_models.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- the machine
def _cpu_flags() -> list:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    have = set(value.split())
                    return sorted(f for f in SIMD_FLAGS if f in have)
    except OSError:
        pass
    return []


def _blas_name() -> str:
    """The step's CBLAS: OpenBLAS version + chosen core, MKL's version, or the library's name."""
    import importlib
    for name in ("ember.backend.cpu.blas", "ember._core.blas"):  # after / before the backend split
        try:
            blas = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(blas, "step_library"):
            break
    else:
        raise RuntimeError("no step_library() in ember.backend.cpu.blas or ember._core.blas: "
                           "tell tools/make_step_hashes.py where the step's CBLAS is chosen now")
    lib, what = blas.step_library()
    if lib is None:
        return "no-cblas"

    def text(names, *args):
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                out = fn()
                return out.decode(errors="replace") if out else ""
        return None
    config = text(("scipy_openblas_get_config64_", "openblas_get_config64_", "openblas_get_config"))
    if config is not None:
        core = text(("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"))
        return " ".join(config.split()[:2] + ([core] if core else []))
    mkl = getattr(lib, "MKL_Get_Version_String", None)
    if mkl is not None:
        buf = ctypes.create_string_buffer(256)
        mkl.argtypes, mkl.restype = [ctypes.c_char_p, ctypes.c_int], None
        mkl(buf, len(buf))
        return " ".join(buf.value.decode(errors="replace").split())
    path = what[what.find("(") + 1:what.rfind(")")] if "(" in what else what
    return os.path.basename(path)


def _compiler() -> dict:
    cc = os.environ.get("CC") or "cc"
    info = {"cc": cc}
    try:
        ver = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        info["version"] = ver.stdout.splitlines()[0] if ver.stdout else ""
        tgt = subprocess.run([cc, "-march=native", "-Q", "--help=target"], capture_output=True, text=True,
                             timeout=30)
        for line in tgt.stdout.splitlines():
            if line.strip().startswith("-march="):
                info["march_native"] = line.split()[-1]
                break
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def fingerprint(threads: int) -> tuple:
    """(key, what it is made of) for this process's CBLAS, this CPU and `threads`."""
    flags = _cpu_flags()
    machine = platform.machine() or "unknown"
    digest = hashlib.sha256((machine + ":" + " ".join(flags)).encode()).hexdigest()[:8]
    blas = _blas_name()
    key = f"{blas} | {machine} cpu:{digest} | threads={threads}"
    return key, {"blas": blas, "machine": machine, "cpu_flags": flags, "threads": threads}


# ---------------------------------------------------------------- the runs
def compiler_available() -> bool:
    """Whether ember's native backend can build (wherever the refactor keeps the compiler)."""
    import importlib
    for name in ("ember.backend.cpu.compiler", "ember.codegen.build"):  # after / before the backend split
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "available"):
            return bool(mod.available())
    return True  # not found: let the run say (the backend is recorded)


def _backend(j) -> str:
    """The executable the jitted step ran on ("NativeExecutable"), or why it fell back."""
    log = " ".join(str(x) for x in getattr(j, "explain", []))
    if "numpy executor" in log:
        return "fallback: " + log
    try:
        names = sorted({type(ent.exe).__name__ for ent in j.cache.values()})
        return "+".join(names)
    except AttributeError:
        return "unknown (no fallback in explain)"


def _sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def run_model(model: str, threads: int) -> dict:
    """3 jitted steps of `model` at `threads` threads: hashes of the losses and the parameters."""
    import ember
    prev = ember.get_num_threads()
    rng_state = ember.get_rng_state()  # a copy: a test run leaves the global generator as it was
    ember.set_num_threads(threads)
    try:
        ember.manual_seed(SEED)
        P, _, data, step = _models().build(model, ember, cfg=CFGS[model], seed=SEED, momentum=0.9)
        j = ember.jit(step, backend="native")
        losses = [j(x, y).numpy().copy() for x, y in data[:STEPS]]
        arr = np.stack(losses).astype(np.float32)
        return {"losses": _sha(arr), "loss_values": [float(v).hex() for v in arr],
                "params": {k: _sha(p.detach().numpy()) for k, p in P.items()},
                "backend": _backend(j)}
    finally:
        ember.set_num_threads(prev)
        ember.set_rng_state(rng_state)


def compute(threads=THREADS, models=tuple(CFGS)) -> dict:
    """{fingerprint key: {"machine": ..., "models": {model: hashes}}} for each thread count."""
    import ember
    out = {}
    for n in threads:
        key, info = fingerprint(n)
        out[key] = {"machine": info, "models": {m: run_model(m, n) for m in models}}
    out["_ember"] = os.path.dirname(os.path.abspath(ember.__file__))
    return out


# ---------------------------------------------------------------- command line
def _child(tree: str, threads) -> dict:
    """compute() in a fresh python whose cwd and PYTHONPATH are `tree`."""
    tree = os.path.realpath(tree)
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    code = ("import json, sys, importlib.util; "
            f"spec = importlib.util.spec_from_file_location('msh', {os.path.abspath(__file__)!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            f"print('@@' + json.dumps(m.compute({tuple(threads)!r})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"running in {tree} failed:\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout[r.stdout.rindex("@@") + 2:])
    got = os.path.realpath(res["_ember"])
    if not got.startswith(tree + os.sep):
        sys.exit(f"{tree}: imported ember from {got}, not from the tree")
    return res


def _flat(entry: dict) -> dict:
    out = {}
    for m, h in entry["models"].items():
        out[f"{m}: losses"] = h["losses"]
        for k, v in h["params"].items():
            out[f"{m}: {k}"] = v
    return out


def _diff(a: dict, b: dict) -> list:
    fa, fb = _flat(a), _flat(b)
    return [f"{k}: {fa.get(k, '-')[:16]} != {fb.get(k, '-')[:16]}"
            for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def load_fixture(path: str = FIXTURE) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("fingerprints", {})


def write_fixture(results: dict, path: str = FIXTURE, source: str = "") -> None:
    known = load_fixture(path)
    cc = _compiler()
    for key, entry in results.items():
        if key.startswith("_"):
            continue
        known[key] = dict(entry, compiler=cc, source=source)
    doc = {"about": "sha256 of the raw bytes of 3 jitted training steps' losses and final parameters "
                    "(MD-16), per machine fingerprint; written by tools/make_step_hashes.py --write",
           "fingerprints": dict(sorted(known.items()))}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", help="a source tree to measure (repeat for two: diff)")
    ap.add_argument("--threads", default=",".join(map(str, THREADS)))
    ap.add_argument("--write", action="store_true", help=f"merge this machine's entries into {FIXTURE}")
    ap.add_argument("--json", action="store_true", help="print the raw result")
    args = ap.parse_args(argv)
    threads = tuple(int(t) for t in args.threads.split(","))
    trees = args.tree or [REPO]
    runs = [(t, _child(t, threads)) for t in trees]
    for tree, res in runs:
        print(f"# {tree} (ember from {res['_ember']})")
        if args.json:
            print(json.dumps(res, indent=1))
            continue
        for key, entry in res.items():
            if key.startswith("_"):
                continue
            print(f"[{key}]")
            for m, h in entry["models"].items():
                print(f"  {m} ({h['backend']}) losses {h['losses'][:16]}  "
                      + " ".join(float.fromhex(v).__repr__() for v in h["loss_values"]))
                for k, v in h["params"].items():
                    print(f"    {k:14s} {v}")
    if len(runs) == 2:
        (ta, a), (tb, b) = runs
        print(f"# {ta} vs {tb}")
        bad = 0
        for key in [k for k in a if not k.startswith("_")]:
            d = _diff(a[key], b[key]) if key in b else ["fingerprint missing on one side"]
            bad += bool(d)
            print(f"[{key}] " + ("identical" if not d else f"{len(d)} differ:\n  " + "\n  ".join(d)))
        return 1 if bad else 0
    tree, res = runs[-1]
    if args.write:
        src = tree
        try:
            head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()
            src = f"{tree} (git HEAD {head} of {REPO})" if head else tree
        except OSError:
            pass
        write_fixture(res, source=src)
        print(f"wrote {FIXTURE}")
        return 0
    known, bad = load_fixture(), 0
    for key in [k for k in res if not k.startswith("_")]:
        if key not in known:
            print(f"[{key}] not in {FIXTURE}: add it with --write (from the tree you trust)")
            continue
        d = _diff(known[key], res[key])
        bad += bool(d)
        print(f"[{key}] " + ("matches the fixture" if not d else f"{len(d)} differ from the fixture:\n  "
                             + "\n  ".join(d)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
