"""The pipeline's cache stage: the first full epoch is recorded (in memory, or on disk under a
fingerprint of the pipeline above it) and later epochs replay it (DMLP-3)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

from .. import codec
from .._core.files import atomic_directory
from .pipeline import Pipeline

_CACHE_FORMAT = "ember.pipeline.cache/2"  # /1 (before the shared codec) is rebuilt, not read


def _flatten(x):
    """(header, arrays) of an element: `ember.codec` with Python numbers as 0-d arrays, so that
    elements differing only in their values share one header and their arrays can be stacked."""
    try:
        return codec.encode(x, numbers_as_arrays=True)
    except TypeError as e:
        raise TypeError(f"cache: {e}") from None


class _Cache(Pipeline):
    """Replays the upstream after one complete epoch (DMLP-3).

    In memory (``path=None``) the elements of the first complete epoch are kept. With a path, the
    epoch is written under ``<path>/<fingerprint>/``: ``meta.json`` (format, the element structure,
    the count) and one ``leaf<j>.npy`` per array position (elements' arrays stacked when they share
    a shape, else concatenated flat with their shapes in the JSON), read back with
    ``allow_pickle=False``. Nothing is pickled. The directory name is the upstream's fingerprint, so
    a changed upstream (function code, captured values, source data, parameters) misses the cache;
    stale fingerprint directories under `path` are removed when a new one is written. Writes are
    atomic (a temporary directory renamed into place), so a killed run leaves no half cache.
    """
    op = "cache"

    def __init__(self, parent, path):
        super().__init__((parent,), "cache(memory)" if path is None else "cache(file)")
        self.path = None if path is None else os.fspath(path)
        self._mem = None

    def _params(self):
        return "cache"  # transparent: data is the upstream's

    def fingerprint(self):
        return self._parents[0].fingerprint()

    def _dir(self):
        return os.path.join(self.path, self._parents[0].fingerprint()[:32])

    def _iter(self, epoch):
        if self.path is None:
            if self._mem is not None:
                yield from self._mem
                return
            out = []
            for x in self._pull(self._parents[0]):
                out.append(x)
                yield x
            self._mem = out
            return
        d = self._dir()
        meta = self._meta(d)
        if meta is not None:
            yield from self._read(d, meta)
            return
        out = []
        for x in self._pull(self._parents[0]):
            out.append(x)
            yield x
        self._write(d, out)

    def _write(self, d, elems):
        templates, per_elem = [], []
        for x in elems:
            tpl, leaves = _flatten(x)
            templates.append(tpl)
            per_elem.append(leaves)
        same = all(t == templates[0] for t in templates)
        meta = {"format": _CACHE_FORMAT, "count": len(elems), "same": same,
                "template": templates[0] if (same and templates) else None,
                "templates": None if same else templates, "leaves": []}

        def fill(tmp):
            nleaves = max((len(le) for le in per_elem), default=0) if same else 0
            if same and elems:
                for j in range(nleaves):
                    col = [le[j] for le in per_elem]
                    if all(c.shape == col[0].shape and c.dtype == col[0].dtype for c in col):
                        np.save(os.path.join(tmp, f"leaf{j}.npy"), np.stack(col), allow_pickle=False)
                        meta["leaves"].append({"stacked": True})
                    else:
                        np.save(os.path.join(tmp, f"leaf{j}.npy"),
                                np.concatenate([c.astype(col[0].dtype).ravel() for c in col]), allow_pickle=False)
                        meta["leaves"].append({"stacked": False, "shapes": [list(c.shape) for c in col]})
            else:  # heterogeneous structures: one flat file per element leaf
                for i, le in enumerate(per_elem):
                    for j, a in enumerate(le):
                        np.save(os.path.join(tmp, f"e{i}_{j}.npy"), a, allow_pickle=False)
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f)

        os.makedirs(self.path, exist_ok=True)
        for old in os.listdir(self.path):  # stale fingerprints
            p = os.path.join(self.path, old)
            if p != d and os.path.isdir(p) and len(old) == 32 and os.path.exists(os.path.join(p, "meta.json")):
                shutil.rmtree(p, ignore_errors=True)
        atomic_directory(d, fill)

    @staticmethod
    def _meta(d):
        """The cache's meta.json, or None when there is none in this format (then it is rebuilt)."""
        try:
            with open(os.path.join(d, "meta.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == _CACHE_FORMAT else None

    def _read(self, d, meta):
        n = meta["count"]
        if meta["same"]:
            cols = []
            for j, info in enumerate(meta["leaves"]):
                arr = np.load(os.path.join(d, f"leaf{j}.npy"), allow_pickle=False, mmap_mode="r")
                if info["stacked"]:
                    cols.append(arr)
                else:
                    parts, off = [], 0
                    for s in info["shapes"]:
                        k = int(np.prod(s, dtype=np.int64))
                        parts.append(arr[off:off + k].reshape(s))
                        off += k
                    cols.append(parts)
            tpl = meta["template"]
            for i in range(n):
                yield codec.decode(tpl, [np.array(c[i]) for c in cols])
        else:
            for i, tpl in enumerate(meta["templates"]):
                leaves, j = [], 0
                while os.path.exists(os.path.join(d, f"e{i}_{j}.npy")):
                    leaves.append(np.load(os.path.join(d, f"e{i}_{j}.npy"), allow_pickle=False))
                    j += 1
                yield codec.decode(tpl, leaves)
