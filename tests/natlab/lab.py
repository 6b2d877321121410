"""The NAT lab: players behind real Linux NATs, built in network namespaces per test.

Topology of ``open_lab(NatKind.HOME, NatKind.SYMMETRIC)``: five namespaces (two
players, their two routers, the internet)::

    player a 10.1.0.2 --lan-- router a 203.0.113.2 --wan--+
             (host)        10.1.0.1 (NAT)                  |  203.0.113.1 (.5)
                                                       internet: 192.0.2.1, 192.0.2.2 coturn
    player b 10.2.0.2 --lan-- router b 203.0.113.6 --wan--+  (ports 3478, 3479),
                           10.2.0.1                          192.0.2.10 the coordinator's,
                                                             198.51.100.1-4 other hosts

The 'internet' namespace routes between the routers' WAN links and holds the
servers' addresses on its loopback; it knows no route to the private ranges.
Nothing connects to the machine's own namespace, so no packet leaves the lab.
Addresses come from the documentation ranges (RFC 5737) outside and private
ranges behind the NATs.

NAT kinds (:class:`NatKind`) are nftables rulesets on the router (the same
netfilter NAT that iptables' MASQUERADE uses):

- ``masquerade``: port-preserving source NAT, the Linux default. The mapping
  keeps the source port for every destination; only replies come back in
  (address- and port-dependent filtering); an unsolicited packet reaches the
  router itself, which answers ICMP port unreachable.
- ``home``: the same plus ``ct state new drop`` on the WAN side (input and
  forward), the usual home router: unsolicited packets vanish without an answer.
- ``full_cone``: endpoint-independent mapping and filtering: masquerade out,
  and every unsolicited UDP packet to the router DNATed to the player, port
  kept (the player is the router's "DMZ host").
- ``symmetric``: ``masquerade fully-random``: a new random port for every
  destination.
- ``upnp``: ``masquerade`` behind a forwarding firewall whose policy is drop
  (replies and the LAN go through), with miniupnpd (UPnP IGD, NAT-PMP, PCP on
  port 5351 of the router's LAN address) adding its forwarding rules. miniupnpd
  refuses to map while its WAN address is in a reserved range unless it learns
  by STUN that it is not behind another NAT, so this kind needs coturn.

coturn (``turnserver``) listens on 192.0.2.1 and 192.0.2.2, ports 3478 and
3479, so that it answers RFC 5780 CHANGE-REQUEST; relays from 192.0.2.1;
credentials are long-term users or the REST API's shared secret (:class:`TurnSettings`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tests.natlab import stun
from tests.natlab.netns import LabError, Netns, create, existing, run_command

PREFIX = "natlab"
TURN_ADDRESS = "192.0.2.1"
TURN_ALTERNATE_ADDRESS = "192.0.2.2"
TURN_PORT = 3478
TURN_ALTERNATE_PORT = 3479
COORDINATOR_ADDRESS = "192.0.2.10"
INTERNET_HOSTS = ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4")
PCP_PORT = 5351
MAX_SIDES = 60  # 203.0.113.0/24 in /30 WAN links, one per router

# program -> the Debian package that has it (scripts/test installs them as root)
PROGRAMS = {"ip": "iproute2", "nft": "nftables", "turnserver": "coturn",
            "miniupnpd": "miniupnpd-nftables", "conntrack": "conntrack", "tcpdump": "tcpdump"}


class NatKind(StrEnum):
    MASQUERADE = "masquerade"
    HOME = "home"
    FULL_CONE = "full_cone"
    SYMMETRIC = "symmetric"
    UPNP = "upnp"


def lab_unavailable() -> str | None:
    """Why the lab cannot run here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, nftables)"
    missing = [f"{program} ({package})" for program, package in PROGRAMS.items()
               if shutil.which(program) is None]
    if missing:
        return ("the NAT lab needs " + ", ".join(missing)
                + ": scripts/test installs them with apt-get when run as root")
    version = run_command(["miniupnpd", "--version"], check=False)
    if "nftables" not in version.stdout + version.stderr:
        return "the NAT lab needs miniupnpd's nftables flavour (Debian: miniupnpd-nftables)"
    return None


