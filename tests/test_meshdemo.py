"""`p2pd demo`: the players' scripts, the bookkeeping, and the whole demo as a process."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from p2pd.demo import run_demo
from p2pd.io.runtime import RUNTIME_FILE, read_runtime_info
from p2pd.localrun import p2pd_command
from p2pd.meshdemo.players import (
    DIAGONAL,
    SPOTS,
    WALK_MS,
    Cast,
    Interact,
    Move,
    Say,
    Weather,
    players_in_view,
    write_script,
    write_scripts,
)
from p2pd.meshdemo.report import KINDS, Ledger, LinkBook, Sent, chat_text, parse_chat
from p2pd.meshdemo.run import _identify
from p2pd.session.config import EncryptionLevel

STARTED_IN = re.compile(r"on loopback in (\S+) \.\.\.")

# -- the players -------------------------------------------------------------------


def test_a_seed_gives_the_same_players_and_another_seed_others() -> None:
    assert write_scripts(5, seed=7, duration=20) == write_scripts(5, seed=7, duration=20)
    assert write_script(0, 7, 20).actions != write_script(0, 8, 20).actions
    assert write_script(0, 7, 20).actions != write_script(1, 7, 20).actions


def test_players_walk_at_the_game_speed_from_the_fountain_and_do_everything_early() -> None:
    fountain = SPOTS[0][1:3]
    for script in write_scripts(8, seed=3, duration=6):
        moves = [a for a in script.actions if isinstance(a, Move)]
        assert moves[0].t == 0 and max(abs(moves[0].x - fountain[0]),
                                       abs(moves[0].y - fountain[1])) <= 6
        for before, after in itertools.pairwise(moves):
            step = (abs(after.x - before.x), abs(after.y - before.y))
            assert step in ((0, 1), (1, 0), (1, 1))
            least = WALK_MS / 1000 * (DIAGONAL if step == (1, 1) else 1)
            assert after.t - before.t >= least - 1e-6
        kinds = {type(a) for a in script.actions}
        assert {Move, Say, Cast, Interact, Weather} <= kinds  # each within 6 s
        assert [a.t for a in script.actions] == sorted(a.t for a in script.actions)
        assert all(a.t < 6 for a in script.actions)


def test_who_is_in_view_follows_the_scripts() -> None:
    scripts = write_scripts(8, seed=1, duration=20)
    for t in (0.0, 5.0, 12.5):
        for sender in range(8):
            here = scripts[sender].cell_at(t)
            seen = players_in_view(scripts, sender, t)
            assert sender not in seen
            for other in range(8):
                there = scripts[other].cell_at(t)
                near = max(abs(here[0] - there[0]), abs(here[1] - there[1])) <= 14
                assert (other in seen) == (near and other != sender)
    assert len(players_in_view(scripts, 0, 0.0)) >= 4  # everyone logs in at the fountain


# -- the bookkeeping ------------------------------------------------------------------


def test_chat_marks_round_trip() -> None:
    text = chat_text("lfg orc dungeon", 3, 17, 1732480000.123456)
    assert parse_chat(text) == (3, 17, 1732480000.123456)
    assert parse_chat("just chatting #3.x@1") is None


def test_the_ledger_counts_each_receiver_once_and_only_events_it_saw_sent() -> None:
    ledger = Ledger()
    key = (0, "chat", 1)
    ledger.will_send(key, Sent("chat", 0, 100.0, frozenset({1, 2})))
    ledger.delivered(key, 1, 100.0, 100.004)  # before the reply: fine
    ledger.was_sent(key, {"sent": 2, "rate_limited": 1, "out_of_view": 0})
    ledger.delivered(key, 1, 100.0, 100.005)  # again: a duplicate
    ledger.delivered(key, 3, 100.0, 100.006)  # linked, not in view
    ledger.delivered((0, "chat", 2), 1, 100.0, 100.1)  # never sent
    refused = (0, "effect", 3)
    ledger.will_send(refused, Sent("effect", 0, 100.0, frozenset()))
    ledger.failed(refused, "busy")
    chat = ledger.tallies()["chat"]
    assert (chat.sent, chat.expected, chat.delivered, chat.rate_limited) == (1, 2, 2, 1)
    walk = (0, "position", 5)
    ledger.will_send(walk, Sent("position", 0, 100.0, frozenset({1})))
    ledger.was_sent(walk, {"sent": 1, "rate_limited": 0, "out_of_view": 2, "absent": 1})
    position = ledger.tallies()["position"]
    assert (position.expected, position.out_of_view) == (1, 2)  # an absent peer gets none
    later = (0, "chat", 6)  # a chat for a peer whose link is down waits for it
    ledger.will_send(later, Sent("chat", 0, 100.0, frozenset()))
    ledger.was_sent(later, {"sent": 0, "rate_limited": 0, "absent": 1})
    assert ledger.tallies()["chat"].expected == 3
    assert (chat.in_view, chat.delivered_in_view) == (2, 1)
    assert [round(x, 6) for x in chat.latencies] == [0.004, 0.006]
    assert ledger.tallies()["effect"].sent == 0 and ledger.failures == {"busy": 1}
    assert (ledger.duplicates, ledger.unmatched) == (1, 1)


def test_shared_state_a_new_link_brings_is_counted_apart_from_deliveries() -> None:
    ledger = Ledger()
    weather = (0, "environment", 4)
    ledger.will_send(weather, Sent("environment", 0, 100.0, frozenset({1, 2})))
    ledger.was_sent(weather, {"sent": 1})
    ledger.delivered(weather, 1, 100.0, 100.003, link_since=99.0)  # over a standing link
    ledger.delivered(weather, 2, 100.0, 105.0, link_since=104.9)  # a later link's snapshot
    tally = ledger.tallies()["environment"]
    assert (tally.expected, tally.delivered, ledger.state_on_link) == (1, 1, 1)
    assert [round(x, 6) for x in tally.latencies] == [0.003]


def test_environment_is_matched_to_its_author_and_other_kinds_to_their_sender() -> None:
    mark = {"demo_seq": 7, "sent_at": 100.5}
    passed_on = {"value": {"type": "rain", "demo_from": 3, **mark}}
    assert _identify("environment", 1, passed_on) == (3, 7, 100.5)
    assert _identify("effect", 1, {"params": {"demo_from": 3, **mark}}) == (1, 7, 100.5)
    assert _identify("position", 2, {"tick": 100_250}) == (2, 100_250, 100.25)
    assert _identify("environment", 1, {"value": {"type": "rain"}}) is None


def test_a_link_forms_with_its_first_side_and_drops_with_its_last() -> None:
    links = LinkBook(3)
    links.joined(0, 1, 10.0)
    links.joined(1, 0, 10.1)
    links.joined(0, 2, 10.2)
    links.left(0, 1, "out_of_range", 12.0)
    assert links.pairs[(0, 1)].dropped == 0 and links.up_now() == 2
    links.left(1, 0, "peer_disconnect", 12.1)
    links.left(1, 0, "peer_disconnect", 12.2)  # not held: nothing
    links.finish(13.0)
    assert (links.pairs[(0, 1)].formed, links.pairs[(0, 1)].dropped) == (1, 1)
    assert round(links.pairs[(0, 1)].up_total, 6) == 2.1
    assert links.drop_reasons == {"peer_disconnect": 1}
    assert links.links_max == 2 and links.up_now() == 1


# -- the demo as a process -----------------------------------------------------------


def _runtime_pids(root: Path) -> list[int]:
    pids = []
    for run in root.glob("player*/run"):
        if (run / RUNTIME_FILE).exists():
            pids.append(read_runtime_info(run).pid)
    return pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_demo_reports_one_json_object_and_leaves_nothing_behind() -> None:
    result = subprocess.run([*p2pd_command(), "demo", "--players", "4", "--seconds", "6",
                             "--json", "--seed", "2"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)  # exactly one object, nothing else
    assert result.stdout.strip().count("\n") == 0
    assert report["players"] == 4 and report["seed"] == 2
    assert 1 <= report["links_max"] <= report["max_peers"] + report["backups"] == 4 + 1
    assert set(report["events"]) == set(KINDS)
    for kind, figures in report["events"].items():
        assert figures["sent"] > 0, kind
        assert 0 <= figures["delivered"] <= figures["expected"], kind
        assert figures["delivered_in_view"] <= min(figures["delivered"], figures["in_view"])
    for kind in ("chat", "position"):
        assert report["events"][kind]["delivered"] > 0
    latency = report["latency_ms"]
    assert latency["samples"] > 0 and 0 <= latency["p50"] <= latency["p99"]
    upstream = report["upstream_bytes_per_s"]
    assert 0 < upstream["p50"] <= upstream["max"] and len(upstream["per_player"]) == 4
    assert report["links"]["formed"] >= 1
    assert set(report["links"]["paths"]) >= {"direct", "relay"}
    # the last player is relay-only: every link it has goes through the relay
    assert report["relay_only"] == 1
    last = [link for link in report["links"]["per_link"] if 3 in link["players"]]
    assert last and all(link["path"] == "relay" for link in last)
    assert report["links"]["paths"]["relay"] == len(last)
    assert report["duplicates"] == 0
    assert re.search(r"^\s+\d+\.\d s  players 4  links", result.stderr, re.M)  # progress
    started = STARTED_IN.search(result.stderr)
    assert started is not None and not Path(started[1]).exists()


def test_ctrl_c_stops_every_daemon_and_removes_the_directory(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        demo = subprocess.Popen([*p2pd_command(), "demo", "--players", "3", "--seconds", "60",
                                 "--json"], stdout=subprocess.PIPE, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "players 3  links" not in stderr.read_text():
            assert demo.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.1)
        started = STARTED_IN.search(stderr.read_text())
        assert started is not None
        root = Path(started[1])
        pids = _runtime_pids(root)
        assert len(pids) == 3
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130
    assert output == b""
    assert "interrupted" in stderr.read_text()
    assert not root.exists()
    assert all(_gone(pid) for pid in pids)


def test_the_protocol_demo_still_runs(capsys: pytest.CaptureFixture[str]) -> None:
    run_demo(seed=1, loss=0.2, delay=0.04, duration=10, level=EncryptionLevel.HIGH)
    out = capsys.readouterr().out
    assert "session established" in out and "chat: 1 of 1 from bob" in out
