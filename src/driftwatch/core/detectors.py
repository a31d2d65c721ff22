"""Change detectors on per-tick series: River's ADWIN / PageHinkley, one per rule and slice, rebuilt from history.

A detector is fed once per closed tick with the slice's metric over that
tick (never per event: see the River costs in docs/architecture.md). Its
recent inputs are kept (:data:`~driftwatch.core.snapshot.DETECTOR_HISTORY`)
so a checkpoint can rebuild it by replaying them: River detectors are never
pickled.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType

from driftwatch.config import DetectorConfig, Rule
from driftwatch.core.snapshot import DETECTOR_HISTORY, DetectorState

__all__ = ["DetectorBank", "make_detector", "river_drift_module"]

DetectorKey = tuple[str, str]
"""(rule name, the alert's labels joined in order): one detector per rule and slice."""


class DetectorBank:
    """Every live detector, its recent inputs (for checkpoints) and when it last detected a change."""

    def __init__(self) -> None:
        self._detectors: dict[DetectorKey, object] = {}
        self._detected_at: dict[DetectorKey, float] = {}
        self._series: dict[DetectorKey, tuple[dict[str, str], deque[float]]] = {}

    @staticmethod
    def key(rule: str, labels: Mapping[str, str]) -> DetectorKey:
        """The detector key of a rule's alert labels."""
        return (rule, "\x1f".join(f"{k}={v}" for k, v in sorted(labels.items())))

    def update(self, key: DetectorKey, labels: dict[str, str], x: float, now: float, cfg: DetectorConfig) -> None:
        """Feed one per-tick value; remember ``now`` if the detector signals a change."""
        det = self._detectors.get(key)
        if det is None:
            det = self._detectors[key] = make_detector(cfg.kind, cfg.delta, cfg.threshold)
            self._series[key] = (labels, deque(maxlen=DETECTOR_HISTORY))
        self._series[key][1].append(x)
        det.update(x)  # type: ignore[attr-defined]
        if det.drift_detected:  # type: ignore[attr-defined]
            self._detected_at[key] = now

    def detected_at(self, key: DetectorKey) -> float | None:
        """Event time of the detector's latest change point, if any."""
        return self._detected_at.get(key)

    def export(self, mine: Callable[[Mapping[str, str]], bool]) -> list[DetectorState]:
        """The detectors whose labels ``mine`` accepts, as plain data for a checkpoint."""
        return [
            DetectorState(key[0], labels, list(series), self._detected_at.get(key))
            for key, (labels, series) in self._series.items()
            if mine(labels)
        ]

    def load(self, states: Iterable[DetectorState], rules: Iterable[Rule]) -> None:
        """Rebuild detectors from a checkpoint by replaying their recent inputs (rules no longer configured: skipped)."""
        by_name = {r.name: r for r in rules}
        for d in states:
            rule = by_name.get(d.rule)
            if rule is None or rule.detector is None:
                continue
            key = self.key(d.rule, d.labels)
            det = make_detector(rule.detector.kind, rule.detector.delta, rule.detector.threshold)
            for x in d.series:
                det.update(x)  # type: ignore[attr-defined]
            self._detectors[key] = det
            self._series[key] = (dict(d.labels), deque(d.series, maxlen=DETECTOR_HISTORY))
            if d.detected_at is not None:
                self._detected_at[key] = d.detected_at

    def drop(self, mine: Callable[[Mapping[str, str]], bool]) -> None:
        """Forget the detectors whose labels ``mine`` accepts."""
        for key in [k for k, (labels, _) in self._series.items() if mine(labels)]:
            del self._series[key]
            self._detectors.pop(key, None)
            self._detected_at.pop(key, None)


def make_detector(kind: str, delta: float | None, threshold: float | None) -> object:
    """A fresh River detector of ``kind`` (``adwin`` or ``page_hinkley``) with the rule's parameters."""
    if kind == "adwin":
        adwin = river_drift_module("adwin")
        return adwin.ADWIN(delta=delta or 0.002)
    # River's defaults: delta=0.005, threshold=50.
    ph = river_drift_module("page_hinkley")
    return ph.PageHinkley(delta=0.005 if delta is None else delta, threshold=50.0 if threshold is None else threshold)


def load_detectors(kinds: Iterable[str]) -> None:
    """Load the River modules of detector ``kinds`` now (~50 ms): an evaluator whose rules use detectors calls it
    when built, so the first tick it evaluates does not stall on the import."""
    for kind in set(kinds):
        river_drift_module(kind)  # the kinds are the modules' names


def river_drift_module(name: str) -> ModuleType:
    """``river.drift.<name>``, loaded without running ``river/drift/__init__.py``.

    That ``__init__`` imports ``river.drift.datasets`` and so sklearn, pandas and
    pyarrow: ~120 MB of RSS and ~1.2 s that a worker never uses. The detector
    modules themselves import only ``river.base``, ``river.stats`` and river's
    compiled core (absolute imports), so each is loaded from its file under its
    own name: a later ``import river.drift`` finds it in ``sys.modules`` and
    reuses it, so there is only ever one ``ADWIN`` class.
    """
    full = f"river.drift.{name}"
    mod = sys.modules.get(full)
    if mod is not None:
        return mod
    river_spec = importlib.util.find_spec("river")
    assert river_spec is not None
    assert river_spec.origin is not None
    spec = importlib.util.spec_from_file_location(full, Path(river_spec.origin).parent / "drift" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[full] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[full]
        raise
    return mod
