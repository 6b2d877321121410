"""Seeing the network as a person does (spec 8.3): real daemons on loopback,
`p2pctl top` in a real terminal (tmux), `p2pctl graph` pictures, the metrics
endpoints of a daemon and of a coordinator, and the operator's mesh view."""

from __future__ import annotations

import json
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from p2pd.client import DaemonClient
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config
from tests.daemons import free_udp_range, link, open_client
from tests.test_coordinator_process import BIN, write_config
from tests.test_mesh_process import daemon_with_token
from tests.test_observability import dot_counts

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes, tmux")
CTL = str(BIN / "p2pctl")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed (scripts/test installs "
                                      "it when run as root: apt-get install graphviz)")
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (scripts/test installs it when "
                                       "run as root: apt-get install tmux)")


def ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([CTL, "--runtime-dir", str(daemon.runtime_dir), *args],
                          capture_output=True, timeout=60, check=False)


@contextmanager
def three_daemons(root: Path) -> Iterator[list[DaemonProcess]]:
    """Three daemons, the first with its metrics endpoint on a free port; a dead
    peer is gone after 4 s without a word from it."""
    started: list[DaemonProcess] = []
    try:
        for i in range(3):
            home = root / f"daemon{i}"
            low, high = free_udp_range(10)
            config = write_local_config(home, port_low=low, port_high=high,
                                        p2p={"inactive_timeout": "4", "handshake_timeout": "2"})
            if i == 0:
                with config.open("a", encoding="utf-8") as ini:
                    ini.write("\n[metrics]\nenabled=true\nport=0\n")
            started.append(start_daemon(home, config))
        for daemon in started:
            daemon.wait_ready()
        yield started
    finally:
        for daemon in started:
            if daemon.process.poll() is None:
                daemon.stop()


@asynccontextmanager
async def linked_star(daemons: list[DaemonProcess]) -> AsyncIterator[list[DaemonClient]]:
    """The first daemon linked with the two others; their clients."""
    clients = [await open_client(d) for d in daemons]
    try:
        await link(daemons[0], daemons[1], clients[0], clients[1])
        await link(daemons[0], daemons[2], clients[0], clients[2])
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def traffic(clients: list[DaemonClient], stop: trio.Event) -> None:
    """Positions from the first daemon's player, chat from the second's."""
    tick = 0
    while not stop.is_set():
        tick += 200
        await clients[0].request("position", map="prontera", x=150 + tick // 200 % 3, y=180,
                                 dir=2, moving=True, tick=tick)
        if tick % 600 == 0:
            await clients[1].request("chat", text=f"line {tick}")
        await trio.sleep(0.2)


# -- tmux -------------------------------------------------------------------------------


class Terminal:
    """A tmux server of the test's own (its own socket), one window running ``command``."""

    def __init__(self, root: Path, command: str, width: int, height: int) -> None:
        self.socket = f"p2pd-test-{id(self)}"
        self.done = root / f"exit-{width}x{height}.txt"
        # without a terminal of its own, tmux gives the window COLUMNS=80 and LINES=24,
        # which rich would believe over the window's real size
        self._tmux("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height),
                   f"env -u COLUMNS -u LINES {command}; echo $? > {self.done}; sleep 30")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=10).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    async def wait_screen(self, predicate: Callable[[str], bool], timeout: float,
                          what: str) -> str:
        screen = ""
        with trio.move_on_after(timeout):
            while True:
                screen = self.screen()
                if predicate(screen):
                    return screen
                await trio.sleep(0.3)
        raise AssertionError(f"the screen never showed {what}:\n{screen}")

    async def exit_status(self, timeout: float = 10) -> int:
        with trio.fail_after(timeout):
            while not self.done.exists() or not self.done.read_text().strip():
                await trio.sleep(0.1)
        return int(self.done.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False, timeout=10)


def rates_on(screen: str, name: str) -> list[float]:
    """The byte rates on the screen's lines that name a peer."""
    return [float(value) for line in screen.splitlines() if name in line
            for value in re.findall(r"(\d+(?:\.\d+)?) (?:B|KiB|MiB)\b", line)]


