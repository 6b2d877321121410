"""systemd/p2pd.service: its key settings, and `systemd-analyze verify --user` on it.

The verify test needs systemd's tools. Where `systemd-analyze` is missing and the test
runs as root on a Debian-like system, it installs them with
``apt-get install -y --no-install-recommends systemd`` (that package does not replace
the init system; systemd-sysv would). It never upgrades or replaces an installed
systemd, and skips, saying why, when the tools cannot be had or cannot run.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "p2pd.service"
INSTALL = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "systemd"]


def _parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values in order (a key may repeat, as in systemd)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=VALUE line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _last(section: dict[str, list[str]], key: str) -> str:
    assert key in section, f"{key}= is missing"
    return section[key][-1]


def test_unit_service_settings() -> None:
    unit = _parse_unit(UNIT.read_text(encoding="utf-8"))
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert _last(service, "Type") == "notify"
    assert _last(service, "NotifyAccess") == "main"
    assert _last(service, "ExecStart") == (
        "%h/.local/bin/p2pd run --config %h/.config/p2pd/ai_client.ini"
    )
    assert _last(service, "Restart") == "on-failure"
    assert re.fullmatch(r"\d+s", _last(service, "RestartSec"))
    assert re.fullmatch(r"\d+s", _last(service, "TimeoutStopSec"))
    assert _last(service, "RuntimeDirectory") == "p2pd"
    assert _last(service, "StateDirectory") == "p2pd"
    assert _last(service, "LogsDirectory") == "p2pd"
    # A user unit: no switching identity, which only the system manager can do.
    assert "User" not in service
    assert "Group" not in service
    assert unit["Install"]["WantedBy"] == ["default.target"]


def test_unit_sandboxing() -> None:
    service = _parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        # The user manager sets up mount namespaces only inside a user namespace.
        "PrivateUsers": "yes",
        "PrivateTmp": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes",
    }
    for key, value in expected.items():
        assert _last(service, key) == value, key
    families = " ".join(service["RestrictAddressFamilies"]).split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["ReadWritePaths"], "ReadWritePaths= is missing"


def _apt_candidate() -> tuple[str, str]:
    """(installed, candidate) versions of the systemd package, per apt-cache policy."""
    policy = subprocess.run(
        ["apt-cache", "policy", "systemd"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    installed = re.search(r"Installed:\s*(\S+)", policy)
    candidate = re.search(r"Candidate:\s*(\S+)", policy)
    return (
        installed.group(1) if installed else "(none)",
        candidate.group(1) if candidate else "(none)",
    )


def _install_systemd() -> str:
    """Install Debian's systemd package (tools only; init untouched), or skip saying why."""
    if not sys.platform.startswith("linux"):
        pytest.skip("systemd-analyze exists on Linux only")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "systemd-analyze is not on PATH and this is not root with apt-get "
            f"(install it with: {' '.join(INSTALL)})"
        )
    installed, candidate = _apt_candidate()
    if installed != "(none)":
        pytest.skip(
            f"the systemd package is installed ({installed}) but systemd-analyze is not on "
            "PATH; not touching an installed systemd"
        )
    if candidate == "(none)":
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True, timeout=600)
        installed, candidate = _apt_candidate()
    if candidate == "(none)":
        pytest.skip("apt knows no systemd package to install (apt-cache policy systemd)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    dry = subprocess.run(
        [INSTALL[0], "-s", *INSTALL[1:]],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    removals = [line for line in dry.stdout.splitlines() if line.startswith("Remv ")]
    if dry.returncode != 0 or removals:
        pytest.skip(
            "installing systemd here is not safe: "
            + ("; ".join(removals) or dry.stderr.strip()[-500:])
        )
    done = subprocess.run(
        INSTALL, check=False, capture_output=True, text=True, env=env, timeout=900
    )
    if done.returncode != 0:
        pytest.skip(
            f"{' '.join(INSTALL)} failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("the systemd package installed no systemd-analyze on PATH")
    return found


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    return shutil.which("systemd-analyze") or _install_systemd()


def _verify(analyze: str, unit_text: str, tmp_path: Path) -> tuple[int, str]:
    """`systemd-analyze verify --user` on a copy of the unit, with a fake home holding
    the ExecStart binary (a stub) and a private runtime directory."""
    home = tmp_path / "home"
    binary = home / ".local" / "bin" / "p2pd"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    config = home / ".config" / "p2pd" / "ai_client.ini"
    config.parent.mkdir(parents=True)
    config.write_text("[P2P]\n", encoding="utf-8")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / UNIT.name
    unit.write_text(unit_text, encoding="utf-8")

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("XDG_", "SYSTEMD_", "DBUS_"))
    }
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), SYSTEMD_COLORS="0")
    result = subprocess.run(
        [analyze, "verify", "--user", "--man=no", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    if "Failed to initialize manager" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output}")
    return result.returncode, output


def _about_unit(output: str) -> list[str]:
    return [line for line in output.splitlines() if UNIT.name in line or "p2pd" in line]


def test_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path) -> None:
    code, output = _verify(systemd_analyze, UNIT.read_text(encoding="utf-8"), tmp_path)
    assert code == 0, output
    assert _about_unit(output) == [], output


def test_systemd_analyze_verify_would_complain(systemd_analyze: str, tmp_path: Path) -> None:
    """The check above is not vacuous: a broken copy of the unit is reported."""
    broken = (
        UNIT.read_text(encoding="utf-8")
        .replace("[Service]\n", "[Service]\nNotAKey=1\nRestrictRealtime=maybe\n", 1)
        .replace("%h/.local/bin/p2pd run", "%h/.local/bin/p2pd-missing run", 1)
    )
    code, output = _verify(systemd_analyze, broken, tmp_path)
    complaints = _about_unit(output)
    assert any("NotAKey" in line for line in complaints), output
    assert any("maybe" in line for line in complaints), output
    assert any("p2pd-missing" in line for line in complaints), output
    assert code != 0, output
