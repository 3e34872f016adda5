"""Per-model counters in Prometheus' text format, named as Triton names them.

Every counter of one (model, version) lives in one `_Counts` object; all of them are read and
written under the registry's one lock, so an HTTP handler (the event loop) and a batcher thread
never race, and `/metrics` renders a consistent snapshot.
"""
from __future__ import annotations

import threading

COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "Number of inferences performed (a batch of n counts n)"),
    ("nv_inference_exec_count", "Number of model executions performed (one batch counts 1)"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds"),
    ("nv_inference_queue_duration_us", "Cumulative time requests spend waiting in the queue in microseconds"),
    ("nv_inference_compute_infer_duration_us",
     "Cumulative time requests spend executing the model in microseconds (a batch's time, per request)"),
)
_NAMES = tuple(n for n, _ in COUNTERS)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters keyed by (model, version)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict = {}
        self._canaries: dict = {}  # model -> its Canary (ember/serve/canary.py), the latest one
        self._decisions: dict = {}  # (model, version, decision) -> count

    def _get(self, model: str, version: str) -> dict:
        c = self._counts.get((model, version))
        if c is None:
            c = self._counts[(model, version)] = dict.fromkeys(_NAMES, 0)
        return c

    def register(self, model: str, version: str) -> None:
        """Make the counters of a loaded model version exist (at zero), so /metrics lists it."""
        with self._lock:
            self._get(model, version)

    def request(self, model: str, version: str, ok: bool, duration_ns: int) -> None:
        """Count one finished request (success or failure) and its end-to-end time."""
        with self._lock:
            c = self._get(model, version)
            c["nv_inference_request_success" if ok else "nv_inference_request_failure"] += 1
            c["nv_inference_request_duration_us"] += duration_ns // 1000

    def executed(self, model: str, version: str, inferences: int, requests: int, compute_ns: int,
                 queue_ns: int) -> None:
        """Count one model execution of `inferences` items from `requests` requests."""
        with self._lock:
            c = self._get(model, version)
            c["nv_inference_count"] += inferences
            c["nv_inference_exec_count"] += 1
            c["nv_inference_compute_infer_duration_us"] += requests * compute_ns // 1000
            c["nv_inference_queue_duration_us"] += queue_ns // 1000

    def snapshot(self, model: str, version: str) -> dict:
        """A copy of one model version's counters."""
        with self._lock:
            return dict(self._get(model, version))

    def canary(self, canary) -> None:
        """Show a model's canary (its state and traffic share) in /metrics."""
        with self._lock:
            self._canaries[canary.model] = canary

    def canary_decision(self, model: str, version: str, decision: str) -> None:
        """Count a canary's promotion or rollback."""
        with self._lock:
            k = (model, version, decision)
            self._decisions[k] = self._decisions.get(k, 0) + 1

    def render(self) -> str:
        """The Prometheus text exposition of every counter."""
        with self._lock:
            items = sorted((k, dict(v)) for k, v in self._counts.items())
            canaries = sorted(self._canaries.items())
            decisions = sorted(self._decisions.items())
        lines = []
        for name, help_ in COUNTERS:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} counter")
            for (model, version), c in items:
                lines.append(f'{name}{{model="{_label(model)}",version="{_label(version)}"}} {c[name]}')
        if canaries:
            lines += ["# HELP ember_canary_traffic_percent Share of unversioned requests sent to the canary",
                      "# TYPE ember_canary_traffic_percent gauge"]
            lines += [f'ember_canary_traffic_percent{{model="{_label(m)}",version="{c.policy.version}"}} {c.percent:g}'
                      for m, c in canaries]
            lines += ["# HELP ember_canary_state The canary's state (1 on the current one)",
                      "# TYPE ember_canary_state gauge"]
            lines += [f'ember_canary_state{{model="{_label(m)}",version="{c.policy.version}",state="{s}"}} '
                      f'{int(c.state == s)}' for m, c in canaries for s in ("running", "promoted", "rolled_back")]
        if decisions:
            lines += ["# HELP ember_canary_decisions_total Canary promotions and rollbacks",
                      "# TYPE ember_canary_decisions_total counter"]
            lines += [f'ember_canary_decisions_total{{model="{_label(m)}",version="{_label(v)}",decision="{d}"}} {n}'
                      for (m, v, d), n in decisions]
        return "\n".join(lines) + "\n"
