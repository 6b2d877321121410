"""The daemon as users run it, with [nat] pointing at a real coturn on loopback: it learns
its mapping over its one UDP socket, classifies the NAT (none, on loopback), allocates a
relay, and shows it all in `p2pctl nat`. Skipped without coturn."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from p2pd import localrun
from p2pd.nat.stun import Class, Method, StunMessage, decode_message_untrusted, encode_message
from tests.coturn import PASSWORD, USER, coturn
from tests.daemons import free_udp_range, open_client

CTL = [str(Path(sys.executable).parent / "p2pctl")]


async def test_the_daemon_speaks_stun_and_turn_on_its_own_socket(tmp_path: Path) -> None:
    with coturn(tmp_path / "turn") as server:
        low, high = free_udp_range(10)
        home = tmp_path / "daemon"
        config = localrun.write_local_config(home, port_low=low, port_high=high)
        host, port = server.address
        with config.open("a", encoding="utf-8") as ini:
            ini.write(f"[nat]\nstun_servers={host}:{port}\nturn_server={host}:{port}\n"
                      f"turn_username={USER}\nturn_password={PASSWORD}\n")
        daemon = localrun.start_daemon(home, config)
        try:
            info = daemon.wait_ready()
            udp_port = info.udp_port
            async with await open_client(daemon) as client:
                status: dict[str, object] = {}
                with trio.move_on_after(15):
                    while True:
                        status = await client.request("nat")
                        turn = status.get("turn") or {}
                        behaviour = status.get("behaviour") or {}
                        assert isinstance(turn, dict) and isinstance(behaviour, dict)
                        if turn.get("state") == "allocated" and behaviour.get("state") == "done":
                            break
                        await trio.sleep(0.2)
            assert status["enabled"] is True
            public = status["public"]
            assert isinstance(public, dict)
            assert public[f"stun {host}:{port}"] == f"127.0.0.1:{udp_port}"
            assert status["behaviour"] == {"mapping": "no_nat",
                                           "filtering": "endpoint_independent",
                                           "state": "done"}
            candidates = status["candidates"]
            assert isinstance(candidates, list)
            assert any(c.startswith("relay 127.0.0.1:") for c in candidates)
            assert status["turn"]["state"] == "allocated"  # type: ignore[index]
            # STUN junk and a stray STUN request on the daemon's socket: dropped, counted,
            # never answered; the daemon keeps serving
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.settimeout(0.5)
                request = encode_message(StunMessage(Method.BINDING, Class.REQUEST,
                                                     b"strangerxxxx"), fingerprint=True)
                stranger.sendto(request, ("127.0.0.1", udp_port))
                stranger.sendto(request[:-1] + b"\0", ("127.0.0.1", udp_port))
                stranger.sendto(b"\x40\x00\x00\x04abcd", ("127.0.0.1", udp_port))
                try:
                    data, _ = stranger.recvfrom(2048)
                    answered = decode_message_untrusted(data)
                except TimeoutError:
                    answered = None
                assert answered is None
            time.sleep(0.2)
            text = subprocess.run([*CTL, "--runtime-dir", str(daemon.runtime_dir), "nat"],
                                  capture_output=True, text=True, timeout=20, check=True).stdout
            assert f"127.0.0.1:{udp_port} (seen by stun {host}:{port})" in text
            assert "mapping no_nat, filtering endpoint_independent" in text
            assert "candidate  relay 127.0.0.1:" in text
            async with await open_client(daemon) as client:
                counters = (await client.request("nat"))["counters"]
            assert counters["stun_unmatched"] >= 1 and counters["stun_bad"] >= 1
            assert counters["turn_bad"] >= 1
        finally:
            assert daemon.stop() == 0
