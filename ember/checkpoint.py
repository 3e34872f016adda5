"""A directory of numbered checkpoints: atomic saves, keep the newest N, find and load the latest.

Files: ``<prefix>-<step:08d>.safetensors`` (the checkpoint, written by `ember.save`, atomically)
and ``<prefix>-<step:08d>.safetensors.json`` (its human-readable sidecar, written after it; never
trusted on load). A save that is killed at any point leaves the previous checkpoints intact and at
most a temporary file ``.<prefix>-....tmp-<pid>-<hex>``; `ember.save` removes its own target's
leftovers before writing, and a manager removes those of every checkpoint of its prefix when it is
constructed on the directory (and after every successful save), so a restarted job starts clean.

PI-5 (checkpoint every k steps, keep at most N): ``CheckpointManager(d, keep=10)`` saved 25 times
holds exactly the 10 newest checkpoints.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from . import serialization as _ser
from ._core.files import remove_stale_temp_files
from .serialization import CheckpointError

__all__ = ["CheckpointManager", "CheckpointError"]

_SUFFIX = ".safetensors"


class CheckpointManager:
    """Numbered checkpoints in `directory`, keeping the newest `keep` (all if None).

    >>> mgr = CheckpointManager("runs/ckpt", keep=3)
    >>> mgr.save({"model": sd, "opt": opt_sd, "epoch": 2}, step=1200)
    >>> state = mgr.load_latest()        # None when there is no checkpoint yet
    """

    def __init__(self, directory, keep: int | None = 5, prefix: str = "ckpt", *, sidecar: bool = True):
        if keep is not None and (not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be a positive int or None, got {keep!r}")
        if not prefix or "/" in prefix or os.sep in prefix:
            raise ValueError(f"bad checkpoint prefix {prefix!r}")
        self.directory = Path(directory)
        self.keep = keep
        self.prefix = prefix
        self.sidecar = sidecar
        self._re = re.compile(rf"^{re.escape(prefix)}-(\d+){re.escape(_SUFFIX)}$")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cleanup()

    # ---- names
    def path_for(self, step: int) -> Path:
        """The checkpoint file for `step`."""
        return self.directory / f"{self.prefix}-{int(step):08d}{_SUFFIX}"

    def steps(self) -> list:
        """The steps that have a checkpoint file, oldest first."""
        out = []
        for n in os.listdir(self.directory):
            m = self._re.match(n)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def checkpoints(self) -> list:
        """The checkpoint files, oldest first."""
        return [self.path_for(s) for s in self.steps()]

    def latest(self) -> Path | None:
        """The newest checkpoint file, or None."""
        s = self.steps()
        return self.path_for(s[-1]) if s else None

    def latest_step(self) -> int | None:
        s = self.steps()
        return s[-1] if s else None

    # ---- saving
    def save(self, obj: Any, step: int, *, metadata: dict | None = None) -> Path:
        """Atomically save `obj` as the checkpoint of `step`, then delete the oldest beyond `keep`."""
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        path = self.path_for(step)
        meta = {"checkpoint.step": str(step), **(metadata or {})}
        _ser.save(obj, path, sidecar=self.sidecar, metadata=meta)
        self._prune()
        self.cleanup()
        return path

    def _prune(self) -> None:
        if self.keep is None:
            return
        steps = self.steps()
        for s in steps[:max(0, len(steps) - self.keep)]:
            p = self.path_for(s)
            # the sidecar first: an interruption leaves a valid checkpoint without sidecar, never a
            # sidecar without its checkpoint (cleanup() removes such orphans anyway)
            for f in (Path(str(p) + ".json"), p):
                try:
                    f.unlink()
                except FileNotFoundError:
                    pass

    def cleanup(self) -> list:
        """Remove temporary files of interrupted saves and sidecars whose checkpoint is gone."""
        removed = remove_stale_temp_files(self.directory, name_prefix=self.prefix + "-")
        for n in os.listdir(self.directory):
            if n.endswith(_SUFFIX + ".json") and self._re.match(n[:-5]) \
                    and not (self.directory / n[:-5]).exists():
                try:
                    (self.directory / n).unlink()
                    removed.append(str(self.directory / n))
                except FileNotFoundError:
                    pass
        return removed

    # ---- loading
    def load(self, step: int, map_location=None, **kwargs) -> Any:
        """Load the checkpoint of `step`."""
        return _ser.load(self.path_for(step), map_location=map_location, **kwargs)

    def load_latest(self, map_location=None, *, fallback: bool = True, **kwargs) -> Any:
        """Load the newest checkpoint (None if there is none).

        With `fallback`, a newest file that fails to load (damaged on disk after it was written)
        is reported with a warning and the next older one is tried.
        """
        steps = self.steps()
        for i, s in enumerate(reversed(steps)):
            try:
                return self.load(s, map_location=map_location, **kwargs)
            except CheckpointError as e:
                if not fallback or i == len(steps) - 1:
                    raise
                warnings.warn(f"skipping damaged checkpoint: {e}", RuntimeWarning, stacklevel=2)
        return None

    def __repr__(self) -> str:
        return f"CheckpointManager({str(self.directory)!r}, keep={self.keep}, prefix={self.prefix!r})"

