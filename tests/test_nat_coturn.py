"""The STUN and TURN clients against a real coturn on loopback (skipped without coturn)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from p2pd.nat.demux import Kind, classify
from p2pd.nat.stun import Class, decode_message_untrusted
from p2pd.nat.turn import TurnClient, TurnCredentials, TurnState
from tests.coturn import PASSWORD, SECRET, USER, coturn


def _pump(client: TurnClient, sock: socket.socket, until: float,
          inbox: list[tuple[bytes, tuple[str, int]]], stop: object = None) -> None:
    """Drive ``client`` on a real socket in real time until ``until`` (or ``stop()``)."""
    while time.monotonic() < until:
        now = time.monotonic()
        client.handle_timer(now)
        for data, address in client.datagrams_to_send():
            sock.sendto(data, address)
        if callable(stop) and stop():
            return
        deadline = client.deadline()
        sock.settimeout(max(0.01, min(0.1, (deadline or now + 0.1) - now)))
        try:
            data, source = sock.recvfrom(2048)
        except OSError:
            continue
        now = time.monotonic()
        if classify(data) is Kind.STUN:
            message = decode_message_untrusted(data)
            if client.owns(message):
                client.receive(message, now)
                continue
        inbox.append((data, (str(source[0]), int(source[1]))))


@pytest.mark.parametrize("rest", [False, True], ids=["long-term", "rest"])
def test_allocate_permission_channel_and_data_both_ways(tmp_path: Path, rest: bool) -> None:
    with coturn(tmp_path, rest=rest) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        sock.bind(("127.0.0.1", 0))
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(2)
        peer_address = ("127.0.0.1", int(peer.getsockname()[1]))
        credentials = (TurnCredentials(username=USER, secret=SECRET) if rest
                       else TurnCredentials(username=USER, password=PASSWORD))
        client = TurnClient(server.address, credentials, clock=time.time)
        client.start(time.monotonic())
        inbox: list[tuple[bytes, tuple[str, int]]] = []
        _pump(client, sock, time.monotonic() + 5, inbox,
              lambda: client.state is not TurnState.ALLOCATING)
        assert client.state is TurnState.ALLOCATED, client.error
        assert client.relayed is not None and client.relayed[0] == "127.0.0.1"
        assert client.mapped == ("127.0.0.1", int(sock.getsockname()[1]))
        assert client.lifetime > 0
        # a Send indication before the channel is bound (the permission goes first)
        client.permit("127.0.0.1", time.monotonic())
        _pump(client, sock, time.monotonic() + 0.5, inbox)
        sock.sendto(client.wrap(b"P2P2 via send", peer_address), server.address)
        data, source = peer.recvfrom(2048)
        assert data == b"P2P2 via send"
        assert source == client.relayed
        # the peer answers to the relayed address: a Data indication reaches us
        peer.sendto(b"P2P2 back", client.relayed)
        _pump(client, sock, time.monotonic() + 2, inbox, lambda: bool(inbox))
        (raw, via), = inbox
        assert via == server.address
        message = decode_message_untrusted(raw)
        assert message.cls is Class.INDICATION
        assert client.unwrap_data_indication_untrusted(message) == (peer_address, b"P2P2 back")
        inbox.clear()
        # bind a channel: ChannelData both ways
        client.bind(peer_address, time.monotonic())
        _pump(client, sock, time.monotonic() + 2, inbox,
              lambda: client.status()["channels"] == 1)
        assert client.status()["channels"] == 1, client.error
        framed = client.wrap(b"P2P2 via channel", peer_address)
        assert classify(framed) is Kind.CHANNEL_DATA
        sock.sendto(framed, server.address)
        data, _ = peer.recvfrom(2048)
        assert data == b"P2P2 via channel"
        peer.sendto(b"P2P2 channel back", client.relayed)
        _pump(client, sock, time.monotonic() + 2, inbox, lambda: bool(inbox))
        (raw, _), = inbox
        assert classify(raw) is Kind.CHANNEL_DATA
        assert client.unwrap_channel_data_untrusted(raw) == (peer_address, b"P2P2 channel back")
        # a refresh goes through; closing deletes the allocation
        client.close(time.monotonic())
        for data, address in client.datagrams_to_send():
            sock.sendto(data, address)


def test_wrong_password_fails_with_the_servers_reason(tmp_path: Path) -> None:
    with coturn(tmp_path) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        client = TurnClient(server.address, TurnCredentials(username=USER, password="wrong"))
        client.start(time.monotonic())
        _pump(client, sock, time.monotonic() + 5, [],
              lambda: client.state is not TurnState.ALLOCATING)
        assert client.state is TurnState.FAILED
        assert client.error is not None and "401" in client.error
