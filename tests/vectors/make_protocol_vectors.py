"""Regenerate ``tests/vectors/protocol_vectors.json`` from fixed inputs with p2pd's own code.

    .venv/bin/python tests/vectors/make_protocol_vectors.py             # rewrite the JSON
    .venv/bin/python tests/vectors/make_protocol_vectors.py --check     # compare, write nothing
    .venv/bin/python tests/vectors/make_protocol_vectors.py --markdown  # print the docs section

Every input is a constant of this file, so the output is the same on every run, except that
the compressed bytes depend on the lz4 and zstandard library versions, which the JSON records.
The vectors are described in docs/protocol.md ("Test vectors"), which reproduces them in hex
(the ``--markdown`` output); tests/test_protocol_vectors.py checks the code against the JSON
and the document against the JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lz4
import zstandard
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2pd.crypto.handshake import (
    CookieJar,
    build_cookie_reply,
    cookie_key,
    encode_request_payload,
    encode_response_payload,
    frame_request,
    frame_response,
    mac1_key,
    request_prologue,
)
from p2pd.crypto.noise import (
    InitiatorHandshake,
    ResponderHandshake,
    SymmetricState,
    dh,
    noise_nonce,
    public_bytes,
)
from p2pd.crypto.transport import Keypair
from p2pd.wire.compression import PayloadCompressor
from p2pd.wire.frames import encode_frames, padding_for, padding_frame
from p2pd.wire.header import HEADER_SIZE, MAX_DATAGRAM, encode_header
from p2pd.wire.types import Flag, PacketType

OUTPUT = Path(__file__).with_name("protocol_vectors.json")

# -- fixed inputs --------------------------------------------------------------

TRANSPORT_KEY = bytes(range(32))  # 000102...1f
TRANSPORT_RECEIVER_INDEX = 0x0A0B0C0D

INITIATOR_STATIC = bytes([0xA1]) * 32
RESPONDER_STATIC = bytes([0xB2]) * 32
INITIATOR_EPHEMERAL = bytes([0xC3]) * 32
RESPONDER_EPHEMERAL = bytes([0xD4]) * 32
INITIATOR_INDEX = 0x11223344  # the initiator's sender index (in the request)
RESPONDER_INDEX = 0x55667788  # the responder's sender index (in the response payload)
INITIATOR_CERTIFICATE = b"example certificate"
RESPONDER_CERTIFICATE: bytes | None = None
# Endpoint(epoch=1_700_000_000.0) at now=0.0 sends this timestamp (ns since the Unix epoch).
EPOCH = 1_700_000_000.0
TIMESTAMP = 1_700_000_000_000_000_000

COOKIE_SECRET = bytes([0xE5]) * 32
COOKIE_ADDRESS = ("192.0.2.1", 7000)
COOKIE_NONCE = bytes(range(0xF0, 0xFC))  # 12 bytes

POSITION_BODY = bytes(range(40))  # a 40-byte POSITION_UPDATE body
PAD_STEP = 32
COMPRESSION_THRESHOLD = 100  # SessionConfig.compression_threshold's default
# Payload sizes of the padding table (encryption_level=high), all POSITION_UPDATE bodies.
PADDING_TABLE_SIZES = [0, 1, 25, 28, 29, 40, 60, 92, 95, 96]

LZ4_INPUT = b"".join(f"player{i:03d} x={i * 7 % 100} y={i * 13 % 100};".encode() for i in range(12))
ZSTD_INPUT = b"".join(
    f"npc{i:03d} says: the weather in zone {i % 7} is {('fine', 'rainy', 'foggy')[i % 3]}.\n"
    .encode()
    for i in range(40)
)
INCOMPRESSIBLE_INPUT = bytes(range(150))

_SEALED_FLAGS = int(Flag.ENCRYPTED | Flag.BATCHED)


def _x25519(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def _keypair(key: bytes, remote_index: int, counter: int = 0) -> Keypair:
    keypair = Keypair(send_key=key, receive_key=key, local_index=0, remote_index=remote_index,
                      initiator=True, created=0.0)
    keypair.send_counter = counter
    return keypair


def padded_frame_list(packet_type: int, body: bytes) -> bytes:
    """The plaintext of a SEALED packet at encryption_level=high for a frame list below
    the compression threshold: one frame, then padding to a multiple of PAD_STEP bytes,
    the padding frame one step longer when the gap is below a frame header (4 bytes)."""
    frames = encode_frames([(packet_type, body)])
    return frames + padding_for(len(frames), PAD_STEP)


# -- the vectors -------------------------------------------------------------------


def header_vectors() -> list[dict[str, Any]]:
    cases = [
        ("CHAT_MESSAGE, ENCRYPTED", PacketType.CHAT_MESSAGE, Flag.ENCRYPTED, 42),
        ("SEALED, ENCRYPTED|BATCHED|LZ4", PacketType.SEALED,
         Flag.ENCRYPTED | Flag.BATCHED | Flag.LZ4, 300),
        ("SEALED, ENCRYPTED|BATCHED|ZSTD", PacketType.SEALED,
         Flag.ENCRYPTED | Flag.BATCHED | Flag.ZSTD, 1000),
        ("HANDSHAKE_REQUEST, no flags", PacketType.HANDSHAKE_REQUEST, Flag(0), 161),
        ("COOKIE_REPLY, no flags", PacketType.COOKIE_REPLY, Flag(0), 48),
    ]
    return [
        {"name": name, "type": int(t), "flags": int(f), "payload_length": n,
         "header": encode_header(int(f), int(t), n).hex()}
        for name, t, f, n in cases
    ]


def _raw_header(magic: int = 0x50325032, version: int = 1, flags: int = 1,
                packet_type: int = 5, length: int | None = None, payload: bytes = b"abcd",
                ) -> bytes:
    if length is None:
        length = len(payload)
    return (magic.to_bytes(4, "big") + version.to_bytes(2, "big") + flags.to_bytes(2, "big")
            + packet_type.to_bytes(2, "big") + length.to_bytes(4, "big") + payload)


def header_reject_vectors() -> list[dict[str, Any]]:
    oversize_payload = bytes(MAX_DATAGRAM + 1 - HEADER_SIZE)
    cases = [
        ("13 bytes: shorter than a header", _raw_header()[:13], "truncated"),
        ("1473 bytes: above MAX_DATAGRAM", _raw_header(payload=oversize_payload), "oversize"),
        ("magic 0x50325033", _raw_header(magic=0x50325033), "bad_magic"),
        ("bad magic and bad version: magic is checked first",
         _raw_header(magic=0, version=2), "bad_magic"),
        ("version 2", _raw_header(version=2), "bad_version"),
        ("type 0x0012 PADDING outside a frame list", _raw_header(packet_type=0x12), "unknown_type"),
        ("type 0x0013 (reserved)", _raw_header(packet_type=0x13), "unknown_type"),
        ("unknown type and bad flags: the type is checked first",
         _raw_header(packet_type=0x40, flags=0x8000), "unknown_type"),
        ("CHAT_MESSAGE without ENCRYPTED", _raw_header(flags=0), "bad_flags"),
        ("CHAT_MESSAGE with LZ4 and ZSTD", _raw_header(flags=0x0007), "bad_flags"),
        ("CHAT_MESSAGE with BATCHED", _raw_header(flags=0x0009), "bad_flags"),
        ("CHAT_MESSAGE with 0x0010 FRAGMENT (reserved)", _raw_header(flags=0x0011), "bad_flags"),
        ("CHAT_MESSAGE with 0x0020 RELAYED (reserved)", _raw_header(flags=0x0021), "bad_flags"),
        ("SEALED without BATCHED", _raw_header(packet_type=0x10, flags=0x0001), "bad_flags"),
        ("HANDSHAKE_REQUEST with ENCRYPTED", _raw_header(packet_type=1, flags=1), "bad_flags"),
        ("bad flags and bad length: flags are checked first",
         _raw_header(flags=0, length=9), "bad_flags"),
        ("length 5, 4 bytes present", _raw_header(length=5), "truncated"),
        ("length 3, 4 bytes present", _raw_header(length=3), "length_mismatch"),
    ]
    return [{"name": name, "datagram": data.hex(), "reason": reason}
            for name, data, reason in cases]


def transport_vectors() -> list[dict[str, Any]]:
    cases: list[tuple[str, int, int, int, bytes]] = [
        ("CHAT_MESSAGE, counter 0", 0, int(Flag.ENCRYPTED), PacketType.CHAT_MESSAGE,
         b"hello, peer"),
        ("CHAT_MESSAGE, counter 1", 1, int(Flag.ENCRYPTED), PacketType.CHAT_MESSAGE,
         b"hello, peer"),
        ("POSITION_UPDATE, counter 2^40+5", 2**40 + 5, int(Flag.ENCRYPTED),
         PacketType.POSITION_UPDATE, bytes(range(12))),
        ("SEALED PING frame list, counter 7", 7, _SEALED_FLAGS, PacketType.SEALED,
         padded_frame_list(PacketType.PING, (1).to_bytes(4, "big"))),
    ]
    out = []
    for name, counter, flags, packet_type, plaintext in cases:
        datagram = _keypair(TRANSPORT_KEY, TRANSPORT_RECEIVER_INDEX, counter).seal(
            flags, packet_type, plaintext)
        out.append({
            "name": name,
            "key": TRANSPORT_KEY.hex(),
            "receiver_index": TRANSPORT_RECEIVER_INDEX,
            "counter": counter,
            "flags": flags,
            "type": int(packet_type),
            "plaintext": plaintext.hex(),
            "nonce": noise_nonce(counter).hex(),
            "aad": datagram[:26].hex(),
            "datagram": datagram.hex(),
        })
    return out


def frame_list_vectors() -> dict[str, Any]:
    high = padded_frame_list(PacketType.POSITION_UPDATE, POSITION_BODY)
    table: list[dict[str, int | None]] = []
    for size in PADDING_TABLE_SIZES:
        body = bytes(size)
        frames = encode_frames([(PacketType.POSITION_UPDATE, body)])
        if len(frames) < COMPRESSION_THRESHOLD:
            padded = padded_frame_list(PacketType.POSITION_UPDATE, body)
            table.append({"payload_length": size, "frame_list_length": len(padded),
                          "padding_frame_length": len(padded) - len(frames)})
        else:
            table.append({"payload_length": size, "frame_list_length": len(frames),
                          "padding_frame_length": None})
    multi = (encode_frames([(PacketType.CHAT_MESSAGE, b"hi"),
                            (PacketType.POSITION_UPDATE, bytes(range(8)))])
             + padding_frame(6))
    rejects = [
        ("frame header cut short", "0003", "malformed"),
        ("body cut short", "000300050102", "malformed"),
        ("SEALED is not a frame type", "001000020102", "unknown_type"),
        ("HANDSHAKE_REQUEST is not a frame type", "00010000", "unknown_type"),
        ("only padding", "0012000400000000", "malformed"),
        ("empty frame list", "", "malformed"),
    ]
    return {
        "high_position_update": {
            "type": int(PacketType.POSITION_UPDATE),
            "body": POSITION_BODY.hex(),
            "frame_list": high.hex(),
        },
        "padding_table": table,
        "multi_frame": {
            "frame_list": multi.hex(),
            "frames": [[int(PacketType.CHAT_MESSAGE), b"hi".hex()],
                       [int(PacketType.POSITION_UPDATE), bytes(range(8)).hex()]],
        },
        "rejects": [{"name": n, "frame_list": d, "reason": r} for n, d, r in rejects],
    }


def compression_vectors() -> dict[str, Any]:
    compressor = PayloadCompressor()
    cases: list[dict[str, Any]] = []
    for name, data in (("LZ4", LZ4_INPUT), ("Zstandard", ZSTD_INPUT),
                       ("incompressible, sent as it is", INCOMPRESSIBLE_INPUT)):
        flag, out = compressor.compress(data)
        cases.append({"name": name, "input": data.hex(), "flag": int(flag), "output": out.hex()})
    lz4_declared_more = (len(LZ4_INPUT) + 1).to_bytes(4, "big") + bytes.fromhex(
        cases[0]["output"])[4:]
    rejects = [
        ("LZ4, declared size 0", 2, "00000000" + "00", "bad_compression"),
        ("LZ4, declared size 65537 (above max_message_size)", 2, "00010001" + "00",
         "bad_compression"),
        ("LZ4, only the size prefix", 2, "00000010", "bad_compression"),
        ("LZ4, block decodes to fewer bytes than declared", 2, lz4_declared_more.hex(),
         "bad_compression"),
        ("Zstandard, descriptor announces a Frame_Content_Size", 4,
         "00000004" + "40" + "00" + "0100", "bad_compression"),
    ]
    return {
        "libraries": {
            "lz4": lz4.__version__,
            "liblz4": lz4.library_version_string(),
            "zstandard": zstandard.__version__,
            "libzstd": ".".join(str(part) for part in zstandard.ZSTD_VERSION),
        },
        "threshold": COMPRESSION_THRESHOLD,
        "zstd_threshold": 1000,
        "max_size": 65536,
        "cases": cases,
        "rejects": [{"name": n, "flag": f, "payload": p, "reason": r}
                    for n, f, p, r in rejects],
    }


def _noise_trace(prologue: bytes) -> list[dict[str, str]]:
    """The IK handshake step by step with SymmetricState, for debugging a second
    implementation: ck, h and the cipher key k after each token."""
    i_s, r_s = _x25519(INITIATOR_STATIC), _x25519(RESPONDER_STATIC)
    i_e, r_e = _x25519(INITIATOR_EPHEMERAL), _x25519(RESPONDER_EPHEMERAL)
    state = SymmetricState()
    steps: list[dict[str, str]] = []

    def record(step: str) -> None:
        key = state.cs.key
        steps.append({"step": step, "ck": state.ck.hex(), "h": state.h.hex(),
                      "k": key.hex() if key is not None else ""})

    record("InitializeSymmetric(protocol name)")
    state.mix_hash(prologue)
    record("MixHash(prologue)")
    state.mix_hash(public_bytes(r_s))
    record("MixHash(s_r: responder static public)  <- s")
    state.mix_hash(public_bytes(i_e))
    record("MixHash(e_i: initiator ephemeral public)  -> e")
    state.mix_key(dh(i_e, public_bytes(r_s)))
    record("MixKey(DH(e_i, s_r))  es")
    state.encrypt_and_hash(public_bytes(i_s))
    record("EncryptAndHash(s_i: initiator static public)  s")
    state.mix_key(dh(i_s, public_bytes(r_s)))
    record("MixKey(DH(s_i, s_r))  ss")
    state.encrypt_and_hash(encode_request_payload(TIMESTAMP, INITIATOR_CERTIFICATE))
    record("EncryptAndHash(request payload)")
    state.mix_hash(public_bytes(r_e))
    record("MixHash(e_r: responder ephemeral public)  <- e")
    state.mix_key(dh(i_e, public_bytes(r_e)))
    record("MixKey(DH(e_i, e_r))  ee")
    state.mix_key(dh(i_s, public_bytes(r_e)))
    record("MixKey(DH(s_i, e_r))  se")
    state.encrypt_and_hash(encode_response_payload(RESPONDER_INDEX, RESPONDER_CERTIFICATE))
    record("EncryptAndHash(response payload)")
    return steps


def handshake_vectors() -> dict[str, Any]:
    i_s, r_s = _x25519(INITIATOR_STATIC), _x25519(RESPONDER_STATIC)
    i_e, r_e = _x25519(INITIATOR_EPHEMERAL), _x25519(RESPONDER_EPHEMERAL)
    i_pub, r_pub = public_bytes(i_s), public_bytes(r_s)
    prologue = request_prologue(INITIATOR_INDEX)
    request_payload = encode_request_payload(TIMESTAMP, INITIATOR_CERTIFICATE)
    response_payload = encode_response_payload(RESPONDER_INDEX, RESPONDER_CERTIFICATE)

    initiator = InitiatorHandshake(i_s, r_pub, prologue, ephemeral_private=i_e)
    message1 = initiator.write_request(request_payload)
    request = frame_request(INITIATOR_INDEX, message1, mac1_key(r_pub))
    responder = ResponderHandshake.read_request_untrusted(r_s, message1, prologue)
    message2, responder_keys = responder.write_response(response_payload, ephemeral_private=r_e)
    response = frame_response(INITIATOR_INDEX, message2, mac1_key(i_pub))
    payload, keys = initiator.read_response_untrusted(message2)
    assert payload == response_payload
    assert keys == responder_keys

    trace = _noise_trace(prologue)
    assert trace[-1]["h"] == keys.handshake_hash.hex()

    # What the two endpoints send first under the new keys (Session's behaviour): the
    # initiator PINGs (id 1) at once, the responder answers with a PONG, then the
    # initiator's application sends a 40-byte POSITION_UPDATE.
    ping = (1).to_bytes(4, "big")
    after: dict[str, list[dict[str, Any]]] = {}
    for level in ("high", "low"):
        i_kp = _keypair(keys.initiator_to_responder, RESPONDER_INDEX)
        r_kp = _keypair(keys.responder_to_initiator, INITIATOR_INDEX)
        messages = [("initiator", i_kp, PacketType.PING, ping),
                    ("responder", r_kp, PacketType.PONG, ping),
                    ("initiator", i_kp, PacketType.POSITION_UPDATE, POSITION_BODY)]
        datagrams = []
        for sender, keypair, packet_type, body in messages:
            counter = keypair.send_counter
            if level == "high":
                datagram = keypair.seal(_SEALED_FLAGS, PacketType.SEALED,
                                        padded_frame_list(packet_type, body))
            else:
                datagram = keypair.seal(int(Flag.ENCRYPTED), packet_type, body)
            datagrams.append({"from": sender, "counter": counter, "type": int(packet_type),
                              "body": body.hex(), "datagram": datagram.hex()})
        after[level] = datagrams

    return {
        "inputs": {
            "initiator_static_private": INITIATOR_STATIC.hex(),
            "responder_static_private": RESPONDER_STATIC.hex(),
            "initiator_ephemeral_private": INITIATOR_EPHEMERAL.hex(),
            "responder_ephemeral_private": RESPONDER_EPHEMERAL.hex(),
            "initiator_index": INITIATOR_INDEX,
            "responder_index": RESPONDER_INDEX,
            "timestamp": TIMESTAMP,
            "epoch": EPOCH,
            "initiator_certificate": INITIATOR_CERTIFICATE.hex(),
            "responder_certificate": None,
        },
        "derived": {
            "initiator_static_public": i_pub.hex(),
            "responder_static_public": r_pub.hex(),
            "initiator_ephemeral_public": public_bytes(i_e).hex(),
            "responder_ephemeral_public": public_bytes(r_e).hex(),
            "prologue": prologue.hex(),
            "request_payload": request_payload.hex(),
            "response_payload": response_payload.hex(),
            "dh_es": dh(i_e, r_pub).hex(),
            "dh_ss": dh(i_s, r_pub).hex(),
            "dh_ee": dh(i_e, public_bytes(r_e)).hex(),
            "dh_se": dh(i_s, public_bytes(r_e)).hex(),
            "responder_mac1_key": mac1_key(r_pub).hex(),
            "initiator_mac1_key": mac1_key(i_pub).hex(),
            "noise_message1": message1.hex(),
            "noise_message2": message2.hex(),
        },
        "trace": trace,
        "request": request.hex(),
        "response": response.hex(),
        "keys": {
            "initiator_to_responder": keys.initiator_to_responder.hex(),
            "responder_to_initiator": keys.responder_to_initiator.hex(),
            "handshake_hash": keys.handshake_hash.hex(),
        },
        "after": after,
    }


def cookie_vectors(handshake: dict[str, Any]) -> dict[str, Any]:
    r_pub = bytes.fromhex(handshake["derived"]["responder_static_public"])
    message1 = bytes.fromhex(handshake["derived"]["noise_message1"])
    request = bytes.fromhex(handshake["request"])
    cookie = CookieJar(COOKIE_SECRET).cookie_for(COOKIE_ADDRESS)
    with_mac2 = frame_request(INITIATOR_INDEX, message1, mac1_key(r_pub), cookie)
    request_mac1 = request[-32:-16]
    reply = build_cookie_reply(INITIATOR_INDEX, cookie, request_mac1, r_pub, COOKIE_NONCE)
    return {
        "secret": COOKIE_SECRET.hex(),
        "address": [COOKIE_ADDRESS[0], COOKIE_ADDRESS[1]],
        "cookie": cookie.hex(),
        "request_with_mac2": with_mac2.hex(),
        "mac2": with_mac2[-16:].hex(),
        "cookie_key": cookie_key(r_pub, request_mac1).hex(),
        "nonce": COOKIE_NONCE.hex(),
        "request_mac1": request_mac1.hex(),
        "cookie_reply": reply.hex(),
    }


def build() -> dict[str, Any]:
    handshake = handshake_vectors()
    return {
        "about": (
            "p2pd wire protocol v1 test vectors, generated by "
            "tests/vectors/make_protocol_vectors.py with p2pd's own code and described in "
            "docs/protocol.md. Byte strings are lowercase hex; integers are decimal."
        ),
        "header": header_vectors(),
        "header_rejects": header_reject_vectors(),
        "transport": transport_vectors(),
        "frame_lists": frame_list_vectors(),
        "compression": compression_vectors(),
        "handshake": handshake,
        "cookies": cookie_vectors(handshake),
    }


def dumps(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2) + "\n"


# -- markdown for docs/protocol.md -----------------------------------------------------


def hexdump(data: bytes) -> str:
    """16 bytes a line, offset first: the format docs/protocol.md uses for byte strings."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        lines.append(f"{at:04x}  {left}  {right}".rstrip())
    return "\n".join(lines)


