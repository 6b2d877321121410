"""The opt-in Prometheus endpoint: a tiny HTTP/1.0 responder in trio.

``GET /metrics`` (or ``/``) answers the registry's text exposition
(``prometheus_client.generate_latest``); anything else gets 404 or 405. One
request per connection, read within ``REQUEST_TIMEOUT`` seconds and at most
``MAX_REQUEST`` bytes; at most ``MAX_CONNECTIONS`` at once (more are closed
at once). No threads: the collectors run in the daemon's (or coordinator's)
own trio task, between two of its inputs, so they see a consistent state.
"""

from __future__ import annotations

from functools import partial

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from p2pd.logs import get_logger

REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192
MAX_CONNECTIONS = 8
log = get_logger("p2pd.metrics")


def _response(status: str, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + (b"" if head_only else body)


def answer(registry: CollectorRegistry, request: bytes) -> bytes:
    """The response to the bytes of one request (its request line decides)."""
    line = request.split(b"\r\n", 1)[0].split(b" ")
    if len(line) != 3 or not line[2].startswith(b"HTTP/"):
        return _response("400 Bad Request", "text/plain", b"bad request\n")
    method, target = line[0], line[1].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return _response("405 Method Not Allowed", "text/plain", b"GET only\n")
    if target not in (b"/metrics", b"/"):
        return _response("404 Not Found", "text/plain", b"try /metrics\n")
    return _response("200 OK", CONTENT_TYPE_LATEST, generate_latest(registry),
                     head_only=method == b"HEAD")


async def _serve_one(registry: CollectorRegistry, limiter: trio.CapacityLimiter,
                     stream: trio.SocketStream) -> None:
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        await stream.aclose()
        return
    try:
        request = b""
        with trio.move_on_after(REQUEST_TIMEOUT):
            while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                data = await stream.receive_some(4096)
                if not data:
                    break
                request += data
            try:
                response = answer(registry, request)
            except Exception:  # a bug in a collector: say so, keep serving
                log.exception("metrics_failed")
                response = _response("500 Internal Server Error", "text/plain", b"failed\n")
            await stream.send_all(response)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        limiter.release()
        with trio.move_on_after(1):
            await stream.aclose()


async def serve_metrics(registry: CollectorRegistry, host: str, port: int,
                        *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on ``host:port`` (0: a free port); ``task_status.started`` gets the
    ``host:port`` actually bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    address = f"{bound_host}:{bound_port}"
    log.info("metrics_listening", address=address)
    task_status.started(address)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    await trio.serve_listeners(partial(_serve_one, registry, limiter), listeners)
