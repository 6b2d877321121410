"""Tests for the user-space UDP impairment relay, over real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import statistics
import struct
from collections.abc import Callable

import pytest
import trio

from p2pd.sim.network import Address, LinkProfile
from p2pd.sim.udp_relay import UdpImpairmentRelay, main, parse_host_port

LOOPBACK = "127.0.0.1"
_HEADER = struct.Struct("!Id")  # datagram index, send time (trio clock)
CLEAN = LinkProfile()


def payload(index: int, size: int = 64) -> bytes:
    return _HEADER.pack(index, trio.current_time()).ljust(size, b"\x5a")


def decode(data: bytes) -> tuple[int, float]:
    index, sent = _HEADER.unpack_from(data)
    return int(index), float(sent)


class Endpoint:
    """A UDP socket on loopback that records (arrival time, data, source) and may echo."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.received: list[tuple[float, bytes, Address]] = []
        self.address: Address = ("", 0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.sock:
            await self.sock.bind((LOOPBACK, 0))
            host, port = self.sock.getsockname()
            self.address = (str(host), int(port))
            task_status.started()
            while True:
                data, source = await self.sock.recvfrom(65_535)
                peer = (str(source[0]), int(source[1]))
                self.received.append((trio.current_time(), data, peer))
                if self.echo:
                    await self.sock.sendto(data, peer)

    async def send(self, data: bytes, address: Address) -> None:
        await self.sock.sendto(data, address)

    @property
    def data(self) -> list[bytes]:
        return [data for _, data, _ in self.received]


async def start(
    nursery: trio.Nursery, forward: LinkProfile = CLEAN, backward: LinkProfile = CLEAN,
    seed: int = 1,
) -> tuple[UdpImpairmentRelay, Endpoint, Endpoint]:
    """An echoing target behind a relay, and a client; all run until the test ends."""
    target, client = Endpoint(echo=True), Endpoint(echo=False)
    await nursery.start(target.run)
    await nursery.start(client.run)
    relay = UdpImpairmentRelay(target.address, forward=forward, backward=backward, seed=seed)
    front = await nursery.start(relay.run)
    assert front == relay.front_address
    return relay, client, target


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.002)


def settled(relay: UdpImpairmentRelay, client: Endpoint, target: Endpoint, sent: int) -> bool:
    """Every datagram the client sent and the target echoed has been accounted for."""
    stats = relay.statistics()
    return (
        stats.sent == sent + len(target.received)
        and relay.in_flight == 0
        and stats.delivered == len(target.received) + len(client.received)
    )


async def test_clean_relay_is_transparent_both_ways(nursery: trio.Nursery) -> None:
    relay, client, target = await start(nursery)
    sent = [b"", b"x", os.urandom(100), os.urandom(1400), os.urandom(9000), bytes(256)]
    sent += [payload(i) for i in range(50)]
    for data in sent:
        await client.send(data, relay.front_address)
    await wait_for(lambda: len(client.received) == len(sent))

    assert target.data == sent  # byte-exact and, without impairment, in order
    assert client.data == sent
    assert {source for _, _, source in target.received} == {relay.back_address}
    assert {source for _, _, source in client.received} == {relay.front_address}
    assert relay.client_address == client.address
    assert relay.front_address != relay.back_address
    for direction in ("forward", "backward"):
        assert [data for way, data in relay.seen if way == direction] == sent
    stats = relay.statistics()
    assert (stats.sent, stats.delivered, stats.lost) == (2 * len(sent), 2 * len(sent), 0)
    assert stats.bytes_delivered == stats.bytes_sent == 2 * sum(map(len, sent))
    assert (relay.ignored, relay.send_errors, relay.receive_errors) == (0, 0, 0)


async def test_loss_fraction_matches_profile_each_way(nursery: trio.Nursery) -> None:
    lossy = LinkProfile(loss=0.3)
    relay, client, target = await start(nursery, forward=lossy, backward=lossy, seed=11)
    n = 2000
    for i in range(n):
        await client.send(payload(i, 32), relay.front_address)
        if i % 50 == 49:
            await trio.sleep(0.002)  # stay well inside the socket buffers
    await wait_for(lambda: settled(relay, client, target, n))

    forward_loss = 1 - len(target.received) / n
    backward_loss = 1 - len(client.received) / len(target.received)
    assert forward_loss == pytest.approx(0.3, abs=0.05)
    assert backward_loss == pytest.approx(0.3, abs=0.05)
    stats = relay.statistics()
    assert stats.sent == n + len(target.received)
    assert stats.lost == stats.lost_random == stats.sent - stats.delivered
    assert stats.lost_random / stats.sent == pytest.approx(0.3, abs=0.04)
    # what was delivered arrived intact, each datagram at most once
    indices = [decode(d)[0] for d in target.data]
    assert len(set(indices)) == len(indices)
    assert set(client.data) <= set(target.data)
    assert relay.send_errors == 0


async def test_delay_is_a_lower_bound_and_roughly_exact(nursery: trio.Nursery) -> None:
    delay = 0.05
    slow = LinkProfile(delay=delay)
    relay, client, target = await start(nursery, forward=slow, backward=slow)
    n = 100
    begin = trio.current_time()
    for i in range(n):
        await trio.sleep_until(begin + i * 0.003)
        await client.send(payload(i), relay.front_address)
    await wait_for(lambda: settled(relay, client, target, n))
    assert len(target.received) == len(client.received) == n

    arrived_at_target = {decode(data)[0]: at for at, data, _ in target.received}
    forward = [at - decode(data)[1] for at, data, _ in target.received]
    backward = [at - arrived_at_target[decode(data)[0]] for at, data, _ in client.received]
    for delays in (forward, backward):
        assert min(delays) >= delay
        assert statistics.median(delays) < delay + 0.01
        assert max(delays) < delay + 0.1


