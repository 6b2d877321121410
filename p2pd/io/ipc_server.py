"""The game client's door: msgpack requests and events over local stream sockets.

One task pair per client: a reader that parses and answers requests, and a
writer that drains the client's outbox. Policy for a slow client (docs/ipc.md):
replies are never dropped; pushed events beyond ``client_queue_limit`` drop
the oldest, counted, and the client hears ``events_dropped`` once it catches
up; a client whose event queue stays full for ``SLOW_CLIENT_TIMEOUT`` seconds,
or that lets more than ``client_queue_limit`` replies pile up, is disconnected.
"""

from __future__ import annotations

import hmac
import itertools
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from p2pd.ipc.errors import IpcError
from p2pd.ipc.framing import FrameDecoder, encode_message
from p2pd.ipc.messages import (
    Disconnect,
    Hello,
    Nat,
    Peers,
    SetLogLevel,
    Stats,
    Status,
    Subscribe,
    parse_request_untrusted,
    reply_error,
    reply_ok,
    request_id_of,
)
from p2pd.ipc.outgoing import events_dropped_event
from p2pd.logs import get_logger, set_log_level

if TYPE_CHECKING:
    from p2pd.io.daemon import Daemon

SLOW_CLIENT_TIMEOUT = 10.0
HELLO_TIMEOUT = 10.0  # a connection that has not said hello by then is closed
READ_SIZE = 65536
log = get_logger("p2pd.ipc")


class ClientConnection:
    def __init__(self, daemon: Daemon, stream: trio.abc.Stream, name: str) -> None:
        self._daemon = daemon
        self._stream = stream
        self.name = name
        settings = daemon.config.ipc
        self._decoder = FrameDecoder(settings.max_frame_bytes)
        self._limit = settings.client_queue_limit
        self.authenticated = False
        self.subscriptions: frozenset[str] = frozenset()
        self._replies: deque[bytes] = deque()
        self._events: deque[bytes] = deque()
        self._dropped = 0  # events dropped since the client last caught up
        self.events_dropped_total = 0
        self._full_since: float | None = None
        self._wake = trio.Event()
        self._closing = False
        self._cancel = trio.CancelScope()

    # -- outbox ----------------------------------------------------------------

    def push_event(self, name: str, frame: bytes) -> None:
        """Queue a pushed event (``frame``: encoded once for every client) if the
        client subscribed to ``name``; drop the oldest when full."""
        if not self.authenticated or not ("*" in self.subscriptions or name in self.subscriptions):
            return
        if len(self._events) >= self._limit:
            self._events.popleft()
            self._dropped += 1
            self.events_dropped_total += 1
            now = trio.current_time()
            if self._full_since is None:
                self._full_since = now
            elif now - self._full_since > SLOW_CLIENT_TIMEOUT:
                log.warning("ipc_client_too_slow", client=self.name)
                self._cancel.cancel()
                return
        self._events.append(frame)
        self._wake.set()

    def _reply(self, message: dict[str, Any]) -> None:
        if len(self._replies) >= self._limit:
            log.warning("ipc_client_not_reading_replies", client=self.name)
            self._cancel.cancel()
            return
        self._replies.append(encode_message(message))
        self._wake.set()

    # -- tasks -------------------------------------------------------------------

    async def run(self) -> None:
        with self._cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._hello_deadline)
                await self._read_loop()
                self._closing = True
                self._wake.set()
        with trio.move_on_after(1):
            await self._stream.aclose()

    async def _hello_deadline(self) -> None:
        await trio.sleep(HELLO_TIMEOUT)
        if not self.authenticated:
            self._daemon.counters["ipc_hello_timeouts"] += 1
            log.info("ipc_hello_timeout", client=self.name)
            self._cancel.cancel()

    async def _read_loop(self) -> None:
        while not self._closing:
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                messages = self._decoder.feed(data)
            except IpcError as error:
                self._daemon.counters["ipc_bad_frames"] += 1
                log.info("ipc_bad_frame", client=self.name, error=str(error))
                self._reply(reply_error(None, error))
                return
            try:
                for message in messages:
                    await self._handle(message)
                    if self._closing:
                        return
            finally:
                self._daemon.pump()  # what this burst of requests produced goes out together

    async def _write_loop(self) -> None:
        stream = self._stream
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._replies or self._events:
                batch: list[bytes] = []
                while self._replies and len(batch) < 64:
                    batch.append(self._replies.popleft())
                while self._events and len(batch) < 64:
                    batch.append(self._events.popleft())
                if not self._events:
                    self._full_since = None
                    if self._dropped:
                        batch.append(encode_message(events_dropped_event(self._dropped)))
                        self._dropped = 0
                try:
                    await stream.send_all(b"".join(batch))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._cancel.cancel()
                    return
            if self._closing:
                self._cancel.cancel()
                return

    # -- requests ----------------------------------------------------------------

    async def _handle(self, message: dict[str, Any]) -> None:
        request_id = request_id_of(message)
        try:
            request = parse_request_untrusted(message)
            log.debug("ipc_request", client=self.name, op=request.OP, id=request.id)
            if not self.authenticated:
                self._authenticate(request)
                return
            result = await self._daemon.handle_request(self, request)
        except IpcError as error:
            self._daemon.counters["ipc_errors"] += 1
            self._reply(reply_error(request_id, error))
            if not self.authenticated:
                self._closing = True  # refused: no state was changed
            return
        except Exception:  # a bug of ours: report it, keep serving
            self._daemon.counters["internal_errors"] += 1
            log.exception("ipc_request_failed", client=self.name)
            self._reply(reply_error(request_id, IpcError("internal", "the daemon failed; "
                                                         "see its log")))
            return
        self._reply(reply_ok(request.id, result))

    def _authenticate(self, request: object) -> None:
        if not isinstance(request, Hello):
            raise IpcError("unauthorized", "the first message must be hello with the token")
        if not hmac.compare_digest(request.token.encode(), self._daemon.token.encode()):
            raise IpcError("unauthorized", "wrong token")
        self.authenticated = True
        self.name = f"{self.name}/{request.client}" if request.client else self.name
        log.info("ipc_client_authenticated", client=self.name)
        self._reply(reply_ok(request.id, self._daemon.hello_result()))


