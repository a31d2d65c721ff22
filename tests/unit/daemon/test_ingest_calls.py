"""A worker folds a batch in calls of at most ``kafka.batch_bytes`` of message values, in order, none empty."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from driftwatch.daemon.worker import by_bytes


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=60), st.integers(1, 100))
def test_runs_keep_every_message_in_order_within_the_budget(values: list[bytes | None], budget: int) -> None:
    messages = [SimpleNamespace(value=v, offset=i) for i, v in enumerate(values)]
    runs = by_bytes(messages, budget)
    assert [m.offset for run in runs for m in run] == list(range(len(values)))
    for run in runs:
        assert run
        size = sum(len(m.value or b"") for m in run)
        assert size <= budget or len(run) == 1  # a message larger than the budget goes alone
    for a, b in pairwise(runs):  # a run ends only where the next message would not fit
        assert sum(len(m.value or b"") for m in a) + len(b[0].value or b"") > budget


def test_a_batch_within_the_budget_is_one_call() -> None:
    messages = [SimpleNamespace(value=b"x" * 10) for _ in range(5)]
    (run,) = by_bytes(messages, 50)
    assert run is messages


def test_runs_can_be_measured_by_any_size() -> None:
    """An ingest call's partitions are grouped by the bytes of their messages: the same runs, another measure."""
    batches = [("p0", [b"x" * 300]), ("p1", [b"y" * 200, b"z" * 200]), ("p2", [b"w" * 700])]
    runs = by_bytes(batches, 800, size=lambda b: sum(map(len, b[1])))
    assert [[tp for tp, _ in run] for run in runs] == [["p0", "p1"], ["p2"]]
