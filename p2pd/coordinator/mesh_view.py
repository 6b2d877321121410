"""The operator's view of the mesh, map by map (spec §8.3), from a coordinator's state.

What a coordinator knows: its registered daemons, the map and cell each last
reported (presence), the links each said it has (``links`` control messages),
what it relayed for each, and the reports each sent. :func:`mesh_view` sums
that up per map for the status file (``p2pctl coordinator-status``), and
lists the daemons themselves, with their links, up to a bound, so that the
file stays small with a hundred thousand daemons. Sans-IO: no clock, no files.

An area falls back to the relay when several of its daemons reported that
their direct paths failed: ``relay_fallback`` or ``all_links_relayed`` from at
least ``AREA_RELAYED`` daemons of one map, or from half of them, among the
reports the coordinator keeps (its last ``report_history``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from p2pd.ipc.fields import format_address

if TYPE_CHECKING:
    from p2pd.coordinator.core import Coordinator

LISTED_PER_MAP = 200  # daemons listed with their links, per map
LISTED_IN_ALL = 2000  # and in all
AREA_RELAYED = 3  # daemons of one map that reported relay fallback: the area's paths fail
RELAY_CODES = frozenset({"relay_fallback", "all_links_relayed"})
NO_MAP = "-"  # daemons registered that have not reported a position yet


def mesh_view(coordinator: Coordinator) -> dict[str, dict[str, Any]]:
    """Per map: daemons, links (each pair once, told by either side), relayed
    links, relayed bytes, reports received, daemons that reported relay
    fallback and whether the whole area did (``area_relayed``), and the daemons
    themselves (``listed``, at most LISTED_PER_MAP)."""
    fallen_back = {r.daemon_id for r in coordinator.reports if r.report.code in RELAY_CODES}
    maps: dict[str, dict[str, Any]] = {}
    pairs: dict[str, dict[tuple[int, int], bool]] = {}
    listed = 0
    for record in coordinator.store:
        name = record.map or NO_MAP
        entry = maps.get(name)
        if entry is None:
            entry = maps[name] = {"daemons": 0, "links": 0, "relayed_links": 0,
                                  "relayed_bytes": 0, "reports": 0, "relay_fallback": 0,
                                  "area_relayed": False, "listed": []}
            pairs[name] = {}
        entry["daemons"] += 1
        entry["relayed_bytes"] += record.relayed_bytes
        entry["reports"] += record.reports_received
        fell_back = record.daemon_id in fallen_back
        entry["relay_fallback"] += fell_back
        known = pairs[name]
        for link in record.links:
            pair = (min(record.daemon_id, link.daemon_id), max(record.daemon_id, link.daemon_id))
            known[pair] = known.get(pair, False) or link.relayed
        if len(entry["listed"]) < LISTED_PER_MAP and listed < LISTED_IN_ALL:
            listed += 1
            position = coordinator.presence.position(record.daemon_id)
            entry["listed"].append({
                "daemon": record.daemon_id, "player": record.player_id,
                "address": format_address(record.address),
                "x": position[1] if position is not None else None,
                "y": position[2] if position is not None else None,
                "relay_only": record.relay_only,
                "links": [[link.daemon_id, link.relayed, link.rtt_ms] for link in record.links],
                "relayed_bytes": record.relayed_bytes, "reports": record.reports_received,
                "relay_fallback": fell_back,
            })
    for name, entry in maps.items():
        entry["links"] = len(pairs[name])
        entry["relayed_links"] = sum(pairs[name].values())
        count = entry["relay_fallback"]
        entry["area_relayed"] = count >= AREA_RELAYED or (count >= 2 and 2 * count >= entry[
            "daemons"])
    return dict(sorted(maps.items()))