@needs_tmux
async def test_top_shows_peers_rtt_and_rates_live_and_follows_a_killed_peer(
        tmp_path: Path) -> None:
    with three_daemons(tmp_path) as daemons:
        a, b, c = daemons
        async with linked_star(daemons) as clients, trio.open_nursery() as nursery:
            stop = trio.Event()
            nursery.start_soon(traffic, clients, stop)
            b_id, c_id = b.public_key[:16], c.public_key[:16]
            terminal = Terminal(tmp_path, f"{CTL} --runtime-dir {a.runtime_dir} top", 160, 48)
            try:
                screen = await terminal.wait_screen(
                    lambda s: b_id in s and c_id in s and any(rates_on(s, b_id)), 20,
                    "both peers with their rates")
                assert "connection graph" in screen and "bandwidth" in screen
                assert re.search(rf"{b_id}.*direct.*\d+\.\d ms", screen) or re.search(
                    rf"direct \d+\.\d ms.*{b_id}", screen), screen
                assert "errors" in screen and "auth failures" in screen
                assert "position" in screen  # the packet flow per kind
                c.kill()  # SIGKILL: no goodbye; the link dies of silence
                screen = await terminal.wait_screen(lambda s: c_id not in s and b_id in s, 20,
                                                    "the killed peer gone, the other still there")
                terminal.keys("q")
                assert await terminal.exit_status() == 0
            finally:
                terminal.close()
                stop.set()


@needs_tmux
async def test_top_falls_back_to_the_plain_table_on_a_small_terminal_and_quits_on_ctrl_c(
        tmp_path: Path) -> None:
    with three_daemons(tmp_path) as daemons:
        async with linked_star(daemons):
            a, b = daemons[0], daemons[1]
            terminal = Terminal(tmp_path, f"{CTL} --runtime-dir {a.runtime_dir} top", 90, 20)
            try:
                screen = await terminal.wait_screen(lambda s: "PEER" in s and "RTT" in s, 15,
                                                    "the plain table")
                assert b.public_key[:16] in screen and "connection graph" not in screen
                terminal.keys("C-c")
                assert await terminal.exit_status() == 0
            finally:
                terminal.close()
        # without a terminal: the plain table, once a second
        shown = ctl(a, "top", "--iterations", "2", "--interval", "0.5")
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout.decode()
        assert text.count("PEER") == 2 and text.count("\n---") + text.startswith("---") == 2


# -- pictures -----------------------------------------------------------------------------


@needs_dot
async def test_graph_pictures_show_the_mesh(tmp_path: Path) -> None:
    with three_daemons(tmp_path) as daemons:
        a, b, c = daemons
        async with linked_star(daemons):
            dot = ctl(a, "graph", "--format", "dot")
            assert dot.returncode == 0, dot.stderr
            source = dot.stdout.decode()
            assert dot_counts(source) == (3, 2)
            for peer in (b, c):
                assert f'-- "{peer.public_key[:16]}"' in source
            svg = ctl(a, "graph", "--format", "svg")
            drawn = svg.stdout.decode()
            assert drawn.count('class="node"') == 3 and drawn.count('class="edge"') == 2
            assert "direct" in drawn and b.public_key[:16] in drawn
            out = tmp_path / "mesh.png"
            png = ctl(a, "graph", "--format", "png", "--out", str(out))
            assert png.returncode == 0, png.stderr
            data = out.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
            width, height = struct.unpack(">II", data[16:24])
            assert width > 200 and height > 100  # three nodes side by side, not an empty image


# -- metrics ------------------------------------------------------------------------------


async def scrape(address: str) -> dict[str, Any]:
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 OK"), head
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(families: dict[str, Any], name: str, **labels: str) -> float:
    return float(sum(s.value for s in families[name].samples
               if s.name.endswith("_total") or families[name].type != "counter"
               if all(s.labels.get(k) == v for k, v in labels.items())))


