"""MD-16 (bitwise reproducibility at a fixed thread count): the jitted MLP, CNN and GPT training
steps give the same bits as the committed code did before a refactor.

`tools/make_step_hashes.py` runs each model for 3 optimizer steps through `ember.jit` on the native
backend from fixed seeds (numpy's for the data and the initial parameters, `ember.manual_seed` for
the MLP's dropout) at 1 and 2 threads, and hashes (sha256) the raw bytes of the 3 losses and of every
parameter after the last step. `tests/fixtures/step_hashes.json` holds those hashes per machine
fingerprint "<CBLAS> | <machine> cpu:<digest of SIMD flags> | threads=<n>", since GEMM results
depend on the BLAS library and the kernels it picks for the CPU. A fingerprint the fixture lacks is
skipped, saying which and how to add it; two runs in one process must agree everywhere.
"""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("make_step_hashes", os.path.join(ROOT, "tools", "make_step_hashes.py"))
msh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(msh)

HOW = ("to add it, export the tree you trust and run the tool from it, e.g.\n"
       "  rm -rf /tmp/base && mkdir /tmp/base && git archive HEAD | tar -x -C /tmp/base\n"
       "  python tools/make_step_hashes.py --tree /tmp/base --write")


@pytest.fixture(scope="module")
def runs():
    """Two complete measurements in this process (the second reuses the compiled kernels)."""
    return msh.compute(), msh.compute()


def test_md16_two_runs_in_one_process_give_identical_hashes(runs):
    """MD-16: the same seeds give the same bits, losses and parameters, run to run."""
    a, b = runs
    keys = [k for k in a if not k.startswith("_")]
    assert keys == [k for k in b if not k.startswith("_")]
    for key in keys:
        diff = msh._diff(a[key], b[key])
        assert not diff, f"[{key}] two runs differ:\n  " + "\n  ".join(diff)
        for model, h in a[key]["models"].items():
            assert len(h["loss_values"]) == msh.STEPS, model


@pytest.mark.parametrize("threads", msh.THREADS)
def test_md16_step_hashes_match_the_fixture(runs, threads):
    """MD-16: at a fixed thread count, the native steps' losses and parameters after 3 steps are
    bitwise the ones recorded for this machine's fingerprint."""
    if not msh.compiler_available():
        pytest.skip("no working C compiler: the native backend is not available")
    got = runs[0]
    key, _ = msh.fingerprint(threads)
    entry = got[key]
    for model, h in entry["models"].items():
        assert h["backend"] not in ("ArenaExecutable",) and not h["backend"].startswith("fallback"), \
            f"{model} did not run on the native backend: {h['backend']}"
    known = msh.load_fixture()
    if key not in known:
        pytest.skip(f"{os.path.relpath(msh.FIXTURE, ROOT)} has no hashes for the fingerprint {key!r} "
                    f"(known: {sorted(known)}); {HOW}")
    diff = msh._diff(known[key], entry)
    if diff:
        rec = known[key].get("compiler", {})
        now = msh._compiler()
        note = "" if rec == now else f"\n(recorded with compiler {rec}, this run's is {now})"
        pytest.fail(f"[{key}] {len(diff)} hashes differ from the fixture (fixture != now):\n  "
                    + "\n  ".join(diff) + note)
