"""The dependency rule, checked by a machine (docs/architecture.md, "The dependency rule").

- ruff's banned-api (TID251, configured in pyproject.toml) refuses Faust, aiokafka and aiohttp outside
  ``daemon/``, ``demo/``, ``cli.py`` and ``client.py``; these tests prove the configuration bites.
- The modules of ``src/driftwatch`` import each other without cycles, at module level and at package level.
- The producer client that model servers embed stays light: importing it does not load numpy.
"""

from __future__ import annotations

import ast
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "driftwatch"

# A module that is clean under every other rule the project selects, so only TID251 can fail it.
KAFKA_MODULE = '"""A module that talks to Kafka."""\n\nimport aiokafka\n\nPRODUCER = aiokafka.AIOKafkaProducer\n'
HTTP_MODULE = '"""A module that talks HTTP."""\n\nfrom aiohttp import web\n\nAPP = web.Application\n'
FAUST_MODULE = '"""A module that runs a Faust app."""\n\nimport faust\n\nAPP = faust.App\n'

PURE_PLACES = [
    "src/driftwatch/core/x.py",
    "src/driftwatch/metrics/x.py",
    "src/driftwatch/alerts/x.py",
    "src/driftwatch/actions/x.py",
    "src/driftwatch/simulate/x.py",
    "src/driftwatch/config.py",
    "src/driftwatch/events.py",
    "src/driftwatch/x.py",
]
IO_PLACES = [
    "src/driftwatch/daemon/x.py",
    "src/driftwatch/demo/x.py",
    "src/driftwatch/cli.py",
    "src/driftwatch/client.py",
]


def _ruff(source: str, filename: str) -> subprocess.CompletedProcess[str]:
    """Lint ``source`` with the project's ruff configuration as if it were the file ``filename``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--no-cache",
            "--output-format",
            "concise",
            "--stdin-filename",
            filename,
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("place", PURE_PLACES)
@pytest.mark.parametrize("source", [KAFKA_MODULE, HTTP_MODULE, FAUST_MODULE], ids=["aiokafka", "aiohttp", "faust"])
def test_ruff_refuses_io_libraries_in_pure_code(place: str, source: str) -> None:
    """Importing Kafka, HTTP or Faust libraries in a pure module fails ruff with TID251."""
    result = _ruff(source, place)
    assert result.returncode != 0, f"ruff accepted an I/O import in {place}:\n{result.stdout}{result.stderr}"
    assert "TID251" in result.stdout, result.stdout + result.stderr
    others = [line for line in result.stdout.splitlines() if ": " in line and "TID251" not in line and place in line]
    assert not others, f"the probe module should fail on TID251 alone: {others}"


@pytest.mark.parametrize("place", IO_PLACES)
@pytest.mark.parametrize("source", [KAFKA_MODULE, HTTP_MODULE, FAUST_MODULE], ids=["aiokafka", "aiohttp", "faust"])
def test_ruff_allows_io_libraries_where_sockets_live(place: str, source: str) -> None:
    """The same imports pass ruff in daemon/, demo/, cli.py and client.py."""
    result = _ruff(source, place)
    assert result.returncode == 0, f"ruff refused an I/O import in {place}:\n{result.stdout}{result.stderr}"


# --------------------------------------------------------------------------------------------- import graph


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(target: str, known: Mapping[str, Path]) -> str | None:
    """The most specific known module that ``target`` names (``a.b.C`` names module ``a.b``)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported driftwatch module, line) for every import in ``path``: module level, in functions, under
    TYPE_CHECKING, relative ones resolved, and ``importlib.import_module``/``find_spec`` of a literal name."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = _resolve(alias.name, known)
                if found:
                    yield found, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # ``from pkg import submodule`` imports the submodule; ``from mod import name`` the module.
                found = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else _resolve(base, known)
                if found:
                    yield found, node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "find_spec", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found = _resolve(node.args[0].value, known)
            if found:
                yield found, node.lineno


def _module_graph() -> dict[str, dict[str, int]]:
    """driftwatch module -> {imported driftwatch module: first line}; a package's __init__ is its own node."""
    known = _modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in known}
    for module, path in known.items():
        for target, line in _imports(module, path, known):
            if target != module:
                graph[module].setdefault(target, line)
    return graph


