"""``p2pctl``: ask a running p2pd daemon what it is doing, and tell it what to do."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import trio

from p2pd.client import ClientError, DaemonClient
from p2pd.config import ConfigError, default_runtime_dir, load_config, load_coordinator_config
from p2pd.coordinator.credentials import SigningKeyFileError, load_or_create_signing_key, mint_token
from p2pd.io.runtime import RuntimeFileError
from p2pd.viz import daemon_dot, mesh_dot

from .graph import FORMATS, GraphError, render
from .top import run_top

EXIT_NO_DAEMON = 1
EXIT_REFUSED = 3


def _runtime_dir(ctx: click.Context) -> Path:
    explicit: Path | None = ctx.obj["runtime_dir"]
    if explicit is not None:
        return explicit
    config_path: Path | None = ctx.obj["config"]
    if config_path is not None:
        try:
            configured = load_config(config_path).config.ipc.runtime_dir
        except ConfigError as error:
            click.echo(f"p2pctl: configuration error: {error}", err=True)
            sys.exit(2)
        if configured is not None:
            return configured
    return default_runtime_dir()


def _call(ctx: click.Context, op: str, **fields: Any) -> dict[str, Any]:
    """Connect, send one request, return its result; exit plainly when that fails."""
    runtime_dir = _runtime_dir(ctx)

    async def go() -> dict[str, Any]:
        client = await DaemonClient.open(runtime_dir, client_name="p2pctl")
        async with client:
            return await client.request(op, **fields)

    try:
        return trio.run(go)
    except RuntimeFileError as error:
        click.echo(f"p2pctl: {error}", err=True)
        sys.exit(EXIT_NO_DAEMON)
    except OSError as error:
        click.echo(f"p2pctl: no p2pd daemon answers in {runtime_dir} ({error})", err=True)
        sys.exit(EXIT_NO_DAEMON)
    except ClientError as error:
        click.echo(f"p2pctl: the daemon refused: {error}", err=True)
        sys.exit(EXIT_REFUSED)


@click.group()
@click.option("--runtime-dir", type=click.Path(path_type=Path), default=None,
              help="the daemon's runtime directory (default: from --config, else the standard one)")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="read the runtime directory from this ai_client.ini")
@click.pass_context
def main(ctx: click.Context, runtime_dir: Path | None, config: Path | None) -> None:
    """Control and inspect a running p2pd daemon."""
    ctx.obj = {"runtime_dir": runtime_dir, "config": config}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The daemon's state, its addresses and a line per peer."""
    result = _call(ctx, "status")
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    state = "running" if result.get("p2p_enabled") else "running, P2P disabled"
    click.echo(f"p2pd {result.get('version')} {state} (pid {result.get('pid')}, "
               f"up {result.get('uptime_s', 0):.0f} s)")
    click.echo(f"  udp       {result.get('udp_address')}")
    click.echo(f"  key       {result.get('public_key')}")
    click.echo(f"  level     {result.get('encryption_level')}, max_peers "
               f"{result.get('max_peers')}, IPC clients {result.get('ipc_clients')}")
    coordinator = result.get("coordinator")
    if coordinator and coordinator.get("state") == "no_token":
        click.echo(f"  mesh      coordinator {coordinator.get('address')}: waiting for a connect "
                   "token (token_file, or coordinator_token from the game)")
    elif coordinator:
        click.echo(f"  mesh      coordinator {coordinator.get('address')} "
                   f"{coordinator.get('state')}, {coordinator.get('candidates')} in view, "
                   f"{coordinator.get('active')} linked + {coordinator.get('backups')} backup")
    else:
        click.echo("  mesh      no coordinator: peers linked by hand")
    embedded = result.get("embedded_coordinator")
    if embedded and "error" in embedded:
        click.echo(f"  embedded  coordinator failed: {embedded['error']}")
    elif embedded:
        click.echo(f"  embedded  coordinator on udp {embedded.get('udp_address')}, "
                   f"{embedded.get('daemons')} daemons registered")
        click.echo(f"            key {embedded.get('public_key')}")
        click.echo(f"            token issuer {embedded.get('issuer_key')}")
    _print_peers(result.get("peers", []))


