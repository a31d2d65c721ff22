"""Alert lifecycle per fingerprint (rule + labels): inactive -> pending -> firing -> resolved.

Pure and deterministic: driven only by the event time passed in, so the
same input always gives the same transitions.

- ``for``: the condition must hold on every sufficient evaluation for that
  long; one false evaluation while pending resets it. An insufficient one
  neither confirms nor resets it (a pending alert without sufficient data for
  one window length is dropped).
- The groups a comparison alert is about: the group comparison that made an
  alert pending or firing names its lowest and highest groups; the engine
  remembers them (:meth:`AlertEngine.groups`) so the rule can mark a later
  evaluation without either insufficient instead of judging the others.
- Hysteresis: a firing alert resolves only when the value is on the healthy
  side of ``resolve_threshold`` (or the condition is false, without one).
- ``keep_firing_for``: a firing alert that would resolve stays firing that
  long, damping flapping.
- Insufficient data never fires and never resolves a firing alert, but an
  alert whose slice stays without sufficient data for one window length
  resolves as stale (``resolved_reason: stale``; ``healthy`` otherwise).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

from driftwatch._time import rfc3339
from driftwatch.alerts.records import AlertRecord
from driftwatch.config import Rule

__all__ = ["AlertEngine", "AlertTransition", "Candidate", "fingerprint"]


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable 16-hex fingerprint of a label set (order-independent).

    >>> fingerprint({"b": "2", "a": "1"}) == fingerprint({"a": "1", "b": "2"})
    True
    """
    text = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One evaluated series of a rule: its labels, the value with evidence, and the verdicts."""

    labels: dict[str, str]
    value: float
    n: int
    lo: float
    hi: float
    sufficient: bool
    condition: bool
    healthy: bool
    evidence: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """An alert changing state, with everything on-call needs to judge it."""

    rule: str
    state: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    value: float
    n: int
    lo: float
    hi: float
    window: float
    event_time: float
    active_since: float
    severity: str
    actions: tuple[str, ...]
    evidence: dict[str, object]
    resolved_reason: str | None = None

    def to_record(self) -> AlertRecord:
        """The record of this transition (``replay --json`` and the alerts topic): RFC 3339 times, NaN as null."""

        def fin(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return AlertRecord(
            rule=self.rule,
            state=self.state,
            labels=self.labels,
            annotations=self.annotations,
            value=fin(self.value),
            n=self.n,
            interval=(fin(self.lo), fin(self.hi)),
            window_seconds=self.window,
            event_time=rfc3339(self.event_time),
            active_since=rfc3339(self.active_since),
            severity=self.severity,
            fingerprint=self.fingerprint,
            actions=self.actions,
            evidence=self.evidence,
            resolved_reason=self.resolved_reason,
        )


@dataclass(slots=True)
class _State:
    rule: str
    labels: dict[str, str]
    state: str = "inactive"
    since: float = 0.0
    last_sufficient: float = 0.0
    keep_until: float | None = None
    groups: list[str] | None = None  # the lowest and highest groups of the comparison that made it pending or firing


class AlertEngine:
    """Holds every fingerprint's state and turns evaluations into transitions."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}
        self._per_rule: dict[str, int] = {}

    def export(self, keep: Callable[[Mapping[str, str]], bool]) -> list[dict[str, object]]:
        """Plain records of the open alerts whose labels ``keep`` selects (for a checkpoint)."""
        return [
            {"fp": fp, **asdict(st)} for fp, st in self._states.items() if st.state != "inactive" and keep(st.labels)
        ]

    def load(self, records: Iterable[Mapping[str, object]]) -> None:
        """Add open alerts from :meth:`export` records (replacing those with the same fingerprint)."""
        for r in records:
            fields = {k: v for k, v in r.items() if k != "fp"}
            st = _State(**fields)  # type: ignore[arg-type]
            fp = str(r["fp"])
            if fp not in self._states:
                self._per_rule[st.rule] = self._per_rule.get(st.rule, 0) + 1
            self._states[fp] = st

    def drop(self, keep: Callable[[Mapping[str, str]], bool]) -> None:
        """Forget the alerts whose labels ``keep`` selects (their partition moved to another worker)."""
        for fp, st in list(self._states.items()):
            if keep(st.labels):
                del self._states[fp]
                self._per_rule[st.rule] -= 1

    def watching(self, rule: str) -> bool:
        """Whether ``rule`` has a pending or firing alert (else healthy candidates need not be built)."""
        return self._per_rule.get(rule, 0) > 0

    def active(self) -> dict[str, str]:
        """Fingerprint -> state for every pending or firing alert."""
        return {fp: s.state for fp, s in self._states.items() if s.state != "inactive"}

    def groups(self, fp: str) -> tuple[str, ...]:
        """The groups a pending or firing comparison alert is about (its lowest and highest groups when its
        condition last held); empty for other alerts and for inactive fingerprints."""
        st = self._states.get(fp)
        return () if st is None or st.state == "inactive" or not st.groups else tuple(st.groups)

    def open_alerts(self) -> list[tuple[str, str, dict[str, str]]]:
        """(rule, state, labels) of every pending or firing alert, from the engine's own state (also right after a
        checkpoint was restored, when no transition of them is in memory)."""
        return [(s.rule, s.state, s.labels) for s in self._states.values() if s.state != "inactive"]

    def evaluate(self, rule: Rule, now: float, candidates: Iterable[Candidate]) -> list[AlertTransition]:
        """Advance every candidate of ``rule`` to event time ``now``; return the transitions."""
        out: list[AlertTransition] = []
        seen: set[str] = set()
        for c in self._with_absent(rule, candidates, seen):
            fp = fingerprint(c.labels)
            seen.add(fp)
            st = self._states.get(fp)
            if st is None:
                if not c.condition:
                    continue  # nothing to remember for a healthy series never alerted
                st = self._states[fp] = _State(rule.name, c.labels)
                self._per_rule[rule.name] = self._per_rule.get(rule.name, 0) + 1
            if c.sufficient:
                st.last_sufficient = now
                if c.condition and "low_group" in c.evidence:
                    st.groups = sorted({str(c.evidence["low_group"]), str(c.evidence.get("high_group"))})
            new = self._step(rule, st, now, c)
            if new is not None:
                out.append(self._transition(rule, new, now, st, c, fp))
            if st.state == "inactive":
                del self._states[fp]
                self._per_rule[rule.name] -= 1
        return out

    def _with_absent(self, rule: Rule, candidates: Iterable[Candidate], seen: set[str]) -> Iterator[Candidate]:
        """The candidates, then an insufficient-data evaluation for each open alert whose series is gone."""
        yield from candidates
        if not self.watching(rule.name):
            return
        for fp, st in list(self._states.items()):
            if st.rule == rule.name and fp not in seen:
                nan = math.nan
                yield Candidate(st.labels, nan, 0, nan, nan, sufficient=False, condition=False, healthy=False)

    def _step(self, rule: Rule, st: _State, now: float, c: Candidate) -> str | None:
        if st.state == "inactive":
            if c.condition:
                st.since = now
                if rule.for_ <= 0:
                    st.state = "firing"
                    return "firing"
                st.state = "pending"
                return "pending"
            return None
        if st.state == "pending":
            if not c.sufficient:  # neither confirms nor refutes; dropped when data stays away for a window
                if now - st.last_sufficient >= rule.window:
                    st.state = "inactive"
                return None
            if not c.condition:
                st.state = "inactive"
                return None
            if now - st.since >= rule.for_:
                st.state = "firing"
                st.since = now
                return "firing"
            return None
        # firing
        if not c.sufficient:
            if now - st.last_sufficient >= rule.window:
                st.state = "inactive"
                return "resolved"
            return None
        if not c.healthy:
            st.keep_until = None
            return None
        if rule.keep_firing_for > 0:
            if st.keep_until is None:
                st.keep_until = now + rule.keep_firing_for
            if now < st.keep_until:
                return None
        st.state = "inactive"
        return "resolved"

    @staticmethod
    def _transition(rule: Rule, state: str, now: float, st: _State, c: Candidate, fp: str) -> AlertTransition:
        evidence = dict(c.evidence)
        reason = None
        if state == "resolved":
            reason = "healthy" if c.sufficient else "stale"
            if not c.sufficient:
                evidence["resolved_because"] = "stale: no sufficient data for one window"
        return AlertTransition(
            rule=rule.name,
            state=state,
            labels=c.labels,
            annotations=dict(rule.annotations),
            fingerprint=fp,
            value=c.value,
            n=c.n,
            lo=c.lo,
            hi=c.hi,
            window=rule.window,
            event_time=now,
            active_since=st.since,
            severity=rule.severity,
            actions=rule.actions,
            evidence=evidence,
            resolved_reason=reason,
        )
