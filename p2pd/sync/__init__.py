"""Game-state synchronization (spec 4, 9, 10.2), sans-IO: each peer's clock and
playout delay (``playout``), the interpolation buffer of its player
(``track``), versioned latest-value state (``state``), claims awaiting the
server (``claims``), and ``GameSync`` (``core``), which runs them and the
checks of :mod:`p2pd.cheat` between the network and the IPC API."""