def _print_peers(peers: list[dict[str, Any]]) -> None:
    if not peers:
        click.echo("  no peers")
        return
    click.echo(f"  {'peer':<16} {'address':<22} {'path':<7} {'role':<7} {'state':<12} "
               f"{'rtt ms':>8} "
               f"{'sent B':>10} {'recv B':>10} {'loss':>6}")
    for peer in peers:
        rtt = peer.get("rtt_ms")
        click.echo(
            f"  {peer['peer'][:16]:<16} {peer.get('address', ''):<22} {peer.get('path', ''):<7} "
            f"{peer.get('role', ''):<7} {peer.get('state', ''):<12} "
            f"{('-' if rtt is None else f'{rtt:.1f}'):>8} "
            f"{peer.get('bytes_sent', 0):>10} {peer.get('bytes_received', 0):>10} "
            f"{peer.get('loss', 0.0):>6.1%}"
        )


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """The peers, one line each."""
    result = _call(ctx, "peers")
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_peers(result.get("peers", []))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def nat(ctx: click.Context, as_json: bool) -> None:
    """The NAT picture: addresses, NAT behaviour, port mapping, candidates, paths."""
    result = _call(ctx, "nat")
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    if not result.get("enabled"):
        click.echo("NAT traversal is off ([P2P] nat_traversal = false, or P2P disabled)")
    click.echo(f"  udp        {result.get('udp_address')}"
               + ("   (relay only)" if result.get("relay_only") else ""))
    click.echo(f"  local      {', '.join(result.get('local') or []) or '-'}")
    for via, address in sorted((result.get("public") or {}).items()):
        click.echo(f"  public     {address} (seen by {via})")
    behaviour = result.get("behaviour")
    if behaviour:
        click.echo(f"  behaviour  mapping {behaviour.get('mapping')}, filtering "
                   f"{behaviour.get('filtering')} ({behaviour.get('state')})")
    mapping = result.get("port_mapping")
    click.echo(f"  mapping    {json.dumps(mapping, sort_keys=True) if mapping else 'none'}")
    turn = result.get("turn")
    if turn:
        click.echo(f"  turn       {turn.get('server')} {turn.get('state')}"
                   f"{', relayed ' + str(turn.get('relayed')) if turn.get('relayed') else ''}"
                   f"{', error: ' + str(turn.get('error')) if turn.get('error') else ''}")
    for candidate in result.get("candidates") or []:
        click.echo(f"  candidate  {candidate}")
    for peer in result.get("peers") or []:
        click.echo(f"  peer       {peer['peer'][:16]} {peer.get('path', ''):<7} "
                   f"{peer.get('address', '')} {peer.get('state', '')}")


