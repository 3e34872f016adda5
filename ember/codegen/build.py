"""Compile C source with the system compiler into a cached shared library and load it with ctypes.

The cache key hashes the source, the compiler's version, the flags and the target ISA (the
compiler's predefined macros under `-march=native`), so a library built for another CPU or compiler
is never loaded. Writes are atomic (compile to a temporary name, then `os.replace`). Never
`-ffast-math`/`-Ofast`: loading such a library flushes subnormals in the whole process.
`-ffp-contract=off` keeps +, -, * and / bit-identical with numpy (no FMA contraction).
`$EMBER_CFLAGS` adds flags (part of the key), e.g. `-fsanitize=address`.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-ffp-contract=off")
_FORBIDDEN = ("-ffast-math", "-Ofast", "-funsafe-math-optimizations")

_toolchains: dict = {}   # CC -> (version + ISA fingerprint) or None
_warned = False          # the "no compiler" warning is given once per process
_loaded: dict = {}       # library path -> CDLL


def compiler() -> str:
    """The C compiler command: `$CC`, else `cc`."""
    return os.environ.get("CC") or "cc"


def cache_dir() -> Path:
    """The kernel cache directory: `$EMBER_CACHE_DIR`, else ~/.cache/ember/kernels."""
    d = os.environ.get("EMBER_CACHE_DIR")
    return Path(d) if d else Path.home() / ".cache" / "ember" / "kernels"


def _fingerprint(cc: str) -> str | None:
    """Compiler version and ISA macros, or None when the compiler cannot run."""
    if cc in _toolchains:
        return _toolchains[cc]
    fp = None
    if shutil.which(cc):
        try:
            ver = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
            isa = subprocess.run([cc, "-march=native", "-dM", "-E", "-x", "c", os.devnull],
                                 capture_output=True, text=True, timeout=60)
            if ver.returncode == 0 and isa.returncode == 0:
                fp = ver.stdout + "\n" + isa.stdout
        except (OSError, subprocess.SubprocessError):
            fp = None
    _toolchains[cc] = fp
    return fp


def available() -> bool:
    """Whether a working C compiler is present."""
    return _fingerprint(compiler()) is not None


def _no_compiler(cc: str, why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"ember.codegen: cannot compile native kernels with C compiler {cc!r} ({why}); "
                      f"falling back to numpy kernels. Install gcc or set CC.", RuntimeWarning,
                      stacklevel=3)


def cache_key(source: str, flags: tuple = FLAGS) -> str | None:
    """The content hash naming a library: source, compiler version, flags and ISA."""
    fp = _fingerprint(compiler())
    if fp is None:
        return None
    h = hashlib.sha256()
    for part in (source, fp, " ".join(flags)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def extra_flags() -> tuple:
    """Flags added from `$EMBER_CFLAGS` (say `-fsanitize=address` for an AddressSanitizer run)."""
    return tuple(os.environ.get("EMBER_CFLAGS", "").split())


def build_library(source: str, flags: tuple = FLAGS) -> Path | None:
    """Compile `source` into the cache (or find it there); None when no compiler works."""
    flags = tuple(flags) + extra_flags()
    bad = [f for f in flags if f in _FORBIDDEN]
    if bad:
        raise ValueError(f"refusing unsafe math flags {bad}: they flush subnormals process-wide")
    cc = compiler()
    key = cache_key(source, flags)
    if key is None:
        _no_compiler(cc, "not found or not runnable")
        return None
    d = cache_dir()
    lib = d / f"{key}.so"
    if lib.exists():
        return lib
    d.mkdir(parents=True, exist_ok=True)
    src = d / f"{key}.c"
    _atomic_write(src, source)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f"{key}.", suffix=".so.tmp")
    os.close(fd)
    try:
        r = subprocess.run([cc, *flags, "-o", tmp, str(src), "-lm"], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"ember.codegen: {cc} failed on {src}:\n{r.stderr}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def load_library(source: str, flags: tuple = FLAGS) -> ctypes.CDLL | None:
    """Build (or reuse) and load the library for `source`; None when no compiler works."""
    path = build_library(source, flags)
    if path is None:
        return None
    key = str(path)
    if key not in _loaded:
        _loaded[key] = ctypes.CDLL(key)
    return _loaded[key]