def _block(data: bytes) -> str:
    return "```\n" + hexdump(data) + "\n```\n"


def _flags_name(flags: int) -> str:
    return " + ".join(f.name or "" for f in Flag if flags & f) or "none"


def render_markdown(v: dict[str, Any]) -> str:
    out: list[str] = []
    put = out.append

    put("### V1. Headers\n\n| type | flags | payload length | header |\n|---|---|---|---|\n")
    for h in v["header"]:
        put(f"| 0x{h['type']:04x} {PacketType(h['type']).name} | 0x{h['flags']:04x} "
            f"{_flags_name(h['flags'])} | {h['payload_length']} | `{h['header']}` |\n")
    put("\nDatagrams that must be dropped, with the reason (the first failing check):\n\n")
    put("| case | datagram | reason |\n|---|---|---|\n")
    for r in v["header_rejects"]:
        data = bytes.fromhex(r["datagram"])
        shown = (f"`{data[:14].hex()}` + {len(data) - 14} zero bytes" if len(data) > 40
                 else f"`{r['datagram']}`")
        put(f"| {r['name']} | {shown} | `{r['reason']}` |\n")

    put("\n### V2. Transport packet protection\n\n")
    first = v["transport"][0]
    put(f"Send key `{first['key']}`, receiver index "
        f"0x{first['receiver_index']:08x}.\n\n")
    for t in v["transport"]:
        put(f"**{t['name']}**: flags 0x{t['flags']:04x}, type 0x{t['type']:04x}, "
            f"counter {t['counter']}, nonce `{t['nonce']}`, plaintext `{t['plaintext']}`\n\n")
        put(_block(bytes.fromhex(t["datagram"])))
        put("\n")

    fl = v["frame_lists"]
    put("### V3. Frame lists and padding\n\n")
    put("A 40-byte POSITION_UPDATE body `" + fl["high_position_update"]["body"]
        + "` at encryption_level=high becomes this 64-byte frame list (SEALED plaintext):\n\n")
    put(_block(bytes.fromhex(fl["high_position_update"]["frame_list"])))
    put("\nFrame list length by payload length (one frame of 4 + n bytes, threshold 100):\n\n")
    put("| payload | frame list | padding frame |\n|---|---|---|\n")
    for row in fl["padding_table"]:
        pad = row["padding_frame_length"]
        put(f"| {row['payload_length']} | {row['frame_list_length']} | "
            f"{pad if pad is not None else 'none: compression path'} |\n")
    put("\nA receiver must also accept several frames in one list. This one decodes to "
        "CHAT_MESSAGE `6869` and POSITION_UPDATE `0001020304050607`:\n\n")
    put(_block(bytes.fromhex(fl["multi_frame"]["frame_list"])))
    put("\nFrame lists that must be refused:\n\n| case | frame list | reason |\n|---|---|---|\n")
    for r in fl["rejects"]:
        put(f"| {r['name']} | `{r['frame_list'] or '(empty)'}` | `{r['reason']}` |\n")

    c = v["compression"]
    libs = c["libraries"]
    put("\n### V4. Compression\n\n")
    put(f"Generated with python-lz4 {libs['lz4']} (liblz4 {libs['liblz4']}) and "
        f"python-zstandard {libs['zstandard']} (libzstd {libs['libzstd']}). Other library "
        "versions may compress differently; their output must still decompress to the "
        "input, and these outputs must decompress with any version.\n\n")
    sources = {
        "LZ4": "`b\"\".join(f\"player{i:03d} x={i * 7 % 100} y={i * 13 % 100};\".encode() "
               "for i in range(12))`",
        "Zstandard": "`b\"\".join(f\"npc{i:03d} says: the weather in zone {i % 7} is "
                     "{('fine', 'rainy', 'foggy')[i % 3]}.\\n\".encode() for i in range(40))`",
        "incompressible, sent as it is": "`bytes(range(150))`",
    }
    for case in c["cases"]:
        data = bytes.fromhex(case["input"])
        output = bytes.fromhex(case["output"])
        put(f"**{case['name']}**: input ({len(data)} bytes) {sources[case['name']]}; "
            f"flag 0x{case['flag']:04x}; output {len(output)} bytes")
        if case["flag"]:
            put(":\n\n")
            put(_block(output))
            put("\n")
        else:
            put(" (the input itself).\n\n")
    put("Compressed payloads that must be refused (max_size 65536):\n\n")
    put("| case | flag | payload | reason |\n|---|---|---|---|\n")
    for r in c["rejects"]:
        shown = r["payload"] if len(r["payload"]) <= 24 else r["payload"][:24] + "..."
        put(f"| {r['name']} | 0x{r['flag']:04x} | `{shown}` | `{r['reason']}` |\n")

    h = v["handshake"]
    i, d = h["inputs"], h["derived"]
    put("\n### V5. Handshake\n\n```\n")
    rows = [
        ("initiator static private", i["initiator_static_private"]),
        ("initiator static public", d["initiator_static_public"]),
        ("responder static private", i["responder_static_private"]),
        ("responder static public", d["responder_static_public"]),
        ("initiator ephemeral private", i["initiator_ephemeral_private"]),
        ("initiator ephemeral public", d["initiator_ephemeral_public"]),
        ("responder ephemeral private", i["responder_ephemeral_private"]),
        ("responder ephemeral public", d["responder_ephemeral_public"]),
        ("initiator sender index", f"{i['initiator_index']:08x}"),
        ("responder sender index", f"{i['responder_index']:08x}"),
        ("timestamp (ns)", f"{i['timestamp']} = {i['timestamp']:016x}"),
        ("initiator certificate", i["initiator_certificate"]
         + f' ("{bytes.fromhex(i["initiator_certificate"]).decode()}")'),
        ("responder certificate", "none"),
        ("prologue", d["prologue"]),
        ("request payload", d["request_payload"]),
        ("response payload", d["response_payload"]),
        ("DH es", d["dh_es"]),
        ("DH ss", d["dh_ss"]),
        ("DH ee", d["dh_ee"]),
        ("DH se", d["dh_se"]),
        ("mac1 key of the responder", d["responder_mac1_key"]),
        ("mac1 key of the initiator", d["initiator_mac1_key"]),
    ]
    for label, value in rows:
        put(f"{label:<28} {value}\n")
    put("```\n\nThe symmetric state after each step (k: the handshake cipher key, "
        "once there is one):\n\n```\n")
    for step in h["trace"]:
        put(f"{step['step']}\n  ck {step['ck']}\n  h  {step['h']}\n")
        if step["k"]:
            put(f"  k  {step['k']}\n")
    put("```\n\n")
    request = bytes.fromhex(h["request"])
    response = bytes.fromhex(h["response"])
    put(f"HANDSHAKE_REQUEST ({len(request)} bytes):\n\n")
    put(_block(request))
    put(f"\nHANDSHAKE_RESPONSE ({len(response)} bytes):\n\n")
    put(_block(response))
    k = h["keys"]
    put("\n```\n")
    put(f"initiator -> responder key   {k['initiator_to_responder']}\n")
    put(f"responder -> initiator key   {k['responder_to_initiator']}\n")
    put(f"handshake hash               {k['handshake_hash']}\n")
    put("```\n\n")
    put("The first transport datagrams under these keys, as the endpoints send them: the "
        "initiator's PING (id 1), the responder's PONG, then a 40-byte POSITION_UPDATE "
        "(body `" + fl["high_position_update"]["body"] + "`) from the initiator.\n\n")
    for level in ("high", "low"):
        put(f"encryption_level={level}:\n\n")
        for m in h["after"][level]:
            data = bytes.fromhex(m["datagram"])
            to = "responder" if m["from"] == "initiator" else "initiator"
            put(f"{m['from']} -> {to}, counter {m['counter']}, "
                f"{PacketType(m['type']).name} ({len(data)} bytes):\n\n")
            put(_block(data))
            put("\n")

    ck = v["cookies"]
    put("### V6. mac2 and the cookie reply\n\n```\n")
    put(f"cookie secret       {ck['secret']}\n")
    put(f"address             {ck['address'][0]}|{ck['address'][1]}\n")
    put(f"cookie              {ck['cookie']}\n")
    put(f"mac2                {ck['mac2']}\n")
    put(f"cookie key          {ck['cookie_key']}\n")
    put(f"cookie reply nonce  {ck['nonce']}\n")
    put(f"request mac1 (AAD)  {ck['request_mac1']}\n")
    put("```\n\nThe request of V5 sent with this cookie (only mac2, the last 16 bytes, "
        "differs):\n\n")
    put(_block(bytes.fromhex(ck["request_with_mac2"])))
    reply = bytes.fromhex(ck["cookie_reply"])
    put(f"\nThe COOKIE_REPLY answering the V5 request ({len(reply)} bytes):\n\n")
    put(_block(reply))
    return "".join(out)


def main(argv: list[str]) -> int:
    vectors = build()
    if "--markdown" in argv:
        sys.stdout.write(render_markdown(vectors))
        return 0
    text = dumps(vectors)
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{OUTPUT} is out of date\n")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
