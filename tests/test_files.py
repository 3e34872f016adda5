"""ember._core.files: atomic writes of files and directories, and the cleanup of stale temporaries."""
import os
import stat

import pytest

from ember._core import files
from ember._core.files import atomic_directory, atomic_write, remove_stale_temp_files


def _names(d):
    return sorted(os.listdir(d))


class Boom(Exception):
    pass


def test_write_function_raising_removes_the_temp_file_and_leaves_the_target(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"old content")
    seen = {}

    def write(f):
        seen["tmp"] = f.name
        f.write(b"half of the new")
        f.flush()
        assert os.path.exists(f.name)
        raise Boom("disk on fire")

    with pytest.raises(Boom, match="disk on fire"):
        atomic_write(target, write)
    assert target.read_bytes() == b"old content"
    assert not os.path.exists(seen["tmp"])
    assert _names(tmp_path) == ["state.bin"]
    # the temporary was beside the target, named after it
    assert os.path.dirname(seen["tmp"]) == str(tmp_path)
    assert os.path.basename(seen["tmp"]).startswith(f".state.bin.tmp-{os.getpid()}-")


def test_a_failed_first_write_leaves_nothing(tmp_path):
    def write(f):
        f.write(b"x")
        raise KeyboardInterrupt  # not an Exception: cleaned up all the same
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", write)
    assert _names(tmp_path) == []


def test_atomic_write_replaces_the_target(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["a.txt"]
    assert stat.S_IMODE(os.stat(target).st_mode) & 0o600 == 0o600


def test_write_function_can_read_back_what_it_wrote(tmp_path):
    def write(f):
        f.write(b"payload")
        f.flush()
        with open(f.name, "rb") as r:  # a check on the temp file (as a download's checksum)
            assert r.read() == b"payload"
    atomic_write(tmp_path / "p", write)
    assert (tmp_path / "p").read_bytes() == b"payload"


def test_file_fsync_then_replace_then_directory_fsync(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "x", lambda f: f.write(b"1"))
    assert calls == ["fsync", "replace", "fsync"]


def test_stale_temporaries_of_the_target_are_removed_before_writing(tmp_path):
    dead = tmp_path / ".t.bin.tmp-999999999-0123abcd"  # a pid no process has
    mine = tmp_path / f".t.bin.tmp-{os.getpid()}-0123abcd"  # this pid, not being written: a past run
    live = tmp_path / f".t.bin.tmp-{os.getppid()}-0123abcd"  # a live writer: kept
    other = tmp_path / ".u.bin.tmp-999999999-0123abcd"  # another target's: not this write's business
    for p in (dead, mine, live, other):
        p.write_bytes(b"partial")
    atomic_write(tmp_path / "t.bin", lambda f: f.write(b"ok"))
    assert _names(tmp_path) == sorted([live.name, other.name, "t.bin"])
    assert remove_stale_temp_files(tmp_path) == [str(other)]


def test_old_temporaries_are_stale_even_when_their_pid_lives(tmp_path):
    p = tmp_path / f".t.tmp-{os.getppid()}-0123abcd"
    p.write_bytes(b"x")
    old = os.stat(p).st_mtime - files._STALE_AGE_S - 10
    os.utime(p, (old, old))
    assert remove_stale_temp_files(tmp_path, target="t") == [str(p)]


def test_atomic_directory_replaces_a_directory_whole(tmp_path):
    d = tmp_path / "cache"

    def fill(n):
        def go(tmp):
            for i in range(n):
                with open(os.path.join(tmp, f"f{i}"), "w") as f:
                    f.write(str(i))
        return go
    atomic_directory(d, fill(3))
    assert _names(d) == ["f0", "f1", "f2"]
    atomic_directory(d, fill(1))
    assert _names(d) == ["f0"] and _names(tmp_path) == ["cache"]

    def broken(tmp):
        fill(5)(tmp)
        raise Boom("killed midway")
    with pytest.raises(Boom):
        atomic_directory(d, broken)
    assert _names(d) == ["f0"] and _names(tmp_path) == ["cache"]  # old directory, no temporary


def test_stale_temporary_directories_are_removed(tmp_path):
    stale = tmp_path / ".cache.tmp-999999999-0123abcd"
    stale.mkdir()
    (stale / "leaf0.npy").write_bytes(b"partial")
    atomic_directory(tmp_path / "cache", lambda tmp: None)
    assert _names(tmp_path) == ["cache"]


def test_every_atomic_write_is_the_one_in_core_files():
    """No module of ember renames a file into place but `_core/files.py`: every atomic write
    (checkpoints, the pipeline cache, downloads, ONNX export, the kernel cache) goes through it."""
    import pathlib
    import ember.backend.cpu.compiler
    import ember.data.cache
    import ember.datasets.utils
    root = pathlib.Path(ember.__file__).parent
    renames = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if ("os.replace(" in p.read_text() or "os.rename(" in p.read_text()) and p.name != "files.py"]
    assert renames == [], renames
    assert ember.serialization.atomic_write is atomic_write
    assert ember.datasets.utils.atomic_write is atomic_write
    assert ember.backend.cpu.compiler.atomic_write is atomic_write
    assert ember.data.cache.atomic_directory is atomic_directory