@dataclass(frozen=True)
class TurnSettings:
    """coturn's credentials: ``mode`` "long-term" (``user:password`` accounts) or
    "rest" (``use-auth-secret`` with ``secret``; :func:`tests.natlab.stun.rest_credentials`
    makes a username and password from it)."""

    mode: str = "long-term"
    users: tuple[tuple[str, str], ...] = (("p2pd", "lab-password"),)
    secret: str = "lab-shared-secret"
    realm: str = "natlab"


@dataclass(frozen=True)
class TurnServer:
    address: str
    alternate_address: str
    port: int
    alternate_port: int
    settings: TurnSettings

    @property
    def server(self) -> tuple[str, int]:
        return (self.address, self.port)


@dataclass(frozen=True)
class Side:
    """One player behind one NAT router."""

    name: str  # "a", "b"
    kind: NatKind
    host: Netns  # the player's machine
    router: Netns
    lan_ip: str  # the player's address
    gateway_ip: str  # the router's LAN address
    wan_ip: str  # the router's public address
    lan_prefix: str  # e.g. "10.1.0.0/24"


@dataclass
class Lab:
    """A built lab: see the module's docstring. Close it with :meth:`close` (or use
    :func:`open_lab`): every process in its namespaces stops and the namespaces go."""

    prefix: str
    workdir: Path
    internet: Netns
    sides: list[Side]
    turn: TurnServer | None = None
    namespaces: list[Netns] = field(default_factory=list)
    build_seconds: float = 0.0  # namespaces, links, rules, servers ready
    coturn: subprocess.Popen[bytes] | None = None
    miniupnpd: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    coordinator_address = COORDINATOR_ADDRESS
    internet_hosts = INTERNET_HOSTS

    @property
    def a(self) -> Side:
        return self.sides[0]

    @property
    def b(self) -> Side:
        return self.sides[1]

    def side(self, name: str) -> Side:
        return next(side for side in self.sides if side.name == name)

    # -- the NAT's state --------------------------------------------------------

    def set_udp_timeout(self, side: Side, seconds: int, stream: int | None = None) -> None:
        """Shorten the router's conntrack UDP timeouts (``nf_conntrack_udp_timeout``, and
        ``_stream`` for flows that saw replies; default: the same): idle mappings expire."""
        side.router.sysctl("net.netfilter.nf_conntrack_udp_timeout", seconds)
        side.router.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream",
                           seconds if stream is None else stream)

    def conntrack(self, side: Side) -> list[str]:
        """The router's UDP conntrack entries, one line each (``conntrack -L``)."""
        result = side.router.run("conntrack", "-L", "-p", "udp", check=False)
        return [line for line in result.stdout.splitlines() if line.startswith("udp")]

    def flush_conntrack(self, side: Side) -> None:
        side.router.run("conntrack", "-F", check=False)

    # -- servers ------------------------------------------------------------------

    def stop_turn(self) -> None:
        """Stop coturn (a TURN server that went down); the lab's addresses stay."""
        if self.coturn is not None and self.coturn.poll() is None:
            self.coturn.send_signal(signal.SIGTERM)
            try:
                self.coturn.wait(5)
            except subprocess.TimeoutExpired:
                self.coturn.kill()
                self.coturn.wait()

    @contextlib.contextmanager
    def capture(self, namespace: Netns, name: str, interface: str = "any",
                expression: str = "udp") -> Iterator[Path]:
        """tcpdump in ``namespace`` while the block runs; yields the pcap file's path
        (complete after the block; read it with :func:`capture_lines`)."""
        path = self.workdir / f"{name}.pcap"
        log = self.workdir / f"{name}.tcpdump.log"
        process = namespace.popen(["tcpdump", "-i", interface, "-n", "-U", "--immediate-mode",
                                   "-Z", "root", "-w", str(path), *expression.split()],
                                  log=log)
        _wait_for(lambda: "listening on" in log.read_text(errors="replace"), 5,
                  f"tcpdump in {namespace.name}", process, log)
        try:
            yield path
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- removal ------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process in the lab's namespaces, then remove the namespaces."""
        errors = []
        for namespace in reversed(self.namespaces):
            try:
                namespace.delete()
            except Exception as error:  # go on: remove the others
                errors.append(f"{namespace.name}: {error}")
        left = [name for name in existing() if name.startswith(self.prefix + "-")]
        if errors or left:
            raise LabError(f"lab {self.prefix} not fully removed: {errors} {left}")


