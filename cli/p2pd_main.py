"""``p2pd``: run the daemon (``p2pd run``), the coordinator (``p2pd coordinator``), the
mesh demo (``p2pd demo``) or the protocol-core demo (``p2pd protocol-demo``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import trio

from p2pd.client import ClientError
from p2pd.config import ConfigError, load_config, load_coordinator_config
from p2pd.coordinator.credentials import SigningKeyFileError
from p2pd.crypto.identity import IdentityFileError
from p2pd.demo import run_demo
from p2pd.io.coordinator_server import run_coordinator
from p2pd.io.daemon import run_daemon
from p2pd.logs import configure_logging, get_logger
from p2pd.meshdemo import DemoOptions, run_mesh_demo
from p2pd.session.config import EncryptionLevel

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


@click.group()
def main() -> None:
    """p2pd: a peer-to-peer networking sidecar for game clients."""


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=Path("ai_client.ini"), show_default=True, help="configuration file")
def run(config_path: Path) -> None:
    """Run the daemon until SIGINT or SIGTERM."""
    try:
        loaded = load_config(config_path)
    except ConfigError as error:
        click.echo(f"p2pd: configuration error: {error}", err=True)
        sys.exit(EXIT_CONFIG)
    config = loaded.config
    log_settings = config.log
    configure_logging(config.p2p.log_level.value, log_settings.file, log_settings.max_bytes,
                      log_settings.backups, log_settings.console)
    log = get_logger("p2pd")
    for warning in loaded.warnings:
        log.warning("config_warning", detail=warning)
        click.echo(f"p2pd: warning: {warning}", err=True)
    try:
        status = trio.run(run_daemon, config)
    except IdentityFileError as error:
        log.error("identity_file_refused", error=str(error))
        click.echo(f"p2pd: identity key: {error}", err=True)
        sys.exit(EXIT_CONFIG)
    except SigningKeyFileError as error:  # the embedded coordinator's
        log.error("key_file_refused", error=str(error))
        click.echo(f"p2pd: key file: {error}", err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as error:
        log.error("daemon_failed", error=str(error))
        click.echo(f"p2pd: {error}", err=True)
        sys.exit(1)
    sys.exit(status)


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=Path("coordinator.ini"), show_default=True, help="configuration file")
@click.option("--info-file", type=click.Path(path_type=Path), default=None,
              help="write the UDP address and public keys here (JSON) once ready")
def coordinator(config_path: Path, info_file: Path | None) -> None:
    """Run the coordinator until SIGINT or SIGTERM."""
    try:
        config, warnings = load_coordinator_config(config_path)
    except ConfigError as error:
        click.echo(f"p2pd: configuration error: {error}", err=True)
        sys.exit(EXIT_CONFIG)
    log_settings = config.log
    configure_logging(config.server.log_level.value, log_settings.file, log_settings.max_bytes,
                      log_settings.backups, log_settings.console)
    log = get_logger("p2pd")
    for warning in warnings:
        log.warning("config_warning", detail=warning)
        click.echo(f"p2pd: warning: {warning}", err=True)
    try:
        status = trio.run(run_coordinator, config, info_file)
    except (IdentityFileError, SigningKeyFileError) as error:
        log.error("key_file_refused", error=str(error))
        click.echo(f"p2pd: key file: {error}", err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as error:
        log.error("coordinator_failed", error=str(error))
        click.echo(f"p2pd: {error}", err=True)
        sys.exit(1)
    sys.exit(status)


@main.command()
@click.option("--players", default=8, show_default=True, type=click.IntRange(2, 32),
              help="daemons, one simulated player each")
@click.option("--seconds", default=20.0, show_default=True, type=click.FloatRange(1, 3600),
              help="seconds of play")
@click.option("--seed", default=1, show_default=True, help="the players' behaviour")
@click.option("--max-peers", default=4, show_default=True, type=click.IntRange(1, 64),
              help="[P2P] max_peers of every daemon")
@click.option("--backups", default=1, show_default=True, type=click.IntRange(0, 4),
              help="[coordinator] backups: warm links beyond max_peers")
@click.option("--relay-only", default=1, show_default=True, type=click.IntRange(0, 31),
              help="players (the last ones) that are relay-only: their links go through "
                   "the coordinator's relay")
@click.option("--json", "as_json", is_flag=True,
              help="print only the report, as one JSON object (progress goes to stderr)")
@click.option("--keep", is_flag=True, help="keep the daemons' directory (configs, logs)")
def demo(players: int, seconds: float, seed: int, max_peers: int, backups: int,
         relay_only: int, as_json: bool, keep: bool) -> None:
    """The main job: a coordinator and N daemons on loopback, with simulated players
    walking, chatting and casting on one map; live progress, then a report."""
    options = DemoOptions(players=players, seconds=seconds, seed=seed, max_peers=max_peers,
                          backups=backups, relay_only=relay_only, as_json=as_json, keep=keep)
    try:
        trio.run(run_mesh_demo, options)
    except BaseException as error:  # trio's tasks raise theirs in exception groups
        leaves = _leaves(error)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            click.echo("p2pd demo: interrupted; every daemon stopped, its directory removed",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        if all(isinstance(leaf, _DEMO_FAILURES) for leaf in leaves):
            for leaf in leaves:
                click.echo(f"p2pd demo: failed: {leaf}", err=True)
            sys.exit(1)
        raise


_DEMO_FAILURES = (OSError, RuntimeError, ClientError, trio.BrokenResourceError)


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


@main.command("protocol-demo")
@click.option("--seed", default=1, show_default=True)
@click.option("--loss", default=0.2, show_default=True, type=click.FloatRange(0, 0.99))
@click.option("--delay", default=0.04, show_default=True, help="one-way delay, seconds")
@click.option("--duration", default=30.0, show_default=True, help="virtual seconds")
@click.option("--level", type=click.Choice([e.value for e in EncryptionLevel]), default="high")
def protocol_demo(seed: int, loss: float, delay: float, duration: float, level: str) -> None:
    """Two session endpoints over a simulated bad network, in virtual time."""
    run_demo(seed=seed, loss=loss, delay=delay, duration=duration, level=EncryptionLevel(level))

if __name__ == "__main__":
    main()
