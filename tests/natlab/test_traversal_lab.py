"""NAT traversal in the lab beyond the matrix (tests/natlab/test_matrix.py): real
``p2pd run`` daemons behind real NATs, a real ``p2pd coordinator``, coturn and
miniupnpd; each test builds its own lab, and the lab and every process go at the
end, passed or failed.

- two symmetric NATs with the TURN server down still link, through the
  coordinator's relay;
- relay-only players never send a packet to, or get one from, the other player's
  address (tcpdump in each player's namespace);
- behind miniupnpd a peer dials the mapped port, which is not the port the NAT
  shows STUN;
- a NAT whose mappings time out after 2 s idle does not break a direct link:
  keepalives hold it;
- ``p2pctl nat`` names each kind's NAT behaviour (RFC 5780, coturn answering
  CHANGE-REQUEST);
- without the low-TTL first punches, two masquerade NATs do not link directly
  (the conntrack conflict the punches are for), and the lab has the router hop
  between the NATs where a TTL-2 packet dies.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pd.io.portmap import UpnpClient
from p2pd.ipc.fields import split_address
from p2pd.localrun import DaemonProcess
from tests.natlab.conftest import MakeLab
from tests.natlab.daemons import (
    Player,
    chat_both_ways,
    lab_players,
    meet,
    open_player,
    start_lab_coordinator,
    start_lab_daemon,
    stop_all,
    wait_until_gathered,
)
from tests.natlab.lab import TURN_ADDRESS, Lab, NatKind, capture_lines

P2PCTL = str(Path(sys.executable).parent / "p2pctl")
M, H, F, S, U = (NatKind.MASQUERADE, NatKind.HOME, NatKind.FULL_CONE, NatKind.SYMMETRIC,
                 NatKind.UPNP)


async def paths(x: Player, y: Player) -> tuple[str | None, str | None]:
    seen = (await x.link_to(y), await y.link_to(x))
    return (seen[0]["path"] if seen[0] else None, seen[1]["path"] if seen[1] else None)


async def test_two_symmetric_nats_with_the_turn_server_down_link_through_the_coordinator(
        nat_lab: MakeLab, tmp_path: Path) -> None:
    lab: Lab = nat_lab(S, S)
    coordinator = start_lab_coordinator(lab, tmp_path / "coordinator")
    async with lab_players(lab, tmp_path, coordinator, lab.sides) as (a, b):
        for player in (a, b):  # each holds a TURN allocation and publishes it
            nat = await wait_until_gathered(player.client, discovery=False)
            assert nat["turn"]["state"] == "allocated"
        lab.stop_turn()  # the allocations die with the server; the daemons do not know yet
        await meet(a, b)
        assert await paths(a, b) == ("relay", "relay")
        assert (await a.link_to(b) or {})["address"].startswith("relay:")
        await chat_both_ways(a, b, "through the coordinator")
        await trio.sleep(2.5)  # TURN and direct probes went unanswered: still relayed
        assert await paths(a, b) == ("relay", "relay")


_IP = re.compile(r"\bIP (\d+\.\d+\.\d+\.\d+)(?:\.\d+)? > (\d+\.\d+\.\d+\.\d+)(?:\.\d+)?:")


def endpoints(lines: list[str]) -> set[str]:
    """Every IPv4 address a packet of a tcpdump summary came from or went to."""
    found: set[str] = set()
    for line in lines:
        match = _IP.search(line)
        if match:
            found.update(match.groups())
    return found


@pytest.mark.parametrize("b_relay_only", [True, False], ids=["both", "a_only"])
async def test_relay_only_players_never_exchange_a_packet_with_each_other(
        nat_lab: MakeLab, tmp_path: Path, b_relay_only: bool) -> None:
    """a is relay-only; b too, or not (then b must still never learn a's address,
    and a sends nothing to b's: that would tell b where a is)."""
    # full cone on both sides: were an address to leak, a direct path would work
    lab: Lab = nat_lab(F, F)
    coordinator = start_lab_coordinator(lab, tmp_path / "coordinator")
    async with lab_players(lab, tmp_path, coordinator, lab.sides,
                           each=[{"relay_only": True}, {"relay_only": b_relay_only}]) as (a, b):
        for player, relay_only in ((a, True), (b, b_relay_only)):
            nat = await wait_until_gathered(player.client, discovery=False)
            assert nat["relay_only"] is relay_only
            kinds = [c.split()[0] for c in nat["candidates"]]
            assert (kinds == ["relay"]) if relay_only else ("srflx" in kinds), kinds
        with lab.capture(lab.a.host, "a", expression="ip") as pcap_a, \
                lab.capture(lab.b.host, "b", expression="ip") as pcap_b:
            await meet(a, b)
            link_paths = await paths(a, b)
            assert set(link_paths) <= {"turn", "relay"}, link_paths
            await chat_both_ways(a, b, "without your address")
            await trio.sleep(1.5)  # pings and path probes go on meanwhile
        seen_by_a = endpoints(capture_lines(pcap_a))
        seen_by_b = endpoints(capture_lines(pcap_b))
    assert lab.a.lan_ip in seen_by_a and lab.b.lan_ip in seen_by_b  # the captures saw traffic
    assert (TURN_ADDRESS in seen_by_a) or (lab.coordinator_address in seen_by_a)
    assert not seen_by_a & {lab.b.lan_ip, lab.b.wan_ip}, seen_by_a
    assert not seen_by_b & {lab.a.lan_ip, lab.a.wan_ip}, seen_by_b


async def test_behind_miniupnpd_the_peer_dials_the_mapped_port(nat_lab: MakeLab,
                                                               tmp_path: Path) -> None:
    lab: Lab = nat_lab(U, S)
    # Another program behind the same router holds external port 7000 (to its own
    # port 7100): the daemon's mapping gets another port, and the port the NAT shows
    # STUN for the daemon's 7000 leads to that program instead. Only the mapping works;
    # and the peer is behind a symmetric NAT, so no hole punching either.
    blocker = UpnpClient(description="natlab blocker")
    lab.a.host.call(lambda: blocker.add(7100, 7000, 0))
    coordinator = start_lab_coordinator(lab, tmp_path / "coordinator")
    async with lab_players(lab, tmp_path, coordinator, lab.sides) as (a, b):
        nat_a = await wait_until_gathered(a.client, discovery=False)
        with trio.fail_after(10):
            while (nat_a.get("port_mapping") or {}).get("state") != "mapped":
                await trio.sleep(0.05)
                nat_a = await a.nat()
        mapped = nat_a["port_mapping"]["external"]
        mapped_ip, mapped_port = split_address(mapped)
        assert mapped_ip == lab.a.wan_ip and mapped_port != 7000, mapped
        assert f"mapped {mapped}" in nat_a["candidates"]
        await meet(a, b)
        with trio.fail_after(10):
            while await paths(a, b) != ("direct", "direct"):
                await trio.sleep(0.05)
        to_a = await b.link_to(a)
        assert to_a is not None and to_a["address"] == mapped
        await chat_both_ways(a, b, "through the mapped port")
        # the router's conntrack: a flow that came in from the peer's NAT to the mapped
        # port and was forwarded to the daemon's port 7000
        flows = [line for line in lab.conntrack(lab.a)
                 if f"src={lab.b.wan_ip} dst={lab.a.wan_ip}" in line
                 and f"dport={mapped_port} " in line and f"src={lab.a.lan_ip} " in line
                 and "sport=7000 " in line]
        assert flows, lab.conntrack(lab.a)


def conntrack_timeouts(lab: Lab, side_name: str, peer_wan: str) -> list[int]:
    """Seconds left on the router's UDP flows with ``peer_wan`` (conntrack -L's third field)."""
    side = lab.side(side_name)
    return [int(line.split()[2]) for line in lab.conntrack(side) if f"dst={peer_wan} " in line]


async def test_a_nat_whose_mappings_time_out_after_two_idle_seconds_keeps_the_link(
        nat_lab: MakeLab, tmp_path: Path) -> None:
    lab: Lab = nat_lab(H, H)  # unsolicited packets dropped: an expired mapping is a wall
    coordinator = start_lab_coordinator(lab, tmp_path / "coordinator")
    async with lab_players(lab, tmp_path, coordinator, lab.sides) as (a, b):
        for player in (a, b):
            await wait_until_gathered(player.client, discovery=False)
        await meet(a, b)
        with trio.fail_after(10):
            while await paths(a, b) != ("direct", "direct"):
                await trio.sleep(0.05)
        for side in lab.sides:
            lab.set_udp_timeout(side, 2)
        await trio.sleep(6.0)  # no game traffic for three timeouts
        # the short timeout is in force on the link's own flow, and it is alive
        assert 0 < max(conntrack_timeouts(lab, "a", lab.b.wan_ip)) <= 2
        assert 0 < max(conntrack_timeouts(lab, "b", lab.a.wan_ip)) <= 2
        others = await chat_both_ways(a, b, "after the quiet")
        assert "peer_left" not in others
        assert await paths(a, b) == ("direct", "direct")
        for player in (a, b):
            assert (await player.nat())["path_fallbacks"] == 0  # never went to the relay


# kind -> (mapping, filtering) that `p2pctl nat` must show
BEHAVIOUR = {
    "masquerade": ("endpoint_independent", "address_and_port_dependent"),
    "home": ("endpoint_independent", "address_and_port_dependent"),
    "full_cone": ("endpoint_independent", "endpoint_independent"),
    "symmetric": ("address_and_port_dependent", "address_and_port_dependent"),
    # behind miniupnpd with its port mapped: the mapped port takes anyone's packets
    "upnp": ("endpoint_independent", "endpoint_independent"),
    # the same router without a mapping: a port-restricted cone
    "upnp, no mapping": ("endpoint_independent", "address_and_port_dependent"),
}


async def test_p2pctl_nat_shows_each_kind_s_behaviour(nat_lab: MakeLab, tmp_path: Path) -> None:
    lab: Lab = nat_lab(M, H, more=(F, S, U, U))
    assert lab.turn is not None
    names = ["masquerade", "home", "full_cone", "symmetric", "upnp", "upnp, no mapping"]
    daemons: list[DaemonProcess] = []
    try:
        for name, side in zip(names, lab.sides, strict=True):
            daemons.append(start_lab_daemon(
                side.host, tmp_path / f"daemon-{side.name}", p2p={"nat_traversal": "true"},
                port_mapping={"enabled": str(name != "upnp, no mapping").lower()},
                nat={"stun_servers": f"{lab.turn.address}:{lab.turn.port}"}))
        for daemon in daemons:
            daemon.wait_ready()

        for daemon in daemons:  # discovery done (the IPC op p2pctl nat calls)
            async with await open_player(daemon) as client:
                await wait_until_gathered(client, timeout=20)

        def ask(daemon: DaemonProcess, *json_flag: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([P2PCTL, "--runtime-dir", str(daemon.runtime_dir), "nat",
                                   *json_flag], capture_output=True, text=True, timeout=20,
                                  check=True)

        shown: dict[str, dict[str, Any]] = {}

        async def ask_json(name: str, daemon: DaemonProcess) -> None:
            shown[name] = json.loads((await trio.to_thread.run_sync(ask, daemon,
                                                                    "--json")).stdout)

        async with trio.open_nursery() as nursery:
            for name, daemon in zip(names, daemons, strict=True):
                nursery.start_soon(ask_json, name, daemon)
        for name, side in zip(names, lab.sides, strict=True):
            behaviour = shown[name]["behaviour"]
            assert behaviour["state"] == "done"
            assert (behaviour["mapping"], behaviour["filtering"]) == BEHAVIOUR[name], name
            assert shown[name]["public"][f"stun {TURN_ADDRESS}:3478"].startswith(
                side.wan_ip + ":"), shown[name]["public"]
        # what a symmetric NAT's daemon publishes: no server-reflexive candidate (its
        # port towards a peer is not the one STUN saw)
        assert not any(c.startswith("srflx") for c in shown["symmetric"]["candidates"])
        assert any(c.startswith("srflx") for c in shown["masquerade"]["candidates"])
        assert shown["upnp"]["port_mapping"]["state"] == "mapped"
        text = ask(daemons[3]).stdout
        assert "mapping address_and_port_dependent, filtering address_and_port_dependent" in text
    finally:
        stop_all(daemons)


async def test_without_low_ttl_punches_two_masquerade_nats_remap_and_do_not_link_directly(
        nat_lab: MakeLab, tmp_path: Path) -> None:
    lab: Lab = nat_lab(M, M)
    coordinator = start_lab_coordinator(lab, tmp_path / "coordinator")
    async with lab_players(lab, tmp_path, coordinator, lab.sides,
                           nat={"punch_ttl": "0"}) as (a, b):
        for player in (a, b):
            await wait_until_gathered(player.client, discovery=False)
            await player.client.request("subscribe", events=["peer_joined"])
        # a stands on the map first (its list is empty). Then, while a's router drops
        # what the coordinator sends a for 0.3 s, b arrives: b's list names a, b
        # dials and punches, and only afterwards does a hear of b (its fresh list and
        # b's introduction, retransmitted) and dial back: the order a real delay makes
        # (without it both lists leave together and the two punch at the same moment).
        await a.client.request("position", map="prontera", x=100, y=100, dir=0, tick=1)
        await trio.sleep(0.5)
        router = lab.a.router
        router.run("nft", "add table inet hold; add chain inet hold held"
                   " { type filter hook forward priority -10 ; };"
                   f" add rule inet hold held ip saddr {lab.coordinator_address} drop")
        try:
            await b.client.request("position", map="prontera", x=103, y=100, dir=0, tick=1)
            await trio.sleep(0.3)
        finally:
            router.run("nft", "delete table inet hold")
        with trio.fail_after(15.0):
            for player, other in ((a, b), (b, a)):
                while True:
                    event = await player.client.next_event()
                    if event["event"] == "peer_joined" and event["peer"] == other.key:
                        break
        await trio.sleep(3.0)  # direct probes every second on a relayed link: none answers
        taken = await paths(a, b)
        # relayed (by coturn, or by the coordinator once its 1.5 s come before the
        # TURN check that a's late start holds back): never direct
        assert taken in (("turn", "turn"), ("relay", "relay")), taken
        assert (await a.nat())["counters"]["punches_low_ttl"] == 0
        # The conflict, in a router's conntrack: the peer's first packet came in from
        # its port 7000 to this router's 7000 (and stays, unreplied); the daemon's own
        # flow to the peer's 7000, a moment later, could not take the same tuple and
        # was remapped to another port, which nobody dials.
        remapped = []
        for side, peer in ((lab.a, lab.b), (lab.b, lab.a)):
            table = "\n".join(lab.conntrack(side))
            inbound = (f"src={peer.wan_ip} dst={side.wan_ip} sport=7000 dport=7000 "
                       "[UNREPLIED]") in table
            ports = re.findall(rf"src={side.lan_ip} dst={peer.wan_ip} sport=7000 dport=7000 "
                               rf".*?src={peer.wan_ip} dst={side.wan_ip} sport=7000 "
                               rf"dport=(\d+)", table)
            if inbound and ports and ports[0] != "7000":
                remapped.append((side.name, ports[0]))
        assert remapped, [lab.conntrack(side) for side in lab.sides]


def test_a_ttl_2_packet_dies_between_the_nats(nat_lab: MakeLab) -> None:
    """The first punches (TTL 2) open the sender's NAT (hop 1) and expire on the
    internet (hop 2), before the far NAT: the lab has that router hop."""
    lab = nat_lab(M, M)
    far = lab.b.router.udp()  # listening on the far router itself
    near = lab.a.host.udp()
    try:
        port = far.getsockname()[1]
        near.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 2)
        near.sendto(b"punch", (lab.b.wan_ip, port))
        far.settimeout(0.3)
        try:
            far.recvfrom(64)
            reached = True
        except TimeoutError:
            reached = False
        assert not reached
        near.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 3)
        near.sendto(b"reaches", (lab.b.wan_ip, port))
        far.settimeout(2)
        assert far.recvfrom(64)[0] == b"reaches"
    finally:
        near.close()
        far.close()