_labs = itertools.count(1)


def capture_lines(path: Path) -> list[str]:
    """A capture file as tcpdump's one-line summaries (``-n``: numeric addresses)."""
    result = run_command(["tcpdump", "-n", "-r", str(path)], check=False)
    return [line for line in result.stdout.splitlines() if line.strip()]


def remove_stale_labs() -> None:
    """Remove labs whose test process died without cleaning up (its pid is in the name)."""
    for name in existing():
        match = re.fullmatch(rf"{PREFIX}(\d+)x\d+-\w+", name)
        if match is None:
            continue
        pid = int(match[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            Netns(name).delete()
        except PermissionError:
            pass


@contextlib.contextmanager
def open_lab(kind_a: NatKind, kind_b: NatKind | None = None, *, workdir: Path,
             turn: bool = True, turn_settings: TurnSettings | None = None,
             more: Sequence[NatKind] = ()) -> Iterator[Lab]:
    """Build a lab, yield it, remove it (also when the block fails).

    ``kind_a`` and ``kind_b``: the NAT of player a and player b (``kind_b=None``:
    one player only); ``more``: further players, each behind a router of its
    own (sides ``p2``, ``p3``...: ``lab.sides``), so that several pairs can run at
    once in one lab. ``turn``: start coturn (an ``upnp`` router needs it).
    ``workdir``: where configurations, logs and captures go (a test's tmp_path).

    The :class:`Lab` gives the namespaces (``lab.a.host``, ``lab.a.router``,
    ``lab.internet``), the addresses (``lab.a.lan_ip``, ``lab.a.wan_ip``,
    ``lab.turn.server``, ``lab.coordinator_address``, ``lab.internet_hosts``) and the
    means to act in them: ``Netns.popen`` (a process, stopped at the end),
    ``Netns.run``, ``Netns.udp`` and ``Netns.call`` (sockets and threads of the
    test process inside a namespace), ``Lab.capture`` (tcpdump),
    ``Lab.set_udp_timeout`` and ``Lab.conntrack`` (the router's NAT state),
    ``Lab.stop_turn``.
    """
    reason = lab_unavailable()
    if reason is not None:
        raise LabError(reason)
    remove_stale_labs()
    started = time.monotonic()
    prefix = f"{PREFIX}{os.getpid()}x{next(_labs)}"
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = [kind_a] if kind_b is None else [kind_a, kind_b, *more]
    if more and kind_b is None:
        raise LabError("open_lab(kind_a, more=...): name kind_b as well")
    if len(kinds) > MAX_SIDES:
        raise LabError(f"{len(kinds)} players: the lab's address plan holds {MAX_SIDES}")
    if NatKind.UPNP in kinds and not turn:
        raise LabError("an upnp router needs coturn: miniupnpd learns by STUN that its "
                       "reserved WAN address is not behind another NAT")
    lab = Lab(prefix=prefix, workdir=workdir, internet=Netns(f"{prefix}-inet"), sides=[])
    try:
        lab.internet = _namespace(lab, "inet")
        _build_internet(lab.internet)
        for index, kind in enumerate(kinds):
            lab.sides.append(_build_side(lab, index, kind))
        if turn:
            lab.turn, lab.coturn = _start_coturn(lab, turn_settings or TurnSettings())
        for side in lab.sides:
            if side.kind is NatKind.UPNP:
                lab.miniupnpd[side.name] = _start_miniupnpd(lab, side)
        lab.build_seconds = time.monotonic() - started
        yield lab
    finally:
        lab.close()


def _namespace(lab: Lab, role: str) -> Netns:
    namespace = create(f"{lab.prefix}-{role}")
    lab.namespaces.append(namespace)
    return namespace


def _build_internet(inet: Netns) -> None:
    inet.sysctl("net.ipv4.ip_forward", 1)
    for address in (TURN_ADDRESS, TURN_ALTERNATE_ADDRESS, COORDINATOR_ADDRESS,
                    *INTERNET_HOSTS):
        inet.ip("addr", "add", f"{address}/32", "dev", "lo")


def _build_side(lab: Lab, index: int, kind: NatKind) -> Side:
    name = "ab"[index] if index < 2 else f"p{index}"
    router = _namespace(lab, f"r{name}")
    host = _namespace(lab, f"h{name}")
    net = index + 1
    uplink = f"up{name}"
    wan_ip, inet_ip = f"203.0.113.{4 * index + 2}", f"203.0.113.{4 * index + 1}"
    lan_ip, gateway_ip = f"10.{net}.0.2", f"10.{net}.0.1"
    # veth pairs made straight inside the namespaces: nothing in the machine's own
    run_command(["ip", "link", "add", "wan", "netns", router.name, "type", "veth",
                 "peer", "name", uplink, "netns", lab.internet.name])
    run_command(["ip", "link", "add", "lan", "netns", router.name, "type", "veth",
                 "peer", "name", "eth0", "netns", host.name])
    lab.internet.ip("addr", "add", f"{inet_ip}/30", "dev", uplink)
    lab.internet.ip("link", "set", uplink, "up")
    router.ip("addr", "add", f"{wan_ip}/30", "dev", "wan")
    router.ip("addr", "add", f"{gateway_ip}/24", "dev", "lan")
    router.ip("link", "set", "wan", "up")
    router.ip("link", "set", "lan", "up")
    router.ip("route", "add", "default", "via", inet_ip)
    host.ip("addr", "add", f"{lan_ip}/24", "dev", "eth0")
    host.ip("link", "set", "eth0", "up")
    host.ip("route", "add", "default", "via", gateway_ip)
    router.sysctl("net.ipv4.ip_forward", 1)
    router.run("nft", "-f", "-", input_text=nat_ruleset(kind, lan_ip))
    return Side(name=name, kind=kind, host=host, router=router, lan_ip=lan_ip,
                gateway_ip=gateway_ip, wan_ip=wan_ip, lan_prefix=f"10.{net}.0.0/24")


def nat_ruleset(kind: NatKind, lan_ip: str) -> str:
    """The router's nftables ruleset for ``kind`` (WAN interface ``wan``, LAN ``lan``)."""
    random = " fully-random" if kind is NatKind.SYMMETRIC else ""
    chains = [f"""
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade{random}
  }}"""]
    if kind is NatKind.HOME:
        for hook in ("input", "forward"):
            chains.append(f"""
  chain {hook} {{
    type filter hook {hook} priority filter; policy accept;
    iifname "wan" ct state new drop
  }}""")
    if kind is NatKind.FULL_CONE:
        chains.append(f"""
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan" meta l4proto udp dnat to {lan_ip}
  }}""")
    ruleset = "table ip natlab {" + "".join(chains) + "\n}\n"
    if kind is NatKind.UPNP:
        # the chains miniupnpd's Debian nftables package expects (its own init script
        # is broken): table inet filter, chains miniupnpd, prerouting_miniupnpd and
        # postrouting_miniupnpd, jumped to from base chains
        ruleset += """
table inet filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" accept
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"""
    return ruleset


def _wait_for(ready: Callable[[], bool], timeout: float, what: str,
              process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise LabError(f"{what} exited with {process.returncode}: "
                           f"{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise LabError(f"{what} not ready after {timeout} s: "
                           f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.01)


def _start_coturn(lab: Lab, settings: TurnSettings) -> tuple[TurnServer, subprocess.Popen[bytes]]:
    directory = lab.workdir / "coturn"
    directory.mkdir(exist_ok=True)
    lines = [
        f"listening-ip={TURN_ADDRESS}", f"listening-ip={TURN_ALTERNATE_ADDRESS}",
        f"listening-port={TURN_PORT}", f"alt-listening-port={TURN_ALTERNATE_PORT}",
        f"relay-ip={TURN_ADDRESS}", "min-port=49152", "max-port=49999",
        f"realm={settings.realm}", f"userdb={directory / 'turndb'}",
        f"pidfile={directory / 'turnserver.pid'}", "log-file=stdout", "simple-log",
        "no-cli", "no-tls", "no-dtls", "no-software-attribute", "fingerprint", "verbose",
    ]
    if settings.mode == "long-term":
        lines.append("lt-cred-mech")
        lines += [f"user={user}:{password}" for user, password in settings.users]
    elif settings.mode == "rest":
        lines += ["use-auth-secret", f"static-auth-secret={settings.secret}"]
    else:
        raise LabError(f"TurnSettings.mode = {settings.mode!r}: expected long-term or rest")
    config = directory / "turnserver.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = directory / "turnserver.log"
    process = lab.internet.popen(["turnserver", "-c", str(config)], log=log)
    probe = lab.internet.udp()
    probe.settimeout(0.05)

    def answers() -> bool:
        for server in ((TURN_ADDRESS, TURN_PORT), (TURN_ALTERNATE_ADDRESS, TURN_ALTERNATE_PORT)):
            request, _ = stun.binding_request()
            try:
                stun.exchange(probe, request, server)
            except TimeoutError:
                return False
        return True

    try:
        _wait_for(answers, 10, "coturn", process, log)
    finally:
        probe.close()
    server = TurnServer(TURN_ADDRESS, TURN_ALTERNATE_ADDRESS, TURN_PORT, TURN_ALTERNATE_PORT,
                        settings)
    return server, process


def _start_miniupnpd(lab: Lab, side: Side) -> subprocess.Popen[bytes]:
    directory = lab.workdir / f"miniupnpd-{side.name}"
    directory.mkdir(exist_ok=True)
    config = directory / "miniupnpd.conf"
    config.write_text("\n".join([
        "ext_ifname=wan", "listening_ip=lan", "http_port=0",
        "enable_natpmp=yes", "enable_upnp=yes", "secure_mode=yes", "system_uptime=yes",
        # lifetimes as short as a test asks (PCP clamps to min_lifetime, 120 s by default)
        "min_lifetime=1", "max_lifetime=86400",
        f"uuid={uuid.uuid4()}",
        "ext_perform_stun=yes", f"ext_stun_host={TURN_ADDRESS}", f"ext_stun_port={TURN_PORT}",
        "upnp_table_name=filter", "upnp_nat_table_name=filter",
        f"lease_file={directory / 'leases'}",
        f"allow 1024-65535 {side.lan_prefix} 1024-65535",
        "deny 0-65535 0.0.0.0/0 0-65535", "",
    ]), encoding="utf-8")
    log = directory / "miniupnpd.log"
    process = side.router.popen(["miniupnpd", "-d", "-f", str(config),
                                 "-P", str(directory / "miniupnpd.pid")], log=log)

    def ready() -> bool:
        text = log.read_text(errors="replace")
        if "Port forwarding is now disabled" in text:
            raise LabError(f"miniupnpd disabled port forwarding: {text[-2000:]}")
        return "Port forwarding is now enabled" in text and "Listening for NAT-PMP" in text

    _wait_for(ready, 10, "miniupnpd", process, log)
    return process

