"""ember's layers (docs/architecture.md: lower layers never import higher ones), checked on the
source: every module under ember/ is parsed with `ast`, and every import in it (at the top, inside
functions and classes, under `if TYPE_CHECKING:`, and `importlib.import_module("ember...")` with a
constant name) is resolved to the ember module it names.

The test fails, listing all of them at once, on
- a module that LAYERS does not place ("add it to the layer map"),
- an import from a module to a module of a higher layer (the same layer is allowed),
- an import of a private name (`_x`, or a name under a private submodule `pkg._mod`) from
  another top-level package of ember (ember.jit taking ember.autograd._record); a top-level
  module counts as one (ember.tensor, ember.autograd). A top-level unit's own name does not count:
  ember._core and ember._safetensors are shared by design. SHARED_PRIVATE allows chosen names,
- an import of an ember module that does not exist (left stale by a move).

To move a module, edit LAYERS: "ember.x" is that one module (a package's `__init__` only);
"ember.x.*" is ember.x and everything under it. An exact entry wins over a ".*" one, and a longer
".*" prefix over a shorter one.
"""
import ast
from pathlib import Path

LAYERS = {
    "ember._core.*": 0,

    "ember.ops.*": 1,
    "ember.backend": 1,              # the package's __init__ only
    "ember.backend.contract": 1,
    "ember.backend.lowering": 1,

    "ember.tensor": 2,
    "ember.autograd": 2,
    "ember.eager": 2,
    "ember.codec": 2,
    "ember.api.*": 2,
    "ember.anomaly": 2,
    "ember.testing": 2,
    "ember.serialization": 2,
    "ember._safetensors": 2,
    "ember.checkpoint": 2,
    "ember.sparse": 2,
    "ember.nested": 2,

    "ember.ir.*": 3,

    "ember.runtime.*": 4,

    "ember.backend.cpu.*": 5,
    "ember.backend.sim.*": 5,

    "ember.jit.*": 6,

    "ember.nn.*": 7,
    "ember.optim.*": 7,
    "ember.distributions.*": 7,
    "ember.amp": 7,
    "ember.data.*": 7,
    "ember.datasets.*": 7,
    "ember.metrics": 7,
    "ember.onnx.*": 7,
    "ember.distributed.*": 7,
    "ember.deploy.*": 7,
    "ember.utils.*": 7,

    "ember.recipes.*": 8,
    "ember.serve.*": 8,
    "ember.cli": 8,
    "ember": 8,                      # the package's __init__
    "ember.__main__": 8,
}

# private names that are shared across packages by design, each allowed by its full name
# (e.g. "ember.tensor._wrap"); empty: every one is reported
SHARED_PRIVATE: set = set()

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ember"


def layer_of(module: str, layers: dict = LAYERS):
    """The layer of `module`, or None when the map does not place it."""
    if module in layers:
        return layers[module]
    best = None
    for pattern, layer in layers.items():
        if pattern.endswith(".*"):
            prefix = pattern[:-2]
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, layer)
    return None if best is None else best[1]


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict:
    """{module name: (path, is_package)} for every .py file under root/package."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _resolve_relative(module: str, is_pkg: bool, level: int, name) -> str:
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(module: str, path: Path, is_pkg: bool, known: dict, package: str = PACKAGE) -> list:
    """[(line, target module, imported name or None)] of the ember modules `module` imports.

    `from a.b import c` names the module a.b.c when that file exists, else the name c of a.b."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def ours(name):
        return name == package or name.startswith(package + ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    found.append((node.lineno, alias.name, None))
        elif isinstance(node, ast.ImportFrom):
            src = _resolve_relative(module, is_pkg, node.level, node.module) if node.level else node.module
            if not src or not ours(src):
                continue
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                if alias.name != "*" and sub in known:
                    found.append((node.lineno, sub, None))
                else:
                    found.append((node.lineno, src, None if alias.name == "*" else alias.name))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and "import_module" in (getattr(node.func, "attr", None), getattr(node.func, "id", None))):
            name = node.args[0].value
            if name.startswith("."):  # import_module(".x", __name__): relative to this package
                level = len(name) - len(name.lstrip("."))
                name = _resolve_relative(module, is_pkg, level, name.lstrip(".") or None)
            if ours(name):
                found.append((node.lineno, name, None))
    return found


def _unit(module: str) -> str:
    """The top-level unit of ember a module belongs to: ember.jit.executor -> ember.jit."""
    return ".".join(module.split(".")[:2])


