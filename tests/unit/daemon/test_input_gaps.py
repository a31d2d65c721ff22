"""Where an input partition resumes: redeliveries are skipped, a gap the consumer left is read again, an offset
reset of the group is honoured (guarantee 2 in docs/guarantees.md)."""

from __future__ import annotations

import threading
from pathlib import Path

from driftwatch._log import get_logger
from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.daemon.recovery import REFETCH_MAX, InputRecovery, WorkerContext

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "config" / "driftwatch.example.yaml"
TP = "driftwatch-predictions:0"


class _Msg:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _recovery() -> InputRecovery:
    cfg = load_config(EXAMPLE_CONFIG)
    ctx = WorkerContext(cfg, "127.0.0.1:1", Pipeline(cfg, b"k" * 16), threading.Lock(), get_logger("test"))

    async def resend(work: object) -> None:
        raise AssertionError("not called here")

    return InputRecovery(ctx, resend=resend)


def test_a_partition_never_processed_has_no_gap_and_nothing_to_skip() -> None:
    r = _recovery()
    assert r.gap(TP, 1_000) is None
    assert [m.offset for m in r.fresh(TP, [_Msg(5), _Msg(6)])] == [5, 6]


def test_redelivered_messages_are_skipped_and_a_small_gap_is_read_again() -> None:
    r = _recovery()
    r.processed(TP, 99)
    assert [m.offset for m in r.fresh(TP, [_Msg(98), _Msg(99), _Msg(100)])] == [100]
    assert r.gap(TP, 100) is None  # the next offset: no gap
    assert r.gap(TP, 150) == (100, 150)  # 50 messages the consumer dropped at a rebalance
    r.processed(TP, 90)  # an older batch never moves the resume point back
    assert r.gap(TP, 100) is None


def test_a_gap_longer_than_any_fetch_is_an_offset_reset_and_is_honoured() -> None:
    r = _recovery()
    r.processed(TP, 99)
    assert r.gap(TP, 100 + REFETCH_MAX) == (100, 100 + REFETCH_MAX)
    assert r.gap(TP, 101 + REFETCH_MAX) is None
    assert r.skipped == REFETCH_MAX + 1
