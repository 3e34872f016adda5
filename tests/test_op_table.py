"""docs/op_dtype_table.md is generated from the primitive registry and must not go stale."""
import importlib.util
import pathlib

import ember
from ember._core import dtypes as dt

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("op_table", ROOT / "tools" / "op_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_table_is_fresh():
    tool = _tool()
    fresh = tool.render()
    committed = tool.TABLE.read_text(encoding="utf-8")
    assert committed == fresh, "docs/op_dtype_table.md is stale: run python3 tools/op_table.py"


def test_table_has_one_row_per_primitive_with_the_registry_cells():
    text = _tool().render()
    rows = {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == set(ember.ops.REGISTRY)
    for name, p in ember.ops.REGISTRY.items():
        kind, diff, lower, *cells = rows[name]
        assert kind == p.kind
        assert diff == ("y" if p.vjp is not None else "n")
        assert lower == ("y" if p.lowering is not None else "n")
        user = dt.ALL + dt.COMPLEX
        assert cells[:len(user)] == ["✓" if d in p.dtypes else "" for d in user]
        assert cells[-1] == ("✓" if dt.uint32 in p.dtypes else "")


def test_check_mode_detects_a_stale_file(tmp_path):
    tool = _tool()
    out = tmp_path / "table.md"
    assert tool.main(["--output", str(out)]) == 0
    assert tool.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("✓", "", 1), encoding="utf-8")
    assert tool.main(["--check", "--output", str(out)]) == 1
    out.unlink()
    assert tool.main(["--check", "--output", str(out)]) == 1
