"""What the demo saw: a ledger of sent and delivered events, the links, the
bandwidth, and the report built from them (a JSON object, or text for people).

Pure bookkeeping: the runner feeds it what the daemons answered and pushed,
with the times it read from the clock. The definitions of ``sent``,
``expected``, ``delivered`` and the rest are in the package's docstring
(:mod:`p2pd.meshdemo`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from p2pd.session.rtt import percentile

KINDS = ("position", "effect", "chat", "ai_interaction", "environment")
RELIABLE = frozenset({"chat", "ai_interaction", "environment"})
MARK = re.compile(r" #(\d+)\.(\d+)@(\d+\.\d+)$")  # chat: " #<player>.<seq>@<unix time>"


def chat_text(phrase: str, player: int, seq: int, sent_at: float) -> str:
    return f"{phrase} #{player}.{seq}@{sent_at:.6f}"


def parse_chat(text: str) -> tuple[int, int, float] | None:
    """(player, seq, sent_at) of a demo chat line, or None."""
    match = MARK.search(text)
    if match is None:
        return None
    return int(match[1]), int(match[2]), float(match[3])


# -- events ----------------------------------------------------------------------


@dataclass
class Sent:
    """One game event a player sent: to whom the daemon handed it, who saw the player."""

    kind: str
    sender: int
    sent_at: float  # unix seconds, as embedded in the event
    in_view: frozenset[int]  # players within view range of the sender then
    handed_to: int = 0  # the daemon's reply: peers it went to
    rate_limited: int = 0  # peers a rate limit skipped
    out_of_view: int = 0  # peers the daemon judged out of view (positions)
    absent: int = 0  # peers whose link is down for now; reliable events wait for them
    receivers: set[int] = field(default_factory=set)


@dataclass
class KindTally:
    sent: int = 0
    failed: int = 0
    expected: int = 0
    delivered: int = 0
    rate_limited: int = 0
    out_of_view: int = 0
    in_view: int = 0
    delivered_in_view: int = 0
    latencies: list[float] = field(default_factory=list)


class Ledger:
    """Every event sent, keyed by (sender, kind, id); deliveries matched against them."""

    def __init__(self) -> None:
        self._sent: dict[tuple[int, str, int], Sent] = {}
        self.failures: Counter[str] = Counter()  # error code of refused sends
        self.duplicates = 0
        self.unmatched = 0  # deliveries of events the ledger never saw sent
        # a sender's standing position given to a link made after it was sent
        # (docs/protocol.md 13A): the state, not a late delivery of that send
        self.positions_on_link = 0
        # shared state (environment) a new link's snapshot brought: sent before the
        # link came up, or authored by a third player and passed on by the peer
        self.state_on_link = 0
        self.state_passed_on = 0
        self.positions_refreshed = 0  # a standing player's position, sent again by its daemon
        self.latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}

    def will_send(self, key: tuple[int, str, int], record: Sent) -> None:
        """Before the request: a delivery can beat the reply."""
        self._sent[key] = record

    def was_sent(self, key: tuple[int, str, int], reply: dict[str, object]) -> None:
        """The daemon's reply to the request (``docs/ipc.md`` 11.9)."""
        record = self._sent[key]
        record.handed_to, record.rate_limited, record.out_of_view, record.absent = (
            _count(reply, "sent"), _count(reply, "rate_limited"),
            _count(reply, "out_of_view"), _count(reply, "absent"))

    def knows(self, key: tuple[int, str, int]) -> bool:
        return key in self._sent

    def failed(self, key: tuple[int, str, int], code: str) -> None:
        self._sent.pop(key, None)
        self.failures[code] += 1

    def delivered(self, key: tuple[int, str, int], receiver: int, sent_at: float,
                  now: float, link_since: float | None = None) -> None:
        """``sent_at`` is the time embedded in the event; ``now`` when the receiver's
        client read it; ``link_since`` when the link between the two came up."""
        record = self._sent.get(key)
        if record is None:
            self.unmatched += 1
            return
        if link_since is not None and link_since > sent_at:
            if record.kind == "position":
                self.positions_on_link += 1
                return
            if record.kind == "environment":
                self.state_on_link += 1
                return
        if receiver in record.receivers:
            self.duplicates += 1
            return
        record.receivers.add(receiver)
        self.latencies[record.kind].append(max(0.0, now - sent_at))

    def tallies(self) -> dict[str, KindTally]:
        out = {kind: KindTally() for kind in KINDS}
        for record in self._sent.values():
            tally = out[record.kind]
            tally.sent += 1
            tally.expected += record.handed_to + (
                record.absent if record.kind in RELIABLE else 0)
            tally.rate_limited += record.rate_limited
            tally.out_of_view += record.out_of_view
            tally.delivered += len(record.receivers)
            tally.in_view += len(record.in_view)
            tally.delivered_in_view += len(record.receivers & record.in_view)
        for kind, tally in out.items():
            tally.latencies = sorted(self.latencies[kind])
        return out

    def sent_count(self) -> int:
        return len(self._sent)

    def delivered_count(self) -> int:
        return sum(len(r.receivers) for r in self._sent.values())


