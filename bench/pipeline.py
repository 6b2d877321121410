"""Cost of moving one small unreliable message (about 40 bytes) through the protocol core.

Positions now travel delta-coded on their own channel (bench/bandwidth.py
measures them); this measures the plain unreliable path every small message
shares: a VISUAL_EFFECT-typed message carrying a 40-byte msgpack record.

Measures, in one run:
- core: the sender's ``Endpoint.send`` (frame, compression decision, seal) and
  the receiver's ``Endpoint.receive_datagram`` (parse, open, replay window,
  deframe, event), with msgpack encoding and decoding of the update;
- floor: the library calls that path cannot avoid, back to back in one loop:
  msgpack pack and unpack, AES-256-GCM encrypt and decrypt, struct pack and
  unpack of the 26-byte protected prefix;
- handshake: CPU per side of one complete handshake between fresh endpoints
  (no cached static-static secret), the initiator's request and response
  processing, and the responder's request processing.

Timings are the minimum over several interleaved rounds, to keep the
scheduling noise of a shared machine out of the ratio. Ends with one JSON line.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
from collections.abc import Callable

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pd.crypto.identity import Identity
from p2pd.session.config import EncryptionLevel, SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import MessageReceived
from p2pd.wire.types import PacketType

A = ("10.0.0.1", 7000)
B = ("10.0.0.2", 7000)
# A realistic position update: entity id, cell x/y, direction, server tick.
POSITION = {"id": 150001, "x": 151, "y": 203, "d": 4, "t": 1_234_567_890}
ROUNDS = 7
N = 20_000


def endpoint_pair(level: EncryptionLevel, seed: int = 1) -> tuple[Endpoint, Endpoint]:
    rng = random.Random(seed)
    # the allowance check and pacing run, with limits the benchmark stays within
    # one message per datagram (coalesce_delay=0): the unbatched path, message by message
    config = SessionConfig(encryption_level=level, incoming_packet_rate=1e12,
                           incoming_byte_rate=1e15, send_packet_rate=1e11, coalesce_delay=0)
    a = Endpoint(Identity.from_private_bytes(rng.randbytes(32)), config)
    b = Endpoint(Identity.from_private_bytes(rng.randbytes(32)), config)
    a.connect(b.identity.public_key, B, 0.0)
    for _ in range(3):  # request, response, confirming PING
        for data, _ in a.datagrams_to_send(0.0):
            b.receive_datagram(data, A, 0.0)
        for data, _ in b.datagrams_to_send(0.0):
            a.receive_datagram(data, B, 0.0)
    assert a.peers() and b.peers(), "handshake did not complete"
    while a.next_event() or b.next_event():
        pass
    return a, b


def core_round(level: EncryptionLevel) -> Callable[[int], None]:
    a, b = endpoint_pair(level)
    peer = b.identity.public_key
    position = PacketType.VISUAL_EFFECT  # unreliable, no channel header
    pack, unpack = msgpack.packb, msgpack.unpackb

    def run(n: int) -> None:
        send, drain, receive, event = a.send, a.datagrams_to_send, b.receive_datagram, b.next_event
        for _ in range(n):
            send(peer, position, pack(POSITION), 1.0)
            for data, _ in drain(1.0):
                receive(data, A, 1.0)
            message = event()
            assert isinstance(message, MessageReceived)
            unpack(message.payload)
        assert b.statistics().drops == {}, b.statistics().drops

    return run


def floor_round() -> Callable[[int], None]:
    """The library calls of one send and receive, back to back, nothing else."""
    aead = AESGCM(os.urandom(32))
    seal, open_ = aead.encrypt, aead.decrypt
    pack_prefix, unpack_prefix = struct.Struct(">IHHHIIQ").pack, struct.Struct(">IHHHIIQ").unpack
    pack, unpack = msgpack.packb, msgpack.unpackb

    def run(n: int) -> None:
        for counter in range(n):
            payload = pack(POSITION)
            prefix = pack_prefix(0x50325032, 1, 1, 3, len(payload) + 28, 5, counter)
            nonce = counter.to_bytes(12, "big")
            sealed = seal(nonce, payload, prefix)
            unpack_prefix(prefix)
            unpack(open_(nonce, sealed, prefix))

    return run


def interleaved(runs: dict[str, Callable[[int], None]], n: int = N,
                rounds: int = ROUNDS) -> dict[str, float]:
    """Minimum seconds per iteration of each run, rounds interleaved so that
    every run sees the same machine conditions."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(n)
            times[name].append((time.perf_counter() - start) / n)
    return {name: min(values) for name, values in times.items()}


def handshake_cost(samples: int = 100, rounds: int = 5) -> tuple[float, float]:
    """CPU seconds per handshake, (initiator, responder): the best round's mean."""
    rng = random.Random(7)
    clock = time.process_time
    best_initiator = best_responder = float("inf")
    for _ in range(rounds):
        initiator_cpu = responder_cpu = 0.0
        for _ in range(samples):
            a = Endpoint(Identity.from_private_bytes(rng.randbytes(32)))
            b = Endpoint(Identity.from_private_bytes(rng.randbytes(32)))
            t0 = clock()
            a.connect(b.identity.public_key, B, 0.0)
            ((request, _),) = a.datagrams_to_send(0.0)
            t1 = clock()
            b.receive_datagram(request, A, 0.0)
            ((response, _),) = b.datagrams_to_send(0.0)
            t2 = clock()
            a.receive_datagram(response, B, 0.0)
            a.datagrams_to_send(0.0)
            t3 = clock()
            assert a.peers(), "handshake did not complete"
            initiator_cpu += (t1 - t0) + (t3 - t2)
            responder_cpu += t2 - t1
        best_initiator = min(best_initiator, initiator_cpu / samples)
        best_responder = min(best_responder, responder_cpu / samples)
    return best_initiator, best_responder


def main() -> None:
    result = interleaved({
        "floor": floor_round(),
        "high": core_round(EncryptionLevel.HIGH),
        "low": core_round(EncryptionLevel.LOW),
    })
    floor = result["floor"]
    initiator, responder = handshake_cost()
    print("one 40-byte position update, send and receive (minimum of interleaved rounds):")
    print(f"  floor: msgpack pack+unpack, AES-GCM encrypt+decrypt, struct pack+unpack"
          f"  {floor * 1e6:6.2f} us")
    for level in ("high", "low"):
        print(f"  core, encryption_level={level:<6} {result[level] * 1e6:6.2f} us"
              f"  ({result[level] / floor:.2f}x the floor)")
    print(f"handshake CPU per side: initiator {initiator * 1e3:.3f} ms, "
          f"responder {responder * 1e3:.3f} ms (goal <= 0.3 ms)")
    print(json.dumps({
        "ratio": round(result["high"] / floor, 3),
        "ratio_low": round(result["low"] / floor, 3),
        "core_us": round(result["high"] * 1e6, 3),
        "floor_us": round(floor * 1e6, 3),
        "handshake_ms": round(max(initiator, responder) * 1e3, 4),
        "handshake_initiator_ms": round(initiator * 1e3, 4),
        "handshake_responder_ms": round(responder * 1e3, 4),
    }))


if __name__ == "__main__":
    main()