@main.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Traffic, latency and error statistics (spec §8.2), as JSON."""
    click.echo(json.dumps(_call(ctx, "stats"), indent=2, sort_keys=True))


@main.command()
@click.option("--plain", is_flag=True, help="the plain table even on a large terminal")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              help="seconds between refreshes")
@click.option("--iterations", type=click.IntRange(1), default=None,
              help="stop after this many refreshes (default: until q or Ctrl-C)")
@click.pass_context
def top(ctx: click.Context, plain: bool, interval: float, iterations: int | None) -> None:
    """A live view of the daemon (spec 8.3): connection graph, bandwidth graph,
    packet flow per peer and per event kind, error indicators. q or Ctrl-C quits."""
    runtime_dir = _runtime_dir(ctx)
    try:
        trio.run(lambda: run_top(runtime_dir, interval=interval, iterations=iterations,
                                 plain=plain))
    except KeyboardInterrupt:
        pass
    except RuntimeFileError as error:
        click.echo(f"p2pctl: {error}", err=True)
        sys.exit(EXIT_NO_DAEMON)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
        click.echo(f"p2pctl: the daemon in {runtime_dir} does not answer ({error})", err=True)
        sys.exit(EXIT_NO_DAEMON)
    except ClientError as error:
        click.echo(f"p2pctl: the daemon refused: {error}", err=True)
        sys.exit(EXIT_REFUSED)


def _write_graph(dot: str, fmt: str, out: Path | None) -> None:
    try:
        data = render(dot, fmt)
    except GraphError as error:
        click.echo(f"p2pctl: {error}", err=True)
        sys.exit(EXIT_REFUSED)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        out.write_bytes(data)
        click.echo(f"wrote {out} ({len(data)} bytes, {fmt})", err=True)


@main.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="dot", show_default=True,
              help="DOT text, or a picture drawn by Graphviz")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="write here (default: standard output)")
@click.pass_context
def graph(ctx: click.Context, fmt: str, out: Path | None) -> None:
    """The daemon's connection graph as a picture, drawn as p2pctl top draws it:
    green direct, orange dashed relay, red in trouble, grey backups and attempts."""
    _write_graph(daemon_dot(_call(ctx, "stats")), fmt, out)


@main.command()
@click.argument("address")
@click.argument("key")
@click.pass_context
def connect(ctx: click.Context, address: str, key: str) -> None:
    """Connect to the peer at ADDRESS (host:port) whose public key is KEY (hex)."""
    result = _call(ctx, "connect", address=address, key=key.lower())
    click.echo(f"connecting to {result.get('peer', key)[:16]} at {address}")


@main.command()
@click.argument("peer")
@click.pass_context
def disconnect(ctx: click.Context, peer: str) -> None:
    """Close the link with PEER (its public key, hex)."""
    _call(ctx, "disconnect", peer=peer.lower())
    click.echo(f"disconnected {peer[:16]}")


@main.command("log-level")
@click.argument("level", type=click.Choice(["debug", "info", "warn", "error"]))
@click.pass_context
def log_level(ctx: click.Context, level: str) -> None:
    """Change the daemon's log level while it runs."""
    _call(ctx, "set_log_level", level=level)
    click.echo(f"log level is now {level}")


@main.command()
@click.option("--coordinator-config", "config_path", type=click.Path(path_type=Path),
              default=Path("coordinator.ini"), show_default=True,
              help="the coordinator's configuration (names the issuer key file)")
@click.option("--issuer-key", "issuer_key_file", type=click.Path(path_type=Path), default=None,
              help="the issuer key file itself, instead of --coordinator-config (an embedded "
                   "coordinator's: issuer.key next to its daemon's identity key)")
@click.option("--player", "player_id", type=click.IntRange(0, 2**32 - 1), required=True,
              help="the character's id")
@click.option("--account", "account_id", type=click.IntRange(0, 2**64 - 1), default=0,
              show_default=True)
@click.option("--key", "daemon_key", required=True,
              help="the daemon's public key (64 hex digits, as p2pctl status shows it)")
@click.option("--lifetime", type=click.FloatRange(1, 3600), default=600.0, show_default=True,
              help="seconds the token stays valid")
def token(config_path: Path, issuer_key_file: Path | None, player_id: int, account_id: int,
          daemon_key: str, lifetime: float) -> None:
    """Mint a connect token with the coordinator's issuer key (tests, small servers).

    A game server mints its own with its key; this one is for operators."""
    try:
        key = bytes.fromhex(daemon_key)
        if len(key) != 32:
            raise ValueError
    except ValueError:
        click.echo("p2pctl: --key must be 64 hex digits", err=True)
        sys.exit(EXIT_REFUSED)
    try:
        if issuer_key_file is not None:
            if not issuer_key_file.exists():  # never mint with a key made up on the spot
                raise SigningKeyFileError(f"{issuer_key_file}: no such issuer key file")
        else:
            config, _ = load_coordinator_config(config_path)
            issuer_key_file = config.server.issuer_key_file
        issuer = load_or_create_signing_key(issuer_key_file)
    except (ConfigError, SigningKeyFileError) as error:
        click.echo(f"p2pctl: {error}", err=True)
        sys.exit(EXIT_REFUSED)
    minted = mint_token(issuer, account_id=account_id, player_id=player_id, daemon_key=key,
                        lifetime=lifetime, now=time.time())
    click.echo(minted.hex())


