"""Event-driven autoscaling on in-flight concurrency (DMLP-9), after Knative's pod autoscaler, which
KServe uses with `scaleMetric: concurrency` and `scaleTarget`.

Every `tick_s` the scaler samples the router's in-flight requests (waiting or forwarded). Desired
replicas = ceil(mean concurrency over the stable window / target), clamped to [min, max]. When the
mean over the short panic window asks for twice the current replicas or more, it scales to that at
once and does not scale down while panicking; otherwise it scales up to the stable figure at once and
down only after the figure has stayed lower for `scale_down_delay_s`. A replica being removed takes no
new requests; it leaves when its in-flight requests have finished.

Runs on its own thread ("ember-router-autoscaler"); the replica set and the router's backend list are
the only state it changes, both under their own locks.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("ember.serve")


@dataclass(frozen=True)
class Autoscale:
    """The scaler's knobs: `target` in-flight requests per replica, the replica bounds and windows."""

    target: float = 1.0
    min_replicas: int = 1
    max_replicas: int = 4
    stable_window_s: float = 6.0
    panic_window_s: float = 1.0
    scale_down_delay_s: float = 2.0
    tick_s: float = 0.1

    def __post_init__(self):
        if not self.target > 0:
            raise ValueError(f"autoscale target must be > 0 requests per replica, got {self.target}")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"autoscale needs 0 <= min_replicas <= max_replicas, max >= 1; got "
                             f"{self.min_replicas}, {self.max_replicas}")


def desired_replicas(samples, now: float, current: int, cfg: Autoscale) -> tuple:
    """(desired, panicking) from (time, concurrency) samples, as the class docstring describes."""
    def mean(window):
        xs = [c for t, c in samples if t > now - window]
        return sum(xs) / len(xs) if xs else 0.0
    clamp = lambda n: min(max(n, cfg.min_replicas), cfg.max_replicas)  # noqa: E731
    stable = clamp(math.ceil(mean(cfg.stable_window_s) / cfg.target - 1e-9))
    panic = clamp(math.ceil(mean(cfg.panic_window_s) / cfg.target - 1e-9))
    if current > 0 and panic >= 2 * current or current == 0 and panic > 0:
        return max(panic, current), True
    return stable, False


class Autoscaler:
    """Scale `replicas` (a ReplicaSet) behind `router` on concurrency."""

    def __init__(self, router, replicas, cfg: Autoscale):
        if replicas is None:
            raise ValueError("autoscaling needs a ReplicaSet (Router(replicas=..., autoscale=...))")
        self.router, self.replicas, self.cfg = router, replicas, cfg
        self.desired = len(replicas.replicas) if replicas.replicas else cfg.min_replicas
        self.panicking = False
        self.events = {"up": 0, "down": 0, "replaced": 0}
        self.history: list = []  # (time, replicas) after each change
        self._samples: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ember-router-autoscaler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def stats(self) -> dict:
        return {"desired": self.desired, "replicas": len(self.replicas), "panicking": self.panicking,
                "events": dict(self.events), "config": self.cfg.__dict__}

    def metrics_lines(self) -> list:
        return ["# HELP ember_autoscaler_desired_replicas Replicas the autoscaler wants",
                "# TYPE ember_autoscaler_desired_replicas gauge", f"ember_autoscaler_desired_replicas {self.desired}",
                "# HELP ember_autoscaler_scale_events_total Replicas added (up), removed (down) or replaced",
                "# TYPE ember_autoscaler_scale_events_total counter",
                *(f'ember_autoscaler_scale_events_total{{direction="{k}"}} {v}' for k, v in self.events.items())]

    def _run(self) -> None:
        below_since = None
        while not self._stop.wait(self.cfg.tick_s):
            now = time.monotonic()
            self._samples.append((now, self.router.inflight))
            while self._samples and self._samples[0][0] < now - max(self.cfg.stable_window_s, self.cfg.panic_window_s):
                self._samples.popleft()
            try:
                self._replace_dead()
                current = len(self.replicas.replicas)
                want, self.panicking = desired_replicas(self._samples, now, current, self.cfg)
                self.desired = want
                if want > current:
                    below_since = None
                    self._scale_up(want - current)
                elif want < current and not self.panicking:
                    below_since = below_since or now
                    if now - below_since >= self.cfg.scale_down_delay_s:
                        self._scale_down(current - want)
                        below_since = None
                else:
                    below_since = None
            except Exception:  # noqa: BLE001 - a failed spawn is logged and tried again next tick
                log.exception("autoscaler step failed")
                self._stop.wait(1.0)

    def _record(self) -> None:
        self.history.append((time.monotonic(), len(self.replicas.replicas)))

    def _replace_dead(self) -> None:
        for r in list(self.replicas.replicas):
            if not r.alive():
                log.warning("replica %s exited with %s; replacing it", r.name, r.proc.returncode)
                self._detach(r)
                self.replicas.remove(r)
                self.events["replaced"] += 1
                self._record()

    def _detach(self, replica) -> None:
        for b in self.router.backends.all():
            if b.name == replica.name:
                self.router.remove_backend(b)

    def _scale_up(self, n: int) -> None:
        log.info("autoscaler: +%d replicas (to %d)", n, len(self.replicas.replicas) + n)
        for r in self.replicas.add(n):
            self.router.add_backend(r.url, r.name)
        self.events["up"] += n
        self._record()

    def _scale_down(self, n: int) -> None:
        victims = list(self.replicas.replicas)[-n:]
        log.info("autoscaler: -%d replicas (to %d)", n, len(self.replicas.replicas) - n)
        backends = [b for b in self.router.backends.all() if b.name in {r.name for r in victims}]
        for b in backends:
            b.draining = True
        deadline = time.monotonic() + self.replicas.drain_timeout_s
        while any(b.inflight for b in backends) and time.monotonic() < deadline:
            time.sleep(0.01)
        for b in backends:
            self.router.remove_backend(b)
        self.events["down"] += n
        for r in victims:
            self.replicas.remove(r)
        self._record()
