"""CI is reproducible: ``resources/constraints-cpu.txt`` pins every package that
``pip install -e '.[dev]'`` brings in (CI's set-up, ``.ci/run``), directly or through
another package, to the version this environment (made with that file) holds."""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "resources" / "constraints-cpu.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier        # one exact pin per line
            assert spec.operator == "==", f"{line}: not pinned with =="
            pins[_norm(req.name)] = spec.version
    return pins


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))


def _ci_closure() -> dict[str, str]:
    """Every distribution of CI's install (moe-studio with its dev extra), with the
    package that first asked for it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [(Requirement(r), "moe-studio") for r in project["dependencies"]]
    todo += [(Requirement(r), "moe-studio[dev]") for r in project["optional-dependencies"]["dev"]]
    todo = [(r, who) for r, who in todo if _applies(r, set())]
    seen: dict[str, str] = {}
    done: set[tuple[str, frozenset]] = set()
    while todo:
        req, who = todo.pop()
        name = _norm(req.name)
        key = (name, frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        seen.setdefault(name, who)
        for text in metadata.requires(req.name) or []:
            sub = Requirement(text)
            if _applies(sub, set(req.extras)):
                todo.append((sub, name))
    return seen


def test_every_ci_dependency_is_pinned_to_what_is_installed():
    pins = _pins()
    closure = _ci_closure()
    missing = sorted(f"{n} (needed by {who})" for n, who in closure.items() if n not in pins)
    assert not missing, "not pinned in constraints-cpu.txt: " + ", ".join(missing)
    for name in closure:
        installed = Version(metadata.version(name))
        assert installed.public == Version(pins[name]).public, \
            f"{name}: {installed} installed, {pins[name]} pinned"
    # and nothing pinned that CI does not install (the file says what CI tests with);
    # setuptools builds the editable install
    extra = sorted(set(pins) - set(closure) - {"setuptools"})
    assert not extra, "pinned but not part of CI's install: " + ", ".join(extra)
