"""``p2pctl top``: a live view of one daemon (spec §8.3), refreshed every second.

It keeps one IPC connection, asks ``stats`` with ``"history": 300`` once and
with ``"history": 2`` every second after, and joins the samples by their
second. On a terminal of at least ``MIN_COLUMNS`` x ``MIN_LINES`` it draws a
full screen with rich: the connection graph, the bandwidth graph over the last
minutes against the limits, the packet flow per peer and per event kind, and
the error indicators, with the encoding of :mod:`p2pd.viz`. On a smaller
terminal it draws the plain table instead, and when its output is not a
terminal it prints that table once a second. ``q`` (on a terminal) or Ctrl-C
quits, leaving the terminal as it was.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

if sys.platform != "win32":  # a key at a time needs POSIX terminals
    import termios
    import tty

import trio
from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from p2pd.client import DaemonClient
from p2pd.viz import RICH_COLOURS, look, problem_of, rtt_text

MIN_COLUMNS, MIN_LINES = 100, 30
HISTORY = 300  # seconds asked for at the start (what the daemon keeps)
BLOCKS = " ▁▂▃▄▅▆▇█"


class View:
    """The daemon's latest ``stats`` and the history joined from its replies."""

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}
        self.samples: dict[int, dict[str, Any]] = {}
        self.updated = 0.0

    def update(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self.updated = time.time()
        for sample in stats.get("history", []):
            self.samples[int(sample["t"])] = sample
        if len(self.samples) > HISTORY:
            for t in sorted(self.samples)[:-HISTORY]:
                del self.samples[t]

    def latest(self) -> dict[str, Any]:
        return self.samples[max(self.samples)] if self.samples else {}

    def series(self, name: str, seconds: int) -> list[int]:
        """The last ``seconds`` values of a sample field, a second missing as 0."""
        if not self.samples:
            return [0] * seconds
        last = max(self.samples)
        return [int(self.samples.get(t, {}).get(name, 0))
                for t in range(last - seconds + 1, last + 1)]


# -- shared pieces ------------------------------------------------------------------


def rate(value: float) -> str:
    """Bytes per second for people."""
    if value >= 1024 * 1024:
        return f"{value / 1024 / 1024:.1f} MiB/s"
    if value >= 1024:
        return f"{value / 1024:.1f} KiB/s"
    return f"{value:.0f} B/s"


def _links(view: View) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = view.stats.get("links", [])
    return links


def _peer_second(view: View, link: Mapping[str, Any]) -> dict[str, Any]:
    peers: dict[str, dict[str, Any]] = view.latest().get("peers", {})
    return peers.get(str(link.get("id")), {})


def headline(view: View) -> str:
    s = view.stats
    coordinator = s.get("coordinator")
    mesh = "no coordinator" if coordinator is None else f"coordinator {coordinator['state']}"
    bandwidth = s.get("bandwidth", {})
    latest = view.latest()
    return (f"p2pd {str(s.get('public_key', ''))[:16]}  {mesh}  links {s.get('connections', 0)}"
            f"  in {rate(latest.get('in_bytes', 0))}  out {rate(latest.get('out_bytes', 0))}"
            f"  limit {rate(bandwidth.get('limit_bytes_per_s_per_peer', 0))} per peer, "
            f"{rate(bandwidth.get('limit_bytes_per_s_total', 0))} in all")


def error_items(view: View) -> list[tuple[str, str, bool]]:
    """(name, value, alarming) for the error indicators."""
    s = view.stats
    errors, events = s.get("errors", {}), s.get("events", {})
    latest = view.latest().get("errors", {})
    drops = s.get("packets", {}).get("dropped_by_reason", {})
    reports = s.get("reports") or {}
    anomalous = s.get("anomalous_peers", [])
    coordinator = s.get("coordinator")
    items = [
        ("auth failures", f"{errors.get('auth', 0)} (+{latest.get('auth', 0)}/s)",
         latest.get("auth", 0) > 0),
        ("rate excess", f"{errors.get('rate_excess', 0)} (+{latest.get('rate_excess', 0)}/s)",
         latest.get("rate_excess", 0) > 0),
        ("anomalous peers", ", ".join(k[:16] for k in anomalous) or "none", bool(anomalous)),
        ("invalid events", str(errors.get("invalid_events", 0)),
         latest.get("invalid_events", 0) > 0),
        ("drops", ", ".join(f"{k} {v}" for k, v in sorted(drops.items(), key=lambda i: -i[1])[:4])
         or "none", latest.get("drops", 0) > 0),
        ("internal errors", str(errors.get("internal", 0)), errors.get("internal", 0) > 0),
        ("rate limited", str(sum(events.get("rate_limited", {}).values())), False),
        ("coordinator", "none" if coordinator is None else str(coordinator.get("state")),
         coordinator is not None and coordinator.get("state") == "unreachable"),
        ("reports", f"sent {reports.get('sent', 0)}, held back {reports.get('dropped', 0)}",
         False),
    ]
    return items


def kinds(view: View) -> list[tuple[str, int, int, int]]:
    """(kind, sent/s, received/s, rate limited/s) of the last second, every kind seen."""
    latest = view.latest()
    events = view.stats.get("events", {})
    names = sorted(set(events.get("sent", {})) | set(events.get("received", {}))
                   | set(events.get("rate_limited", {})))
    return [(name, latest.get("events_sent", {}).get(name, 0),
             latest.get("events_received", {}).get(name, 0),
             latest.get("rate_limited", {}).get(name, 0)) for name in names]


# -- the plain table ------------------------------------------------------------------


def render_plain(view: View) -> str:
    """The plain refreshing table (small terminals, output not a terminal)."""
    lines = [headline(view),
             f"{'PEER':<16} {'ROLE':<7} {'PATH':<6} {'RTT':>9} {'LOSS':>5} {'IN':>11} "
             f"{'OUT':>11} {'PK IN':>6} {'PK OUT':>6} {'RETX':>5} {'DROP':>5}  STATUS"]
    for link in _links(view):
        second = _peer_second(view, link)
        status = link.get("state", "")
        problem = problem_of(link) if status == "established" else None
        lines.append(
            f"{str(link.get('id', ''))[:16]:<16} {link.get('role', '-'):<7} "
            f"{link.get('path', ''):<6} {rtt_text(link.get('rtt_ms')):>9} "
            f"{link.get('loss', 0.0):>5.0%} {rate(second.get('in_bytes', 0)):>11} "
            f"{rate(second.get('out_bytes', 0)):>11} {second.get('in_packets', 0):>6} "
            f"{second.get('out_packets', 0):>6} {second.get('retransmissions', 0):>5} "
            f"{second.get('drops', 0):>5}  {('RED ' + problem) if problem else status}")
    if not _links(view):
        lines.append("(no peers)")
    flow = kinds(view)
    if flow:
        lines.append("KIND            SENT/s RECV/s LIMITED/s")
        lines.extend(f"{name:<15} {s:>6} {r:>6} {lim:>9}" for name, s, r, lim in flow)
    lines.append("ERRORS  " + "  ".join(f"{name}: {value}" + (" !" if bad else "")
                                         for name, value, bad in error_items(view)))
    return "\n".join(lines)


# -- the full screen ------------------------------------------------------------------


def chart(values: list[int], height: int, top: float, limit: float | None) -> list[Text]:
    """A bar chart of ``values`` (one column each) ``height`` rows high, scaled to
    ``top``, with a dotted line at ``limit`` when it is within the scale."""
    rows = []
    limit_row = None if limit is None or limit > top else min(
        int(limit / top * height), height - 1)
    for row in range(height - 1, -1, -1):
        text = Text()
        for value in values:
            fill = value / top * height - row if top > 0 else 0
            if fill >= 1:
                text.append("█", "cyan")
            elif fill > 0:
                text.append(BLOCKS[max(1, int(fill * 8))], "cyan")
            elif row == limit_row:
                text.append("┈", "red")
            else:
                text.append(" ")
        rows.append(text)
    return rows


def bandwidth_panel(view: View, width: int) -> RenderableType:
    seconds = max(10, min(HISTORY, width - 4))
    incoming, outgoing = view.series("in_bytes", seconds), view.series("out_bytes", seconds)
    bandwidth = view.stats.get("bandwidth", {})
    limit = float(bandwidth.get("limit_bytes_per_s_per_peer", 0)) or None
    peak = max([*incoming, *outgoing, 1])
    top = max(peak * 1.25, 1024.0)
    note = (f"limit {rate(limit)} per peer" + ("" if limit is None or limit <= top else
                                               f" (off scale: peak {peak / limit:.1%} of it)")
            if limit else "")
    parts: list[RenderableType] = [
        Text(f"in   now {rate(incoming[-1])}, peak {rate(max(incoming))}   "
             f"scale {rate(top)}   {note}", "bold"),
        *chart(incoming, 4, top, limit),
        Text(f"out  now {rate(outgoing[-1])}, peak {rate(max(outgoing))}", "bold"),
        *chart(outgoing, 4, top, limit),
        Text(f"last {seconds} s, one column a second", "dim"),
    ]
    return Panel(Group(*parts), title="bandwidth", border_style="cyan")


def graph_panel(view: View) -> RenderableType:
    s = view.stats
    coordinator = s.get("coordinator")
    caption = "no coordinator" if coordinator is None else f"coordinator {coordinator['state']}"
    tree = Tree(Text(f"◉ this daemon {str(s.get('public_key', ''))[:16]}  ({caption})",
                     "bold"))
    for link in _links(view):
        drawn = look(link)
        colour = RICH_COLOURS[drawn.colour]
        edge = "┄┄" if drawn.style != "solid" else "──"
        label = Text(f"{drawn.label} {edge}▶ ", colour)
        label.append(f"{str(link.get('id', ''))[:16]}", "bold " + colour)
        label.append(f"  {link.get('role') or link.get('state', '')}", colour)
        if drawn.problem:
            label.append(f"  ✖ {drawn.problem}", "bold red")
        tree.add(label)
    if not _links(view):
        tree.add(Text("(no peers)", "dim"))
    return Panel(tree, title="connection graph", border_style="green")


def flow_panel(view: View) -> RenderableType:
    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0), pad_edge=False)
    for name, justify, width in (("peer", "left", 16), ("role", "left", 6),
                                 ("path", "left", 6), ("rtt", "right", 8),
                                 ("loss", "right", 4), ("in/s", "right", 9),
                                 ("out/s", "right", 9), ("pk in", "right", 5),
                                 ("pk out", "right", 6), ("retx", "right", 4),
                                 ("drop", "right", 4)):
        table.add_column(name, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                         min_width=width)
    for link in _links(view):
        second = _peer_second(view, link)
        problem = problem_of(link) if link.get("state") == "established" else None
        table.add_row(
            str(link.get("id", ""))[:16], str(link.get("role", link.get("state", ""))),
            str(link.get("path", "")), rtt_text(link.get("rtt_ms")),
            f"{link.get('loss', 0.0):.0%}", rate(second.get("in_bytes", 0)).removesuffix("/s"),
            rate(second.get("out_bytes", 0)).removesuffix("/s"),
            str(second.get("in_packets", 0)),
            str(second.get("out_packets", 0)), str(second.get("retransmissions", 0)),
            str(second.get("drops", 0)), style="red" if problem else None)
    per_kind = Table(box=None, header_style="bold", padding=(0, 2, 0, 0), pad_edge=False)
    for name in ("kind", "sent/s", "recv/s", "limited/s"):
        per_kind.add_column(name, justify="left" if name == "kind" else "right")
    for name, sent, received, limited in kinds(view):
        per_kind.add_row(name, str(sent), str(received), str(limited),
                         style="yellow" if limited else None)
    return Panel(Group(table, Text(""), per_kind),
                 title="packet flow (last second; per kind: events a second)",
                 border_style="blue")


