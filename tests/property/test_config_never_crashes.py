"""Any config file, however mangled, loads or fails with a ConfigError listing its problems: never a traceback.

Hundreds of copies of the example config, each with a few values replaced by values of the wrong type or shape
(or deleted), seeded so a failure names a reproducible case.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftwatch.config import load_config
from driftwatch.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "driftwatch.example.yaml"
JUNK: list[Any] = [None, 0, -1, 1.5, "x", "5 parsecs", "=>", "*", "", True, [], {}, [1, 2], {"a": 1}, [[1]]]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@pytest.mark.parametrize("seed", range(2))
def test_mangled_configs_load_or_list_their_problems(tmp_path: Path, seed: int) -> None:
    base = yaml.safe_load(EXAMPLE.read_text())
    paths = list(_paths(base))
    sections = [p for p in paths if len(p) == 1]  # whole sections replaced a third of the time
    rng = random.Random(seed)
    errors = 0
    for case in range(100):
        cfg = copy.deepcopy(base)
        for _ in range(rng.randint(1, 4)):
            *parents, last = rng.choice(sections if rng.random() < 0.3 else paths)
            node: Any = cfg
            try:
                for key in parents:
                    node = node[key]
                if isinstance(node, dict) and rng.random() < 0.2:
                    del node[last]
                else:
                    node[last] = copy.deepcopy(rng.choice(JUNK))
            except (KeyError, IndexError, TypeError):
                continue  # an earlier change removed or replaced this path
        path = tmp_path / f"{seed}-{case}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        problems: list[str] | None = None
        try:
            load_config(path)
        except ConfigError as e:
            problems = e.problems
        if problems is not None:
            errors += 1
            assert problems, (seed, case)
            assert all(p.startswith(f"{path}: ") for p in problems), (seed, case, problems)
    assert errors > 50  # the mangling does reach validation