def _count(reply: dict[str, object], name: str) -> int:
    value = reply.get(name, 0)
    return value if isinstance(value, int) else 0


# -- links -----------------------------------------------------------------------


@dataclass
class LinkRecord:
    a: int
    b: int
    ends: set[int] = field(default_factory=set)  # the sides that report it up
    formed: int = 0
    dropped: int = 0
    up_since: float | None = None
    up_total: float = 0.0
    path: str = "direct"


class LinkBook:
    """The links between players, from both sides' ``peer_joined`` and ``peer_left``.

    A link is up while at least one side reports it; it *forms* when the first
    side reports it and *drops* when the last side lets go."""

    def __init__(self, players: int) -> None:
        self.held: list[set[int]] = [set() for _ in range(players)]
        self.links_max = 0
        self.pairs: dict[tuple[int, int], LinkRecord] = {}
        self.drop_reasons: Counter[str] = Counter()

    def _pair(self, a: int, b: int) -> LinkRecord:
        key = (min(a, b), max(a, b))
        if key not in self.pairs:
            self.pairs[key] = LinkRecord(*key)
        return self.pairs[key]

    def joined(self, player: int, peer: int, now: float) -> None:
        self.held[player].add(peer)
        self.links_max = max(self.links_max, len(self.held[player]))
        record = self._pair(player, peer)
        if not record.ends:
            record.formed += 1
            record.up_since = now
        record.ends.add(player)

    def left(self, player: int, peer: int, reason: str, now: float) -> None:
        self.held[player].discard(peer)
        record = self._pair(player, peer)
        if player not in record.ends:
            return
        record.ends.discard(player)
        if not record.ends:
            record.dropped += 1
            self.drop_reasons[reason] += 1
            if record.up_since is not None:
                record.up_total += now - record.up_since
                record.up_since = None

    def observed(self, player: int, established: int, paths: dict[int, str]) -> None:
        """What a poll of the player's ``peers`` showed: links held, and their paths."""
        self.links_max = max(self.links_max, established)
        for peer, path in paths.items():
            self._pair(player, peer).path = path

    def since(self, a: int, b: int) -> float | None:
        """When the link between ``a`` and ``b`` came up, if it is up."""
        record = self.pairs.get((min(a, b), max(a, b)))
        return None if record is None else record.up_since

    def up_now(self) -> int:
        return sum(1 for record in self.pairs.values() if record.ends)

    def finish(self, now: float) -> None:
        for record in self.pairs.values():
            if record.up_since is not None:
                record.up_total += now - record.up_since
                record.up_since = now


# -- bandwidth -------------------------------------------------------------------


@dataclass
class Bandwidth:
    """Each daemon's UDP bytes sent (``stats`` ``bandwidth.out_bytes_total``)."""

    start: list[int]
    end: list[int]
    seconds: float

    def per_player(self) -> list[float]:
        return [max(0, e - s) / self.seconds for s, e in zip(self.start, self.end, strict=True)]


# -- the report --------------------------------------------------------------------


def _ms(values: list[float], fraction: float) -> float | None:
    value = percentile(values, fraction)
    return None if value is None else round(value * 1000, 2)


