"""The daemon as users run it: real processes on loopback, driven by p2pctl and IPC clients."""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pd.client import ClientError
from p2pd.io.runtime import RUNTIME_FILE, TOKEN_FILE
from p2pd.ipc.framing import FrameDecoder, encode_message
from p2pd.localrun import DaemonProcess, p2pd_command, start_daemon, write_local_config
from tests.daemons import (
    free_udp_range,
    link,
    next_event_named,
    open_client,
    relayed_chat,
    running_daemons,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process control")

CTL = [str(Path(sys.executable).parent / "p2pctl")]
EVENTS: dict[str, dict[str, Any]] = {
    "position": {"map": "prontera", "x": 150, "y": 180, "dir": 4, "moving": True,
                 "tick": 1_732_480_000_000},
    "effect": {"effect_id": 316, "params": {"color": "red", "level": 10}, "map": "prontera",
               "x": 151, "y": 181, "start_ms": 1_732_480_000_000, "duration_ms": 1200,
               "owner": 150001},
    "chat": {"text": "Hello there, Prontera!"},
    "ai_interaction": {"interaction_id": 3, "ai_entity_id": 110001, "player_id": 150001,
                       "params": {"topic": "quest"}, "result": "accepted"},
    "environment": {"kind": "weather", "key": "prontera", "value": {"type": "rain"},
                    "version": 17},
    "legend": {"ai_entity_id": 110001, "kind": "dialogue",
               "data": {"line": "The winds are restless tonight..."}, "version": 5},
}


def ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, "--runtime-dir", str(daemon.runtime_dir), *args],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DaemonProcess]]:
    with running_daemons(tmp_path_factory.mktemp("pair"), 2) as daemons:
        yield daemons


async def test_two_daemons_exchange_every_event_type(pair: list[DaemonProcess]) -> None:
    a, b = pair
    connected = ctl(a, "connect", b.udp_address, b.public_key)
    assert connected.returncode == 0, connected.stderr
    async with await open_client(a) as client_a, await open_client(b, unix=False) as client_b:
        await client_b.request("subscribe", events=["*"])
        await link(a, b, client_a, client_b)
        for op, fields in EVENTS.items():
            result = await client_a.request(op, **fields)
            assert result["sent"] == 1
            event = await next_event_named(client_b, op)
            assert event["from"] == a.public_key
            for name, value in fields.items():
                assert event[name] == value, (op, name)
    shown = ctl(a, "status")
    assert shown.returncode == 0
    assert b.public_key[:16] in shown.stdout and "established" in shown.stdout
    as_json = ctl(a, "status", "--json")
    assert '"state": "established"' in as_json.stdout


async def test_chat_text_never_travels_readable(tmp_path: Path) -> None:
    secret = "meet me behind the Kafra at 21:00"
    with running_daemons(tmp_path, 2) as (a, b):
        seen = await relayed_chat(a, b, [secret])
    assert len(seen) >= 4  # handshake, confirmation, the chat line
    assert all(secret.encode() not in datagram for datagram in seen)
    assert all(b"Kafra" not in datagram for datagram in seen)


async def test_killed_peer_is_reported_lost_within_inactive_timeout(tmp_path: Path) -> None:
    settings = {"inactive_timeout": "3", "handshake_timeout": "1"}
    with running_daemons(tmp_path, 2, p2p=settings) as (a, b):
        async with await open_client(a) as client_a, await open_client(b) as client_b:
            await client_a.request("subscribe", events=["peer_left"])
            await link(a, b, client_a, client_b)
            await trio.sleep(0.5)  # some traffic after the handshake
            b.kill()  # kill -9: no DISCONNECT
            killed_at = time.monotonic()
            event = await next_event_named(client_a, "peer_left", timeout=10)
            elapsed = time.monotonic() - killed_at
    assert event["peer"] == b.public_key and event["reason"] == "inactive"
    assert elapsed <= 3.0 + 1.0  # the timeout counts from the last packet heard


