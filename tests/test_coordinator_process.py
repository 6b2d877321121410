"""`p2pd coordinator` as a real process on loopback, with `p2pctl token`."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pd.coordinator.credentials import mint_token, verify_certificate_untrusted
from p2pd.coordinator.messages import Registered, decode_control_untrusted
from p2pd.crypto.identity import Identity
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import MessageReceived
from p2pd.wire.types import PacketType

BIN = Path(sys.executable).parent


def write_config(home: Path) -> Path:
    path = home / "coordinator.ini"
    path.write_text(
        "[coordinator_server]\nlisten_host=127.0.0.1\nlisten_port=0\n"
        "[log]\nfile=logs/coordinator.log\n"
    )
    return path


def start(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    config = write_config(home)
    info = home / "info.json"
    stderr = home / "stderr.txt"
    with stderr.open("wb") as err:
        process = subprocess.Popen([str(BIN / "p2pd"), "coordinator", "--config", str(config),
                                    "--info-file", str(info)], stderr=err)
    deadline = time.monotonic() + 20
    while not info.exists() or not info.read_text().strip():
        assert process.poll() is None, stderr.read_text()
        assert time.monotonic() < deadline, "the coordinator did not become ready"
        time.sleep(0.05)
    return process, json.loads(info.read_text())


def register(info: dict[str, str], identity: Identity, timeout: float = 3.0) -> Registered | None:
    """Open a session to the coordinator over a real UDP socket; its Registered reply."""
    host, port = info["udp"].rsplit(":", 1)
    coordinator = (host, int(port))
    key = bytes.fromhex(info["public_key"])
    endpoint = Endpoint(identity, random_bytes=random.Random(1).randbytes,
                        epoch=time.time() - time.monotonic())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    try:
        endpoint.connect(key, coordinator, time.monotonic())
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = time.monotonic()
            for data, address in endpoint.datagrams_to_send(now):
                sock.sendto(data, address)
            try:
                data, source = sock.recvfrom(2048)
                endpoint.receive_datagram(data, (source[0], source[1]), time.monotonic())
            except TimeoutError:
                pass
            timer = endpoint.get_timer()
            if timer is not None and time.monotonic() >= timer:
                endpoint.handle_timer(time.monotonic())
            while (event := endpoint.next_event()) is not None:
                if isinstance(event, MessageReceived) and event.type == PacketType.COORDINATOR:
                    message = decode_control_untrusted(event.payload)
                    if isinstance(message, Registered):
                        return message
        return None
    finally:
        sock.close()


def test_a_daemon_registers_with_a_token_from_p2pctl_and_a_forged_one_gets_nothing(
        tmp_path: Path) -> None:
    process, info = start(tmp_path)
    try:
        identity = Identity.generate()
        minted = subprocess.run(
            [str(BIN / "p2pctl"), "token", "--coordinator-config",
             str(tmp_path / "coordinator.ini"), "--player", "150001", "--key",
             identity.public_key.hex()], capture_output=True, text=True, check=True)
        token = bytes.fromhex(minted.stdout.strip())
        reply = register(info, identity.with_certificate(token))
        assert reply is not None
        signing = Ed25519PublicKey.from_public_bytes(bytes.fromhex(info["signing_key"]))
        certificate = verify_certificate_untrusted(reply.certificate, [signing],
                                                   identity.public_key, time.time())
        assert certificate.player_id == 150001
        # the same request signed by anyone but the issuer gets no answer at all
        other = Identity.generate()
        forged = mint_token(Ed25519PrivateKey.generate(), account_id=0, player_id=1,
                            daemon_key=other.public_key, lifetime=60, now=time.time())
        assert register(info, other.with_certificate(forged), timeout=1.5) is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    log = (tmp_path / "logs" / "coordinator.log").read_text()
    assert "daemon_registered" in log and "coordinator_stopped" in log


def test_p2pctl_token_refuses_a_bad_key(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = subprocess.run([str(BIN / "p2pctl"), "token", "--coordinator-config",
                             str(tmp_path / "coordinator.ini"), "--player", "1", "--key", "abc"],
                            check=False, capture_output=True, text=True)
    assert result.returncode != 0 and "64 hex digits" in result.stderr
