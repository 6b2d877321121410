"""``p2pd demo``: the main job on one machine.

N daemons on loopback (real ``p2pd run`` processes), the first of them
hosting the embedded coordinator, and a simulated player behind each one,
driven over the daemon's IPC socket like a game client: players log in at
Prontera's fountain and walk between nearby spots, chat, cast effects, talk to
AI NPCs and change the weather (:mod:`p2pd.meshdemo.players`, seeded). The
mesh links them by proximity with a small ``max_peers``. Live progress every
second, then a report: links formed and dropped and their paths, events by
kind, delivery latency, upstream bandwidth per player.

The package is split by concern: :mod:`~p2pd.meshdemo.players` (what players
do; pure), :mod:`~p2pd.meshdemo.processes` (starting and always stopping the
daemons and their directory), :mod:`~p2pd.meshdemo.report` (bookkeeping and
the report), :mod:`~p2pd.meshdemo.run` (playing it all in real time).

What the figures mean, for each kind of event:

``sent``
    Game events the players sent: requests the sender's daemon accepted, each
    counted once however many peers it went to (refused ones are in
    ``send_errors``).
``expected``
    Deliveries that should have happened: for each event sent, the number of
    peers its daemon handed it to, which is the ``sent`` of the daemon's reply
    (``docs/ipc.md`` 11.9): the peers linked at that moment, less those a
    rate limit skipped (``rate_limited``) and, for positions, those the daemon
    judged out of view (``out_of_view``: spec 5.2, a position goes only to
    players who could see it). For chat, AI interactions and environment, peers
    the reply calls ``absent`` (a link down for now, whose reliable events wait
    for it to come back) count as expected too. A player in view but not
    linked (``max_peers`` reached, link still forming) is not expected to get
    it: that shows in ``in_view`` below.
``delivered``
    Events that reached a receiving player's client, each (event, receiver)
    once; matched to the event sent by the id and send time embedded in it
    (the chat text's ``#player.seq@time`` suffix, ``demo_seq`` and ``sent_at``
    in effect and AI parameters and in the environment value, and a
    position's ``tick``, its send time in ms). ``delivered <= expected``:
    reliable kinds fall short only when a link dropped with events still in
    flight; ``position`` and ``effect`` are unreliable, and positions fall
    short by design too: a newer position replaces one still waiting, and the
    daemon leaves out steps the peer's dead reckoning already predicts.
``in_view`` and ``delivered_in_view``
    (event, receiver) pairs where the receiver stood within the view range
    (14 cells, Chebyshev) of the sender when the script sent it, and how many
    of those were delivered: the share of what a player could see that the
    mesh brought.
``latency_ms``
    From the send time embedded in the event to the moment the receiving
    player's client read it (all processes share this machine's clock): p50
    and p99 per kind and over all deliveries. A daemon gives a new link the
    sender's standing position at once; such a position, sent before the link
    came up, is not a late delivery of that send: it is counted apart, as
    ``positions_on_link``, outside ``delivered`` and the latencies. Likewise
    shared state (environment: each player's weather under its own key, with
    its own versions) that a new link's snapshot brings: ``state_on_link`` when
    the author sent it before the link came up, ``state_passed_on`` when a peer
    passed on a third player's value. A standing player's daemon sends its
    position again each second with the clock moved on, until the peer has it;
    such a position is no send of the script's: ``positions_refreshed``.

``links_max`` is the most links any one daemon held at any time (its
``peer_joined`` less ``peer_left`` events, and the established entries of
polls of ``peers``): at most ``max_peers`` plus ``backups``. A link *forms*
when the first of its two sides reports it up and *drops* when the last side
reports it gone; its path is the ``path`` of the peer entry (``direct`` or
``relay``). ``upstream_bytes_per_s`` is each daemon's UDP bytes sent during
play (``stats`` ``bandwidth.out_bytes_total`` at the start and the end),
divided by the play time: p50 and max over players, and each player's.
"""

from p2pd.meshdemo.run import DemoOptions, run_mesh_demo

__all__ = ["DemoOptions", "run_mesh_demo"]
