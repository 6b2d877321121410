"""Logging for the daemon (spec §8.1): a JSON-lines file log and, in debug mode, the console.

The daemon calls :func:`configure_logging` once at start-up, :func:`set_log_level` when an
IPC client asks for another level, and :func:`flush_logging` on a graceful stop. Modules
get their logger with ``log = get_logger(__name__)`` and log events with key-values::

    log.info("session_established", peer=peer_hex, rtt_ms=12.5)

Both *structlog* loggers and plain :mod:`logging` records (from libraries, or from code
that uses ``logging.getLogger``) go through structlog's stdlib integration: structlog
events are handed to the standard logging machinery by
``ProcessorFormatter.wrap_for_formatter`` and every handler renders with a
:class:`structlog.stdlib.ProcessorFormatter`, so both kinds land in the same file as the
same JSON shape::

    {"event": "session_established", "peer": "ab12...", "rtt_ms": 12.5,
     "logger": "p2pd.session", "level": "info", "timestamp": "2025-01-01T12:00:00.000000Z"}

The handlers hang on the root logger, whose level is the one filter: structlog loggers
check it first (``filter_by_level``) so a disabled debug call costs one level test.
Only portable calls are used (no ``fcntl``, no syslog), so this also runs on Windows.
"""

from __future__ import annotations

import importlib.util
import logging
import logging.handlers
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

import structlog
from structlog.typing import Processor

__all__ = [
    "LEVELS",
    "configure_logging",
    "flush_logging",
    "get_logger",
    "parse_level",
    "set_log_level",
]

#: Level names accepted from ``ai_client.ini`` (``log_level=``) and the IPC request.
LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Marks the handlers this module installed, so a second configure_logging (or
# flush_logging) removes exactly those and leaves anyone else's (pytest's caplog) alone.
_OWNED: Final = "_p2pd_logs_handler"

# Runs on structlog events only, before they are handed to the stdlib logger.
_STRUCTLOG_CHAIN: Final[Sequence[Processor]] = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.filter_by_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.PositionalArgumentsFormatter(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.UnicodeDecoder(),
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
)

# Runs on plain logging records only, to give them the same keys as structlog events.
_FOREIGN_CHAIN: Final[Sequence[Processor]] = (
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
)


def parse_level(level: str) -> int:
    """Map ``"debug" | "info" | "warn" | "error"`` (any case; also ``warning``,
    ``critical``) to a :mod:`logging` level number; ``ValueError`` for anything else."""
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        choices = ", ".join(LEVELS)
        raise ValueError(f"unknown log level {level!r} (expected one of: {choices})") from None


def _configure_structlog() -> None:
    """Route structlog through the stdlib logging machinery.

    What changes at run time (handlers, the level) lives in :mod:`logging` and is read
    on every call. Loggers are not cached on first use, so tests may still swap the
    chain with ``structlog.testing.capture_logs()``; a hot path that logs a lot can keep
    ``get_logger(__name__).bind()`` instead, which is resolved once.
    """
    structlog.configure(
        processors=list(_STRUCTLOG_CHAIN),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
    )


def _json_formatter() -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(_FOREIGN_CHAIN),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks as one string field: keeps the record on one line, and
            # (unlike dict_tracebacks' default) never dumps local variables, which
            # could hold key material.
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def _use_colors(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return False
    # structlog needs colorama for colors on Windows.
    return os.name != "nt" or importlib.util.find_spec("colorama") is not None


def _console_formatter(stream: TextIO) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=list(_FOREIGN_CHAIN),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=_use_colors(stream)),
        ],
    )


def _owned_handlers(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if getattr(h, _OWNED, False)]


def _remove_handlers(root: logging.Logger) -> None:
    for handler in _owned_handlers(root):
        root.removeHandler(handler)
        try:
            handler.flush()
        finally:
            handler.close()


def configure_logging(
    level: str,
    file: Path | None,
    max_bytes: int,
    backups: int,
    console: bool,
) -> None:
    """Set up the daemon's logging; calling it again replaces what an earlier call set up.

    ``file``: the JSON-lines log (spec: ``Client/System/logs/p2p.log``), its parent
    directory created if missing; ``None`` for no file log. It is rotated by
    :class:`logging.handlers.RotatingFileHandler` when a record would take it past
    ``max_bytes`` (0: never), keeping ``backups`` old files (``p2p.log.1`` ...).
    ``console``: also write human-readable lines to stderr (debug mode); colors only
    when stderr is a terminal. ``level``: see :func:`parse_level`.
    """
    numeric = parse_level(level)  # validate before touching anything
    if max_bytes < 0 or backups < 0:
        raise ValueError("max_bytes and backups must not be negative")
    handlers: list[logging.Handler] = []
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        file_handler.setFormatter(_json_formatter())
        handlers.append(file_handler)
    if console:
        stream = sys.stderr
        console_handler = logging.StreamHandler(stream)
        console_handler.setFormatter(_console_formatter(stream))
        handlers.append(console_handler)

    if not handlers:
        # Without any handler, logging's "last resort" would print warnings to stderr.
        handlers.append(logging.NullHandler())

    # The new handlers exist (the file could be opened): now swap them in.
    _configure_structlog()
    root = logging.getLogger()
    _remove_handlers(root)
    for handler in handlers:
        setattr(handler, _OWNED, True)
        root.addHandler(handler)
    root.setLevel(numeric)


def set_log_level(level: str) -> None:
    """Change the level at run time (the IPC ``set_log_level`` request); takes effect
    for the next log call of every logger, structlog or stdlib."""
    logging.getLogger().setLevel(parse_level(level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (use the module's ``__name__``); bind
    key-values with ``.bind(peer=...)`` or pass them per call."""
    if not structlog.is_configured():  # before configure_logging: same chain, no handlers yet
        _configure_structlog()
    return structlog.stdlib.get_logger(name)


def flush_logging() -> None:
    """Flush and close the handlers :func:`configure_logging` installed (graceful stop).

    Afterwards nothing is written until :func:`configure_logging` is called again.
    """
    root = logging.getLogger()
    _remove_handlers(root)
    quiet = logging.NullHandler()
    setattr(quiet, _OWNED, True)
    root.addHandler(quiet)