def _package_of(module: str) -> str:
    """The unit of the package-level graph: ``driftwatch.core`` for ``driftwatch.core.x``, else the module."""
    parts = module.split(".")
    if len(parts) >= 2 and (PKG / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def _package_graph(graph: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, str]]:
    """Package -> {imported package: an example 'module:line -> module'}; a package importing itself is no edge.

    The root ``driftwatch`` (its ``__init__`` re-exports) is left out: every submodule's import runs it, so
    edges into it say nothing about layering, and its own imports are re-exports."""
    out: dict[str, dict[str, str]] = {}
    for src, targets in graph.items():
        if src == "driftwatch":
            continue
        a = _package_of(src)
        out.setdefault(a, {})
        for dst, line in targets.items():
            b = _package_of(dst)
            if a != b and dst != "driftwatch":
                out[a].setdefault(b, f"{src}:{line} -> {dst}")
    return out


def _cycles(graph: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """Every strongly connected component with more than one node, each as one cycle path through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_path(graph, set(c)) for c in components]


def _cycle_path(graph: Mapping[str, Mapping[str, object]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's smallest node (breadth-first inside the component)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            for w in sorted(graph.get(v, {})):
                if w not in component:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def _describe(cycle: list[str], graph: Mapping[str, Mapping[str, object]]) -> str:
    steps = [f"{a} -> {b} ({graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return "\n    ".join(steps)


def test_import_graph_sees_every_import() -> None:
    """The graph builder resolves absolute, relative, lazy and importlib imports (so an empty result means something)."""
    graph = _module_graph()
    assert "driftwatch.core.pipeline" in graph["driftwatch"]  # the package re-export
    assert "driftwatch.config" in graph["driftwatch.core.slicing"]
    assert "driftwatch.core.slicing" in graph["driftwatch.client"]
    assert sum(len(t) for t in graph.values()) > 100


def test_cycle_finder_reports_the_path() -> None:
    """The cycle finder names the cycle's modules in order, and finds none in a layered graph."""
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {}}) == []


def test_no_import_cycles_between_modules() -> None:
    """No driftwatch module imports, directly or through others, a module that imports it back."""
    graph = _module_graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles between modules:\n  " + "\n  ".join(_describe(c, graph) for c in cycles)


def test_no_import_cycles_between_packages() -> None:
    """The packages (core, metrics, alerts, actions, daemon, ...) and top-level modules form layers, no cycle."""
    graph = _package_graph(_module_graph())
    cycles = _cycles(graph)
    assert not cycles, "import cycles between packages:\n  " + "\n  ".join(_describe(c, graph) for c in cycles)


# ------------------------------------------------------------------------------------------ a light client


def _importtime_chain(stderr: str, module: str) -> str:
    """From ``python -X importtime`` output, the chain of imports that first loaded ``module``."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("import time:") and "|" in ln]
    entries = []
    for ln in lines:
        name_field = ln.rsplit("|", 1)[1]
        entries.append((len(name_field) - len(name_field.lstrip()), name_field.strip()))
    for i, (depth, name) in enumerate(entries):
        if name == module:
            chain, want = [name], depth
            for d, n in entries[i + 1 :]:  # importtime prints a module after everything it imported
                if d < want:
                    chain.append(n)
                    want = d
            return " <- ".join(chain)
    return f"{module} not found in importtime output"


def _import_in_fresh_interpreter(statement: str, module: str = "numpy") -> tuple[bool, str]:
    code = f"import sys\n{statement}\nprint({module!r} in sys.modules)\n"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip() == "True", _importtime_chain(result.stderr, module)


def test_worker_and_cli_import_do_not_load_scipy() -> None:
    """Every worker and command starts without scipy (~0.3 s of CPU): only FDR rules' p-values import it."""
    loaded, chain = _import_in_fresh_interpreter("import driftwatch.cli, driftwatch.daemon.worker", "scipy")
    assert not loaded, f"importing the worker loads scipy: {chain}"


_BUILD_EVALUATOR = """
from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
cfg = load_config({path!r})
cfg = cfg.model_copy(update={{"rules": tuple(r for r in cfg.rules if {keep})}})
Pipeline(cfg, b"k" * 32)
"""


