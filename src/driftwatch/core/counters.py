"""What happened to every event, shared by the ingest and evaluation halves of the pipeline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Counters"]


@dataclass(slots=True)
class Counters:
    """What happened to every event: decoded, rejected (by reason), late, joined, learnt from."""

    predictions: int = 0
    interactions: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    late_dropped: int = 0
    join_hits: int = 0
    join_misses: int = 0
    duplicate_labels: int = 0
    reference_learning: int = 0
    evaluations: int = 0
    slices_retired: int = 0  # evaluation rows given to a newer value, their counts folded into __other__
