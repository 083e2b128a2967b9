"""Prometheus metrics of the agent, on their own registry (prometheus-client).

Everything is counted where the agent receives it — dnstap client responses, the module's
decision records, events and counter snapshots from the resolver process — so the metrics stay
right even while the database refuses writes.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
              28: "AAAA", 33: "SRV", 64: "SVCB", 65: "HTTPS"}
WRITE_BUCKETS = (5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 20e-3, 0.1)
TTL_BUCKETS = (0, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


def qtype_label(qtype) -> str:
    return TYPE_NAMES.get(qtype, "other") if isinstance(qtype, int) else "other"


class Metrics:
    def __init__(self, *, dropped: Callable[[], dict[str, int]] = dict,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.queries = Counter("nettrust_queries", "Client queries answered, by verdict, type "
                               "and whether the answer came from Unbound's cache",
                               ["verdict", "qtype", "cache"], registry=r)
        self.grants = Counter("nettrust_grants", "Addresses granted by answers", ["family"],
                              registry=r)
        self.write_seconds = Histogram("nettrust_firewall_write_seconds", "Duration of the "
                                       "firewall write on the answer path", buckets=WRITE_BUCKETS,
                                       registry=r)
        self.ttl = Histogram("nettrust_answer_ttl_seconds", "Lowest TTL in each answer with "
                             "records, as fetched (cache misses and local data)",
                             buckets=TTL_BUCKETS, registry=r)
        self.backend_errors = Counter("nettrust_backend_errors", "Firewall writes that failed "
                                      "(the answer failed closed)", registry=r)
        self.records = Counter("nettrust_agent_records", "Records received by the agent",
                               ["stream"], registry=r)
        self.bad_records = Counter("nettrust_agent_bad_records", "Records the agent could not "
                                   "decode (dropped)", ["stream"], registry=r)
        self.sampled_seconds = Counter("nettrust_agent_sampled_seconds", "Seconds in which "
                                       "client responses (dnstap) passed "
                                       "stats.responses_per_second: only the first were stored "
                                       "(totals: nettrust_resolver_counter{name=~\"unbound.*\"})",
                                       registry=r)
        self.alerts = Counter("nettrust_alerts", "Alerts notified", ["rule"], registry=r)
        self.alerts_suppressed = Counter("nettrust_alerts_suppressed", "Alerts not notified "
                                         "because of the rate limit", ["rule"], registry=r)
        self.events = Counter("nettrust_events", "Events recorded, by kind: the resolver's "
                              "(unauthorized, strike, ...) and the agent's own (alert, "
                              "stats_dropped); the kinds nettrust stats summary lists",
                              ["kind"], registry=r)
        self.resolver = Gauge("nettrust_resolver_counter", "Counts since it started of each "
                              "running resolver process (pid); a process's series go when it "
                              "exits", ["name", "pid"], registry=r)
        self.resolver_levels = Gauge("nettrust_resolver_level", "Current levels reported by "
                                     "each running resolver process (grants, names_granted, "
                                     "hosts_live, ...); a process's series go when it exits",
                                     ["name", "pid"], registry=r)
        #: pid -> the (gauge, name) series it reported, removed when it disconnects.
        self._series: dict[str, set[tuple[Gauge, str]]] = {}
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        r.register(_Derived(self, dropped))

    # -- feeding ---------------------------------------------------------------------------
    def query(self, verdict: str, qtype, cached: bool, ttl: int | None, count: int = 1) -> None:
        self.queries.labels(verdict, qtype_label(qtype), "hit" if cached else "miss").inc(count)
        if ttl is not None and not cached:
            self.ttl.observe(ttl)

    def decision(self, record: dict) -> None:
        now = self.clock()
        grants = record.get("grants") or ()
        with self._lock:
            for address, timeout in grants:
                self._expiry[address] = max(self._expiry.get(address, 0.0),
                                            now + float(timeout))
        for address, _ in grants:
            self.grants.labels("ipv6" if ":" in address else "ipv4").inc()
        if record.get("written"):
            self.write_seconds.observe(float(record.get("write_s") or 0.0))
        if record.get("error"):
            self.backend_errors.inc()

    def counters(self, pid, values: dict, levels: dict | None = None) -> None:
        """A resolver process's snapshot: ``values`` count since it started, ``levels`` are
        current (a snapshot without ``levels`` is all counts, as older modules send)."""
        pid = str(pid)
        with self._lock:
            series = self._series.setdefault(pid, set())
            for gauge, items in ((self.resolver, values), (self.resolver_levels, levels or {})):
                for name, value in items.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        gauge.labels(str(name), pid).set(value)
                        series.add((gauge, str(name)))

    def forget(self, pid) -> None:
        """Drop every series of resolver process ``pid`` (it exited or disconnected)."""
        with self._lock:
            for gauge, name in self._series.pop(str(pid), ()):
                try:
                    gauge.remove(name, str(pid))
                except KeyError:
                    pass

    @property
    def resolver_pids(self) -> set[str]:
        with self._lock:
            return set(self._series)

    def active(self) -> dict[str, int]:
        """Granted addresses still live, per family (as far as decisions told the agent)."""
        now = self.clock()
        counts = {"ipv4": 0, "ipv6": 0}
        with self._lock:
            dead = [a for a, t in self._expiry.items() if t <= now]
            for a in dead:
                del self._expiry[a]
            for a in self._expiry:
                counts["ipv6" if ":" in a else "ipv4"] += 1
        return counts

    def serve(self, address: str, port: int):
        """Start the HTTP endpoint in a daemon thread; returns (server, thread)."""
        return start_http_server(port, addr=address, registry=self.registry)


class _Derived(Collector):
    # a subclass: Debian's prometheus-client 0.16 has Collector as an ABC, newer ones a Protocol
    """Values computed at scrape time: active grants and the store's drop counters."""

    def __init__(self, metrics: Metrics, dropped: Callable[[], dict[str, int]]) -> None:
        self.metrics, self.dropped = metrics, dropped

    def describe(self):
        return []

    def collect(self):
        active = GaugeMetricFamily("nettrust_granted_addresses", "Addresses with a live grant",
                                   labels=["family"])
        for family, n in self.metrics.active().items():
            active.add_metric([family], n)
        yield active
        dropped = CounterMetricFamily("nettrust_stats_dropped", "Statistics records dropped "
                                      "instead of stored, by reason", labels=["reason"])
        for reason, n in sorted(self.dropped().items()):
            dropped.add_metric([reason], n)
        yield dropped