async def test_the_metrics_endpoint_parses_and_its_counters_move_with_traffic(
        tmp_path: Path) -> None:
    with three_daemons(tmp_path) as daemons:
        async with linked_star(daemons) as clients:
            status = await clients[0].request("status")
            address = status["metrics_address"]
            assert address is not None and address.startswith("127.0.0.1:")
            before = await scrape(address)
            assert value(before, "p2pd_connections") == 2
            for i in range(5):
                await clients[0].request("chat", text=f"counted {i}")
            await trio.sleep(1.2)
            after = await scrape(address)
            assert value(after, "p2pd_events_sent", kind="chat") - value(
                before, "p2pd_events_sent", kind="chat") == 10  # five lines to two peers
            assert value(after, "p2pd_sent_bytes") > value(before, "p2pd_sent_bytes")
            assert value(after, "p2pd_received_packets") > value(before, "p2pd_received_packets")
            rtts = after["p2pd_peer_rtt_seconds"].samples
            assert len(rtts) == 2 and all(0 < s.value < 1 for s in rtts)
        assert (await trio.to_thread.run_sync(lambda: ctl(daemons[1], "stats"))).returncode == 0


# -- the operator's side ------------------------------------------------------------------


def start_coordinator(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
    config = write_config(home)
    with config.open("a", encoding="utf-8") as ini:
        ini.write("[metrics]\nenabled=true\nport=0\n")
    info = home / "info.json"
    with (home / "stderr.txt").open("wb") as err:
        process = subprocess.Popen([str(BIN / "p2pd"), "coordinator", "--config", str(config),
                                    "--info-file", str(info)], stderr=err)
    deadline = time.monotonic() + 20
    while not info.exists() or not info.read_text().strip():
        assert process.poll() is None, (home / "stderr.txt").read_text()
        assert time.monotonic() < deadline, "the coordinator did not become ready"
        time.sleep(0.05)
    return process, json.loads(info.read_text()), config


async def test_the_operator_sees_daemons_per_map_their_links_and_the_mesh(
        tmp_path: Path) -> None:
    home = tmp_path / "coordinator"
    home.mkdir()
    process, info, config = start_coordinator(home)
    daemons: list[DaemonProcess] = []
    try:
        issuer = home / "state" / "issuer.key"
        for player_id, name in enumerate(("alice", "bob", "carol"), start=150001):
            daemons.append(daemon_with_token(tmp_path, name, player_id, info, issuer))
        for daemon in daemons:
            daemon.wait_ready()
        clients = [await open_client(d) for d in daemons]
        try:
            for i, client in enumerate(clients):
                await client.request("position", map="prontera", x=150 + 2 * i, y=180, dir=0,
                                     tick=1)
            status_file = home / "state" / "status.json"

            def mesh() -> dict[str, Any]:
                try:
                    found: dict[str, Any] = json.loads(status_file.read_text())["mesh"]
                except (OSError, ValueError, KeyError):
                    return {}
                return found

            with trio.fail_after(30):
                while mesh().get("prontera", {}).get("links", 0) < 2:
                    await trio.sleep(0.5)
            area = mesh()["prontera"]
            assert area["daemons"] == 3 and area["relayed_links"] == 0
            shown = subprocess.run([CTL, "coordinator-status", "--coordinator-config",
                                    str(config)], capture_output=True, text=True, timeout=30,
                                   check=True).stdout
            assert "map prontera: 3 daemons" in shown and "player     150002" in shown
            drawn = subprocess.run([CTL, "coordinator-status", "--coordinator-config",
                                    str(config), "--graph", "prontera"], capture_output=True,
                                   text=True, timeout=30, check=True).stdout
            nodes, edges = dot_counts(drawn)
            assert nodes == 3 and edges == area["links"]
            missing = subprocess.run([CTL, "coordinator-status", "--coordinator-config",
                                      str(config), "--graph", "geffen"], capture_output=True,
                                     text=True, timeout=30, check=False)
            assert missing.returncode != 0 and "prontera" in missing.stderr
            metrics = await scrape(info["metrics"])
            assert value(metrics, "p2pd_coordinator_daemons") == 3
            assert value(metrics, "p2pd_coordinator_map_daemons", map="prontera") == 3
            assert value(metrics, "p2pd_coordinator_messages", kind="links") >= 2
            presence = value(metrics, "p2pd_coordinator_messages", kind="presence")
            await clients[0].request("position", map="prontera", x=140, y=180, dir=0, tick=2)
            await trio.sleep(1.0)
            later = await scrape(info["metrics"])
            assert value(later, "p2pd_coordinator_messages", kind="presence") > presence
        finally:
            for client in clients:
                await client.aclose()
    finally:
        for daemon in daemons:
            daemon.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(10)
