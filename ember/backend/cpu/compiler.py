"""Compile C source with the system compiler into a cached shared library and load it with ctypes.

The cache key hashes the source, the compiler's version, the flags and the target ISA (the
compiler's predefined macros under `-march=native`), so a library built for another CPU or compiler
is never loaded. Never `-ffast-math`/`-Ofast`: loading such a library flushes subnormals in the
whole process.

Loading a library runs its code, so the cache is treated as code, not data:
- a library is compiled to a temporary name, fsync'ed, renamed into place and the directory
  fsync'ed; beside it `KEY.so.sha256` records its size and sha256. Before a cached library is
  loaded both are checked, and a library that does not match (truncated by a crash or a full disk,
  empty, garbage, or with no record) is rebuilt, never loaded: mapping a truncated library kills
  the process with SIGBUS when its missing pages are touched;
- the cache directory must belong to this user and be writable by no one else
  (`KernelCacheError` otherwise), or another user could plant a library that ember would load.
`-ffp-contract=off` keeps +, -, * and / bit-identical with numpy (no FMA contraction).
`-fno-trapping-math` (clang's default) tells GCC that floating-point exceptions are not
observed, which lets it compute both arms of a `?:` and blend them. Without it GCC vectorizes no
loop with a float select on AVX2 (a select may hide an op that would raise a flag, and only
AVX-512 can mask it), so exp/tanh/sigmoid ran scalar on Haswell and Zen. Values do not change:
it only drops the promise about exception flags, which ember's kernels never read.
`$EMBER_CFLAGS` adds flags (part of the key), e.g. `-fsanitize=address`.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

from ..._core.errors import EmberError
from ..._core.files import atomic_write, temp_path
from ..._core.state import debug_level

FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
         "-ffp-contract=off")
_FORBIDDEN = ("-ffast-math", "-Ofast", "-funsafe-math-optimizations")

_toolchains: dict = {}   # CC -> (version + ISA fingerprint) or None
_warned = False          # the "no compiler" warning is given once per process
_loaded: dict = {}       # library path -> CDLL


class KernelCacheError(EmberError, PermissionError):
    """The kernel cache directory could let another user's code be loaded."""


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
        warnings.warn(f"ember: cannot compile native kernels with C compiler {cc!r} ({why}); "
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


def _digest(path: Path) -> str:
    """'SIZE SHA256' of a file."""
    with open(path, "rb") as f:
        return _digest_of(f.read())


def _digest_of(data: bytes) -> str:
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def _verified(lib: Path) -> bool:
    """Whether `lib` exists and matches the size and hash recorded beside it."""
    rec = lib.with_name(lib.name + ".sha256")
    try:
        want = rec.read_text().strip()
        size = int(want.split()[0])
        if lib.stat().st_size != size:  # the cheap check first: a truncated file stops here
            return False
        return _digest(lib) == want
    except (OSError, ValueError, IndexError):
        return False


def checked_cache_dir() -> Path:
    """The cache directory, created private (0700); refused when another user owns it or may
    write into it."""
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.stat(d)
    why = None
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        why = f"it belongs to user id {st.st_uid}, not to this user ({os.geteuid()})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        why = f"other users may write into it (mode {stat.filemode(st.st_mode)})"
    if why:
        raise KernelCacheError(
            f"ember: refusing the kernel cache {d}: {why}; a library planted there would run "
            f"inside this process. Use a private directory (chmod 700 {d}) or point EMBER_CACHE_DIR at one.")
    return d


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
    d = checked_cache_dir()
    lib = d / f"{key}.so"
    if _verified(lib):
        return lib
    src = d / f"{key}.c"
    atomic_write(src, lambda f: f.write(source.encode()))
    out = temp_path(lib)  # the compiler's own output; the library is then written atomically
    t0 = time.perf_counter()
    try:
        r = subprocess.run([cc, *flags, "-o", out, str(src), "-lm"], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"ember: {cc} failed on {src}:\n{r.stderr}")
        with open(out, "rb") as f:
            data = f.read()
    finally:
        if os.path.exists(out):
            os.unlink(out)
    atomic_write(lib, lambda f: f.write(data), mode=0o755)
    atomic_write(lib.with_name(lib.name + ".sha256"), lambda f: f.write((_digest_of(data) + "\n").encode()))
    if debug_level() >= 1:
        print(f"ember: compiled {lib.name} ({source.count(chr(10))} lines of C) in "
              f"{time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)
    return lib


def load_library(source: str, flags: tuple = FLAGS) -> ctypes.CDLL | None:
    """Build (or reuse) and load the library for `source`; None when no compiler works."""
    path = build_library(source, flags)
    if path is None:
        return None
    key = str(path)
    if key not in _loaded:
        try:
            _loaded[key] = ctypes.CDLL(key)
        except OSError:  # it matched its record but does not load: rebuild it once
            path.with_name(path.name + ".sha256").unlink(missing_ok=True)
            _loaded[key] = ctypes.CDLL(str(build_library(source, flags)))
    return _loaded[key]