@pytest.mark.parametrize(
    ("keep", "module", "loaded"),
    [
        ("r.fdr_q is not None", "scipy.special._ufuncs", True),
        ("r.fdr_q is None", "scipy.special._ufuncs", False),
        ("r.detector is not None", "river.drift.page_hinkley", True),
        ("r.detector is None", "river.drift.page_hinkley", False),
    ],
)
def test_an_evaluator_loads_what_its_rules_need_when_built(keep: str, module: str, loaded: bool) -> None:
    """What only some rules need (scipy's special functions for ``fdr_q``, River's detector modules) is imported when the
    evaluator is built, so the first tick it evaluates does not stall on an import; never without such a rule."""
    statement = _BUILD_EVALUATOR.format(path=str(ROOT / "config" / "driftwatch.example.yaml"), keep=keep)
    got, chain = _import_in_fresh_interpreter(statement, module)
    assert got is loaded, chain


@pytest.mark.parametrize("module", ["scipy.special", "scipy._lib._array_api"])
def test_fdr_rules_load_scipys_special_functions_without_scipy_special(module: str) -> None:
    """An evaluator with ``fdr_q`` rules loads scipy's compiled special functions, not ``scipy.special`` and the
    array-API layer its ``__init__`` brings (~12 MB more of a worker's RSS)."""
    statement = _BUILD_EVALUATOR.format(path=str(ROOT / "config" / "driftwatch.example.yaml"), keep="r.fdr_q")
    loaded, chain = _import_in_fresh_interpreter(statement, module)
    assert not loaded, chain


_SPECIAL_THEN_SCIPY = """
import numpy as np
from driftwatch.metrics import stats
args = (np.array([5, 30, 0, 7]), np.array([100, 100, 10, 7]), np.array([50, 50, 3, 1]), np.array([1000, 1000, 30, 9]))
counts = np.array([[50, 50], [90, 10], [0, 9]])
light = (stats.exact_two_proportion_p(*args), stats.two_proportion_p(*args), stats.chi2_homogeneity_p(counts, np.array([0.5, 0.5]), 1000))
from scipy import special
assert stats._special() is special._ufuncs, "two copies of scipy's special functions"
assert all(getattr(stats._special(), f) is getattr(special, f) for f in ("bdtr", "bdtrc", "ndtr", "chdtrc"))
full = (stats.exact_two_proportion_p(*args), stats.two_proportion_p(*args), stats.chi2_homogeneity_p(counts, np.array([0.5, 0.5]), 1000))
assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(light, full)), (light, full)
"""


def test_scipy_special_imported_later_is_the_same_functions() -> None:
    """Code that imports ``scipy.special`` after the light load gets the very same compiled functions (one copy),
    and the p-values are the same before and after."""
    loaded, chain = _import_in_fresh_interpreter(_SPECIAL_THEN_SCIPY, "scipy.special")
    assert loaded, chain


@pytest.mark.parametrize("module", ["numpy", "pydantic"])
def test_cli_import_loads_neither_numpy_nor_pydantic(module: str) -> None:
    """``import driftwatch.cli`` leaves numpy and pydantic unloaded: ``--help`` and the light commands start in
    ~0.45 s of CPU instead of ~0.9; the commands that need the config or the pipeline import them."""
    loaded, chain = _import_in_fresh_interpreter("import driftwatch.cli", module)
    assert not loaded, f"importing driftwatch.cli loads {module}: {chain}"


def test_sidecar_loads_numpy_for_bulk_partitioning() -> None:
    """The sidecar process hashes request ids in bulk with numpy (``client._hashes`` takes that path only when numpy
    is loaded: the client must not load it into model servers). Since the CLI stopped importing the pipeline, the
    sidecar imports numpy itself; without it murmur2 per key was ~18% of a busy sidecar's CPU."""
    loaded, _ = _import_in_fresh_interpreter("import driftwatch.cli, driftwatch.daemon.sidecar")
    assert loaded


def test_client_import_does_not_load_numpy() -> None:
    """``import driftwatch.client`` in a fresh interpreter leaves numpy unloaded (model servers embed it)."""
    loaded, chain = _import_in_fresh_interpreter("import driftwatch.client")
    assert not loaded, f"importing driftwatch.client loads numpy: {chain}"


def test_client_from_package_does_not_load_numpy() -> None:
    """``from driftwatch import Client`` (when the package exports it) leaves numpy unloaded."""
    init = ast.parse((PKG / "__init__.py").read_text())
    exported = {
        elt.value
        for node in ast.walk(init)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for elt in getattr(node.value, "elts", [])
        if isinstance(elt, ast.Constant)
    }
    if "Client" not in exported:
        pytest.skip("driftwatch does not export Client yet")
    loaded, chain = _import_in_fresh_interpreter("from driftwatch import Client")
    assert not loaded, f"`from driftwatch import Client` loads numpy: {chain}"
