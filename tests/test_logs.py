"""p2pd.logs: the JSON-lines file log, levels, rotation and the console switch."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from p2pd.logs import configure_logging, flush_logging, get_logger, parse_level, set_log_level


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every test leaves the root logger as it found it (pytest's own handlers stay)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    flush_logging()
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


def _records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    return records


def _configure(path: Path, level: str = "debug", **kwargs: Any) -> None:
    options: dict[str, Any] = {"max_bytes": 1 << 20, "backups": 3, "console": False}
    options.update(kwargs)
    configure_logging(level, path, **options)


def test_file_log_is_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "Client" / "System" / "logs" / "p2p.log"  # parents created
    _configure(path)
    log = get_logger("p2pd.test").bind(peer="ab12")
    log.info("session_established", rtt_ms=12.5)
    log.warning("packet dropped", reason="replay", count=3, tags=["x", "y"])
    flush_logging()

    first, second = _records(path)
    assert first["event"] == "session_established"
    assert first["level"] == "info"
    assert first["logger"] == "p2pd.test"
    assert first["peer"] == "ab12"
    assert first["rtt_ms"] == 12.5
    assert second["level"] == "warning"
    assert second["reason"] == "replay"
    assert second["tags"] == ["x", "y"]
    for record in (first, second):
        stamp = datetime.fromisoformat(record["timestamp"])
        assert stamp.utcoffset() is not None
        assert stamp.utcoffset() == UTC.utcoffset(None)
        assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_exception_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p2p.log"
    _configure(path)
    log = get_logger("p2pd.test")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler failed", peer="cd")
    flush_logging()

    (record,) = _records(path)
    assert record["level"] == "error"
    assert record["peer"] == "cd"
    assert "RuntimeError: boom" in record["exception"]
    assert "Traceback" in record["exception"]


def test_contextvars_are_included(tmp_path: Path) -> None:
    path = tmp_path / "p2p.log"
    _configure(path)
    structlog.contextvars.bind_contextvars(session="s-1")
    get_logger("p2pd.test").info("in session")
    logging.getLogger("p2pd.plain").info("plain in session")
    flush_logging()

    assert [r["session"] for r in _records(path)] == ["s-1", "s-1"]


def test_level_filter_and_run_time_change(tmp_path: Path) -> None:
    path = tmp_path / "p2p.log"
    _configure(path, level="warn")
    log = get_logger("p2pd.test")
    log.debug("d1")
    log.info("i1")
    log.warning("w1")
    log.error("e1")
    set_log_level("debug")
    log.debug("d2")
    logging.getLogger("p2pd.plain").debug("plain d2")
    set_log_level("error")
    log.warning("w3")
    log.error("e3")
    set_log_level("INFO")
    log.info("i4")
    flush_logging()

    assert [r["event"] for r in _records(path)] == ["w1", "e1", "d2", "plain d2", "e3", "i4"]


@pytest.mark.parametrize("bad", ["verbose", "", "warn ing"])
def test_unknown_level_is_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        set_log_level(bad)
    with pytest.raises(ValueError, match="unknown log level"):
        _configure(tmp_path / "p2p.log", level=bad)
    assert not (tmp_path / "p2p.log").exists()  # validated before anything was set up


def test_level_names() -> None:
    assert parse_level("debug") == logging.DEBUG
    assert parse_level("info") == logging.INFO
    assert parse_level("warn") == logging.WARNING
    assert parse_level("Warning") == logging.WARNING
    assert parse_level("error") == logging.ERROR


def test_stdlib_records_land_in_the_file_as_json(tmp_path: Path) -> None:
    path = tmp_path / "p2p.log"
    _configure(path, level="info")
    legacy = logging.getLogger("some.library")
    legacy.warning("retrying %s in %d s", "stun.example", 5, extra={"attempt": 2})
    legacy.debug("not at info level")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        legacy.exception("crashed")
    flush_logging()

    warning, crash = _records(path)
    assert warning["event"] == "retrying stun.example in 5 s"
    assert warning["level"] == "warning"
    assert warning["logger"] == "some.library"
    assert warning["attempt"] == 2
    assert datetime.fromisoformat(warning["timestamp"]).utcoffset() == UTC.utcoffset(None)
    assert crash["level"] == "error"
    assert "ZeroDivisionError" in crash["exception"]


def test_rotation_at_max_bytes_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "p2p.log"
    max_bytes, backups = 600, 2
    _configure(path, max_bytes=max_bytes, backups=backups)
    log = get_logger("p2pd.test")
    for i in range(60):
        log.info("tick", i=i)
    flush_logging()

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["p2p.log", "p2p.log.1", "p2p.log.2"]
    seen: list[int] = []
    for name in ("p2p.log.2", "p2p.log.1", "p2p.log"):
        file = tmp_path / name
        assert 0 < file.stat().st_size <= max_bytes
        seen += [r["i"] for r in _records(file)]
    # The newest records survive, in order, with nothing lost between the kept files.
    assert seen == list(range(60 - len(seen), 60))
    assert seen[-1] == 59


def test_configure_twice_replaces_handlers(tmp_path: Path) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    _configure(first)
    _configure(second)
    _configure(second)
    get_logger("p2pd.test").info("once")
    logging.getLogger("p2pd.plain").info("plain once")
    flush_logging()

    assert first.read_text(encoding="utf-8") == ""
    assert [r["event"] for r in _records(second)] == ["once", "plain once"]


def test_console_off_writes_nothing_to_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _configure(tmp_path / "p2p.log", console=False)
    get_logger("p2pd.test").error("to the file only", peer="ab")
    logging.getLogger("p2pd.plain").critical("also to the file only")
    configure_logging("debug", None, 0, 0, console=False)  # no file, no console
    get_logger("p2pd.test").error("nowhere")
    logging.getLogger("p2pd.plain").critical("nowhere either")
    flush_logging()
    get_logger("p2pd.test").error("after the stop")

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert len(_records(tmp_path / "p2p.log")) == 2


def test_console_on_is_human_readable_without_colors(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _configure(tmp_path / "p2p.log", console=True)
    get_logger("p2pd.test").info("session_established", peer="ab12")
    logging.getLogger("p2pd.plain").warning("plain %s", "line")
    flush_logging()

    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert "session_established" in lines[0]
    assert "peer=ab12" in lines[0]
    assert "plain line" in lines[1]
    assert "\x1b[" not in err  # not a terminal: no ANSI colors
    assert len(_records(tmp_path / "p2p.log")) == 2  # the file log still gets both


def test_negative_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="negative"):
        configure_logging("info", tmp_path / "p2p.log", -1, 3, console=False)


def test_failed_reconfigure_keeps_the_old_handlers(tmp_path: Path) -> None:
    path = tmp_path / "p2p.log"
    _configure(path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(OSError):
        _configure(blocker / "p2p.log")
    get_logger("p2pd.test").info("still logging")
    flush_logging()

    assert [r["event"] for r in _records(path)] == ["still logging"]


def test_capture_logs_sees_get_logger_events(tmp_path: Path) -> None:
    _configure(tmp_path / "p2p.log")
    log = get_logger("p2pd.test")
    with structlog.testing.capture_logs() as captured:
        log.info("captured", peer="ab")
    assert captured == [{"event": "captured", "peer": "ab", "log_level": "info"}]