def build_report(*, players: int, seconds: float, seed: int, max_peers: int, backups: int,
                 relay_only: int, coordinator: dict[str, str], ledger: Ledger, links: LinkBook,
                 bandwidth: Bandwidth) -> dict[str, Any]:
    tallies = ledger.tallies()
    events = {}
    for kind, tally in tallies.items():
        events[kind] = {
            "sent": tally.sent,
            "expected": tally.expected,
            "delivered": tally.delivered,
            "rate_limited": tally.rate_limited,
            "out_of_view": tally.out_of_view,
            "in_view": tally.in_view,
            "delivered_in_view": tally.delivered_in_view,
            "latency_ms": {"p50": _ms(tally.latencies, 0.5), "p99": _ms(tally.latencies, 0.99)},
        }
    every = sorted(x for tally in tallies.values() for x in tally.latencies)
    upstream = sorted(bandwidth.per_player())
    paths = Counter(record.path for record in links.pairs.values())
    return {
        "players": players,
        "seconds": seconds,
        "seed": seed,
        "max_peers": max_peers,
        "backups": backups,
        "relay_only": relay_only,
        "coordinator": coordinator,
        "links_max": links.links_max,
        "links": {
            "formed": sum(r.formed for r in links.pairs.values()),
            "dropped": sum(r.dropped for r in links.pairs.values()),
            "up_at_end": links.up_now(),
            "drop_reasons": dict(links.drop_reasons),
            "paths": {"direct": paths.get("direct", 0), "relay": paths.get("relay", 0),
                      **{k: v for k, v in paths.items() if k not in ("direct", "relay")}},
            "per_link": [
                {"players": [r.a, r.b], "path": r.path, "formed": r.formed,
                 "dropped": r.dropped, "up_s": round(r.up_total, 2)}
                for r in sorted(links.pairs.values(), key=lambda r: (r.a, r.b))
            ],
        },
        "events": events,
        "latency_ms": {"p50": _ms(every, 0.5), "p99": _ms(every, 0.99), "samples": len(every)},
        "upstream_bytes_per_s": {
            "p50": round(percentile(upstream, 0.5) or 0.0, 1),
            "max": round(upstream[-1], 1) if upstream else 0.0,
            "per_player": [round(x, 1) for x in bandwidth.per_player()],
        },
        "send_errors": dict(ledger.failures),
        "duplicates": ledger.duplicates,
        "unmatched": ledger.unmatched,
        "positions_on_link": ledger.positions_on_link,
        "state_on_link": ledger.state_on_link,
        "state_passed_on": ledger.state_passed_on,
        "positions_refreshed": ledger.positions_refreshed,
    }


def _kb(value: float) -> str:
    return f"{value / 1024:.1f} KB/s"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_report(report: dict[str, Any]) -> str:
    links = report["links"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(links["drop_reasons"].items()))
    lines = [
        "",
        f"p2pd demo: {report['players']} players on {report.get('map', 'prontera')} for "
        f"{report['seconds']:g} s (seed {report['seed']}, max_peers {report['max_peers']} "
        f"+ {report['backups']} backup), coordinator embedded in player 0's daemon at "
        f"{report['coordinator']['udp_address']}",
        "",
        f"links     formed {links['formed']}, dropped {links['dropped']}"
        + (f" ({reasons})" if reasons else "")
        + f", up at the end {links['up_at_end']}; most held by one daemon "
        f"{report['links_max']}",
        "          paths: " + ", ".join(f"{k} {v}" for k, v in links["paths"].items()),
    ]
    for link in links["per_link"]:
        a, b = link["players"]
        lines.append(f"          p{a:<2} - p{b:<2}  {link['path']:<7} up {link['up_s']:5.1f} s"
                     f"  formed {link['formed']}, dropped {link['dropped']}")
    lines += [
        "",
        f"events    {'kind':<15}{'sent':>6}{'expected':>10}{'delivered':>11}{'rate-lim':>10}"
        f"{'unseen':>8}{'in view':>9}{'reached':>9}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for kind, e in report["events"].items():
        lines.append(
            f"          {kind:<15}{e['sent']:>6}{e['expected']:>10}{e['delivered']:>11}"
            f"{e['rate_limited']:>10}{e['out_of_view']:>8}{e['in_view']:>9}"
            f"{e['delivered_in_view']:>9}"
            f"{_num(e['latency_ms']['p50']):>9}{_num(e['latency_ms']['p99']):>9}")
    latency = report["latency_ms"]
    upstream = report["upstream_bytes_per_s"]
    lines += [
        "",
        f"latency   p50 {_num(latency['p50'])} ms, p99 {_num(latency['p99'])} ms "
        f"over {latency['samples']} deliveries (send to the receiving client)",
        f"upstream  per player p50 {_kb(upstream['p50'])}, max {_kb(upstream['max'])}: "
        + " ".join(f"p{i} {x / 1024:.1f}" for i, x in enumerate(upstream["per_player"])),
    ]
    if report["send_errors"] or report["duplicates"] or report["unmatched"]:
        lines.append(f"problems  refused sends {report['send_errors']}, duplicates "
                     f"{report['duplicates']}, unmatched deliveries {report['unmatched']}")
    lines += [
        "",
        "expected: deliveries the daemons took on (each event times the peers its daemon "
        "handed it to);",
        "rate-lim / unseen: peers a daemon skipped for its rate limit, or as out of view "
        "(positions);",
        "in view / reached: receivers within 14 cells of the sender when it was sent, and "
        "how many of them got it.",
    ]
    return "\n".join(lines)
