"""docs/architecture.md names only modules, classes and methods that exist."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import p2pd

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"\bp2pd/[\w/]*(?:\.py|/)")
_MODULE = re.compile(r"^p2pd(?:\.\w+)+$")
_ATTRIBUTE = re.compile(r"^([A-Z]\w*)\.(\w+)$")  # Class.method
_UNTRUSTED = re.compile(r"^\w+_untrusted$")


def _spans() -> list[str]:
    return _CODE_SPAN.findall(ARCHITECTURE.read_text(encoding="utf-8"))


def _modules() -> list[object]:
    names = [info.name for info in pkgutil.walk_packages(p2pd.__path__, "p2pd.")]
    return [p2pd, *(importlib.import_module(name) for name in names)]


def _has_attribute(cls: type, name: str) -> bool:
    """A method, class attribute, or instance attribute set as ``self.<name> =``."""
    return hasattr(cls, name) or re.search(
        rf"\bself\.{name}\b(?:: [^=\n]+)? =", inspect.getsource(cls)
    ) is not None


def test_every_path_and_module_exists() -> None:
    paths = {path for span in _spans() for path in _PATH.findall(span)}
    modules = {span for span in _spans() if _MODULE.match(span)}
    assert paths and modules
    for path in sorted(paths):
        assert (ROOT / path).exists(), f"docs/architecture.md names {path}, which does not exist"
    for module in sorted(modules):
        assert importlib.util.find_spec(module) is not None, (
            f"docs/architecture.md names {module}, which does not exist"
        )


def test_every_class_method_and_untrusted_parser_exists() -> None:
    classes: dict[str, list[type]] = {}
    functions: set[str] = set()
    for module in _modules():
        for name, value in vars(module).items():
            if inspect.isclass(value) and value.__module__.startswith("p2pd"):
                classes.setdefault(name, []).append(value)
                functions.update(vars(value))  # methods count as parsers too
            elif inspect.isfunction(value):
                functions.add(name)
    checked = 0
    for span in _spans():
        if (match := _ATTRIBUTE.match(span)) and match[1] in classes:
            assert any(_has_attribute(cls, match[2]) for cls in classes[match[1]]), (
                f"docs/architecture.md names {span}, which does not exist"
            )
            checked += 1
        elif _UNTRUSTED.match(span):
            assert span in functions, f"docs/architecture.md names {span}, which does not exist"
            checked += 1
    assert checked >= 20
