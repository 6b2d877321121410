"""Prometheus metrics of a daemon and of a coordinator, made from their statistics.

Nothing is counted twice: a collector reads the same snapshot that IPC
``stats`` or the coordinator's status file shows, at scrape time, and turns
it into metric families (``prometheus_client``'s custom collector API). So
the hot path carries no instrumentation, and the two views always agree.
Names follow Prometheus' conventions: a ``p2pd_`` or ``p2pd_coordinator_``
prefix, the unit in the name (``_bytes``, ``_seconds``, ``_ratio``), ``_total``
for counters. Label values come only from bounded sets: event kinds, drop
reasons, peers linked now (``max_peers`` and backups at most), map names of
registered daemons, and report codes this code knows (any other is ``other``).

docs/architecture.md lists the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from p2pd.coordinator.messages import REPORT_CODES


def _counter(name: str, doc: str, value: float | None = None,
             labels: Iterable[str] = ()) -> CounterMetricFamily:
    """``name`` without its ``_total``: prometheus_client adds it."""
    return CounterMetricFamily(name, doc, value=value, labels=list(labels) or None)


def _gauge(name: str, doc: str, value: float | None = None,
           labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, labels=list(labels) or None)


def _by(family: CounterMetricFamily | GaugeMetricFamily,
        values: Mapping[str, Any]) -> CounterMetricFamily | GaugeMetricFamily:
    for label, value in sorted(values.items()):
        family.add_metric([str(label)], float(value))
    return family


class DaemonCollector(Collector):
    """The daemon's metrics from its IPC ``stats`` snapshot (docs/ipc.md 11.3)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        bandwidth, packets, errors, events = (s["bandwidth"], s["packets"], s["errors"],
                                              s["events"])
        yield _gauge("p2pd_connections", "peer links up now", s["connections"])
        yield _gauge("p2pd_anomalous_peers", "linked peers that sent beyond their allowance",
                     len(s["anomalous_peers"]))
        yield _counter("p2pd_received_bytes", "UDP bytes received",
                       bandwidth["in_bytes_total"])
        yield _counter("p2pd_sent_bytes", "UDP bytes sent", bandwidth["out_bytes_total"])
        yield _gauge("p2pd_bandwidth_limit_bytes_per_second",
                     "[P2P] bandwidth_limit: the cap of what is sent to one peer",
                     bandwidth["limit_bytes_per_s_per_peer"])
        yield _gauge("p2pd_total_bandwidth_limit_bytes_per_second",
                     "[P2P] total_bandwidth_limit: the cap of what is sent to all peers",
                     bandwidth["limit_bytes_per_s_total"])
        yield _counter("p2pd_received_packets", "datagrams the session layer processed",
                       packets["received"])
        yield _counter("p2pd_sent_packets", "datagrams handed to the UDP socket",
                       packets["sent"])
        yield _by(_counter("p2pd_dropped_packets", "datagrams dropped, by reason",
                           labels=["reason"]), packets["dropped_by_reason"])
        yield _counter("p2pd_auth_failures", "datagrams that failed authentication",
                       errors["auth"])
        yield _counter("p2pd_invalid_events", "peer events dropped as invalid",
                       errors["invalid_events"])
        yield _counter("p2pd_internal_errors", "bugs caught in the daemon (see its log)",
                       errors.get("internal", 0))
        for name, doc in (("sent", "game events handed to peers, per peer"),
                          ("received", "valid game events received from peers"),
                          ("rate_limited", "position and effect events skipped for a "
                           "peer's rate limit")):
            yield _by(_counter(f"p2pd_events_{name}", doc, labels=["kind"]), events[name])
        yield _counter("p2pd_positions_out_of_view", "positions not sent: beyond view range",
                       events["out_of_view"])
        yield _counter("p2pd_notifications_dropped",
                       "pushed events dropped before the IPC layer",
                       events["notifications_dropped"])
        yield _gauge("p2pd_ipc_clients", "IPC connections open now", s["ipc"]["clients"])
        reports = s.get("reports")
        if reports is not None:
            yield _counter("p2pd_reports_sent", "problem reports sent to the coordinator",
                           reports["sent"])
            yield _counter("p2pd_reports_dropped", "problem reports held back by the rate "
                           "limit", reports["dropped"])
        coordinator = s.get("coordinator")
        yield _gauge("p2pd_coordinator_registered", "1 while registered with a coordinator",
                     1 if coordinator is not None and coordinator["state"] == "registered"
                     else 0)
        yield from self._peers(s["links"])

    @staticmethod
    def _peers(links: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["peer", "path", "role"]
        rtt = _gauge("p2pd_peer_rtt_seconds", "smoothed round-trip time of a link",
                     labels=labels)
        loss = _gauge("p2pd_peer_loss_ratio", "share of the peer's datagrams that never "
                      "arrived", labels=labels)
        for link in links:
            if link.get("state") != "established":
                continue
            names = [link["id"], link["path"], link.get("role", "")]
            if link.get("rtt_ms") is not None:
                rtt.add_metric(names, link["rtt_ms"] / 1000)
            loss.add_metric(names, link.get("loss", 0.0))
        yield rtt
        yield loss


class CoordinatorCollector(Collector):
    """The coordinator's metrics from its operator's snapshot (the status file's)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        yield _gauge("p2pd_coordinator_daemons", "daemons registered now", s["daemons"])
        yield _by(_gauge("p2pd_coordinator_map_daemons", "daemons registered now, by the map "
                         "they reported", labels=["map"]), s["maps"])
        relay = s["relay"]
        yield _counter("p2pd_coordinator_relayed_packets", "RELAY packets forwarded",
                       relay["packets"])
        yield _counter("p2pd_coordinator_relayed_bytes", "RELAY bytes forwarded",
                       relay["bytes"])
        yield _by(_counter("p2pd_coordinator_relay_dropped_packets",
                           "RELAY packets dropped, by reason", labels=["reason"]),
                  relay["dropped"])
        yield _by(_counter("p2pd_coordinator_refused_admissions",
                           "handshakes refused, by reason", labels=["reason"]), s["refused"])
        yield _by(_counter("p2pd_coordinator_messages", "control messages received, by kind",
                           labels=["kind"]), s["messages"])
        yield _counter("p2pd_coordinator_bad_messages", "control messages refused",
                       s["bad_messages"])
        codes: dict[str, int] = {}
        for code, count in s.get("report_codes", {}).items():
            label = code if code in REPORT_CODES else "other"
            codes[label] = codes.get(label, 0) + count
        yield _by(_counter("p2pd_coordinator_reports", "problem reports received from "
                           "daemons, by code", labels=["code"]), codes)


def registry_for(collector: Collector) -> CollectorRegistry:
    """A registry of its own holding only ``collector`` (no process metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
