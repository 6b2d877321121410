"""The IPC server's per-client policy, in virtual time over in-memory streams."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from p2pd.io.ipc_server import HELLO_TIMEOUT, SLOW_CLIENT_TIMEOUT, ClientConnection
from p2pd.ipc.errors import IpcError
from p2pd.ipc.framing import FrameDecoder, encode_message

TOKEN = "ab" * 32


@dataclass
class IpcSettings:
    max_frame_bytes: int = 65536
    client_queue_limit: int = 8


@dataclass
class Config:
    ipc: IpcSettings = field(default_factory=IpcSettings)


class FakeDaemon:
    """What ClientConnection needs of the daemon, and nothing else."""

    def __init__(self) -> None:
        self.config = Config()
        self.token = TOKEN
        self.counters: Counter[str] = Counter()
        self.requests: list[object] = []
        self.pumps = 0

    def pump(self) -> None:
        self.pumps += 1

    def hello_result(self) -> dict[str, Any]:
        return {"version": "test"}

    async def handle_request(self, client: ClientConnection,
                             request: object) -> dict[str, Any]:
        self.requests.append(request)
        if getattr(request, "OP", "") == "subscribe":
            client.subscriptions = frozenset(request.events)  # type: ignore[attr-defined]
        if getattr(request, "OP", "") == "connect":
            raise IpcError("no_such_peer", "nobody there", "key")
        return {"done": True}


class Peer:
    """The client's side of the stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.buffer: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(encode_message(message))

    async def receive(self) -> dict[str, Any]:
        while not self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer.extend(self.decoder.feed(data))
        return self.buffer.pop(0)


async def start(nursery: trio.Nursery) -> tuple[FakeDaemon, ClientConnection, Peer]:
    daemon = FakeDaemon()
    server_side, client_side = trio.testing.lockstep_stream_pair()  # send_all waits for a reader
    connection = ClientConnection(daemon, server_side, "test")  # type: ignore[arg-type]
    nursery.start_soon(connection.run)
    return daemon, connection, Peer(client_side)


async def hello(peer: Peer) -> None:
    await peer.send({"op": "hello", "id": 1, "token": TOKEN, "client": "t"})
    assert (await peer.receive())["ok"] is True
    await peer.send({"op": "subscribe", "id": 2, "events": ["chat"]})
    assert (await peer.receive())["ok"] is True


def chat(i: int) -> dict[str, Any]:
    return {"event": "chat", "from": "cd" * 32, "text": f"line {i}", "channel": "local"}


async def test_nothing_happens_before_hello() -> None:
    async with trio.open_nursery() as nursery:
        daemon, connection, peer = await start(nursery)
        await peer.send({"op": "connect", "id": 7, "address": "127.0.0.1:9", "key": "ab" * 32})
        reply = await peer.receive()
        assert reply["error"]["code"] == "unauthorized" and reply["id"] == 7
        with pytest.raises(EOFError):
            await peer.receive()
        assert daemon.requests == [] and not connection.authenticated


async def test_errors_name_the_request_and_keep_the_connection() -> None:
    async with trio.open_nursery() as nursery:
        _, _, peer = await start(nursery)
        await hello(peer)
        await peer.send({"op": "connect", "id": 9, "address": "127.0.0.1:9", "key": "ab" * 32})
        reply = await peer.receive()
        assert reply == {"id": 9, "ok": False, "error": {
            "code": "no_such_peer", "message": "nobody there", "field": "key"}}
        await peer.send({"op": "status", "id": 10})
        assert (await peer.receive())["id"] == 10
        nursery.cancel_scope.cancel()


async def test_a_slow_subscriber_loses_the_oldest_events_and_is_told() -> None:
    async with trio.open_nursery() as nursery:
        _, connection, peer = await start(nursery)
        await hello(peer)
        for i in range(40):  # the client reads nothing meanwhile
            connection.push_event("chat", encode_message(chat(i)))
        got = [await peer.receive()]
        while got[-1]["event"] != "error":  # the notice follows the newest events
            got.append(await peer.receive())
        notices = [m for m in got if m["event"] == "error"]
        lines = [m["text"] for m in got if m["event"] == "chat"]
        # at most one batch was in flight when the queue overflowed; then the 8 newest
        assert lines[-8:] == [f"line {i}" for i in range(32, 40)]
        (notice,) = notices
        assert notice["code"] == "events_dropped"
        assert notice["count"] + len(lines) == 40
        assert connection.events_dropped_total == notice["count"]
        nursery.cancel_scope.cancel()


async def test_a_client_that_stays_full_is_disconnected(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        _, connection, peer = await start(nursery)
        await hello(peer)
        started = trio.current_time()
        i = 0
        while connection in _alive(connection):
            connection.push_event("chat", encode_message(chat(i)))
            i += 1
            await trio.sleep(0.5)
            if trio.current_time() - started > 3 * SLOW_CLIENT_TIMEOUT:
                break
        assert trio.current_time() - started == pytest.approx(SLOW_CLIENT_TIMEOUT + 4.5, abs=1)
        with pytest.raises((EOFError, trio.BrokenResourceError)):
            while True:
                await peer.receive()


def _alive(connection: ClientConnection) -> set[ClientConnection]:
    return set() if connection._cancel.cancel_called else {connection}


async def test_a_silent_connection_is_closed_after_the_hello_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        daemon, _, peer = await start(nursery)
        started = trio.current_time()
        with pytest.raises(EOFError):
            await peer.receive()  # the daemon hangs up without a word
        assert trio.current_time() - started == pytest.approx(HELLO_TIMEOUT)
        assert daemon.counters["ipc_hello_timeouts"] == 1
