"""The coordinator's configuration (p2pd.config.load_coordinator_config) and its unit."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from p2pd.config import ConfigError, CoordinatorServerSettings, load_coordinator_config
from p2pd.io.coordinator_server import coordinator_session_config
from tests.test_systemd_unit import _last, _parse_unit, systemd_analyze  # noqa: F401

REPOSITORY = Path(__file__).resolve().parents[1]
UNIT = REPOSITORY / "systemd" / "p2p-coordinator.service"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coordinator.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_repository_file_holds_the_defaults() -> None:
    config, warnings = load_coordinator_config(REPOSITORY / "coordinator.ini", environ={})
    assert warnings == ()
    defaults = CoordinatorServerSettings()
    server = config.server
    assert (server.listen_host, server.listen_port, server.view_range, server.max_daemons,
            server.certificate_lifetime, server.trusted_issuers) == (
        defaults.listen_host, defaults.listen_port, defaults.view_range, defaults.max_daemons,
        defaults.certificate_lifetime, defaults.trusted_issuers)
    assert server.key_file == REPOSITORY / "state" / "coordinator.key"  # next to the ini


def test_trusted_issuers_are_hex_keys(tmp_path: Path) -> None:
    keys = [bytes([i]) * 32 for i in (1, 2)]
    path = write(tmp_path, "[coordinator_server]\ntrusted_issuers = "
                 + ", ".join(k.hex() for k in keys) + "\n")
    config, _ = load_coordinator_config(path, environ={})
    assert config.server.trusted_issuers == tuple(keys)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("listen_port", "70000", "an integer from 0 to 65535"),
    ("view_range", "0", "an integer from 1 to 255"),
    ("certificate_lifetime", "90000", "at most 86400"),
    ("trusted_issuers", "abcd", "64 hex digits"),
    ("log_level", "loud", "one of"),
    ("relay_rate", "0", "greater than 0"),
    ("relay_rate", "1e9", "at most 100000"),
])
def test_bad_values_are_refused_naming_file_key_and_value(tmp_path: Path, key: str, value: str,
                                                         expected: str) -> None:
    path = write(tmp_path, f"[coordinator_server]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_coordinator_config(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: [coordinator_server] {key} = {value!r}: expected ")
    assert expected in message


def test_unknown_sections_and_keys_are_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "[coordinator_server]\nlisten_prot = 1\n[coordinater]\n")
    _, warnings = load_coordinator_config(path, environ={})
    assert any("listen_prot" in w and "listen_port" in w for w in warnings)
    assert any("[coordinater]" in w for w in warnings)


def test_systemd_directories_hold_keys_and_log_unless_the_file_names_them(
        tmp_path: Path) -> None:
    path = write(tmp_path, "[coordinator_server]\nsigning_key_file = /srv/keys/signing.key\n")
    environ = {"STATE_DIRECTORY": "/var/lib/p2p-coordinator",
               "LOGS_DIRECTORY": "/var/log/p2p-coordinator"}
    config, _ = load_coordinator_config(path, environ=environ)
    assert config.server.key_file == Path("/var/lib/p2p-coordinator/coordinator.key")
    assert config.server.issuer_key_file == Path("/var/lib/p2p-coordinator/issuer.key")
    assert config.server.signing_key_file == Path("/srv/keys/signing.key")
    assert config.server.status_file == Path("/var/lib/p2p-coordinator/status.json")
    assert config.log.file == Path("/var/log/p2p-coordinator/coordinator.log")


def test_the_unit_is_a_hardened_system_service() -> None:
    unit = _parse_unit(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert _last(service, "Type") == "notify"
    assert _last(service, "ExecStart") == (
        "/usr/local/bin/p2pd coordinator --config /etc/p2p-coordinator/coordinator.ini")
    for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "RestrictNamespaces": "yes", "MemoryDenyWriteExecute": "yes",
                       "StateDirectory": "p2p-coordinator", "LogsDirectory": "p2p-coordinator",
                       "CapabilityBoundingSet": ""}.items():
        assert _last(service, key) == value, key
    assert sorted(" ".join(service["RestrictAddressFamilies"]).split()) == [
        "AF_INET", "AF_INET6", "AF_UNIX"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verifies_the_unit(systemd_analyze: str,  # noqa: F811
                                           tmp_path: Path) -> None:
    # the copy runs a stub where /usr/local/bin/p2pd would be; everything else as shipped
    stub = tmp_path / "p2pd"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/usr/local/bin/p2pd", str(stub)),
                    encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYSTEMD_", "DBUS_"))}
    env["SYSTEMD_COLORS"] = "0"
    result = subprocess.run([systemd_analyze, "verify", "--man=no", str(unit)], check=False,
                            capture_output=True, text=True, env=env, timeout=120)
    output = (result.stdout + result.stderr).strip()
    if "Failed to initialize manager" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output}")
    about = [line for line in output.splitlines() if UNIT.name in line]
    assert result.returncode == 0 and about == [], output


def test_the_coordinator_server_sizes_its_sessions_for_max_daemons() -> None:
    config = coordinator_session_config(10_000)
    assert config.max_sessions >= 10_000
    # 10,000 daemons rekeying every 120 s is about 83 handshakes a second
    assert config.handshake_load_limit >= 10_000 / 120
