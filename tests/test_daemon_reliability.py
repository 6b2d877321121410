"""Two real daemons through the user-space impairment relay (issue 4)."""

from __future__ import annotations

from pathlib import Path

import trio

from p2pd.sim.network import LinkProfile
from p2pd.sim.udp_relay import UdpImpairmentRelay
from tests.daemons import open_client
from tests.daemons import running_daemons as daemons

LINES = [f"line {i:03d}: " + "hello " * (i % 7) for i in range(200)]
# 200 lines as fast as the client can send them is a flood for the receiver's
# default allowance ([sync] chat_rate 5/s, chat_burst 50: tests/test_sync.py);
# this test is about reliable delivery through loss, so its receiver allows it
LOAD_ALLOWED = {"chat_rate": "1000", "chat_burst": "1000"}


async def test_chat_arrives_exactly_once_in_order_at_10_percent_loss(tmp_path: Path) -> None:
    lossy = LinkProfile(loss=0.10, delay=0.01)
    with daemons(tmp_path, 2, sync=LOAD_ALLOWED) as (a, b):
        assert b.info is not None
        relay = UdpImpairmentRelay(("127.0.0.1", b.info.udp_port), forward=lossy,
                                   backward=lossy, seed=4)
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run)
            host, port = relay.front_address
            async with await open_client(a) as client_a, await open_client(b) as client_b:
                await client_b.request("subscribe", events=["chat"])
                await client_a.request("connect", address=f"{host}:{port}", key=b.public_key)
                with trio.fail_after(10):
                    while (await client_a.request("peers"))["peers"][0]["state"] != "established":
                        await trio.sleep(0.02)
                for line in LINES:  # as fast as the client can send them
                    reply = await client_a.request("chat", text=line)
                    assert reply["sent"] == 1
                got: list[str] = []
                with trio.fail_after(20):
                    while len(got) < len(LINES):
                        event = await client_b.next_event()
                        if event["event"] == "chat":
                            got.append(event["text"])
                assert got == LINES
                with trio.move_on_after(1.0):  # and nothing arrives twice afterwards
                    while True:
                        event = await client_b.next_event()
                        assert event["event"] != "chat", f"delivered again: {event}"
                stats = await client_a.request("stats")
            nursery.cancel_scope.cancel()
    assert relay.statistics().lost > 0  # the relay did drop datagrams
    assert stats["errors"]["retransmissions"] > 0
