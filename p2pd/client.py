"""Python client of the daemon's IPC API (trio), used by p2pctl and the tests.

A client is sequential: ``request`` sends one request and reads until its
reply, keeping any pushed events that arrive meanwhile for ``next_event``.
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from pathlib import Path
from typing import Any

import trio

from p2pd.io.runtime import RuntimeInfo, read_runtime_info, read_token
from p2pd.ipc.errors import IpcError
from p2pd.ipc.framing import FrameDecoder, encode_message

MAX_FRAME = 1 << 24


class ClientError(Exception):
    """The daemon answered a request with an error."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field


class DaemonClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(MAX_FRAME)
        self._ids = itertools.count(1)
        self._events: deque[dict[str, Any]] = deque()
        self._replies: dict[int | None, dict[str, Any]] = {}
        self.hello: dict[str, Any] = {}

    @classmethod
    async def open(cls, runtime_dir: Path, *, unix: bool = True,
                   client_name: str = "p2pd.client") -> DaemonClient:
        """Connect to the daemon that runs in ``runtime_dir`` and authenticate."""
        info = read_runtime_info(runtime_dir)
        client = await cls.open_info(info, unix=unix)
        try:
            client.hello = await client.request("hello", token=read_token(info), client=client_name)
        except BaseException:
            await client.aclose()
            raise
        return client

    @classmethod
    async def open_info(cls, info: RuntimeInfo, *, unix: bool = True) -> DaemonClient:
        stream: trio.abc.Stream
        if unix and info.unix_socket and sys.platform != "win32":
            stream = await trio.open_unix_socket(info.unix_socket)
        else:
            stream = await trio.open_tcp_stream(info.tcp_host, info.tcp_port)
        return cls(stream)

    async def send_raw(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        request_id = next(self._ids)
        await self._stream.send_all(encode_message({"op": op, "id": request_id, **fields}))
        reply = await self.reply(request_id)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise ClientError(str(error.get("code")), str(error.get("message")),
                              error.get("field"))
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    async def reply(self, request_id: int | None) -> dict[str, Any]:
        while request_id not in self._replies:
            await self._read()
        return self._replies.pop(request_id)

    async def next_event(self) -> dict[str, Any]:
        while not self._events:
            await self._read()
        return self._events.popleft()

    async def _read(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError("the daemon closed the connection")
        try:
            messages = self._decoder.feed(data)
        except IpcError as error:
            raise trio.BrokenResourceError(f"bad data from the daemon: {error}") from None
        for message in messages:
            if "event" in message:
                self._events.append(message)
            else:
                raw_id = message.get("id")
                self._replies[raw_id if isinstance(raw_id, int) else None] = message

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> DaemonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