def _private(target: str, name) -> bool:
    """A private name: the imported name, or a submodule below the top-level unit, is `_x`."""
    below = target.split(".")[2:] + ([name] if name else [])
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in below)


def violations(root: Path = ROOT, layers: dict = LAYERS, package: str = PACKAGE,
               shared: set = SHARED_PRIVATE) -> list:
    """[(kind, message)], kind one of "unknown", "upward", "private", "missing"."""
    known = modules(root, package)
    out = []
    for mod, (path, is_pkg) in known.items():
        if layer_of(mod, layers) is None:
            out.append(("unknown", f"{mod} ({path.relative_to(root)}): add it to the layer map"))
    for mod, (path, is_pkg) in known.items():
        here = layer_of(mod, layers)
        rel = path.relative_to(root)
        missing = {}
        for line, target, name in imports(mod, path, is_pkg, known, package):
            what = target + (f".{name}" if name else "")
            if target not in known:  # one line per import statement
                missing.setdefault((line, target), []).extend([name] if name else [])
            there = layer_of(target, layers)
            if here is not None and there is not None and there > here:
                out.append(("upward", f"{rel}:{line}: {mod} (layer {here}) imports {what} (layer {there})"))
            if _unit(target) != _unit(mod) and _private(target, name) and what not in shared:
                out.append(("private", f"{rel}:{line}: {mod} imports the private {what} of {_unit(target)}"))
        for (line, target), names in missing.items():
            what = f"{', '.join(names)} from {target}" if names else target
            out.append(("missing", f"{rel}:{line}: {mod} imports {what}, but there is no module {target} "
                                   f"under {package}/"))
    return out


KINDS = {"unknown": "modules the layer map does not place",
         "upward": "imports from a lower layer to a higher one",
         "private": "private names imported from another top-level package",
         "missing": "imports of modules that do not exist (stale after a move?)"}


def report(found: list) -> str:
    parts = []
    for kind, title in KINDS.items():
        lines = [m for k, m in found if k == kind]
        if lines:
            parts.append(f"{len(lines)} {title}:\n  " + "\n  ".join(lines))
    return "\n".join(parts)


def test_layers_lower_never_import_higher_and_no_private_names_across_packages():
    found = violations()
    assert not found, f"{len(found)} layering violation(s):\n" + report(found)


def test_the_checker_resolves_imports_and_reports_each_kind(tmp_path):
    """The checker itself, on a made-up package: relative, lazy and importlib imports resolve."""
    pkg = tmp_path / "pk"
    files = {
        "__init__.py": "from .top import run\n",
        "top.py": "def run():\n    from .low import _helper\n    return _helper\n",
        "low/__init__.py": "",
        "low/core.py": "import pk.top\nfrom . import sib\nfrom ..mid._impl import thing\n",
        "low/sib.py": "from .core import *\n",
        "mid/__init__.py": "",
        "mid/_impl.py": "import importlib\nm = importlib.import_module('pk.low.sib')\nthing = 1\n",
        "stray.py": "def f():\n    import pk.gone\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    layers = {"pk": 9, "pk.top": 9, "pk.low.*": 0, "pk.mid.*": 1, "pk.gone": 0}
    known = modules(tmp_path, "pk")
    got = imports("pk.low.core", *known["pk.low.core"], known, "pk")
    assert got == [(1, "pk.top", None), (2, "pk.low.sib", None), (3, "pk.mid._impl", "thing")]
    assert imports("pk.top", *known["pk.top"], known, "pk") == [(2, "pk.low", "_helper")]
    assert imports("pk.mid._impl", *known["pk.mid._impl"], known, "pk") == [(2, "pk.low.sib", None)]
    found = violations(tmp_path, layers, "pk")
    text = report(found)
    assert "pk.stray (pk/stray.py): add it to the layer map" in text
    assert "pk.low.core (layer 0) imports pk.top (layer 9)" in text
    assert "pk.low.core (layer 0) imports pk.mid._impl.thing (layer 1)" in text
    assert "pk.low.core imports the private pk.mid._impl.thing of pk.mid" in text
    assert "pk.top imports the private pk.low._helper of pk.low" in text
    assert "pk.mid._impl (layer 1) imports pk.low.sib" not in text  # downward: fine
    assert "but there is no module pk.gone under pk/" in text
    assert len(found) == 6, text
    assert layer_of("pk.low.core", layers) == 0 and layer_of("pk.other", layers) is None
    assert layer_of("ember.backend.cpu.step") == 5 and layer_of("ember.backend") == 1
    assert layer_of("ember.backend.lowering") == 1 and layer_of("ember.backend.other") is None
