"""Sequential tests: a CUSUM per rule and slice, fed tick by tick, that fires as soon as the evidence is sure.

A window rule waits for a window to fill with changed data and then for
``for``; a sequential rule accumulates the log-likelihood ratio of each closed
tick's counts (what the tick added to the slice's since-start totals, so late labels count when they are
seen), rate at ``threshold`` (the change to catch) against rate at
``baseline`` (healthy), and fires once the CUSUM statistic reaches ``h``:

    S_t = max(0, S_{t-1} + llr(k_t, n_t)),   fire while S_t >= h

with ``k_t`` events of ``n_t`` in tick t. For a share (at most one per trial:
selection, TPR, FPR) the likelihood is Bernoulli:
``llr = k log(p1/p0) + (n - k) log((1-p1)/(1-p0))``; for a rate that counts
several events per prediction (complaints) it is Poisson:
``llr = k log(p1/p0) - n (p1 - p0)``. Under the baseline rate (or any rate on
its healthy side) ``exp(S)`` started at any tick is a non-negative
supermartingale, so by Ville's inequality a test started at a given tick ever
reaches ``h`` with probability at most ``e^-h``, and the average run length
between false alarms is at least ``e^h`` updates per slice (Lorden 1971).
That bound needs no correction for looking every tick, and it is per slice:
with ``m`` slices and rules the expected false alarms over ``T`` updates are at
most ``m T e^-h`` (a Bonferroni budget, which is why ``fdr_q`` is not combined
with it). The statistic's last zero before it crossed is the estimated change
point.

>>> c = Cusum()
>>> [round(c.update(k, 100, 0.05, 0.08, True), 2) for k in (5, 9, 10)]
[0.0, 1.31, 3.12]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import msgspec

__all__ = ["Cusum", "SequentialBank", "SequentialState", "llr"]


def llr(k: int, n: int, p0: float, p1: float, share: bool) -> float:
    """Log-likelihood ratio of ``k`` events in ``n`` trials at rate ``p1`` against ``p0`` (Bernoulli if ``share``,
    else Poisson per trial)."""
    if n <= 0:
        return 0.0
    if share:
        k = min(k, n)
        return k * math.log(p1 / p0) + (n - k) * math.log((1 - p1) / (1 - p0))
    return k * math.log(p1 / p0) - n * (p1 - p0)


@dataclass(slots=True)
class Cusum:
    """One CUSUM: the statistic, when it last left zero (the change point), when it last had data, and the running
    totals it has taken in (see :meth:`observe`)."""

    statistic: float = 0.0
    start: float | None = None
    updated: float | None = None
    k: int = 0
    n: int = 0

    def observe(
        self, k_total: int, n_total: int, p0: float, p1: float, share: bool, now: float = 0.0, tick_start: float = 0.0
    ) -> float:
        """Take the counts added to running totals since the last call: what became visible in the tick just closed,
        late labels of earlier predictions included. A new test takes the slice's history since start in one lump:
        the sum from the start is never more than a CUSUM running all along would hold (that one is the largest sum
        from any tick on), so the lump keeps the bound and loses no evidence. Totals that went down (the slice's row
        was folded away) start the count over without evidence."""
        dk, dn = k_total - self.k, n_total - self.n
        self.k, self.n = k_total, n_total
        if dk < 0 or dn < 0:
            return self.statistic
        return self.update(dk, dn, p0, p1, share, now, tick_start)

    def update(
        self, k: int, n: int, p0: float, p1: float, share: bool, now: float = 0.0, tick_start: float = 0.0
    ) -> float:
        """Take one tick's counts (the tick ``[tick_start, now)`` of event time); return the statistic."""
        if n <= 0:
            return self.statistic
        was = self.statistic
        self.statistic = max(0.0, was + llr(k, n, p0, p1, share))
        if self.statistic == 0.0:
            self.start = None
        elif was == 0.0:
            self.start = tick_start
        self.updated = now
        return self.statistic


class SequentialState(msgspec.Struct, frozen=True):
    """One test in a checkpoint: its rule and labels, statistic, change point and last update."""

    rule: str
    labels: dict[str, str]
    statistic: float
    start: float | None
    updated: float | None
    k: int = 0
    n: int = 0


Key = tuple[str, str | None, str | None, str | None, str | None]
"""(rule, model, version, attribute, slice): what tells one rule's alerts apart (its other labels are the rule's)."""


class SequentialBank:
    """Every live sequential test, by rule and alert labels."""

    def __init__(self) -> None:
        self._tests: dict[Key, tuple[dict[str, str], Cusum]] = {}

    @staticmethod
    def key(rule: str, labels: Mapping[str, str]) -> Key:
        """The key of a rule's alert labels."""
        return (rule, labels.get("model"), labels.get("version"), labels.get("attribute"), labels.get("slice"))

    def test(self, rule: str, labels: dict[str, str]) -> Cusum:
        """The test of ``rule`` for the alert ``labels``, made on first use."""
        key = self.key(rule, labels)
        found = self._tests.get(key)
        if found is None:
            found = self._tests[key] = (labels, Cusum())
        return found[1]

    def items(self) -> Iterable[tuple[str, dict[str, str], Cusum]]:
        """(rule, labels, test) of every test."""
        return ((key[0], labels, c) for key, (labels, c) in self._tests.items())

    def forget_idle(self, rule: str, now: float, idle: float) -> None:
        """Forget ``rule``'s tests at zero without data for ``idle`` seconds (their slice left the top-k)."""
        for key in [
            k
            for k, (_, c) in self._tests.items()
            if k[0] == rule and c.statistic == 0.0 and (c.updated is None or now - c.updated >= idle)
        ]:
            del self._tests[key]

    def export(self, mine: Callable[[Mapping[str, str]], bool]) -> list[SequentialState]:
        """The tests whose labels ``mine`` accepts, as plain data for a checkpoint."""
        return [
            SequentialState(key[0], labels, c.statistic, c.start, c.updated, c.k, c.n)
            for key, (labels, c) in self._tests.items()
            if mine(labels)
        ]

    def load(self, states: Iterable[SequentialState]) -> None:
        """Restore tests from a checkpoint."""
        for s in states:
            self._tests[self.key(s.rule, s.labels)] = (dict(s.labels), Cusum(s.statistic, s.start, s.updated, s.k, s.n))

    def drop(self, mine: Callable[[Mapping[str, str]], bool]) -> None:
        """Forget the tests whose labels ``mine`` accepts."""
        for key in [k for k, (labels, _) in self._tests.items() if mine(labels)]:
            del self._tests[key]
