"""The daemon's configuration: ai_client.ini, its defaults and every refusal."""

from __future__ import annotations

import configparser
import dataclasses
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from p2pd.config import (
    ConfigError,
    CoordinatorSettings,
    DaemonConfig,
    IdentitySettings,
    IpcSettings,
    LogLevel,
    LogSettings,
    MetricsSettings,
    NatSettings,
    P2PSettings,
    PortMappingSettings,
    SyncSettings,
    default_runtime_dir,
    default_unix_socket,
    load_config,
)
from p2pd.session.config import EncryptionLevel, SessionConfig

REPOSITORY_INI = Path(__file__).resolve().parent.parent / "ai_client.ini"
SETTINGS = (P2PSettings, IdentitySettings, IpcSettings, LogSettings, CoordinatorSettings,
            SyncSettings, PortMappingSettings, MetricsSettings, NatSettings)


def write_ini(directory: Path, text: str, name: str = "ai_client.ini") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def raw_ini(path: Path) -> configparser.ConfigParser:
    """The file as written: no inline comment stripping."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    return parser


# ------------------------------------------------------------ the repository's ini


def test_repository_ini_loads_without_warnings_and_equals_the_defaults() -> None:
    loaded = load_config(REPOSITORY_INI)
    assert loaded.warnings == ()
    here = REPOSITORY_INI.parent
    expected = DaemonConfig(
        source=REPOSITORY_INI,
        identity=IdentitySettings(key_file=here / IdentitySettings().key_file),
        log=LogSettings(file=here / LogSettings().file),
    )
    assert loaded.config == expected


def test_repository_ini_documents_every_setting_with_an_inline_comment() -> None:
    parser = raw_ini(REPOSITORY_INI)
    assert parser.sections() == [cls.SECTION for cls in SETTINGS]
    for cls in SETTINGS:
        keys = list(parser[cls.SECTION])
        assert keys == [f.name for f in dataclasses.fields(cls)]
        for key in keys:
            raw = parser[cls.SECTION][key]
            assert re.fullmatch(r"(?:\S+\s+)?#\s\S.*", raw), f"[{cls.SECTION}] {key}: {raw!r}"


def test_every_inline_comment_is_accepted(tmp_path: Path) -> None:
    text = REPOSITORY_INI.read_text(encoding="utf-8")
    without_comments = re.sub(r"(?m)^(\w+=\S*)\s+#.*$", r"\1", text)
    assert not re.search(r"(?m)^\w.*[#;]", without_comments)
    semicolons = re.sub(r"(?m)^(\w+=\S*\s+)#", r"\1;", text)
    tight = re.sub(r"(?m)^(\w+=\S*)\s+#", r"\1 #", text)
    reference = load_config(REPOSITORY_INI).config
    for variant in (without_comments, semicolons, tight):
        path = write_ini(tmp_path, variant)
        loaded = load_config(path)
        assert loaded.warnings == ()
        assert dataclasses.replace(loaded.config, source=REPOSITORY_INI) == dataclasses.replace(
            reference,
            identity=IdentitySettings(key_file=tmp_path / "state/identity.key"),
            log=LogSettings(file=tmp_path / "logs/p2p.log"),
        )


def test_p2p_defaults_are_those_of_the_specification() -> None:
    p2p = P2PSettings()
    assert p2p.enabled is True
    assert p2p.max_peers == 10
    assert p2p.bandwidth_limit == 50
    assert p2p.encryption_level is EncryptionLevel.HIGH
    assert p2p.nat_traversal is True
    assert p2p.port_range == (7000, 7100)
    assert p2p.discovery_interval == 30
    assert p2p.handshake_timeout == 5
    assert p2p.inactive_timeout == 60
    assert p2p.position_update_rate == 5
    assert p2p.effect_update_rate == 10
    assert p2p.compression_threshold == 100
    assert p2p.log_level is LogLevel.INFO


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    loaded = load_config(write_ini(tmp_path, "; nothing set\n"))
    assert loaded.warnings == ()
    assert loaded.config.p2p == P2PSettings()
    assert loaded.config.ipc == IpcSettings()
    assert loaded.config.coordinator.address is None


# ----------------------------------------------------------------- accepted values


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("YES", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("off", False),
        ("0", False),
    ],
)
def test_boolean_spellings(tmp_path: Path, text: str, value: bool) -> None:
    path = write_ini(tmp_path, f"[P2P]\nnat_traversal = {text}\n[log]\nconsole = {text}\n")
    config = load_config(path).config
    assert config.p2p.nat_traversal is value
    assert config.log.console is value


def test_values_and_key_names_are_read_leniently(tmp_path: Path) -> None:
    path = write_ini(
        tmp_path,
        "[P2P]\nMAX_PEERS = 64\nEncryption_Level = Low\nlog_level = WARNING\n"
        "port_range = 7000 - 7000\nposition_update_rate = 0.5\neffect_update_rate = 60\n"
        "handshake_timeout = 2.5\ncompression_threshold = 0\n"
        "[ipc]\ntcp_port = 0\n[coordinator]\naddress = coord.example.org:7400\n"
        f"PUBLIC_KEY = {'Ab' * 32}\ntoken_file = token.hex\n",
    )
    config = load_config(path).config
    assert config.p2p.max_peers == 64
    assert config.p2p.encryption_level is EncryptionLevel.LOW
    assert config.p2p.log_level is LogLevel.WARN
    assert config.p2p.port_range == (7000, 7000)
    assert config.p2p.position_update_rate == 0.5
    assert config.p2p.effect_update_rate == 60.0
    assert config.p2p.handshake_timeout == 2.5
    assert config.p2p.compression_threshold == 0
    assert config.ipc.tcp_port == 0
    assert config.coordinator.address == "coord.example.org:7400"
    assert config.coordinator.public_key == bytes([0xAB] * 32)
    assert config.coordinator.token_file == tmp_path / "token.hex"


def test_a_coordinator_address_needs_its_key_and_the_token_may_come_later(
        tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[coordinator]\naddress = coord.example.org:7400\n")
    with pytest.raises(ConfigError, match="expected public_key as well"):
        load_config(path)
    path = write_ini(tmp_path, "[coordinator]\naddress = coord.example.org:7400\n"
                               f"public_key = {'ab' * 32}\n")
    coordinator = load_config(path).config.coordinator
    assert coordinator.token_file is None and not coordinator.runs_embedded


def test_without_an_address_the_daemon_runs_an_embedded_coordinator_by_default(
        tmp_path: Path) -> None:
    coordinator = load_config(write_ini(tmp_path, "[coordinator]\n")).config.coordinator
    assert coordinator.runs_embedded
    assert (coordinator.embedded_host, coordinator.embedded_port) == ("0.0.0.0", 7400)
    assert coordinator.player_id is None
    path = write_ini(tmp_path, "[coordinator]\nembedded = off\n")
    assert not load_config(path).config.coordinator.runs_embedded
    path = write_ini(tmp_path, "[coordinator]\nembedded_host = 192.168.1.20\n"
                               "embedded_port = 0\nplayer_id = 4294967295\n")
    coordinator = load_config(path).config.coordinator
    assert (coordinator.embedded_host, coordinator.embedded_port) == ("192.168.1.20", 0)
    assert coordinator.player_id == 2**32 - 1


def test_an_address_turns_the_embedded_coordinator_off_and_takes_no_player_id(
        tmp_path: Path) -> None:
    given = (f"[coordinator]\naddress = 10.0.0.1:7400\npublic_key = {'ab' * 32}\n"
             "token_file = token.hex\n")
    assert not load_config(write_ini(tmp_path, given)).config.coordinator.runs_embedded
    path = write_ini(tmp_path, given + "player_id = 7\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: [coordinator] player_id = 7: expected no player_id with an address (the "
        "connect token in token_file names the player; player_id is for the embedded "
        "coordinator only)")


def test_a_player_id_needs_the_embedded_coordinator(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[coordinator]\nembedded = false\nplayer_id = 7\n")
    with pytest.raises(ConfigError, match=r"player_id = 7: expected no player_id with "
                                          r"embedded = false"):
        load_config(path)


def test_the_embedded_coordinator_port_stays_out_of_the_p2p_port_range(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[P2P]\nport_range = 7000-7500\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: [coordinator] embedded_port = 7400: expected a port outside [P2P] "
        "port_range = 7000-7500 (the embedded coordinator needs a socket of its own), "
        "or 0 for any free port")
    for fix in ("[coordinator]\nembedded_port = 0\n", "[coordinator]\nembedded = no\n",
                "[coordinator]\nembedded_port = 7501\n"):
        assert load_config(write_ini(tmp_path, "[P2P]\nport_range = 7000-7500\n" + fix))


def test_log_levels() -> None:
    assert LogLevel("warning") is LogLevel.WARN
    assert LogLevel("ERROR") is LogLevel.ERROR
    assert [level.logging_level for level in LogLevel] == [
        logging.DEBUG,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
    ]


# ------------------------------------------------------------------ refused values

BAD_VALUES = [
    ("P2P", "enabled", "maybe", "true/false"),
    ("P2P", "nat_traversal", "2", "true/false"),
    ("P2P", "max_peers", "ten", "an integer from 1 to 64"),
    ("P2P", "max_peers", "0", "an integer from 1 to 64"),
    ("P2P", "max_peers", "65", "an integer from 1 to 64"),
    ("P2P", "max_peers", "-1", "an integer from 1 to 64"),
    ("P2P", "max_peers", "1.5", "an integer from 1 to 64"),
    ("P2P", "max_peers", "", "an integer from 1 to 64"),
    ("P2P", "bandwidth_limit", "0", "an integer from 12 to 100000"),
    ("P2P", "bandwidth_limit", "100001", "an integer from 12 to 100000"),
    ("P2P", "bandwidth_limit", "50KB", "an integer from 12 to 100000"),
    ("P2P", "bandwidth_limit", "11", "an integer from 12 to 100000"),
    ("P2P", "encryption_level", "ultra", "one of low, medium, high"),
    ("P2P", "port_range", "7100-7000", "LO-HI with 1 <= LO <= HI <= 65535"),
    ("P2P", "port_range", "0-100", "LO-HI"),
    ("P2P", "port_range", "7000-65536", "LO-HI"),
    ("P2P", "port_range", "7000", "LO-HI"),
    ("P2P", "port_range", "a-b", "LO-HI"),
    ("P2P", "discovery_interval", "0", "a number greater than 0"),
    ("P2P", "discovery_interval", "-30", "a number greater than 0"),
    ("P2P", "discovery_interval", "soon", "a number greater than 0"),
    ("P2P", "discovery_interval", "nan", "a number greater than 0"),
    ("P2P", "discovery_interval", "inf", "a number greater than 0"),
    ("P2P", "handshake_timeout", "0", "a number greater than 0"),
    ("P2P", "inactive_timeout", "-60", "a number greater than 0"),
    ("P2P", "position_update_rate", "0", "a number greater than 0 and at most 60"),
    ("P2P", "position_update_rate", "61", "a number greater than 0 and at most 60"),
    ("P2P", "effect_update_rate", "60.5", "a number greater than 0 and at most 60"),
    ("P2P", "effect_update_rate", "fast", "a number greater than 0 and at most 60"),
    ("P2P", "compression_threshold", "-1", "an integer from 0 to 65536"),
    ("P2P", "compression_threshold", "65537", "an integer from 0 to 65536"),
    ("P2P", "log_level", "verbose", "one of debug, info, warn, error"),
    ("identity", "key_file", "", "a file path"),
    ("ipc", "tcp_host", "local host", "a host name or IP address"),
    ("ipc", "tcp_port", "65536", "an integer from 0 to 65535"),
    ("ipc", "tcp_port", "-1", "an integer from 0 to 65535"),
    ("ipc", "tcp_port", "http", "an integer from 0 to 65535"),
    ("ipc", "max_clients", "0", "an integer of at least 1"),
    ("ipc", "max_frame_bytes", "1023", "an integer from 1024 to 16777216"),
    ("ipc", "max_frame_bytes", "16777217", "an integer from 1024 to 16777216"),
    ("ipc", "client_queue_limit", "0", "an integer of at least 1"),
    ("log", "file", "", "a file path"),
    ("log", "max_bytes", "4095", "an integer of at least 4096"),
    ("log", "backups", "101", "an integer from 0 to 100"),
    ("log", "backups", "-1", "an integer from 0 to 100"),
    ("log", "console", "sometimes", "true/false"),
    ("coordinator", "address", "two words", "an address without spaces"),
    ("coordinator", "embedded", "perhaps", "true/false"),
    ("coordinator", "embedded_host", "lan party", "a host name or IP address"),
    ("coordinator", "embedded_host", "lan.local", "an IPv4 address"),
    ("coordinator", "embedded_host", "::", "an IPv4 address"),
    ("coordinator", "embedded_port", "65536", "an integer from 0 to 65535"),
    ("coordinator", "player_id", "4294967296", "an integer from 0 to 4294967295, or nothing"),
    ("coordinator", "player_id", "-1", "an integer from 0 to 4294967295, or nothing"),
    ("coordinator", "player_id", "hero", "an integer from 0 to 4294967295, or nothing"),
    ("port_mapping", "enabled", "auto", "true/false"),
    ("port_mapping", "protocols", "pcp,igd", "one or more of pcp, natpmp, upnp"),
    ("port_mapping", "protocols", "pcp,pcp", "each once"),
    ("port_mapping", "protocols", ",", "one or more of pcp, natpmp, upnp"),
    ("port_mapping", "lifetime", "1", "an integer from 2 to 86400"),
    ("port_mapping", "gateway", "router.lan", "an IPv4 address, or nothing"),
    ("port_mapping", "retry_interval", "0", "a number greater than 0"),
]


def test_port_mapping_settings_are_read(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[port_mapping]\nprotocols = UPnP, pcp\nlifetime = 60\n"
                               "gateway = 10.1.0.1\nretry_interval = 5\n")
    settings = load_config(path).config.port_mapping
    assert settings == PortMappingSettings(enabled=True, protocols=("upnp", "pcp"),
                                           lifetime=60, gateway="10.1.0.1",
                                           retry_interval=5.0)


@pytest.mark.parametrize(("section", "key", "value", "expected"), BAD_VALUES)
def test_bad_values_are_refused_with_file_key_and_value(
    tmp_path: Path, section: str, key: str, value: str, expected: str
) -> None:
    path = write_ini(tmp_path, f"[{section}]\n{key} = {value}   ; the culprit\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: [{section}] {key} = {value!r}: expected ")
    assert expected in message


def test_the_message_has_the_documented_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_ini(tmp_path, "[P2P]\nencryption_level = ultra\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(Path("ai_client.ini"))
    assert str(caught.value) == (
        "ai_client.ini: [P2P] encryption_level = 'ultra': expected one of low, medium, high"
    )


@pytest.mark.parametrize(
    ("handshake", "inactive"), [("10", "3"), ("60", None), (None, "5"), ("7.5", "7.5")]
)
def test_handshake_timeout_must_be_below_inactive_timeout(
    tmp_path: Path, handshake: str | None, inactive: str | None
) -> None:
    lines = ["[P2P]"]
    if handshake is not None:
        lines.append(f"handshake_timeout = {handshake}")
    if inactive is not None:
        lines.append(f"inactive_timeout = {inactive}")
    path = write_ini(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: [P2P] handshake_timeout = ")
    assert "inactive_timeout" in message
    for value in (handshake, inactive):
        if value is not None:
            assert value in message


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("max_peers = 3\n", "no section header"),
        ("[P2P]\nthis line has no equals sign\n", "parsing errors"),
        ("[P2P]\nmax_peers = 3\nMax_Peers = 4\n", "already exists"),
        ("[P2P]\nmax_peers = 3\n[P2P]\nenabled = true\n", "already exists"),
        ("[P2P]\nmax_peers = 3\n  4\n", "an integer from 1 to 64"),
    ],
)
def test_unparsable_files_are_refused(tmp_path: Path, text: str, detail: str) -> None:
    path = write_ini(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(detail)) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ai_client.ini"
    path.write_bytes(b"[P2P]\nlog_level = \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "ai_client.ini"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_config(tmp_path)


def test_settings_built_directly_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=re.escape("[P2P] max_peers = 0: expected")):
        P2PSettings(max_peers=0)
    with pytest.raises(ValueError, match="inactive_timeout"):
        P2PSettings(handshake_timeout=60.0)
    with pytest.raises(ConfigError, match=re.escape("[ipc] tcp_port = 70000")):
        IpcSettings(tcp_port=70000)
    with pytest.raises(ConfigError, match="max_clients"):
        IpcSettings(max_clients=True)


# ------------------------------------------------------------------------- warnings


def test_unknown_sections_and_keys_warn(tmp_path: Path) -> None:
    path = write_ini(
        tmp_path,
        "[DEFAULT]\nmax_peers = 3\n"
        "[P2P]\nmax_peer = 3\nmax_peers = 12\n"
        "[p2p]\nenabled = false\n"
        "[graphics]\nfps = 60\n",
    )
    loaded = load_config(path)
    assert loaded.config.p2p == P2PSettings(max_peers=12)
    assert all(warning.startswith(f"{path}: ") for warning in loaded.warnings)
    text = "\n".join(loaded.warnings)
    assert "[P2P] unknown key 'max_peer' ignored (did you mean 'max_peers'?)" in text
    assert "unknown section [DEFAULT]" in text
    assert (
        "unknown section [p2p] ignored (section names are case-sensitive: did you mean [P2P]?)"
        in text
    )
    assert "unknown section [graphics]" in text
    assert len(loaded.warnings) == 4


@pytest.mark.parametrize(
    ("host", "warns"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("192.168.1.20", True),
    ],
)
def test_a_control_port_off_loopback_warns(tmp_path: Path, host: str, warns: bool) -> None:
    loaded = load_config(write_ini(tmp_path, f"[ipc]\ntcp_host = {host}\n"))
    assert loaded.config.ipc.tcp_host == host
    assert bool(loaded.warnings) is warns
    if warns:
        assert "[ipc] tcp_host" in loaded.warnings[0] and host in loaded.warnings[0]


# ---------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_ini_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    write_ini(
        conf,
        "[identity]\nkey_file = keys/id.key\n"
        "[ipc]\nruntime_dir = run\nunix_socket =\n"
        "[log]\nfile = ../logs/p2p.log\n",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/ai_client.ini")).config
    assert config.source == conf / "ai_client.ini"
    assert config.identity.key_file == conf / "keys" / "id.key"
    assert config.ipc.runtime_dir == conf / "run"
    assert config.ipc.unix_socket == default_unix_socket(conf / "run")
    assert config.log.file == conf / ".." / "logs" / "p2p.log"
    for path in (config.source, config.identity.key_file, config.ipc.runtime_dir, config.log.file):
        assert path.is_absolute()


def test_absolute_paths_stay(tmp_path: Path) -> None:
    socket = tmp_path / "elsewhere" / "p.sock"
    key = tmp_path / "keys" / "id.key"
    conf = tmp_path / "conf"
    conf.mkdir()
    path = write_ini(conf, f"[identity]\nkey_file = {key}\n[ipc]\nunix_socket = {socket}\n")
    config = load_config(path).config
    assert config.identity.key_file == key
    assert config.ipc.unix_socket == socket
    assert config.ipc.runtime_dir == default_runtime_dir()


def test_default_runtime_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_runtime_dir() == tmp_path / "p2pd"
    assert default_unix_socket(tmp_path / "p2pd") == tmp_path / "p2pd" / "p2pd.sock"
    assert IpcSettings().unix_socket == tmp_path / "p2pd" / "p2pd.sock"


@pytest.mark.skipif(os.name != "posix", reason="POSIX fallback")
@pytest.mark.parametrize("xdg", [None, "", "relative/dir"])
def test_default_runtime_dir_without_xdg(monkeypatch: pytest.MonkeyPatch, xdg: str | None) -> None:
    if xdg is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
    assert default_runtime_dir() == Path(f"/tmp/p2pd-{os.getuid()}")


def test_default_runtime_dir_on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))
    assert default_runtime_dir() == tmp_path / "p2pd"
    assert default_unix_socket(tmp_path / "p2pd") is None


# -------------------------------------------------------------------- session core


def test_session_config_maps_the_four_session_settings(tmp_path: Path) -> None:
    path = write_ini(
        tmp_path,
        "[P2P]\nhandshake_timeout = 2.5\ninactive_timeout = 30\n"
        "encryption_level = low\ncompression_threshold = 5000\n",
    )
    session = load_config(path).config.session_config()
    assert session == dataclasses.replace(
        SessionConfig(),
        handshake_timeout=2.5,
        inactive_timeout=30.0,
        encryption_level=EncryptionLevel.LOW,
        compression_threshold=5000,
        zstd_threshold=5000,  # kept >= compression_threshold, as the session core needs
        send_rate=50 * 1024,  # bandwidth_limit, KB/s
        total_send_rate=250 * 1024,  # total_bandwidth_limit
    )


def test_total_bandwidth_limit_is_at_least_the_per_peer_limit(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[P2P]\nbandwidth_limit = 50\ntotal_bandwidth_limit = 40\n")
    with pytest.raises(ConfigError, match="total_bandwidth_limit at least bandwidth_limit"):
        load_config(path)


def test_default_session_config_is_the_session_core_default() -> None:
    # the session core has no bandwidth cap of its own; the daemon's come from spec 7
    expected = dataclasses.replace(SessionConfig(), send_rate=50 * 1024,
                                   total_send_rate=250 * 1024)
    assert DaemonConfig(source=REPOSITORY_INI).session_config() == expected
    assert load_config(REPOSITORY_INI).config.session_config() == expected


def test_systemd_service_directories_fill_unset_paths(tmp_path: Path) -> None:
    ini = tmp_path / "ai_client.ini"
    ini.write_text("[log]\nfile = /var/tmp/explicit.log\n")
    environ = {"STATE_DIRECTORY": "/home/p/.local/state/p2pd",
               "LOGS_DIRECTORY": "/home/p/.local/state/log/p2pd",
               "RUNTIME_DIRECTORY": "/run/user/1000/p2pd:/ignored"}
    config = load_config(ini, environ).config
    assert config.identity.key_file == Path("/home/p/.local/state/p2pd/identity.key")
    assert config.log.file == Path("/var/tmp/explicit.log")  # the file's own choice wins
    assert config.ipc.runtime_dir == Path("/run/user/1000/p2pd")
    assert config.ipc.unix_socket in (Path("/run/user/1000/p2pd/p2pd.sock"), None)
    plain = load_config(ini, {}).config
    assert plain.identity.key_file == tmp_path / "state" / "identity.key"


def test_nat_section(tmp_path: Path) -> None:
    ini = tmp_path / "ai_client.ini"
    ini.write_text("[nat]\nstun_servers = 192.0.2.1:3478, stun.example.net:3478\n"
                   "turn_server = 192.0.2.1:3478\nturn_username = alice\nturn_secret = s3cret\n"
                   "punch_ttl = 3\n")
    nat = load_config(ini).config.nat
    assert nat.stun_servers == ("192.0.2.1:3478", "stun.example.net:3478")
    assert (nat.turn_server, nat.turn_username, nat.turn_secret, nat.punch_ttl) == (
        "192.0.2.1:3478", "alice", "s3cret", 3)


@pytest.mark.parametrize(("text", "expected"), [
    ("stun_servers = 192.0.2.1", "stun_servers"),
    ("turn_server = 192.0.2.1:3478", "turn_username and turn_password, or turn_secret"),
    ("turn_server = 192.0.2.1:3478\nturn_secret = a\nturn_password = b", "one of them"),
    ("punch_ttl = 300", "punch_ttl"),
])
def test_nat_section_refuses(tmp_path: Path, text: str, expected: str) -> None:
    ini = tmp_path / "ai_client.ini"
    ini.write_text(f"[nat]\n{text}\n")
    with pytest.raises(ConfigError, match=expected):
        load_config(ini)
