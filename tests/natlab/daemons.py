"""Real p2pd daemons inside the lab's namespaces (the matrix's players)."""

from __future__ import annotations

from pathlib import Path

from p2pd.localrun import DaemonProcess, p2pd_command, write_local_config
from tests.natlab.netns import Netns


def start_lab_daemon(namespace: Netns, home: Path, *, port: int = 7000,
                     p2p: dict[str, str] | None = None,
                     coordinator: dict[str, str] | None = None,
                     port_mapping: dict[str, str] | None = None) -> DaemonProcess:
    """``p2pd run`` in ``namespace`` with its own ini, key, log and runtime directory
    under ``home``, UDP on ``port`` (a fresh namespace has every port free). Its
    IPC is reachable from the test through the Unix socket in ``home/run``
    (``tests.daemons.open_client``); the lab stops it at the end if the test did not."""
    config = write_local_config(home, port_low=port, port_high=port + 9, p2p=p2p,
                                coordinator=coordinator, port_mapping=port_mapping)
    stderr = home / "stderr.txt"
    process = namespace.popen([*p2pd_command(), "run", "--config", str(config)], log=stderr,
                              cwd=home)
    return DaemonProcess(home, config, process, stderr_path=stderr)
