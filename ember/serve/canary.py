"""Canary releases with automatic promotion or rollback (TB-4).

A model serving two versions (a version policy of `all` or `latest` 2) sends `percent` of its
unversioned requests to the canary `version` and the rest to the stable one (the highest other ready
version). The split is deterministic: of every 100 requests, exactly `percent` go to the canary,
spread evenly. Requests that name a version are never redirected.

Once the canary has answered `min_requests` requests, the controller compares it with the stable
version on the server's own per-version counters (ember/serve/metrics.py), counted from the canary's
start: with `metric: "error_rate"` it rolls back when the canary's failure rate exceeds the stable
one's by more than `max_error_rate`; with `metric: "latency"` when its mean request duration is over
`max_latency_ratio` times the stable one's. Otherwise it promotes: every unversioned request goes to
the canary version from then on. A rollback sends them all to the stable version. Each decision is
counted in /metrics (`ember_canary_decisions_total`) and the state shown (`ember_canary_state`,
`ember_canary_traffic_percent`). `auto: false` leaves the decision to the repository API
(POST /v2/repository/models/<m>/canary {"action": "promote" | "rollback"}).

A Canary is used by the event loop (routing) and read by /metrics: its state changes under its lock.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass

from .errors import ConfigError

log = logging.getLogger("ember.serve")

METRICS = ("error_rate", "latency")
RUNNING, PROMOTED, ROLLED_BACK = "running", "promoted", "rolled_back"


@dataclass(frozen=True)
class CanaryPolicy:
    """A canary: `percent` of traffic to `version`, judged on `metric` after `min_requests`."""

    version: int
    percent: float
    metric: str = "error_rate"
    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5
    min_requests: int = 100
    auto: bool = True

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def parse_canary(raw) -> CanaryPolicy:
    """Validate a config.json `canary` object (or the repository API's body)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"canary must be a JSON object, got {type(raw).__name__}")
    fields = {f.name for f in dataclasses.fields(CanaryPolicy)}
    unknown = set(raw) - fields
    if unknown:
        raise ConfigError(f"canary: unknown keys {sorted(unknown)} (allowed: {sorted(fields)})")
    v, pct = raw.get("version"), raw.get("percent")
    if type(v) is not int or v < 1:
        raise ConfigError(f"canary.version must be a version number >= 1, got {v!r}")
    if type(pct) not in (int, float) or not 0 <= pct <= 100:
        raise ConfigError(f"canary.percent must be a number in [0, 100], got {pct!r}")
    pol = CanaryPolicy(v, float(pct), **{k: raw[k] for k in fields - {"version", "percent"} if k in raw})
    if pol.metric not in METRICS:
        raise ConfigError(f"canary.metric must be one of {', '.join(METRICS)}, got {pol.metric!r}")
    for k in ("max_error_rate", "max_latency_ratio"):
        x = getattr(pol, k)
        if type(x) not in (int, float) or not x >= 0:
            raise ConfigError(f"canary.{k} must be a number >= 0, got {x!r}")
    if type(pol.min_requests) is not int or pol.min_requests < 1:
        raise ConfigError(f"canary.min_requests must be an integer >= 1, got {pol.min_requests!r}")
    if not isinstance(pol.auto, bool):
        raise ConfigError("canary.auto must be true or false")
    return pol


def _rates(c: dict, base: dict) -> tuple:
    ok = c["nv_inference_request_success"] - base["nv_inference_request_success"]
    bad = c["nv_inference_request_failure"] - base["nv_inference_request_failure"]
    us = c["nv_inference_request_duration_us"] - base["nv_inference_request_duration_us"]
    n = ok + bad
    return n, (bad / n if n else 0.0), (us / n if n else 0.0)


class Canary:
    """The traffic split and decision for one model's canary version against its stable version."""

    def __init__(self, model: str, policy: CanaryPolicy, stable: int, metrics):
        self.model, self.policy, self.stable, self.metrics = model, policy, stable, metrics
        self.state, self.reason = RUNNING, ""
        self._lock = threading.Lock()
        self._n = 0
        self._base = {v: metrics.snapshot(model, str(v)) for v in (policy.version, stable)}
        metrics.canary(self)

    @property
    def percent(self) -> float:
        """Traffic to the canary now: the policy's while running, 100 promoted, 0 rolled back."""
        return {RUNNING: self.policy.percent, PROMOTED: 100.0, ROLLED_BACK: 0.0}[self.state]

    def route(self) -> int:
        """The version for the next unversioned request (and a decision, when one is due)."""
        with self._lock:
            if self.state == RUNNING and self.policy.auto:
                self._evaluate()
            if self.state != RUNNING:
                return self.policy.version if self.state == PROMOTED else self.stable
            n, self._n = self._n, self._n + 1
            p = self.policy.percent
            return self.policy.version if int((n + 1) * p / 100) > int(n * p / 100) else self.stable

    def _evaluate(self) -> None:
        cn, cerr, clat = _rates(self.metrics.snapshot(self.model, str(self.policy.version)),
                                self._base[self.policy.version])
        if cn < self.policy.min_requests:
            return
        sn, serr, slat = _rates(self.metrics.snapshot(self.model, str(self.stable)), self._base[self.stable])
        if self.policy.metric == "error_rate":
            bad = cerr > serr + self.policy.max_error_rate
            why = f"error rate {cerr:.3f} vs stable {serr:.3f} (allowed +{self.policy.max_error_rate})"
        else:
            bad = sn > 0 and clat > self.policy.max_latency_ratio * slat
            why = (f"mean latency {clat / 1000:.2f} ms vs stable {slat / 1000:.2f} ms "
                   f"(allowed x{self.policy.max_latency_ratio})")
        self._decide(ROLLED_BACK if bad else PROMOTED, f"after {cn} canary requests: {why}")

    def _decide(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        self.metrics.canary_decision(self.model, str(self.policy.version), state)
        log.warning("model %r canary version %d %s: %s", self.model, self.policy.version,
                    "promoted" if state == PROMOTED else "rolled back", reason)

    def act(self, action: str) -> None:
        """Promote or roll back by hand (the repository API)."""
        if action not in ("promote", "rollback"):
            raise ConfigError(f"canary action must be 'promote' or 'rollback', got {action!r}")
        with self._lock:
            if self.state != RUNNING:
                raise ConfigError(f"model {self.model!r}'s canary was {self.state.replace('_', ' ')} already")
            self._decide(PROMOTED if action == "promote" else ROLLED_BACK, "by request")

    def to_json(self) -> dict:
        return {"policy": self.policy.to_json(), "stable_version": self.stable, "state": self.state,
                "traffic_percent": self.percent, "reason": self.reason}
