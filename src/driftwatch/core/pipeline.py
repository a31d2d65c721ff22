"""The pure pipeline: decode -> slice -> join -> fold into tick summaries -> windows -> metrics -> rules.

Synchronous and deterministic, driven only by event time: the same events
in the same batches always give the same metrics and alert transitions. The
streaming shell, ``driftwatch replay`` and the tests all run this class.

Time. Events fall into ticks of ``windows.tick`` seconds by their own event
time. The watermark is the largest event time seen minus ``lateness``; a tick
closes when the watermark passes its end, then it is merged into every
window and the rules are evaluated at the tick's end. An event whose tick
has already closed when it arrives is dropped as late (counted). Each event
is judged against the watermark as it stood just before it (the events before
it in its source counted), so how a stream is cut into batches never changes
which events count, and the rules see the same data at every tick.

Joins. Interactions find their prediction by ``request_id`` (remembered for
``join.ttl``, at most ``join.max_entries``). Complaints, escalations and the
other kinds count in the tick of their own event time. Labels count in the
tick of the prediction they label (so TPR/FPR and label coverage describe
the predictions made in a window); a label whose prediction's tick has left
every window still counts since start. What is counted in an earlier tick is
seen by windows and rules when the interaction's own tick closes (a label of
a prediction two minutes old appears in that prediction's tick, two minutes
later), and an interaction that waited for its prediction is seen when the
prediction's tick closes: what a rule sees at each tick depends on event
times only, never on how events were batched. An interaction that arrives before
its prediction waits up to ``join.grace``; then it is a join miss (counted,
never guessed).

References. A model whose reference is learnt from its first N events (or T
seconds) uses those events for the reference only; its metrics start after.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

from driftwatch.alerts.engine import AlertEngine, AlertTransition
from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.counters import Counters
from driftwatch.core.evaluate import Evaluator, MetricRow
from driftwatch.core.ingest import Ingestor
from driftwatch.core.profile import Profile
from driftwatch.core.slicing import AttributeCoder
from driftwatch.events import Decoded, Interaction, Prediction

__all__ = ["Counters", "MetricRow", "Pipeline"]


class Pipeline:
    """An :class:`~driftwatch.core.ingest.Ingestor` feeding an :class:`~driftwatch.core.evaluate.Evaluator` in one process."""

    def __init__(self, config: Config, key: bytes | None = None, profiles: dict[str, Profile] | None = None) -> None:
        self.config = config
        self.counters = Counters()
        self.ingestor = Ingestor(config, key, profiles, self.counters)
        self.evaluator = Evaluator(
            config, self.ingestor.layouts, self.ingestor.limits, self.ingestor.coders, self.counters
        )

    def process(
        self, raws: Sequence[bytes], source: str | None = None, *, time_range: tuple[float, float] | None = None
    ) -> tuple[Decoded, list[AlertTransition]]:
        """Decode and ingest one batch of raw events (from one ``source``); return the decode result and transitions.

        ``time_range``: the event times accepted (see :meth:`Ingestor.process`); None accepts any.
        """
        decoded, partials = self.ingestor.process(raws, source, time_range=time_range)
        self.evaluator.apply(partials)
        return decoded, self.evaluator.advance(self.ingestor.watermark)

    def ingest(self, predictions: Sequence[Prediction], interactions: Sequence[Interaction]) -> list[AlertTransition]:
        """Fold decoded events, advance the watermark, close ticks and evaluate rules."""
        self.evaluator.apply(self.ingestor.ingest(predictions, interactions))
        return self.evaluator.advance(self.ingestor.watermark)

    def flush(self) -> list[AlertTransition]:
        """Close every open tick (end of a replay): all events now count in the windows."""
        return self.evaluator.flush()

    def metric_rows(self, window: float = 0.0) -> Iterator[MetricRow]:
        """Every slice and attribute metric in ``window`` seconds (0 = since start), for reports."""
        return self.evaluator.metric_rows(window)

    def display(self, attribute: str, value: str) -> str:
        """The display name of an exposed value where the operator allowed one; else the value itself."""
        return self.evaluator.display(attribute, value)

    @property
    def streams(self) -> dict[tuple[str, str], object]:
        """Evaluation state per model x version (slice space, layout, window store)."""
        return self.evaluator.streams  # type: ignore[return-value]

    @property
    def layouts(self) -> dict[str, S.Layout]:
        """Column layout per model (present once its reference is known)."""
        return self.ingestor.layouts

    @property
    def coders(self) -> dict[str, AttributeCoder]:
        """Attribute coders (pseudonymisation, caps) by attribute name."""
        return self.ingestor.coders

    @property
    def engine(self) -> AlertEngine:
        """The alert lifecycle engine."""
        return self.evaluator.engine

    @property
    def transitions(self) -> deque[AlertTransition]:
        """The alert transitions so far (the latest 100,000), in order."""
        return self.evaluator.transitions

    @property
    def closed_before(self) -> int | None:
        """First tick not yet closed."""
        return self.evaluator.closed_before
