"""`import ember` is cheap and has no effects: no ml_dtypes (its extension takes most of a second
to initialise) until a bfloat16 value is needed, no threads, no files, nothing compiled."""
import json
import os
import subprocess
import sys

CODE = """
import json, os, sys, threading
import ember
out = {"ml_dtypes": "ml_dtypes" in sys.modules, "threads": threading.active_count(),
       "heavy": sorted(m for m in ("onnx", "mpi4py", "tqdm", "safetensors", "ember.jit", "ember.nn",
                                   "ember.backend.cpu") if m in sys.modules)}
x = ember.ones(3) * 2  # float32 work still needs no ml_dtypes
out["after_f32"] = "ml_dtypes" in sys.modules
b = ember.ones(3, dtype=ember.bfloat16) + 1
out["after_bf16"] = "ml_dtypes" in sys.modules
out["bf16"] = b.tolist()
print(json.dumps(out))
"""


def test_import_has_no_effects_and_defers_ml_dtypes(tmp_path):
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), EMBER_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"ml_dtypes": False, "threads": 1, "heavy": [], "after_f32": False, "after_bf16": True,
                   "bf16": [2.0, 2.0, 2.0]}
    assert not list(home.iterdir()) and not cache.exists()  # no file written, nothing compiled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_bfloat16_arrays_made_before_ember_needs_them():
    code = ("import ml_dtypes, numpy as np, ember; a = np.ones(2, ml_dtypes.bfloat16); "
            "t = ember.from_numpy(a); u = ember.tensor(a); print(t.dtype, u.dtype, ember.as_tensor(a).dtype)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ember.bfloat16"] * 3


# ---------------------------------------------------------------- no import cycle tensor <-> autograd
_BARE = """
import importlib, sys, types
pkg = types.ModuleType("ember")  # the package without its __init__: nothing imported in its order
pkg.__path__ = [sys.argv[1]]
sys.modules["ember"] = pkg
for name in sys.argv[2:]:
    importlib.import_module(name)
import ember.eager  # installs the eager interpreter
import ember.api  # Tensor's operators
from ember.tensor import tensor
x = tensor([1.0, 2.0], requires_grad=True)
(x * x).sum().backward()
print(x.grad.tolist())
"""


def test_tensor_and_autograd_import_first_in_any_order():
    """ember.tensor, ember.autograd and ember.eager import in any order, even before the package's
    __init__ ran its imports: no module-level cycle between them."""
    for mod in ("ember.autograd", "ember.tensor", "ember.eager"):
        r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    pkg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ember")
    for order in (["ember.autograd"], ["ember.tensor"], ["ember.eager"], ["ember.autograd", "ember.tensor"],
                  ["ember.tensor", "ember.autograd"]):
        r = subprocess.run([sys.executable, "-c", _BARE, pkg, *order], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (order, r.stderr)
        assert r.stdout.split() == ["[2.0,", "4.0]"], (order, r.stdout)