@main.command("coordinator-status")
@click.option("--coordinator-config", "config_path", type=click.Path(path_type=Path),
              default=Path("coordinator.ini"), show_default=True,
              help="the coordinator's configuration (names its status file)")
@click.option("--json", "as_json", is_flag=True, help="the status file as it is")
@click.option("--graph", "graph_map", default=None, metavar="MAP",
              help="draw the mesh of this map instead (see --format and --out)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="dot", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None)
def coordinator_status(config_path: Path, as_json: bool, graph_map: str | None, fmt: str,
                       out: Path | None) -> None:
    """The operator's view of a coordinator: daemons per map with their links,
    relayed traffic, refusals and the latest reports from daemons (its status
    file, rewritten every few seconds while it runs); --graph MAP draws a map's
    mesh."""
    try:
        config, _ = load_coordinator_config(config_path)
        path = config.server.status_file
        text = path.read_text(encoding="utf-8")
        status = json.loads(text)
    except ConfigError as error:
        click.echo(f"p2pctl: {error}", err=True)
        sys.exit(EXIT_REFUSED)
    except (OSError, ValueError) as error:
        click.echo(f"p2pctl: no status of the coordinator ({error}); is it running?", err=True)
        sys.exit(EXIT_NO_DAEMON)
    mesh: dict[str, Any] = status.get("mesh", {})
    if graph_map is not None:
        if graph_map not in mesh:
            click.echo(f"p2pctl: no daemon on map {graph_map!r} (maps: "
                       f"{', '.join(mesh) or 'none'})", err=True)
            sys.exit(EXIT_REFUSED)
        _write_graph(mesh_dot(graph_map, mesh[graph_map]["listed"]), fmt, out)
        return
    if as_json:
        click.echo(text.strip())
        return
    age = time.time() - float(status.get("time", 0))
    click.echo(f"coordinator {status.get('udp')}  key {status.get('public_key')}  "
               f"(as of {age:.0f} s ago)")
    click.echo(f"  daemons   {status.get('daemons')} registered, maps {status.get('maps')}")
    relay = status.get("relay", {})
    click.echo(f"  relay     {relay.get('packets', 0)} packets, {relay.get('bytes', 0)} bytes, "
               f"dropped {relay.get('dropped', {})}")
    click.echo(f"  refused   {status.get('refused', {})}")
    if status.get("metrics"):
        click.echo(f"  metrics   {status['metrics']}")
    _print_mesh(mesh)
    reports = status.get("recent_reports", [])
    click.echo(f"  reports   {status.get('reports', 0)} received; latest:")
    for report in reports[-20:]:
        peer = f" peer {report['peer'][:16]}" if report.get("peer") else ""
        click.echo(f"    daemon {report['daemon']} (player {report['player']}) "
                   f"{report['severity']} {report['code']}{peer}: {report['detail']}")


def _print_mesh(mesh: dict[str, Any]) -> None:
    for name, entry in mesh.items():
        flag = "  AREA ON RELAY" if entry.get("area_relayed") else ""
        click.echo(f"  map {name}: {entry['daemons']} daemons, {entry['links']} links "
                   f"({entry['relayed_links']} relayed), relayed {entry['relayed_bytes']} "
                   f"bytes, {entry['reports']} reports, {entry['relay_fallback']} fell back "
                   f"to the relay{flag}")
        for daemon in entry["listed"]:
            where = f"({daemon['x']},{daemon['y']})" if daemon.get("x") is not None else "(-)"
            links = " ".join(f"{other}{'r' if relayed else ''}"
                             for other, relayed, _ in daemon["links"]) or "-"
            click.echo(f"    daemon {daemon['daemon']:>5} player {daemon['player']:>10} "
                       f"{daemon['address']:<21} {where:<10} links {links}  relayed "
                       f"{daemon['relayed_bytes']} B, {daemon['reports']} reports")
        hidden = entry["daemons"] - len(entry["listed"])
        if hidden > 0:
            click.echo(f"    ... and {hidden} more")


if __name__ == "__main__":
    main()
