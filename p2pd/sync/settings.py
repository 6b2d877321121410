"""The sync and cheat rules from the daemon's configuration (``[sync]`` and ``[P2P]``)."""

from __future__ import annotations

from dataclasses import replace

from p2pd.cheat.anomaly import AnomalyRules
from p2pd.config import DaemonConfig
from p2pd.sync.core import SyncRules
from p2pd.sync.playout import PlayoutRules


def sync_rules(config: DaemonConfig) -> SyncRules:
    p2p, sync = config.p2p, config.sync
    default = SyncRules()
    return replace(
        default,
        playout=PlayoutRules(interval=1.0 / p2p.position_update_rate,
                             intervals=sync.interpolation_intervals,
                             max_delay=sync.max_playout_ms / 1000.0,
                             min_delay=min(0.1, sync.max_playout_ms / 1000.0),
                             max_extrapolation=sync.max_extrapolation_ms / 1000.0),
        anomaly=AnomalyRules(threshold=sync.anomaly_threshold),
        snap_cells=sync.snap_cells,
        ban_seconds=sync.ban_seconds,
        snapshot_interval=sync.snapshot_interval,
        position_rate=p2p.position_update_rate,
        effect_rate=p2p.effect_update_rate,
        chat_rate=sync.chat_rate,
        chat_burst=sync.chat_burst,
        interaction_rate=sync.interaction_rate,
        interaction_burst=sync.interaction_burst,
    )