async def test_corruption_flips_one_bit(nursery: trio.Nursery) -> None:
    relay, client, target = await start(nursery, forward=LinkProfile(corrupt=1.0))
    sent = [os.urandom(64) for _ in range(50)]
    for data in sent:
        await client.send(data, relay.front_address)
    await wait_for(lambda: len(client.received) == len(sent))

    for original, received in zip(sent, target.data, strict=True):
        assert len(received) == len(original)
        difference = int.from_bytes(original, "big") ^ int.from_bytes(received, "big")
        assert difference.bit_count() == 1
    assert client.data == target.data  # the way back is clean
    assert relay.statistics().corrupted == len(sent)


async def test_blackhole_from_now_stops_traffic_then_it_resumes(nursery: trio.Nursery) -> None:
    relay, client, target = await start(nursery)
    n, interval, hole = 160, 0.005, 0.3
    begin = trio.current_time()
    t0 = 0.0
    for i in range(n):
        await trio.sleep_until(begin + i * interval)
        if i == 40:
            t0 = trio.current_time()  # at most microseconds before the blackhole starts
            blackhole = relay.blackhole_from_now(hole)
            relay.set_profiles(forward=blackhole, backward=blackhole)
        await client.send(payload(i), relay.front_address)
    await wait_for(lambda: settled(relay, client, target, n))

    ((start_, end),) = relay.forward_profile.blackholes
    assert end - start_ == pytest.approx(hole)
    assert start_ == pytest.approx(relay.now() - (trio.current_time() - t0), abs=1e-3)
    margin = 0.05  # for the lag between a datagram reaching the relay and leaving it
    for endpoint in (target, client):
        during = [at - t0 for at, _, _ in endpoint.received if t0 + margin <= at < t0 + hole]
        assert during == []
    sent_at = {decode(data)[0]: decode(data)[1] for data in target.data}
    got = set(sent_at)
    indices_by_send_time = [(i, begin + i * interval) for i in range(n)]
    assert all(i in got for i, t in indices_by_send_time if t < t0 - 0.02)
    assert not any(i in got for i, t in indices_by_send_time if t0 <= t <= t0 + hole - margin)
    assert all(i in got for i, t in indices_by_send_time if t >= t0 + hole + margin)
    echoed = {decode(data)[0] for data in client.data}
    assert n - 1 in echoed  # and the way back works again too
    stats = relay.statistics()
    assert stats.lost == stats.lost_blackhole == n - len(client.received) > 0


async def test_cancelling_the_nursery_stops_the_relay_and_closes_its_sockets() -> None:
    target = Endpoint(echo=False)
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(target.run)
            relay = UdpImpairmentRelay(target.address, forward=LinkProfile(delay=0.5),
                                       backward=CLEAN, seed=3)
            await nursery.start(relay.run)
            client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with client:
                for i in range(5):
                    await client.sendto(payload(i), relay.front_address)
            await wait_for(lambda: relay.in_flight == 5)
            assert not relay.closed
            nursery.cancel_scope.cancel()
    assert relay.closed
    assert target.received == []  # what was in flight died with the relay
    for address in (relay.front_address, relay.back_address):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(address)  # the relay's ports are free again
    frozen = relay.now()
    assert frozen > 0 and relay.now() == frozen
    with pytest.raises(RuntimeError, match="only run once"):
        await relay.run()


async def test_target_first_and_foreign_datagrams(nursery: trio.Nursery) -> None:
    relay, client, target = await start(nursery)
    await target.send(b"before any client", relay.back_address)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        await stranger.sendto(b"not from the target", relay.back_address)
        await wait_for(lambda: relay.ignored == 1 and relay.statistics().undeliverable == 1)
    assert relay.seen[0] == ("backward", b"before any client")
    await client.send(b"hello", relay.front_address)
    await wait_for(lambda: client.data == [b"hello"])


def test_state_before_start() -> None:
    relay = UdpImpairmentRelay((LOOPBACK, 9), forward=CLEAN, backward=CLEAN, seed=0, capture=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = relay.front_address
    assert relay.now() == 0.0
    hole = relay.blackhole_from_now(1.5, LinkProfile(loss=0.1, blackholes=((5.0, 6.0),)))
    assert hole == LinkProfile(loss=0.1, blackholes=((5.0, 6.0), (0.0, 1.5)))
    relay.set_profiles(backward=hole)
    assert (relay.forward_profile, relay.backward_profile) == (CLEAN, hole)
    assert relay.seen.maxlen == 0
    with pytest.raises(ValueError, match="seconds"):
        relay.blackhole_from_now(-1)


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_host_port("[::1]:9") == ("::1", 9)
    assert parse_host_port("localhost:65535") == ("localhost", 65535)
    for bad in ("7000", ":7000", "host:", "host:0", "host:70000", "host:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_host_port(bad)


def test_command_line_runs_and_prints_statistics(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOOPBACK, 0))
        port = taken.getsockname()[1]
        assert main(["--target", f"{LOOPBACK}:9", "--loss", "0.1", "--delay", "0.01",
                     "--duration", "0.05"]) == 0
        out = capsys.readouterr()
        assert "relaying 127.0.0.1:" in out.out and "lost_random" in out.out
        assert main(["--target", f"{LOOPBACK}:9", "--listen-port", str(port),
                     "--duration", "0.05"]) == 1
        assert "udp_relay:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--target", f"{LOOPBACK}:9", "--loss", "2"])
    assert "loss must be in [0, 1]" in capsys.readouterr().err
