"""Files and directories written all or nothing (layer 0: the standard library only).

`atomic_write(path, write_fn)` writes into a temporary file beside the target,
``.<name>.tmp-<pid>-<8 hex>``, flushes and fsyncs it, renames it over the target with
`os.replace` and fsyncs the directory, so a reader sees the old file or the new one, never a
part. If anything fails (the write function raises, the disk is full, the process is
interrupted by an exception) the temporary file is removed and the exception propagates; the
target is untouched. `atomic_directory(path, fill_fn)` does the same for a directory of files.

A writer killed outright (SIGKILL, power loss) leaves its temporary behind. Its name says whose it
is, so before each write the target's own leftovers are removed (`remove_stale_temp_files`): a
temporary is stale when this process is not writing it and its writer is gone: its pid is dead,
the pid is this process's own (a previous run that got the same pid, as happens in containers),
or it has not been touched for 15 minutes. A live writer's temporary is never touched.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time

__all__ = ["atomic_write", "atomic_directory", "remove_stale_temp_files", "fsync_directory",
           "temp_path"]

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
_STALE_AGE_S = 15 * 60  # a temporary untouched this long is abandoned even if its pid is alive
_ACTIVE: set = set()  # names of the temporaries this process is writing right now (all threads)


def temp_path(path) -> str:
    """A fresh temporary name beside `path`: ``<dir>/.<name>.tmp-<pid>-<8 hex>``."""
    d, base = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(d, f".{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_directory(directory) -> None:
    """fsync a directory, so that a rename in it is durable (ignored where unsupported)."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. EINVAL on file systems that do not sync directories
        pass
    finally:
        os.close(fd)


def _remove(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def atomic_write(path, write_fn, *, mode: int = 0o644) -> None:
    """Write `path` all or nothing through ``write_fn(f)``.

    `f` is the temporary file, open for binary writing; ``f.name`` is its path, for checks that
    read back what was written (raise to reject it). First the temporaries that killed writers of
    `path` left behind are removed. On any exception the temporary is removed and the exception
    propagates: `path` keeps its old content (or stays absent).
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    remove_stale_temp_files(directory, target=base)
    tmp = temp_path(path)
    name = os.path.basename(tmp)
    _ACTIVE.add(name)
    created = False
    try:
        with open(tmp, "xb", opener=lambda p, flags: os.open(p, flags, mode)) as f:
            created = True
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if created:
            _remove(tmp)
        raise
    finally:
        _ACTIVE.discard(name)
    fsync_directory(directory)


def atomic_directory(path, fill_fn) -> None:
    """Create or replace the directory `path` all or nothing; ``fill_fn(tmp)`` writes its files
    into the temporary directory `tmp`.

    The files are fsynced, then the directory is renamed into place (an existing `path` is first
    renamed aside, then deleted: a reader sees the old directory, no directory, or the new one,
    never a partial one). On any exception the temporary directory is removed and the exception
    propagates.
    """
    path = os.fspath(path)
    parent, base = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temp_files(parent, target=base)
    tmp, old = temp_path(path), temp_path(path)
    names = (os.path.basename(tmp), os.path.basename(old))
    _ACTIVE.update(names)
    created = False
    try:
        os.mkdir(tmp)
        created = True
        fill_fn(tmp)
        for root, _, files in os.walk(tmp):
            for n in files:
                fd = os.open(os.path.join(root, n), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_directory(root)
        moved = os.path.lexists(path)
        if moved:
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if moved:  # put the old directory back
                os.replace(old, path)
            raise
    except BaseException:
        if created:
            _remove(tmp)
        raise
    finally:
        _ACTIVE.difference_update(names)
    _remove(old)
    fsync_directory(parent)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # no process can have this pid
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(directory, name_prefix: str = "", *, target: str | None = None) -> list:
    """Delete the temporaries that interrupted atomic writes left in `directory`; return their paths.

    A temporary ``.<name>.tmp-<pid>-<hex>`` (file or directory) is considered when ``<name>``
    starts with `name_prefix`, or equals `target` when given, and removed when it is stale (see
    the module docstring). Entries that cannot be removed (permissions) are left alone.
    """
    directory = os.fspath(directory)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    me = os.getpid()
    for n in names:
        m = _TMP_RE.match(n)
        if not m or (m.group("name") != target if target is not None
                     else not m.group("name").startswith(name_prefix)):
            continue
        if n in _ACTIVE:  # another thread of this process is writing it
            continue
        p = os.path.join(directory, n)
        pid = int(m.group("pid"))
        try:
            age = now - os.lstat(p).st_mtime
        except OSError:
            continue
        if pid == me or not _pid_alive(pid) or age > _STALE_AGE_S:
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
                removed.append(p)
            except OSError:
                pass
    return removed
