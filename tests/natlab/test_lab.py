"""The NAT lab itself, proven without any p2pd code: each NAT kind maps and filters as
it should, coturn answers STUN (RFC 5780 CHANGE-REQUEST included) and TURN with
both kinds of credentials, a shortened conntrack timeout ends a mapping, captures
see the translation, and a lab is removed whole even when its test fails."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.natlab import stun
from tests.natlab.conftest import MakeLab
from tests.natlab.lab import (
    INTERNET_HOSTS,
    TURN_ADDRESS,
    NatKind,
    Side,
    TurnSettings,
    capture_lines,
    lab_unavailable,
    open_lab,
)
from tests.natlab.netns import existing

QUIET = 0.3  # seconds to wait for a packet that should not come


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def arrives(sock: socket.socket, timeout: float = QUIET) -> tuple[bytes, tuple[str, int]] | None:
    """The next datagram on ``sock`` within ``timeout``, or None."""
    sock.settimeout(timeout)
    try:
        data, source = sock.recvfrom(2048)
    except TimeoutError:
        return None
    return data, (str(source[0]), int(source[1]))


# kind -> (port kept for every destination, unsolicited packet delivered,
#          the unsolicited sender gets ICMP port unreachable)
BEHAVIOUR = {
    NatKind.MASQUERADE: (True, False, True),
    NatKind.HOME: (True, False, False),
    NatKind.FULL_CONE: (True, True, False),
    NatKind.SYMMETRIC: (False, False, True),
    NatKind.UPNP: (True, False, True),
}


@pytest.mark.parametrize("kind", list(NatKind))
def test_each_nat_kind_maps_and_filters_as_named(nat_lab: MakeLab, kind: NatKind,
                                                 sockets: list[socket.socket]) -> None:
    lab = nat_lab(kind)
    side = lab.a
    keeps_port, delivered, refused = BEHAVIOUR[kind]
    player = side.host.udp()
    sockets.append(player)
    port = player.getsockname()[1]
    servers = [lab.internet.udp(host, 4000) for host in INTERNET_HOSTS[:3]]
    sockets.extend(servers)
    seen = []
    for server in servers:
        player.sendto(b"out", server.getsockname())
        data, source = server.recvfrom(64)
        assert data == b"out"
        seen.append(source)
    assert {ip for ip, _ in seen} == {side.wan_ip}, seen
    ports = [p for _, p in seen]
    if keeps_port:
        assert ports == [port] * 3, f"{kind}: source port {port} became {ports}"
    else:
        assert len(set(ports)) >= 2, f"{kind}: one port {ports} for three destinations"
    # replies come back through each mapping
    for server, source in zip(servers, seen, strict=True):
        server.sendto(b"reply", source)
        assert arrives(player, 2.0) == (b"reply", server.getsockname())
    # an unsolicited packet from a host the player never contacted, to the first mapping
    stranger = lab.internet.udp(INTERNET_HOSTS[3], 0)
    sockets.append(stranger)
    stranger.connect(seen[0])
    stranger.send(b"knock")
    got = arrives(player)
    assert (got == (b"knock", stranger.getsockname())) is delivered, f"{kind}: {got}"
    stranger.settimeout(QUIET)
    try:
        stranger.recv(64)
        answer = "a datagram"
    except ConnectionRefusedError:
        answer = "refused"
    except TimeoutError:
        answer = "silence"
    assert (answer == "refused") is refused, f"{kind}: the stranger got {answer}"


def test_coturn_answers_binding_and_rfc5780_change_request(nat_lab: MakeLab,
                                                           sockets: list[socket.socket]) -> None:
    lab = nat_lab(NatKind.FULL_CONE, NatKind.HOME)
    assert lab.turn is not None
    for side in lab.sides:
        sock = side.host.udp()
        sockets.append(sock)
        request, _ = stun.binding_request()
        answer, source = stun.exchange(sock, request, lab.turn.server)
        assert answer.method_class == stun.BINDING | stun.SUCCESS
        assert source == lab.turn.server
        assert answer.address(stun.XOR_MAPPED_ADDRESS) == (side.wan_ip, sock.getsockname()[1])
        assert answer.address(stun.OTHER_ADDRESS) == (lab.turn.alternate_address,
                                                      lab.turn.alternate_port)
        # the answer from the other address and port passes an endpoint-independent
        # filter and not a home router's
        request, _ = stun.binding_request(stun.CHANGE_IP | stun.CHANGE_PORT)
        sock.settimeout(QUIET * 2)
        changed: tuple[str, int] | None
        try:
            _, changed = stun.exchange(sock, request, lab.turn.server)
        except TimeoutError:
            changed = None
        if side.kind is NatKind.FULL_CONE:
            assert changed == (lab.turn.alternate_address, lab.turn.alternate_port)
        else:
            assert changed is None


@pytest.mark.parametrize("mode", ["long-term", "rest"])
def test_coturn_allocates_with_configured_credentials(nat_lab: MakeLab, mode: str,
                                                      sockets: list[socket.socket]) -> None:
    settings = TurnSettings(mode=mode, users=(("alice", "right"),), secret="s3cret")
    lab = nat_lab(NatKind.MASQUERADE, turn_settings=settings)
    assert lab.turn is not None
    if mode == "long-term":
        good, bad = ("alice", "right"), ("alice", "wrong")
    else:
        good = stun.rest_credentials("s3cret", "alice")
        bad = stun.rest_credentials("not the secret", "alice")
    first, second = lab.a.host.udp(), lab.a.host.udp()
    sockets += [first, second]
    answer = stun.allocate(first, lab.turn.server, *good)
    assert answer.method_class == stun.ALLOCATE | stun.SUCCESS, answer.error_code
    assert answer.address(stun.XOR_RELAYED_ADDRESS)[0] == TURN_ADDRESS
    assert answer.address(stun.XOR_MAPPED_ADDRESS) == (lab.a.wan_ip, first.getsockname()[1])
    refused = stun.allocate(second, lab.turn.server, *bad)
    assert refused.method_class == stun.ALLOCATE | stun.ERROR
    assert refused.error_code == 401


def test_a_shortened_udp_timeout_ends_an_idle_mapping(nat_lab: MakeLab,
                                                      sockets: list[socket.socket]) -> None:
    lab = nat_lab(NatKind.HOME, NatKind.HOME)
    short, usual = lab.a, lab.b
    lab.set_udp_timeout(short, 1)
    server = lab.internet.udp(INTERNET_HOSTS[0], 4000)
    sockets.append(server)
    mappings: dict[str, tuple[socket.socket, tuple[str, int]]] = {}
    for side in (short, usual):
        player = side.host.udp()
        sockets.append(player)
        player.sendto(b"out", server.getsockname())
        _, source = server.recvfrom(64)
        server.sendto(b"reply", source)
        assert arrives(player, 2.0) == (b"reply", server.getsockname())
        mappings[side.name] = (player, source)
    assert any(f"dport={mappings['a'][1][1]}" in line for line in lab.conntrack(short))
    time.sleep(2.2)  # idle past the short timeout
    assert not any(f"dport={mappings['a'][1][1]}" in line for line in lab.conntrack(short))
    for side, expected in ((short, None), (usual, (b"late", server.getsockname()))):
        player, source = mappings[side.name]
        server.sendto(b"late", source)
        assert arrives(player) == expected, side.name


def test_captures_show_the_translation(nat_lab: MakeLab, sockets: list[socket.socket]) -> None:
    lab = nat_lab(NatKind.MASQUERADE)
    side: Side = lab.a
    server = lab.internet.udp(INTERNET_HOSTS[0], 4000)
    player = side.host.udp()
    sockets += [server, player]
    port = player.getsockname()[1]
    with lab.capture(side.host, "lan") as inside, lab.capture(side.router, "wan", "wan") as wan:
        player.sendto(b"seen", server.getsockname())
        server.recvfrom(64)
    assert any(f"{side.lan_ip}.{port} > {INTERNET_HOSTS[0]}.4000: UDP" in line
               for line in capture_lines(inside)), capture_lines(inside)
    wan_lines = capture_lines(wan)
    assert any(f"{side.wan_ip}.{port} > {INTERNET_HOSTS[0]}.4000: UDP" in line
               for line in wan_lines), wan_lines
    assert not any(side.lan_ip in line for line in wan_lines)


@pytest.mark.skipif(lab_unavailable() is not None, reason=str(lab_unavailable()))
def test_a_failing_test_still_removes_its_lab(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the test failed"), \
            open_lab(NatKind.UPNP, NatKind.SYMMETRIC, workdir=tmp_path) as lab:
        names = [namespace.name for namespace in lab.namespaces]
        assert set(names) <= set(existing())
        assert lab.coturn is not None
        pids = [lab.coturn.pid, lab.miniupnpd["a"].pid,
                *lab.internet.pids(), *lab.a.router.pids()]
        # a process the lab did not start itself, left running in a namespace
        lab.b.host.run("sh", "-c", "sleep 60 >/dev/null 2>&1 &")
        pids += lab.b.host.pids()
        assert len(pids) >= 5
        raise RuntimeError("the test failed")
    assert not set(names) & set(existing())
    assert [pid for pid in pids if alive(pid)] == []


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that is not us to reap it is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
