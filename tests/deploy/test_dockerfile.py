"""The Dockerfile and its build context, checked statically (no Docker engine here) and by building the wheel
from exactly the files the context would hold."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import ROOT, run

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        logical = ""
    return out


def _stages() -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for op, rest in _instructions(DOCKERFILE.read_text()):
        if op == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        elif op == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        else:
            stages[-1].instructions.append((op, rest))
    return stages


def _ops(stage: Stage, op: str) -> list[str]:
    return [rest for o, rest in stage.instructions if o == op]


def test_two_stages_on_python_slim() -> None:
    """A builder stage and a final stage, both on python:3.11-slim (the Python the project supports)."""
    stages = _stages()
    assert [s.name for s in stages] == ["builder", "runtime"]
    assert {s.image for s in stages} == {"python:3.11-slim"}
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_builder_installs_the_wheel_without_extras() -> None:
    """The builder builds a wheel and installs only it (runtime dependencies), never an editable or dev install."""
    builder = _stages()[0]
    runs = " ".join(_ops(builder, "RUN"))
    assert "pip wheel --no-deps" in runs
    assert re.search(r"/opt/venv/bin/pip install /wheels/\*\.whl", runs)
    text = DOCKERFILE.read_text()
    assert "[dev]" not in text
    assert "[demo]" not in text
    assert not re.search(r"pip install[^\n]*(\s-e\s|--editable|\s\.\s|\s\.$)", runs)


def test_final_stage_runs_as_a_fixed_non_root_uid() -> None:
    """The final stage's last USER is a fixed numeric uid other than 0, created with that uid."""
    final = _stages()[-1]
    users = _ops(final, "USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), users[-1]
    assert int(uid) >= 1000, users[-1]
    assert gid == "" or (gid.isdigit() and int(gid) != 0)
    uid_arg = [a for a in _ops(final, "ARG") if a.startswith("UID=")]
    assert uid_arg == [f"UID={uid}"]
    assert "--uid ${UID}" in " ".join(_ops(final, "RUN"))


def test_final_stage_writes_only_to_its_data_dir() -> None:
    """The working directory is the data dir (a volume, owned by the user): with /tmp it is all a read-only root
    filesystem has to leave writable (Faust's data dir and the audit file go to the working directory)."""
    final = _stages()[-1]
    assert _ops(final, "WORKDIR") == ["/var/lib/driftwatch"]
    assert json.loads(_ops(final, "VOLUME")[0]) == ["/var/lib/driftwatch"]
    assert "install -d -o ${UID} -g ${UID}" in " ".join(_ops(final, "RUN"))
    copies = _ops(final, "COPY")
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert all(not c.startswith("--chown") for c in copies), "installed files stay owned by root (read-only)"


def test_entrypoint_is_the_console_script() -> None:
    """ENTRYPOINT (exec form) is the `driftwatch` console script pyproject.toml declares, on PATH from the venv."""
    final = _stages()[-1]
    assert [json.loads(e) for e in _ops(final, "ENTRYPOINT")] == [["driftwatch"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "driftwatch" in scripts
    assert any("PATH=/opt/venv/bin:$PATH" in e for e in _ops(final, "ENV"))


def _ignored(rel: str, patterns: list[tuple[bool, str]]) -> bool:
    """.dockerignore semantics for our patterns: the last pattern matching the path or a parent directory wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negate, pat in patterns:
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            verdict = not negate
    return verdict


def _context() -> list[str]:
    """The files (relative paths) a `docker build .` would send, by .dockerignore."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            patterns.append((negate, line.lstrip("!").rstrip("/")))
    out = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT).as_posix()
        if rel.startswith((".git/", ".venv/")) or not p.is_file():
            continue
        if not _ignored(rel, patterns):
            out.append(rel)
    return sorted(out)


def test_build_context_is_minimal() -> None:
    """The context holds the sources the COPYs need and nothing secret or bulky (.env, .git, .venv, tests)."""
    context = _context()
    assert "pyproject.toml" in context
    assert "src/driftwatch/cli.py" in context
    assert not [f for f in context if f.startswith(("tests/", "bench/", "deploy/", "out/", ".env"))]
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]
    for stage in _stages():
        for copy in _ops(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _dest = shlex.split(copy)
            for s in sources:
                assert any(f == s or f.startswith(s.rstrip("/") + "/") for f in context), f"COPY {s}: not in context"


def test_wheel_builds_from_the_context(tmp_path: Path) -> None:
    """The builder's `pip wheel --no-deps .` succeeds on the context's files alone, and the wheel has every module,
    the py.typed marker and the `driftwatch` entry point."""
    ctx = tmp_path / "context"
    for rel in _context():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, ctx / rel)
    wheels = tmp_path / "wheels"
    done = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", wheels, ".", cwd=ctx, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheels.glob("driftwatch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "driftwatch = driftwatch.cli:main" in zf.read(entry_points).decode()
    modules = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "driftwatch").rglob("*.py")}
    assert modules - names == set()
    assert "driftwatch/py.typed" in names