def errors_panel(view: View) -> RenderableType:
    text = Text()
    for name, value, bad in error_items(view):
        text.append(f"{name}: ", "bold")
        text.append(f"{value}\n", "bold red" if bad else "green")
    return Panel(text, title="errors", border_style="red")


def render_full(view: View, width: int) -> RenderableType:
    layout = Layout()
    layout.split_column(Layout(Text(headline(view), "bold reverse"), size=1),
                        Layout(name="top", ratio=1), Layout(name="bottom", size=13))
    layout["top"].split_row(Layout(graph_panel(view), name="graph"),
                            Layout(flow_panel(view), name="flow", ratio=2))
    layout["bottom"].split_row(Layout(bandwidth_panel(view, width * 2 // 3), ratio=2),
                               Layout(errors_panel(view), ratio=1))
    return layout


# -- running it ---------------------------------------------------------------------


@contextlib.contextmanager
def _keys_raw() -> Iterator[bool]:
    """cbreak mode on a terminal stdin (a key at a time, no echo); restored after."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _wait_for_quit(cancel: trio.CancelScope) -> None:
    fd = sys.stdin.fileno()
    while True:
        await trio.lowlevel.wait_readable(fd)
        data = os.read(fd, 64)
        if not data or b"q" in data.lower() or b"\x03" in data:
            cancel.cancel()
            return


async def run_top(runtime_dir: Path, *, interval: float = 1.0, iterations: int | None = None,
                  plain: bool = False) -> None:
    """Until q, Ctrl-C (SIGINT) or SIGTERM, or ``iterations`` refreshes."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_quit_on_signal, signals, nursery.cancel_scope)
            await _top(runtime_dir, interval, iterations, plain, nursery.cancel_scope)
            nursery.cancel_scope.cancel()


async def _quit_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _top(runtime_dir: Path, interval: float, iterations: int | None, plain: bool,
               scope: trio.CancelScope) -> None:
    console = Console()
    view = View()
    client = await DaemonClient.open(runtime_dir, client_name="p2pctl top")
    async with client:
        view.update(await client.request("stats", history=HISTORY))
        if plain or not console.is_terminal:
            await _run_plain(client, view, interval, iterations)
            return
        with _keys_raw() as keys, Live(console=console, screen=True, auto_refresh=False,
                                       transient=True) as live:
            async with trio.open_nursery() as nursery:
                if keys:
                    nursery.start_soon(_wait_for_quit, scope)
                count = 0
                while iterations is None or count < iterations:
                    width, height = console.size
                    if width < MIN_COLUMNS or height < MIN_LINES:
                        live.update(Text(render_plain(view)), refresh=True)
                    else:
                        live.update(render_full(view, width), refresh=True)
                    count += 1
                    await trio.sleep(interval)
                    view.update(await client.request("stats", history=2))
                nursery.cancel_scope.cancel()


async def _run_plain(client: DaemonClient, view: View, interval: float,
                     iterations: int | None) -> None:
    count = 0
    while True:
        print(f"--- {time.strftime('%H:%M:%S')}", flush=False)
        print(render_plain(view), flush=True)
        count += 1
        if iterations is not None and count >= iterations:
            return
        await trio.sleep(interval)
        view.update(await client.request("stats", history=2))
