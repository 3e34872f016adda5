"""The native kernel cache is code, not data: a damaged cached library is rebuilt, never loaded,
and a cache directory other users could write into is refused."""
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from ember.backend.cpu import compiler

pytestmark = pytest.mark.skipif(not compiler.available(), reason="no C compiler")

SOURCE = "int ember_cache_probe(int x) { return x * 3 + %d; }\n"


def _run(cache, n):
    """Load the probe library in a fresh process (a SIGBUS there cannot kill the test)."""
    code = textwrap.dedent(f"""
        from ember.backend.cpu import compiler
        lib = compiler.load_library({SOURCE!r} % {n}, compiler.FLAGS)
        print(lib.ember_cache_probe(2))
    """)
    env = dict(os.environ, EMBER_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def _lib(cache, n):
    key = compiler.cache_key(SOURCE % n, compiler.FLAGS + compiler.extra_flags())
    return cache / f"{key}.so"


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "no record", "record mismatch"])
def test_damaged_library_is_rebuilt(tmp_path, damage):
    cache = tmp_path / "kernels"
    first = _run(cache, 7)
    assert first.returncode == 0 and first.stdout.strip() == "13", first.stderr
    lib = _lib(cache, 7)
    rec = lib.with_name(lib.name + ".sha256")
    data = lib.read_bytes()
    if damage == "truncated":
        lib.write_bytes(data[: len(data) // 2])  # (a crash mid-write: loading it dies of SIGBUS)
    elif damage == "empty":
        lib.write_bytes(b"")
    elif damage == "garbage":
        lib.write_bytes(os.urandom(len(data)))
    elif damage == "no record":
        rec.unlink()
    else:
        rec.write_text(f"{len(data)} {'0' * 64}\n")
    again = _run(cache, 7)
    assert again.returncode == 0 and again.stdout.strip() == "13", (damage, again.returncode, again.stderr[-2000:])
    assert compiler._verified(lib)


def test_cache_writable_by_others_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("EMBER_CACHE_DIR", str(cache))
    with pytest.raises(compiler.KernelCacheError, match="other users may write"):
        compiler.load_library(SOURCE % 11, compiler.FLAGS)
    cache.chmod(0o700)
    assert compiler.load_library(SOURCE % 11, compiler.FLAGS).ember_cache_probe(1) == 14


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_cache_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    monkeypatch.setenv("EMBER_CACHE_DIR", str(cache))
    with pytest.raises(compiler.KernelCacheError, match="belongs to user id 65534"):
        compiler.load_library(SOURCE % 12, compiler.FLAGS)


def test_new_cache_directory_is_private(tmp_path, monkeypatch):
    cache = tmp_path / "a" / "b"
    monkeypatch.setenv("EMBER_CACHE_DIR", str(cache))
    compiler.load_library(SOURCE % 13, compiler.FLAGS)
    assert stat.S_IMODE(os.stat(cache).st_mode) & 0o077 == 0
    libs = [p for p in cache.iterdir() if p.suffix == ".so"]
    assert len(libs) == 1 and compiler._verified(libs[0])
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
