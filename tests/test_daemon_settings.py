"""Settings of ai_client.ini and p2pctl commands, observed on real daemons."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pd.client import DaemonClient
from p2pd.crypto.transport import OVERHEAD
from p2pd.io.runtime import RuntimeFileError
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config
from p2pd.wire.types import COMPRESSION_FLAGS, PacketType
from tests.daemons import free_udp_range, link, next_event_named, open_client, relayed_chat
from tests.daemons import running_daemons as daemons

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process control")
CTL = [str(Path(sys.executable).parent / "p2pctl")]


def ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, "--runtime-dir", str(daemon.runtime_dir), *args],
                          capture_output=True, text=True, timeout=30, check=False)


def header(datagram: bytes) -> tuple[int, int]:
    """(flags, type) of a datagram."""
    _, _, flags, packet_type, _ = struct.unpack_from(">IHHHI", datagram)
    return flags, packet_type


@pytest.mark.parametrize(("level", "padded"), [("low", False), ("high", True)])
async def test_encryption_level_decides_whether_sizes_are_padded(tmp_path: Path, level: str,
                                                                 padded: bool) -> None:
    lines = [f"line {i}: " + "x" * i for i in range(1, 12)]  # 11 different sizes
    with daemons(tmp_path, 2, p2p={"encryption_level": level}) as (a, b):
        seen = await relayed_chat(a, b, lines)
    protected = [d for d in seen if header(d)[0] & 1 and not header(d)[0] & COMPRESSION_FLAGS]
    assert {header(d)[1] for d in protected} == {PacketType.SEALED}  # types hidden at every level
    assert all((len(d) - OVERHEAD) % 32 == 0 for d in protected) == padded


@pytest.mark.parametrize(("threshold", "compressed"), [(100, True), (1000, False)])
async def test_compression_threshold(tmp_path: Path, threshold: int, compressed: bool) -> None:
    with daemons(tmp_path, 2, p2p={"compression_threshold": str(threshold)}) as (a, b):
        seen = await relayed_chat(a, b, ["buying jellopy, buying jellopy! " * 12])
    assert any(header(d)[0] & COMPRESSION_FLAGS for d in seen) == compressed


async def test_effect_update_rate(tmp_path: Path) -> None:
    with daemons(tmp_path, 2, p2p={"effect_update_rate": "3"}) as (a, b):
        async with await open_client(a) as client_a, await open_client(b) as client_b:
            await link(a, b, client_a, client_b)
            effect = {"effect_id": 7, "map": "prontera", "x": 1, "y": 2, "start_ms": 0,
                      "duration_ms": 500, "owner": 1}
            results = [await client_a.request("effect", **effect) for _ in range(12)]
    assert 3 <= sum(r["sent"] for r in results) <= 4  # burst 3, refilling at 3 per second
    assert sum(r["rate_limited"] for r in results) >= 8


def test_daemon_tells_systemd_it_is_ready_and_stopping(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    listener.bind(str(path))
    listener.settimeout(20)
    try:
        home = tmp_path / "d"
        low, high = free_udp_range()
        daemon = start_daemon(home, write_local_config(home, port_low=low, port_high=high),
                              env={"NOTIFY_SOCKET": str(path)})
        try:
            ready = listener.recv(4096).decode()
            info = daemon.wait_ready()
            assert "READY=1" in ready and f"UDP port {info.udp_port}" in ready
        finally:
            daemon.stop()
        assert "STOPPING=1" in listener.recv(4096).decode()
    finally:
        listener.close()


async def test_handshake_timeout_reports_an_unreachable_peer(tmp_path: Path) -> None:
    low, _ = free_udp_range()
    with daemons(tmp_path, 1, p2p={"handshake_timeout": "1"}) as (a,):
        async with await open_client(a) as client:
            await client.request("subscribe", events=["link"])
            started = time.monotonic()
            await client.request("connect", address=f"127.0.0.1:{low}", key="ab" * 32)
            event = await next_event_named(client, "link", timeout=5)
            elapsed = time.monotonic() - started
            assert (await client.request("peers"))["peers"] == []
    assert (event["state"], event["reason"]) == ("failed", "handshake_timeout")
    assert 0.9 <= elapsed <= 2.0


async def test_p2pctl_commands(tmp_path: Path) -> None:
    with daemons(tmp_path, 2) as (a, b):
        async with await open_client(a) as client_a, await open_client(b) as client_b:
            await link(a, b, client_a, client_b)
            peers = json.loads(ctl(a, "peers", "--json").stdout)["peers"]
            assert [p["peer"] for p in peers] == [b.public_key]
            stats = json.loads(ctl(a, "stats").stdout)
            assert stats["connections"] == 1
            assert stats["packets"]["sent"] > 0 and stats["bandwidth"]["out_bytes_total"] > 0
            assert ctl(a, "log-level", "debug").returncode == 0
            await client_b.request("subscribe", events=["peer_left"])
            assert ctl(a, "disconnect", b.public_key).returncode == 0
            left = await next_event_named(client_b, "peer_left")
            assert left["reason"] == "peer_disconnect"
            unknown = ctl(a, "disconnect", b.public_key)
            assert unknown.returncode == 3 and "no_such_peer" in unknown.stderr
        records = a.log_records()
        assert any(r["event"] == "log_level_changed" for r in records)
        changed_at = next(i for i, r in enumerate(records) if r["event"] == "log_level_changed")
        assert any(r["level"] == "debug" for r in records[changed_at:])


async def test_client_library_reports_a_missing_daemon(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFileError, match="no p2pd daemon is running"):
        await DaemonClient.open(tmp_path)
