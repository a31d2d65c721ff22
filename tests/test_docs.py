"""The docs point at things that exist: every test a guarantee cites, and every module the architecture lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _citations() -> list[tuple[str, str]]:
    return sorted(set(CITED.findall((ROOT / "docs" / "guarantees.md").read_text())))


def test_guarantees_cite_tests() -> None:
    """docs/guarantees.md names tests by file and function (so the check below has something to check)."""
    assert len(_citations()) > 40


@pytest.mark.parametrize(("path", "name"), _citations())
def test_every_cited_test_exists(path: str, name: str) -> None:
    """Each test a guarantee cites is defined in the file it names."""
    source = ROOT / path
    assert source.exists(), f"docs/guarantees.md cites {path}, which does not exist"
    assert re.search(rf"^(async )?def {name}\(", source.read_text(), re.MULTILINE), f"{path} defines no {name}"


def _layout() -> set[str]:
    """The module paths drawn in docs/architecture.md's package layout block."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Package layout", 1)[1].split("```", 2)[1]
    out: set[str] = set()
    package = ""
    for line in block.splitlines():
        m = re.match(r"^( *)([\w.]+/?)\s", line + " ")
        if m is None or m.group(2) == "src/driftwatch/":
            continue
        indent, name = len(m.group(1)), m.group(2)
        if indent == 2 and name.endswith("/"):
            package = name
        elif indent == 2:
            package = ""
            out.add(name)
        elif indent == 4 and name.endswith(".py"):
            out.add(package + name)
    return out


def test_architecture_draws_every_module() -> None:
    """The package layout in docs/architecture.md names exactly the modules src/driftwatch has."""
    src = ROOT / "src" / "driftwatch"
    actual = {
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.name != "__init__.py" and not p.parent.name.startswith("_") and "simulate" not in p.parts
    }
    actual |= {"__init__.py"}
    drawn = _layout()
    assert drawn - actual == set(), "docs/architecture.md draws modules that do not exist"
    assert actual - drawn == set(), "modules missing from docs/architecture.md's package layout"
