"""How the network is drawn (spec §8.3): one encoding for ``p2pctl top``,
``p2pctl graph`` and ``p2pctl coordinator-status --graph``, pure functions of
the IPC ``stats`` snapshot or the coordinator's status (no I/O).

The encoding, everywhere:

- an edge is a link; its label is its path kind and smoothed RTT;
- green: a direct path; orange: through the coordinator's relay or a TURN server
  (dashed);
- red: a link in trouble (loss above 5%, the peer anomalous, or silent for more
  than ``SILENT_AFTER`` seconds), whatever its path;
- grey and dashed: a warm backup; grey and dotted: a connection attempt;
- this daemon is a double circle.

The graphs come out as Graphviz DOT text: deterministic, readable, and turned
into SVG or PNG by Graphviz's ``dot`` (``p2pctl graph``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOSS_RED = 0.05  # a link losing more than this is drawn red
SILENT_AFTER = 10  # seconds without a datagram from a peer (it pings every 5 s)
RELAYED_PATHS = frozenset({"relay", "turn"})  # drawn as relayed: not a direct path
GREEN, ORANGE, RED, GREY = "#2e9e44", "#e08a00", "#d62728", "#8c8c8c"
RICH_COLOURS = {GREEN: "green", ORANGE: "dark_orange", RED: "bold red", GREY: "grey50"}


@dataclass(frozen=True, slots=True)
class Look:
    colour: str
    style: str  # DOT edge style: solid, dashed, dotted
    label: str  # path kind and RTT
    problem: str | None  # why it is red


def problem_of(link: Mapping[str, Any]) -> str | None:
    """Why a link is in trouble, or None."""
    if link.get("anomalous"):
        return "anomalous"
    loss = link.get("loss") or 0.0
    if loss > LOSS_RED:
        return f"loss {loss:.0%}"
    idle = link.get("idle_s") or 0
    if idle > SILENT_AFTER:
        return f"silent {idle} s"
    return None


def rtt_text(rtt_ms: float | None) -> str:
    if rtt_ms is None:
        return "-"
    return f"{rtt_ms:.1f} ms" if rtt_ms < 100 else f"{rtt_ms:.0f} ms"


def look(link: Mapping[str, Any]) -> Look:
    """How one link (an entry of ``stats`` ``links``) is drawn."""
    path = str(link.get("path", "direct"))
    if link.get("state") == "connecting":
        return Look(GREY, "dotted", f"{path} connecting", None)
    problem = problem_of(link)
    label = f"{path} {rtt_text(link.get('rtt_ms'))}"
    if problem is not None:
        colour = RED
    elif link.get("role") == "backup":
        colour = GREY
    else:
        colour = ORANGE if path in RELAYED_PATHS else GREEN
    style = "dashed" if path in RELAYED_PATHS or link.get("role") == "backup" else "solid"
    return Look(colour, style, label, problem)


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def _attributes(values: Mapping[str, str]) -> str:
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in values.items()) + "]"


def daemon_dot(stats: Mapping[str, Any]) -> str:
    """The connection graph of one daemon, from its ``stats`` result: this
    daemon in the middle, one node and one edge per link or attempt."""
    me = str(stats["public_key"])
    coordinator = stats.get("coordinator")
    caption = "no coordinator" if coordinator is None else (
        f"coordinator {coordinator.get('state')}")
    lines = ["graph p2pd {", '  layout="dot"; rankdir="LR"; splines="true";',
             '  node [fontname="Helvetica", fontsize="10"];',
             '  edge [fontname="Helvetica", fontsize="9"];',
             f"  {_quote(me[:16])} " + _attributes({
                 "label": f"this daemon\n{me[:16]}\n{caption}", "shape": "doublecircle",
                 "style": "filled", "fillcolor": "#dbe9ff"})]
    for link in stats.get("links", []):
        name = str(link["peer"])[:16]
        drawn = look(link)
        role = link.get("role") or link.get("state", "")
        node_label = f"{name}\n{role}" + (f"\n{drawn.problem}" if drawn.problem else "")
        lines.append(f"  {_quote(name)} " + _attributes({
            "label": node_label, "shape": "box", "style": "rounded,filled",
            "color": drawn.colour, "fillcolor": "#ffe0e0" if drawn.problem else "white"}))
        lines.append(f"  {_quote(me[:16])} -- {_quote(name)} " + _attributes({
            "label": drawn.label, "color": drawn.colour, "fontcolor": drawn.colour,
            "style": drawn.style, "penwidth": "2"}))
    lines.append("}")
    return "\n".join(lines) + "\n"


def mesh_edges(daemons: Iterable[Mapping[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """The links of a map's daemons as the coordinator heard them, one per pair
    (either side may have told it): relayed when either side said so, the RTT
    the larger of the two."""
    present = {int(d["daemon"]) for d in daemons}
    edges: dict[tuple[int, int], dict[str, Any]] = {}
    for daemon in daemons:
        this = int(daemon["daemon"])
        for other, relayed, rtt in daemon.get("links", []):
            if other not in present or other == this:
                continue
            pair = (min(this, other), max(this, other))
            edge = edges.setdefault(pair, {"relayed": False, "rtt_ms": None})
            edge["relayed"] = edge["relayed"] or bool(relayed)
            if rtt is not None:
                edge["rtt_ms"] = max(rtt, edge["rtt_ms"] or 0)
    return edges


def mesh_dot(map_name: str, daemons: Sequence[Mapping[str, Any]]) -> str:
    """The mesh of one map as the coordinator sees it (its status file's
    ``mesh`` entry for that map): one node per daemon, one edge per link."""
    lines = ["graph mesh {", '  layout="neato"; overlap="false"; sep="+24"; splines="true";',
             '  fontname="Helvetica";',
             f"  label={_quote(f'map {map_name}: {len(daemons)} daemons')};",
             '  node [fontname="Helvetica", fontsize="10"];',
             '  edge [fontname="Helvetica", fontsize="9", len="2.4"];']
    for daemon in daemons:
        where = f"({daemon['x']},{daemon['y']})" if daemon.get("x") is not None else ""
        troubled = bool(daemon.get("relay_fallback"))
        lines.append(f"  {_quote(str(daemon['daemon']))} " + _attributes({
            "label": f"daemon {daemon['daemon']}\nplayer {daemon['player']}\n{where}"
                     + ("\nrelay only" if daemon.get("relay_only") else ""),
            "shape": "box", "style": "rounded,filled",
            "color": RED if troubled else GREEN,
            "fillcolor": "#ffe0e0" if troubled else "white"}))
    for (a, b), edge in sorted(mesh_edges(daemons).items()):
        path = "relay" if edge["relayed"] else "direct"
        lines.append(f"  {_quote(str(a))} -- {_quote(str(b))} " + _attributes({
            "label": f"{path} {rtt_text(edge['rtt_ms'])}",
            "color": ORANGE if edge["relayed"] else GREEN,
            "style": "dashed" if edge["relayed"] else "solid", "penwidth": "2"}))
    lines.append("}")
    return "\n".join(lines) + "\n"