def handle_common_request(daemon: Daemon, client: ClientConnection, request: object,
                          now: float) -> dict[str, Any]:
    """Requests that are not game events."""
    node = daemon.node
    if isinstance(request, Status):
        return daemon.status()
    if isinstance(request, Stats):
        return daemon.stats(request.history)
    if isinstance(request, Peers):
        return {"peers": node.peers(now)}
    if isinstance(request, Nat):
        return node.nat_status(now)
    if isinstance(request, Subscribe):
        client.subscriptions = frozenset(request.events)
        return {"events": sorted(client.subscriptions)}
    if isinstance(request, Disconnect):
        node.disconnect(bytes.fromhex(request.peer), now)
        return {"peer": request.peer, "state": "closed"}
    if isinstance(request, SetLogLevel):
        set_log_level(request.level)
        log.info("log_level_changed", level=request.level)
        return {"level": request.level}
    if isinstance(request, Hello):
        raise IpcError("bad_request", "already authenticated")
    raise IpcError("bad_request", f"unsupported request {type(request).__name__}")


# -- listeners ---------------------------------------------------------------------


def peer_uid_allowed(sock: socket.socket) -> bool:
    """Linux: only this user (or root) may use the Unix socket."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


async def serve_client(daemon: Daemon, stream: trio.SocketStream, name: str,
                       check_uid: bool) -> None:
    if len(daemon.clients) >= daemon.config.ipc.max_clients:
        daemon.counters["ipc_refused_full"] += 1
        await stream.aclose()
        return
    if check_uid and not peer_uid_allowed(stream.socket):  # type: ignore[arg-type]
        daemon.counters["ipc_refused_uid"] += 1
        log.warning("ipc_refused_uid", client=name)
        await stream.aclose()
        return
    client = ClientConnection(daemon, stream, name)
    daemon.clients.add(client)
    try:
        await client.run()
    finally:
        daemon.clients.discard(client)
        log.info("ipc_client_gone", client=client.name)


def client_handler(daemon: Daemon, kind: str,
                   check_uid: bool) -> Callable[[trio.SocketStream], Any]:
    counter = itertools.count(1)

    async def handler(stream: trio.SocketStream) -> None:
        await serve_client(daemon, stream, f"{kind}#{next(counter)}", check_uid)

    return handler
