"""What replicas do, counted: a Scheduler `on_event` hook that keeps counters and histograms per
replica, and writes them in the Prometheus text exposition format (version 0.0.4). No client
library: a handful of series is a page of code, and the kernel stays dependency-light.

    metrics = Metrics()
    scheduler = Scheduler(store, dispatcher, on_event=metrics)
    text = metrics.render()          # what GET /metrics answers

Series (every one labelled by `replica`):
  leasecron_fires_total{trigger}              attempts sent (schedule, manual, retry, catch_up)
  leasecron_finishes_total{status}            attempts ended (success, failed, timeout, ...)
  leasecron_failures_total{class}             failed attempts by cause: timeout, http_4xx,
                                              http_5xx, no_reply (no HTTP status), other
  leasecron_retries_scheduled_total           failed attempts that queued a retry
  leasecron_skipped_slots_total               slots recorded skipped by misfire/overlap policy
  leasecron_redeliveries_total                orphaned attempts of a dead holder sent again
  leasecron_lease_losses_total                leases taken over while this replica held them
  leasecron_unrecorded_outcomes_total         outcomes not written: the lease was lost first
  leasecron_store_errors_total{operation}     store operations that failed
  leasecron_in_flight                         attempts sent and not yet finished (gauge)
  leasecron_fire_lag_seconds                  histogram: start of an attempt minus its slot
  leasecron_attempt_duration_seconds          histogram: an attempt from send to outcome
  leasecron_polls_total                       looks at the store (a peek, and a claim if due)
  leasecron_claimed_total                     schedules those polls claimed
  leasecron_poll_seconds                      histogram: what one poll cost (its store calls)
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import defaultdict
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
POLL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_HELP = {
    "leasecron_fires_total": ("counter", "Attempts sent, by trigger."),
    "leasecron_finishes_total": ("counter", "Attempts ended, by status."),
    "leasecron_failures_total": ("counter", "Failed attempts, by cause."),
    "leasecron_retries_scheduled_total": ("counter", "Failed attempts that queued a retry."),
    "leasecron_skipped_slots_total": ("counter", "Slots recorded skipped by policy."),
    "leasecron_redeliveries_total": ("counter", "Orphaned attempts sent again."),
    "leasecron_lease_losses_total": ("counter", "Leases taken over while held."),
    "leasecron_unrecorded_outcomes_total": ("counter", "Outcomes not written (lease lost)."),
    "leasecron_store_errors_total": ("counter", "Store operations that failed."),
    "leasecron_polls_total": ("counter", "Looks at the store for due work."),
    "leasecron_claimed_total": ("counter", "Schedules claimed by those polls."),
    "leasecron_in_flight": ("gauge", "Attempts sent and not finished."),
    "leasecron_fire_lag_seconds": ("histogram", "Attempt start minus its slot, in seconds."),
    "leasecron_attempt_duration_seconds": ("histogram", "Attempt send to outcome, in seconds."),
    "leasecron_poll_seconds": ("histogram", "What one poll of the store cost, in seconds."),
}
_FAILED = frozenset({"failed", "timeout"})


def failure_class(status: str, status_code: int | None) -> str:
    """The cause of a failed attempt, coarse enough to alert on."""
    if status == "timeout":
        return "timeout"
    if status_code is None:
        return "no_reply"
    if 400 <= status_code < 500:
        return "http_4xx"
    if status_code >= 500:
        return "http_5xx"
    return "other"


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """The on_event hook (callable as `metrics(event, data)`); `render()` the exposition text.
    Safe to render from another thread while events arrive. `replica` labels the events that
    carry none (store errors), for a process with one replica."""

    def __init__(self, replica: str = ""):
        self.replica = replica
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
            lambda: defaultdict(float)
        )
        self._sent: dict[str, tuple[str, float]] = {}  # run row id -> (replica, sent at)
        self._replicas: set[str] = {replica} if replica else set()  # every one that fired
        self._lag: dict[str, _Histogram] = {}
        self._duration: dict[str, _Histogram] = {}
        self._poll: dict[str, _Histogram] = {}

    def _count(self, name: str, replica: str, amount: float = 1.0, **labels: str) -> None:
        key = (("replica", replica), *sorted(labels.items()))
        self._counters[name][key] += amount

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        replica = str(data.get("replica") or self.replica)
        with self._lock:
            if event == "fire":
                self._fire(replica, data)
            elif event == "finish":
                self._finish(replica, data)
            elif event == "skip":
                self._count("leasecron_skipped_slots_total", replica, data.get("count", 1))
            elif event == "redelivery":
                self._count("leasecron_redeliveries_total", replica, data.get("count", 1))
            elif event == "poll":
                self._count("leasecron_polls_total", replica)
                if data.get("claimed"):
                    self._count("leasecron_claimed_total", replica, data["claimed"])
                hist = self._poll.get(replica) or self._poll.setdefault(
                    replica, _Histogram(POLL_BUCKETS)
                )
                hist.observe(max(0.0, float(data.get("seconds", 0.0))))
            elif event == "lease_lost":
                self._count("leasecron_lease_losses_total", replica)
            elif event == "store_error":
                operation = str(data.get("operation", "unknown"))
                self._count("leasecron_store_errors_total", replica, operation=operation)

    def _fire(self, replica: str, data: dict[str, Any]) -> None:
        self._count("leasecron_fires_total", replica, trigger=str(data.get("trigger")))
        self._replicas.add(replica)
        at = data.get("at")
        if at is None:
            return
        self._sent[data["run_row_id"]] = (replica, at)
        slot = data.get("scheduled_for")
        if slot is not None:
            lag = self._lag.get(replica) or self._lag.setdefault(replica, _Histogram(LAG_BUCKETS))
            lag.observe(max(0.0, at - slot))

    def _finish(self, replica: str, data: dict[str, Any]) -> None:
        status = str(data.get("status"))
        self._count("leasecron_finishes_total", replica, status=status)
        if status in _FAILED:
            cause = failure_class(status, data.get("status_code"))
            self._count("leasecron_failures_total", replica, 1.0, **{"class": cause})
        if data.get("retry_at") is not None:
            self._count("leasecron_retries_scheduled_total", replica)
        if data.get("skipped"):  # a release that recorded overlapped slots skipped
            self._count("leasecron_skipped_slots_total", replica, data["skipped"])
        if data.get("recorded") is False:
            self._count("leasecron_unrecorded_outcomes_total", replica)
        run_row_id = data.get("run_row_id")
        sent = None if run_row_id is None else self._sent.pop(run_row_id, None)
        if sent is not None and data.get("at") is not None:
            hist = self._duration.get(replica) or self._duration.setdefault(
                replica, _Histogram(DURATION_BUCKETS)
            )
            hist.observe(max(0.0, data["at"] - sent[1]))

    def in_flight(self) -> dict[str, int]:
        """Attempts sent and not finished, per replica."""
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for replica, _ in self._sent.values():
                out[replica] += 1
        return dict(out)

    def value(self, name: str, **labels: str) -> float:
        """The sum of a counter over the series matching `labels` (0 if none): for tests and
        for a status view."""
        with self._lock:
            series = self._counters.get(name, {})
            return sum(v for key, v in series.items() if all((k, labels[k]) in key for k in labels))

    def render(self) -> str:
        """Every series in the Prometheus text format, families in a stable order."""
        lines: list[str] = []
        in_flight = self.in_flight()
        with self._lock:
            for name, (kind, text) in _HELP.items():
                if kind == "counter":
                    series = self._counters.get(name)
                    if not series:
                        continue
                    lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
                    for key in sorted(series):
                        lines.append(f"{name}{_labels(key)} {_number(series[key])}")
                elif kind == "gauge":
                    lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
                    mine = {self.replica} if self.replica else set()
                    for replica in sorted(self._replicas | mine | set(in_flight)):
                        value = in_flight.get(replica, 0)
                        lines.append(f"{name}{_labels((('replica', replica),))} {value}")
                else:
                    hists = {
                        "leasecron_fire_lag_seconds": self._lag,
                        "leasecron_attempt_duration_seconds": self._duration,
                        "leasecron_poll_seconds": self._poll,
                    }[name]
                    if not hists:
                        continue
                    lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
                    for replica in sorted(hists):
                        lines += _histogram_lines(name, replica, hists[replica])
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, replica: str, hist: _Histogram) -> list[str]:
    out = []
    running = 0
    for bound, count in zip((*hist.bounds, math.inf), hist.counts, strict=True):
        running += count
        labels = _labels((("replica", replica), ("le", _number(bound))))
        out.append(f"{name}_bucket{labels} {running}")
    base = _labels((("replica", replica),))
    out.append(f"{name}_sum{base} {_number(hist.total)}")
    out.append(f"{name}_count{base} {hist.count}")
    return out