async def test_sigterm_says_goodbye_and_cleans_up(tmp_path: Path) -> None:
    with running_daemons(tmp_path, 2) as (a, b):
        async with await open_client(a) as client_a, await open_client(b) as client_b:
            await client_a.request("subscribe", events=["peer_left"])
            await link(a, b, client_a, client_b)
            assert b.stop() == 0
            event = await next_event_named(client_a, "peer_left", timeout=5)
        assert event["reason"] == "peer_disconnect"
        assert not (b.runtime_dir / RUNTIME_FILE).exists()
        assert not (b.runtime_dir / TOKEN_FILE).exists()
        assert not (b.runtime_dir / "p2pd.sock").exists()
        events = [record["event"] for record in b.log_records()]
        assert "daemon_ready" in events and events[-1] == "daemon_stopped"


def test_configuration_error_exits_with_status_2(tmp_path: Path) -> None:
    config = tmp_path / "ai_client.ini"
    config.write_text("[P2P]\nencryption_level=ultra\n")
    result = subprocess.run([*p2pd_command(), "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "encryption_level" in result.stderr and "'ultra'" in result.stderr
    assert "low, medium, high" in result.stderr
    missing = subprocess.run([*p2pd_command(), "run", "--config", str(tmp_path / "none.ini")],
                             capture_output=True, text=True, timeout=30, check=False)
    assert missing.returncode == 2 and "none.ini" in missing.stderr


def _raw_request(port: int, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one framed message over TCP; return what comes back until the daemon closes."""
    decoder = FrameDecoder()
    replies: list[dict[str, Any]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(encode_message(message))
        while data := sock.recv(65536):
            replies.extend(decoder.feed(data))
    return replies


async def test_a_client_without_the_token_is_refused(pair: list[DaemonProcess]) -> None:
    a, b = pair
    assert a.info is not None
    def links() -> set[tuple[str, str]]:
        shown = json.loads(ctl(a, "peers", "--json").stdout)["peers"]
        return {(p["peer"], p["state"]) for p in shown}

    before = links()
    cases: list[dict[str, Any]] = [
        {"op": "connect", "id": 1, "address": "127.0.0.1:9", "key": b.public_key},
        {"op": "hello", "id": 2, "token": "00" * 32, "client": "intruder"},
        {"op": "status", "id": 3},
    ]
    for message in cases:
        replies = _raw_request(a.info.tcp_port, message)  # returns once the daemon hangs up
        assert [r["error"]["code"] for r in replies] == ["unauthorized"]
    assert links() == before


def test_p2pctl_says_plainly_when_no_daemon_runs(tmp_path: Path) -> None:
    result = subprocess.run([*CTL, "--runtime-dir", str(tmp_path), "status"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "no p2pd daemon is running" in result.stderr


async def test_malformed_datagrams_and_frames_leave_the_daemon_serving(
        pair: list[DaemonProcess]) -> None:
    a, b = pair
    assert a.info is not None
    rng = random.Random(5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(10_000):
            kind = i % 4
            if kind == 0:
                data = rng.randbytes(rng.randrange(0, 1500))
            elif kind == 1:  # a plausible header over garbage
                data = b"P2P2\x00\x01\x00\x01\x00\x10" + struct.pack(">I", 60) + rng.randbytes(60)
            elif kind == 2:  # a handshake request shape with a bad mac
                data = b"P2P2\x00\x01\x00\x00\x00\x01" + struct.pack(">I", 142) + rng.randbytes(142)
            else:
                data = b"P2P2" + rng.randbytes(rng.randrange(0, 40))
            sock.sendto(data, ("127.0.0.1", a.info.udp_port))
            if i % 100 == 0:
                await trio.sleep(0.005)  # pace: the kernel would drop a burst, unseen
    for i in range(1_000):
        with socket.create_connection(("127.0.0.1", a.info.tcp_port), timeout=5) as conn:
            if i % 3 == 0:
                conn.sendall(struct.pack(">I", 0xFFFFFFF0) + b"x")  # oversized frame
            elif i % 3 == 1:
                conn.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")  # not msgpack
            else:
                conn.sendall(rng.randbytes(64))
            conn.settimeout(5)
            while conn.recv(4096):
                pass  # the daemon answers with an error and hangs up
    async with await open_client(a) as client_a, await open_client(b) as client_b:
        await client_b.request("subscribe", events=["chat"])
        await link(a, b, client_a, client_b)
        await client_a.request("chat", text="still here")
        assert (await next_event_named(client_b, "chat"))["text"] == "still here"
        stats = await client_a.request("stats")
    # every datagram the daemon saw was dropped and counted (the link's own traffic aside)
    assert stats["packets"]["dropped"] >= 9_900
    assert stats["ipc"]["ipc_bad_frames"] + stats["ipc"]["ipc_errors"] >= 1_000


async def test_disabled_p2p_serves_ipc_and_refuses_sends(tmp_path: Path) -> None:
    with running_daemons(tmp_path, 1, p2p={"enabled": "false"}) as (a,):
        async with await open_client(a) as client:
            assert client.hello["p2p_enabled"] is False
            status = await client.request("status")
            assert status["p2p_enabled"] is False
            with pytest.raises(ClientError) as refused:
                await client.request("chat", text="anyone?")
            assert refused.value.code == "p2p_disabled"
        assert "P2P disabled" in ctl(a, "status").stdout


async def test_settings_take_effect(tmp_path: Path) -> None:
    settings = {"max_peers": "1", "position_update_rate": "2", "bandwidth_limit": "12"}
    with running_daemons(tmp_path, 3, p2p=settings) as (a, b, c):
        async with await open_client(a) as client_a, await open_client(b) as client_b:
            await link(a, b, client_a, client_b)
            with pytest.raises(ClientError) as refused:  # max_peers=1
                await client_a.request("connect", address=c.udp_address, key=c.public_key)
            assert refused.value.code == "too_many_peers"
            position = EVENTS["position"]
            results = [await client_a.request("position", **position) for _ in range(10)]
            assert sum(r["sent"] for r in results) <= 3  # 2 per second, burst 2
            assert sum(r["rate_limited"] for r in results) >= 7
            # reliable data is never dropped for rate: past the budget it waits
            chats = [await client_a.request("chat", text="x" * 400) for _ in range(40)]
            assert sum(r["sent"] for r in chats) == 40


def test_port_range_skips_a_taken_port(tmp_path: Path) -> None:
    low, high = free_udp_range(5)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("0.0.0.0", low))
    try:
        home = tmp_path / "d"
        daemon = start_daemon(home, write_local_config(home, port_low=low, port_high=high))
        try:
            info = daemon.wait_ready()
            assert info.udp_port == low + 1
        finally:
            daemon.stop()
    finally:
        blocker.close()


def test_log_level_is_honoured(tmp_path: Path) -> None:
    for level, expect_debug in (("debug", True), ("info", False)):
        with running_daemons(tmp_path / level, 1, p2p={"log_level": level}) as (a,):
            pass
        levels = {record["level"] for record in a.log_records()}
        assert ("debug" in levels) == expect_debug, levels
        assert "info" in levels



def test_an_identity_key_readable_by_others_is_refused_at_start(tmp_path: Path) -> None:
    home = tmp_path / "d"
    low, high = free_udp_range()
    config = write_local_config(home, port_low=low, port_high=high)
    key = home / "identity.key"
    key.write_text("p2pd-identity-v1\n" + "11" * 32 + "\n")
    key.chmod(0o644)
    result = subprocess.run([*p2pd_command(), "run", "--config", str(config)], cwd=home,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "chmod 600" in result.stderr
