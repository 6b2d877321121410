"""Seeing the network (spec 8.1, 8.3): the drawing encoding, the metrics
collectors and their HTTP responder, the [metrics] settings, the operator's
mesh view and the reports of critical problems, in virtual time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from p2pd.config import ConfigError, load_config, load_coordinator_config
from p2pd.coordinator.mesh_view import mesh_view
from p2pd.coordinator.messages import (
    ControlMessageError,
    LinkEntry,
    Links,
    decode_control_untrusted,
    encode_control,
)
from p2pd.io.metrics_server import answer
from p2pd.metrics import CoordinatorCollector, DaemonCollector, registry_for
from p2pd.sim.network import LinkProfile
from p2pd.viz import GREEN, GREY, ORANGE, RED, daemon_dot, look, mesh_dot, mesh_edges
from tests.test_coordinator import world
from tests.test_relay import mesh_daemon

ME = "ab" * 32


def link(peer: str, **fields: Any) -> dict[str, Any]:
    return {"peer": peer * 32, "id": (peer * 32)[:16], "path": "direct", "role": "active",
            "state": "established", "rtt_ms": 1.25, "loss": 0.0, "anomalous": False,
            "idle_s": 0, **fields}


def dot_counts(dot: str) -> tuple[int, int]:
    """Nodes and edges declared in DOT text made by p2pd.viz."""
    nodes = len(re.findall(r'(?m)^  "[^"]+" \[', dot))
    edges = len(re.findall(r'(?m)^  "[^"]+" -- "[^"]+" \[', dot))
    return nodes, edges


# -- the encoding ------------------------------------------------------------------------


def test_each_kind_of_link_is_drawn_as_the_encoding_says() -> None:
    assert look(link("01")).colour == GREEN and look(link("01")).style == "solid"
    relayed = look(link("02", path="relay", rtt_ms=230.4))
    assert (relayed.colour, relayed.style, relayed.label) == (ORANGE, "dashed", "relay 230 ms")
    assert look(link("03", role="backup")).colour == GREY
    assert look(link("04", state="connecting")).style == "dotted"
    for trouble, why in (({"loss": 0.2}, "loss 20%"), ({"anomalous": True}, "anomalous"),
                         ({"idle_s": 11}, "silent 11 s")):
        drawn = look(link("05", path="relay", **trouble))
        assert (drawn.colour, drawn.problem) == (RED, why)
    assert look(link("06", loss=0.05, idle_s=10)).problem is None  # at the thresholds: fine


def test_a_daemons_graph_has_a_node_and_an_edge_per_link() -> None:
    stats = {"public_key": ME, "coordinator": {"state": "registered"},
             "links": [link("01"), link("02", path="relay"), link("03", state="connecting")]}
    dot = daemon_dot(stats)
    assert dot_counts(dot) == (4, 3)
    assert f'"{ME[:16]}" -- "{"02" * 8}"' in dot and 'style="dashed"' in dot
    assert "coordinator registered" in dot


def test_the_mesh_of_a_map_counts_each_pair_once() -> None:
    daemons = [
        {"daemon": 1, "player": 11, "x": 1, "y": 1, "links": [[2, False, 3], [3, True, 40]]},
        {"daemon": 2, "player": 12, "x": 2, "y": 1, "links": [[1, False, 5]]},
        {"daemon": 3, "player": 13, "x": 9, "y": 1, "links": [[1, False, None], [99, False, 1]],
         "relay_fallback": True},
    ]
    edges = mesh_edges(daemons)
    assert edges == {(1, 2): {"relayed": False, "rtt_ms": 5},
                     (1, 3): {"relayed": True, "rtt_ms": 40}}  # 99 is not on this map
    dot = mesh_dot("prontera", daemons)
    assert dot_counts(dot) == (3, 2)
    assert "relay 40.0 ms" in dot


# -- the links message ---------------------------------------------------------------------


def test_a_links_message_round_trips_and_bad_ones_are_refused() -> None:
    message = Links((LinkEntry(3, False, 12), LinkEntry(9, True, None)))
    assert decode_control_untrusted(encode_control(message)) == message
    for bad in ({"k": "links", "l": [[0, False, 1]]}, {"k": "links", "l": [[1, 0, 1]]},
                {"k": "links", "l": [[1, False, 70000]]}, {"k": "links", "l": [[1] * 3] * 65},
                {"k": "links"}, {"k": "links", "l": {}}):
        with pytest.raises(ControlMessageError):
            decode_control_untrusted(msgpack.packb(bad))


# -- metrics --------------------------------------------------------------------------------


STATS: dict[str, Any] = {
    "connections": 2, "anomalous_peers": [],
    "bandwidth": {"in_bytes_total": 1000, "out_bytes_total": 2000,
                  "limit_bytes_per_s_per_peer": 51200, "limit_bytes_per_s_total": 256000},
    "packets": {"sent": 20, "received": 10, "dropped_by_reason": {"auth_failed": 2}},
    "errors": {"auth": 2, "invalid_events": 0, "internal": 0},
    "events": {"sent": {"chat": 3}, "received": {"position": 5}, "rate_limited": {},
               "out_of_view": 0, "notifications_dropped": 0},
    "ipc": {"clients": 1}, "reports": {"sent": 1, "dropped": 0},
    "coordinator": {"state": "registered"},
    "links": [link("01"), link("02", rtt_ms=None), link("03", state="connecting")],
}


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_daemon_metrics_parse_and_follow_the_conventions() -> None:
    response = answer(registry_for(DaemonCollector(lambda: STATS)),
                      b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 OK") and b"text/plain" in head
    parsed = families(body.decode())
    sent = parsed["p2pd_sent_bytes"]
    assert sent.type == "counter" and sent.samples[0].name == "p2pd_sent_bytes_total"
    assert sent.samples[0].value == 2000
    assert {(s.labels["kind"], s.value) for s in parsed["p2pd_events_sent"].samples} == {
        ("chat", 3)}
    assert {s.labels["reason"] for s in parsed["p2pd_dropped_packets"].samples} == {
        "auth_failed"}
    rtts = parsed["p2pd_peer_rtt_seconds"].samples
    assert [(s.labels["peer"], s.value) for s in rtts] == [("01" * 8, 0.00125)]
    assert len(parsed["p2pd_peer_loss_ratio"].samples) == 2  # attempts are not links
    assert parsed["p2pd_coordinator_registered"].samples[0].value == 1
    for family in parsed.values():
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created"))
            assert re.fullmatch(r"p2pd_[a-z_]+", sample.name)


def test_coordinator_metrics_bound_report_codes() -> None:
    status = {"daemons": 3, "maps": {"prontera": 3},
              "relay": {"packets": 4, "bytes": 400, "dropped": {"rate_limited": 1}},
              "refused": {}, "messages": {"presence": 9}, "bad_messages": 0,
              "report_codes": {"relay_fallback": 2, "other": 1}}
    text = generate(CoordinatorCollector(lambda: status))
    parsed = families(text)
    assert parsed["p2pd_coordinator_map_daemons"].samples[0].labels == {"map": "prontera"}
    assert {s.labels["code"]: s.value for s in parsed["p2pd_coordinator_reports"].samples} == {
        "relay_fallback": 2, "other": 1}
    assert parsed["p2pd_coordinator_relayed_bytes"].samples[0].value == 400


def generate(collector: Any) -> str:
    return generate_latest(registry_for(collector)).decode()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/1.0\r\n\r\n", b"200"),
    (b"HEAD /metrics HTTP/1.1\r\n\r\n", b"200"),
    (b"GET /other HTTP/1.1\r\n\r\n", b"404"),
    (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
    (b"\x16\x03\x01 hello", b"400"),
    (b"", b"400"),
])
def test_the_responder_answers_each_request_line(request_bytes: bytes, status: bytes) -> None:
    response = answer(registry_for(DaemonCollector(lambda: STATS)), request_bytes)
    assert response.split(b" ", 2)[1] == status
    if request_bytes.startswith(b"HEAD"):
        assert response.endswith(b"\r\n\r\n")


def test_metrics_settings_are_validated(tmp_path: Path) -> None:
    ini = tmp_path / "ai_client.ini"
    ini.write_text("[metrics]\nenabled=true\nport=0\n")
    loaded = load_config(ini)
    assert loaded.config.metrics.enabled and loaded.config.metrics.port == 0
    assert loaded.warnings == ()
    ini.write_text("[metrics]\nenabled=true\nhost=0.0.0.0\n")
    assert any("[metrics] host" in w for w in load_config(ini).warnings)
    ini.write_text("[metrics]\nport=70000\n")
    with pytest.raises(ConfigError, match=r"\[metrics\] port = '70000'"):
        load_config(ini)
    coordinator = tmp_path / "coordinator.ini"
    coordinator.write_text("[metrics]\nenabled=yes\n")
    config, _ = load_coordinator_config(coordinator, environ={})
    assert config.metrics.enabled and config.metrics.port == 9471


# -- the operator's view and critical reports, in virtual time --------------------------


def test_daemons_tell_their_links_and_report_their_own_errors_and_a_relayed_area() -> None:
    w, _ = world(41)
    a, b, c = mesh_daemon(w, 1, 100), mesh_daemon(w, 2, 103), mesh_daemon(w, 3, 105)
    assert w.sim.run_while(lambda: a.path_to(b) != "direct" or a.path_to(c) != "direct",
                           10.0)
    w.sim.run_until(w.sim.now + 4.0)  # links told at most every 2 s
    coordinator = w.coordinator
    ids = {d: coordinator.store.by_key(d.core.public_key).daemon_id  # type: ignore[union-attr]
           for d in (a, b, c)}
    record_a = coordinator.store.by_key(a.core.public_key)
    assert record_a is not None
    assert sorted((entry.daemon_id, entry.relayed) for entry in record_a.links) == sorted(
        [(ids[b], False), (ids[c], False)])
    assert all(entry.rtt_ms is not None for entry in record_a.links)
    view = mesh_view(coordinator)
    assert list(view) == ["prontera"]
    area = view["prontera"]
    assert (area["daemons"], area["links"], area["relayed_links"]) == (3, 3, 0)
    assert {d["daemon"] for d in area["listed"]} == set(ids.values())
    # the daemon's own errors (counted by its shell) reach the coordinator once
    a.core.record_second(w.sim.now, internal_errors=2)
    w.sim.run_until(w.sim.now + 1.0)
    a.core.record_second(w.sim.now, internal_errors=2)
    w.sim.run_until(w.sim.now + 1.0)
    codes = [(r.player_id, r.report.code) for r in coordinator.reports]
    assert codes.count((1, "internal_errors")) == 1
    # every direct path of the area fails: the links go through the relay, the
    # daemons say so, and the coordinator sees an area on the relay
    blocked = w.sim.now
    for x, y in ((a, b), (a, c), (b, c)):
        w.net.set_path(x.address, y.address,
                       LinkProfile(delay=0.005, blackholes=((blocked, blocked + 60.0),)))
    assert w.sim.run_while(lambda: a.path_to(b) != "relay" or a.path_to(c) != "relay",
                           w.sim.now + 15.0)
    w.sim.run_until(w.sim.now + 5.0)
    codes = [(r.player_id, r.report.code) for r in coordinator.reports]
    assert (1, "all_links_relayed") in codes
    area = mesh_view(coordinator)["prontera"]
    assert area["relayed_links"] >= 2 and area["area_relayed"]
    assert area["relay_fallback"] >= 2


def test_links_relayed_by_choice_are_not_reported_as_fallbacks() -> None:
    w, _ = world(42)
    a, b = mesh_daemon(w, 1, 100), mesh_daemon(w, 2, 103)
    hidden = mesh_daemon(w, 3, 105, relay_only=True)  # relayed by its own choice
    assert w.sim.run_while(lambda: a.path_to(hidden) != "relay" or b.path_to(hidden) != "relay"
                           or a.path_to(b) != "direct", 15.0)
    w.sim.run_until(w.sim.now + 5.0)
    assert [r.report.code for r in w.coordinator.reports] == []
    area = mesh_view(w.coordinator)["prontera"]
    assert (area["links"], area["relayed_links"], area["area_relayed"]) == (3, 2, False)
