"""The model repository: Triton's layout on disk, and the table of loaded model versions.

    <repository>/<model>/config.json          the schema: ember/serve/config.py, docs/serve.md
    <repository>/<model>/<version>/...        model.onnx | model.safetensors (+ model.py) | model.py

Loading a model reads its config, picks versions by its version policy, loads and warms up each and
starts its batcher. A version that fails is kept as UNAVAILABLE with the reason; the other versions
and models load regardless. A model may run a canary (ember/serve/canary.py) that picks the version of its unversioned
requests. The table (`_models`) is guarded by `_lock`; loads and unloads of one
model are serialized by that model's own lock, and run outside `_lock`, so a slow load never stalls
requests for other models. A reload builds the new versions first, swaps them in, then drains the
old ones' queues.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from .batcher import Batcher
from .canary import Canary
from .config import NAME_RE, ModelConfig, available_versions, read_config, select_versions
from .errors import ConfigError, NotFound, ServeError, Unavailable
from .metrics import Metrics
from .protocol import is_uint
from .models import ServedModel, load_version

log = logging.getLogger("ember.serve")

READY, UNAVAILABLE = "READY", "UNAVAILABLE"


@dataclass
class VersionEntry:
    """One version of a model: READY with its model and batcher, or UNAVAILABLE with a reason."""

    version: int
    state: str
    reason: str = ""
    config: ModelConfig | None = None
    model: ServedModel | None = None
    batcher: Batcher | None = None


@dataclass
class ModelEntry:
    """A model as the repository last loaded it."""

    name: str
    config: ModelConfig | None
    versions: dict = field(default_factory=dict)  # int -> VersionEntry
    reason: str = ""  # why the whole model is unavailable (a bad config.json, say)
    canary: Canary | None = None

    def ready_versions(self) -> list:
        return sorted(v for v, e in self.versions.items() if e.state == READY)

    def why_not_ready(self) -> str:
        if self.reason:
            return self.reason
        bad = [e.reason for _, e in sorted(self.versions.items()) if e.state != READY]
        return "; ".join(bad) or "no version is available"


class Repository:
    """The models of one repository directory and their loaded versions."""

    def __init__(self, root: str, metrics: Metrics):
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise NotFound(f"model repository {self.root!r} is not a directory")
        self.metrics = metrics
        self._lock = threading.Lock()
        self._models: dict = {}
        self._model_locks: dict = {}
        self._signatures: dict = {}  # model -> its files' signature when last loaded (poll mode)

    def _dir(self, name: str) -> str | None:
        if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
            return None
        d = os.path.join(self.root, name)
        return d if os.path.isfile(os.path.join(d, "config.json")) else None

    def model_names(self) -> list:
        """The models the repository directory holds (subdirectories with a config.json)."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        return sorted(n for n in names if self._dir(n) is not None)

    def _model_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(name, threading.Lock())

    # ---- load / unload
    def load(self, name: str, keep_on_failure: bool = False) -> ModelEntry:
        """(Re)load a model from the repository; returns its entry, failed versions included.
        With `keep_on_failure`, a reload in which some version fails keeps the old entry serving."""
        d = self._dir(name)
        if d is None:
            raise NotFound(f"the model repository has no model {name!r} (no {name}/config.json)")
        with self._model_lock(name):
            sig = self.signature(name)
            entry = self._build(name, d)
            with self._lock:
                old = self._models.get(name)
                failed = entry.reason or any(v.state != READY for v in entry.versions.values())
                if keep_on_failure and old is not None and failed:
                    log.warning("model %r: the new files did not load (%s); the loaded versions keep serving",
                                name, entry.why_not_ready())
                    self._stop(entry)
                    return old
                self._models[name] = entry
                self._signatures[name] = sig
            if old is not None:
                self._stop(old)
        if entry.ready_versions():
            log.info("loaded model %r versions %s", name, entry.ready_versions())
        else:
            log.warning("model %r is not ready: %s", name, entry.why_not_ready())
        return entry

    def _build(self, name: str, d: str) -> ModelEntry:
        try:
            config = read_config(d)
        except ServeError as e:
            return ModelEntry(name, None, reason=str(e))
        entry = ModelEntry(name, config)
        have = available_versions(d)
        chosen = select_versions(config.version_policy, have)
        if config.version_policy[0] == "specific":
            for v in config.version_policy[1]:
                if v not in have:
                    entry.versions[v] = VersionEntry(v, UNAVAILABLE, f"no version directory {name}/{v}")
        if not chosen and not entry.versions:
            entry.reason = f"model {name!r} has no version directory (such as {name}/1)"
        for v in chosen:
            try:
                model, vconfig = load_version(config, d, v)
            except ServeError as e:
                entry.versions[v] = VersionEntry(v, UNAVAILABLE, str(e), config)
                continue
            except Exception as e:  # noqa: BLE001 - one broken model never stops the others
                entry.versions[v] = VersionEntry(v, UNAVAILABLE, f"{type(e).__name__}: {e}", config)
                continue
            self.metrics.register(name, str(v))
            entry.versions[v] = VersionEntry(v, READY, "", vconfig, model, Batcher(model, self.metrics).start())
            entry.config = vconfig
        if config.canary is not None:
            try:
                self._start_canary(entry, config.canary)
            except ConfigError as e:
                log.warning("model %r: no canary: %s", name, e)
        return entry

    def _start_canary(self, entry: ModelEntry, policy) -> Canary:
        ready = entry.ready_versions()
        if policy.version not in ready:
            raise ConfigError(f"canary version {policy.version} of model {entry.name!r} is not ready "
                              f"(ready: {ready})")
        stable = [v for v in ready if v != policy.version]
        if not stable:
            raise ConfigError(f"model {entry.name!r} serves no stable version beside canary version "
                              f"{policy.version}: serve both (version_policy all, or latest 2)")
        entry.canary = Canary(entry.name, policy, stable[-1], self.metrics)
        return entry.canary

    def start_canary(self, name: str, policy) -> Canary:
        """Start (or restart) a canary on a loaded model."""
        e = self.entry(name)
        with self._model_lock(name):
            return self._start_canary(e, policy)

    def canary_action(self, name: str, action: str) -> Canary:
        """Promote or roll back a model's running canary."""
        e = self.entry(name)
        if e.canary is None:
            raise NotFound(f"model {name!r} has no canary")
        e.canary.act(action)
        return e.canary

    def signature(self, name: str) -> tuple:
        """What poll mode compares: config.json's and every version file's (path, size, mtime)."""
        d = os.path.join(self.root, name)
        out = []
        for top, dirs, files in os.walk(d):
            dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x != "__pycache__")
            for f in sorted(files):
                p = os.path.join(top, f)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                out.append((os.path.relpath(p, d), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def poll(self, only=None) -> list:
        """Poll mode: load models that appeared or whose files changed, unload those removed.
        A reload builds the new versions beside the old and swaps them in, so no request is
        dropped; one that fails to load leaves the old versions serving. `only` limits it to those
        models. Returns the names acted on."""
        names = set(self.model_names())
        if only is not None:
            names &= set(only)
        with self._lock:
            loaded = set(self._models)
        acted = []
        for n in sorted(loaded - names):
            self.unload(n)
            with self._lock:
                self._signatures.pop(n, None)
            acted.append(n)
        for n in sorted(names):
            sig = self.signature(n)
            if self._signatures.get(n) != sig:
                self.load(n, keep_on_failure=n in loaded)
                with self._lock:
                    self._signatures[n] = sig  # a failed reload is tried again when the files change again
                acted.append(n)
        return acted

    def unload(self, name: str) -> None:
        """Stop serving a model; its queued and running requests finish first."""
        if self._dir(name) is None and name not in self._models:
            raise NotFound(f"unknown model {name!r}")
        with self._model_lock(name):
            with self._lock:
                entry = self._models.pop(name, None)
            if entry is not None:
                self._stop(entry)
        log.info("unloaded model %r", name)

    @staticmethod
    def _stop(entry: ModelEntry) -> None:
        for ve in entry.versions.values():
            if ve.batcher is not None:
                ve.batcher.stop()
            if ve.model is not None:
                ve.model.close()
            ve.state, ve.reason = UNAVAILABLE, "unloaded"

    def close(self) -> None:
        """Unload every model (draining their queues)."""
        with self._lock:
            names = list(self._models)
        for n in names:
            self.unload(n)

    # ---- lookups
    def entry(self, name: str) -> ModelEntry:
        """The model's entry; an unloaded model of the repository gets one with the reason."""
        with self._lock:
            e = self._models.get(name)
        if e is not None:
            return e
        if self._dir(name) is None:
            raise NotFound(f"unknown model {name!r}")
        return ModelEntry(name, None, reason=f"model {name!r} is not loaded")

    def resolve(self, name: str, version: str | None, route: bool = True) -> VersionEntry:
        """The READY version a request names (the highest ready one, or the canary's pick when
        `route`, when `version` is None)."""
        e = self.entry(name)
        if version is None:
            if e.canary is not None and route:
                ve = e.versions.get(e.canary.route())
                if ve is not None and ve.state == READY:
                    return ve
            ready = e.ready_versions()
            if not ready:
                raise Unavailable(f"model {name!r} is not ready: {e.why_not_ready()}")
            return e.versions[ready[-1]]
        if not is_uint(version) or int(version) not in e.versions:
            if e.reason and not e.versions:
                raise Unavailable(f"model {name!r} is not ready: {e.reason}")
            raise NotFound(f"model {name!r} has no version {version!r} being served "
                           f"(served: {[str(v) for v in e.ready_versions()]})")
        ve = e.versions[int(version)]
        if ve.state != READY:
            raise Unavailable(f"model {name!r} version {version} is not ready: {ve.reason}")
        return ve

    def all_ready(self) -> bool:
        """True when every loaded model has every version READY."""
        with self._lock:
            entries = list(self._models.values())
        return all(not e.reason and all(v.state == READY for v in e.versions.values()) for e in entries)

    def index(self, ready_only: bool = False) -> list:
        """Every model of the repository with each version's state (Triton's repository index)."""
        with self._lock:
            loaded = dict(self._models)
        out = []
        for n in sorted(set(self.model_names()) | set(loaded)):
            e = loaded.get(n)
            if e is None or (not e.versions):
                item = {"name": n, "state": UNAVAILABLE, "reason": e.why_not_ready() if e else "not loaded"}
                if not ready_only:
                    out.append(item)
                continue
            for v, ve in sorted(e.versions.items()):
                if ready_only and ve.state != READY:
                    continue
                out.append({"name": n, "version": str(v), "state": ve.state, "reason": ve.reason})
        return out
