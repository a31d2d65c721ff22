"""Seeded, streaming generator of synthetic prediction and interaction events."""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from driftwatch import _fmath
from driftwatch.simulate import _domain as d

Scenario = Literal["baseline", "feature-drift", "bias", "complaint-spike", "label-shift"]
"""Name of a built-in traffic scenario."""

SCENARIOS: tuple[Scenario, ...] = (
    "baseline",
    "feature-drift",
    "bias",
    "complaint-spike",
    "label-shift",
)
"""All valid scenario names, in documentation order."""

DEFAULT_START_MS = 1_795_000_000_000
_BLOCK = 4096
ROLLBACK = "rollback"
"""Schedule key: from this time (ms) the complaint spike's version gets no traffic (a rollback happened)."""
# Injections start this far into the expected duration so that both the
# healthy reference window and the degraded window have plenty of data.
_INJECT_FRACTION = 0.4

# A pending interaction: (ts_ms, seq, request_id, kind, value, ts_as_int).
# `seq` is unique, so heap ordering never compares the later fields.
_Pending = tuple[int, int, str, str, str | bool | None, bool]


@dataclass(frozen=True, slots=True)
class Injection:
    """A problem deliberately injected into the traffic, with the rule that must catch it."""

    kind: str
    at_ms: int
    model_id: str
    model_version: str | None
    attribute: str | None
    value: str | None
    feature: str | None
    expected_rule: str
    description: str

    def to_json(self) -> dict[str, object]:
        """Return a JSON-ready dict, including `at` as an RFC 3339 string."""
        return {
            "kind": self.kind,
            "at_ms": self.at_ms,
            "at": format_rfc3339(self.at_ms),
            "model_id": self.model_id,
            "model_version": self.model_version,
            "attribute": self.attribute,
            "value": self.value,
            "feature": self.feature,
            "expected_rule": self.expected_rule,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Truth:
    """Ground truth of a generated stream: its parameters and injected problems."""

    scenario: str
    seed: int
    events: int
    start_ms: int
    end_ms: int
    injections: tuple[Injection, ...]

    def to_json(self) -> dict[str, object]:
        """Return a JSON-ready dict describing the stream and its injections."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "events": self.events,
            "start_ms": self.start_ms,
            "start": format_rfc3339(self.start_ms),
            "end_ms": self.end_ms,
            "end": format_rfc3339(self.end_ms),
            "injections": [inj.to_json() for inj in self.injections],
        }


def format_rfc3339(ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC with milliseconds and a `Z` suffix."""
    sec, milli = divmod(ms, 1000)
    base = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{milli:03d}Z"


def expected_duration_ms(events: int, rate: float) -> float:
    """Return the event time (ms after start) by which `events` events are expected."""
    lo, hi = 0.0, 1000.0
    while d.expected_events_until(hi, rate) < events:
        hi *= 2.0
    # Bisection on a monotone function: pure float arithmetic, so it is
    # deterministic across runs and platforms with IEEE doubles.
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if d.expected_events_until(mid, rate) < events:
            lo = mid
        else:
            hi = mid
    return hi


def _injections(scenario: str, at_ms: int) -> tuple[Injection, ...]:
    if scenario == "feature-drift":
        return (
            Injection(
                kind=scenario,
                at_ms=at_ms,
                model_id=d.SUPPORT_MODEL,
                model_version=None,
                attribute="region",
                value="EU",
                feature="message_length",
                expected_rule="feature_drift_psi",
                description="support-router message_length x3 for region=EU",
            ),
        )
    if scenario == "bias":
        return (
            Injection(
                kind=scenario,
                at_ms=at_ms,
                model_id=d.REFUND_MODEL,
                model_version=None,
                attribute="age_band",
                value="65+",
                feature=None,
                expected_rule="selection_rate_disparity",
                description=(
                    "refund-approval approves age_band=65+ at ~0.28 vs ~0.69 elsewhere "
                    f"(TPR {d.BIAS_TPR}, FPR {d.BIAS_FPR})"
                ),
            ),
        )
    if scenario == "complaint-spike":
        return (
            Injection(
                kind=scenario,
                at_ms=at_ms,
                model_id=d.SUPPORT_MODEL,
                model_version=d.SUPPORT_SPIKE_VERSION,
                attribute=None,
                value=None,
                feature=None,
                expected_rule="complaint_rate_high",
                description=(
                    f"support-router {d.SUPPORT_SPIKE_VERSION} takes "
                    f"{d.SPIKE_VERSION_SHARE:.0%} of traffic with complaint rate "
                    f"{d.SPIKE_COMPLAINT_P}"
                ),
            ),
        )
    if scenario == "label-shift":
        return (
            Injection(
                kind=scenario,
                at_ms=at_ms,
                model_id=d.REFUND_MODEL,
                model_version=None,
                attribute="language",
                value="ja",
                feature=None,
                expected_rule="tpr_gap",
                description=(
                    f"refund-approval TPR for language=ja drops to {d.LABEL_SHIFT_TPR} "
                    "while its selection rate stays ~0.69"
                ),
            ),
        )
    return ()


def _validate(scenario: str, events: int, seed: int, rate: float) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")
    if events < 0:
        raise ValueError(f"events must be >= 0, got {events}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive finite number, got {rate}")


def generate(
    scenario: str,
    *,
    events: int,
    seed: int,
    rate: float = 20.0,
    start_ms: int = DEFAULT_START_MS,
) -> tuple[Iterator[dict[str, object]], Truth]:
    """Return a lazy stream of exactly `events` events in ts order and its ground truth."""
    _validate(scenario, events, seed, rate)
    duration = expected_duration_ms(events, rate)
    at_ms = start_ms + int(_INJECT_FRACTION * duration)
    injections = _injections(scenario, at_ms)
    truth = Truth(
        scenario=scenario,
        seed=seed,
        events=events,
        start_ms=start_ms,
        end_ms=start_ms + int(duration),
        injections=injections,
    )
    stream = _stream(
        {scenario: at_ms} if injections else {},
        events=events,
        seed=seed,
        rate=rate,
        start_ms=start_ms,
    )
    return stream, truth


def generate_schedule(
    schedule: Mapping[str, int],
    *,
    events: int,
    seed: int,
    rate: float = 20.0,
    start_ms: int = DEFAULT_START_MS,
    block: int = 4096,
) -> Iterator[dict[str, object]]:
    """A lazy stream in which each named scenario's problem starts at its own event time (ms) and persists.

    For the live demo: e.g. ``{"feature-drift": t0 + 60_000, "bias": t0 + 120_000}``. The mapping is read
    again for every block of ``block`` predictions, so a caller may change it while the stream runs: setting
    ``"rollback"`` to a time (ms) sends the complaint spike's new version no traffic from then on (the demo's
    model gateway does this when driftwatch rolls the model back).
    """
    for scenario in schedule:
        if scenario != ROLLBACK:
            _validate(scenario, events, seed, rate)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return _stream(schedule, events=events, seed=seed, rate=rate, start_ms=start_ms, block=block)


def write_jsonl(
    scenario: str,
    path: Path,
    *,
    events: int,
    seed: int,
    rate: float = 20.0,
    start_ms: int = DEFAULT_START_MS,
) -> Truth:
    """Write the stream to `path` as JSON Lines and its truth to `path` + ".truth.json"."""
    stream, truth = generate(scenario, events=events, seed=seed, rate=rate, start_ms=start_ms)
    encoder = msgspec.json.Encoder()
    buf = bytearray()
    with path.open("wb") as fh:
        for event in stream:
            encoder.encode_into(event, buf, -1)
            buf += b"\n"
            # Flush in chunks so memory stays bounded for large streams.
            if len(buf) >= 1 << 20:
                fh.write(buf)
                buf.clear()
        fh.write(buf)
    truth_path = path.with_name(path.name + ".truth.json")
    truth_path.write_text(json.dumps(truth.to_json(), indent=2) + "\n", encoding="utf-8")
    return truth


@dataclass(frozen=True, slots=True)
class _Block:
    """Python-native columns for one block of predictions, ready for the emit loop."""

    ts: list[int]
    is_support: list[bool]
    is_v8: list[bool]
    region: list[int]
    language: list[int]
    channel: list[int]
    age_band: list[int]
    ts_int: list[bool]
    message_length: list[int]
    sentiment: list[float]
    account_age_days: list[int]
    topic: list[int]
    support_score: list[float]
    amount: list[float]
    prior_refunds: list[int]
    reason: list[int]
    deserving: list[bool]
    approve: list[bool]
    refund_score: list[float]
    label_as_bool: list[bool]
    # Flattened (row, kind column, delay ms, ts-as-int) of drawn interactions,
    # sorted by row; column len(FEEDBACK_KINDS) means a label.
    inter_row: list[int]
    inter_col: list[int]
    inter_delay: list[int]
    inter_ts_int: list[bool]


def _draw_block(
    rng: np.random.Generator,
    n: int,
    t0: float,
    *,
    rate: float,
    start_ms: int,
    schedule: Mapping[str, int],
) -> tuple[_Block, float]:
    """Draw one block of `n` predictions starting at event-time offset `t0` ms."""
    # Every array is drawn regardless of scenario or model, so a given seed
    # produces the same random stream (and identical pre-injection traffic)
    # in every scenario; effects are applied as deterministic transforms.
    gaps = rng.exponential(1000.0 / rate, n)
    offsets = t0 + np.concatenate(([0.0], np.cumsum(gaps[:-1])))
    t_next = float(offsets[-1] + gaps[-1])
    ts = start_ms + np.floor(offsets).astype(np.int64)

    def after(scenario: str) -> npt.NDArray[np.bool_]:
        at_ms = schedule.get(scenario)
        return ts >= at_ms if at_ms is not None else np.zeros(n, dtype=bool)

    u_attr = rng.random((n, 4))
    region = d.REGION.sample(u_attr[:, 0])
    language = d.LANGUAGE.sample(u_attr[:, 1])
    channel = d.CHANNEL.sample(u_attr[:, 2])
    age_band = d.AGE_BAND.sample(u_attr[:, 3])

    is_support = rng.random(n) < d.SUPPORT_SHARE
    u_version = rng.random(n)
    is_v8 = np.zeros(n, dtype=bool)
    if "complaint-spike" in schedule:
        is_v8 = is_support & after("complaint-spike") & ~after(ROLLBACK) & (u_version < d.SPIKE_VERSION_SHARE)

    # support-router features.
    msg = _fmath.exp(d.MESSAGE_LENGTH_LOG_MEDIAN + d.MESSAGE_LENGTH_LOG_SD * rng.standard_normal(n))
    if "feature-drift" in schedule:
        eu = region == d.REGION.values.index("EU")
        msg = np.where(after("feature-drift") & eu, msg * d.DRIFT_MESSAGE_LENGTH_FACTOR, msg)
    message_length = np.maximum(np.rint(msg), 1).astype(np.int64)
    sentiment = np.round(
        np.clip(d.SENTIMENT_MEAN + d.SENTIMENT_SD * rng.standard_normal(n), -1.0, 1.0),
        2,
    )
    account_age_days = np.floor(rng.exponential(d.ACCOUNT_AGE_MEAN_DAYS, n)).astype(np.int64)
    topic = d.TOPIC.sample(rng.random(n))
    support_score = np.round(rng.beta(*d.SUPPORT_SCORE_BETA, n), 3)

    # refund-approval features, ground truth and decision.
    amount = np.maximum(
        np.round(_fmath.exp(d.AMOUNT_LOG_MEDIAN + d.AMOUNT_LOG_SD * rng.standard_normal(n)), 2),
        0.01,
    )
    prior_refunds = rng.poisson(d.PRIOR_REFUNDS_MEAN, n)
    reason = d.REASON.sample(rng.random(n))
    deserving = rng.random(n) < d.P_DESERVING
    tpr = np.full(n, d.BASE_TPR)
    fpr = np.full(n, d.BASE_FPR)
    if "bias" in schedule:
        hit = after("bias") & (age_band == d.AGE_BAND.values.index("65+"))
        tpr[hit] = d.BIAS_TPR
        fpr[hit] = d.BIAS_FPR
    if "label-shift" in schedule:
        hit = after("label-shift") & (language == d.LANGUAGE.values.index("ja"))
        tpr[hit] = d.LABEL_SHIFT_TPR
        fpr[hit] = d.LABEL_SHIFT_FPR
    approve = rng.random(n) < np.where(deserving, tpr, fpr)
    b = rng.beta(*d.REFUND_SCORE_BETA, n)
    # Rounding to 3 decimals must not push a score across the 0.5 boundary.
    refund_score = np.where(
        approve,
        np.maximum(np.round(0.5 + 0.5 * b, 3), 0.5),
        np.minimum(np.round(0.5 * (1.0 - b), 3), 0.499),
    )

    # Interactions: six feedback kinds plus the label column.
    k = len(d.FEEDBACK_KINDS)
    probs = np.tile(np.array([p for _, p, _, _ in d.FEEDBACK_KINDS]), (n, 1))
    probs[is_v8, d.COMPLAINT_COLUMN] = d.SPIKE_COMPLAINT_P
    lo = np.array([lo_s for _, _, lo_s, _ in d.FEEDBACK_KINDS]) * 1000.0
    hi = np.array([hi_s for _, _, _, hi_s in d.FEEDBACK_KINDS]) * 1000.0
    mask = np.empty((n, k + 1), dtype=bool)
    mask[:, :k] = rng.random((n, k)) < probs
    mask[:, k] = ~is_support & (rng.random(n) < d.P_LABEL)
    delay = np.empty((n, k + 1), dtype=np.int64)
    delay[:, :k] = np.floor(lo + rng.random((n, k)) * (hi - lo)).astype(np.int64)
    label_delay = _fmath.exp(d.LABEL_DELAY_LOG_MEDIAN + d.LABEL_DELAY_LOG_SD * rng.standard_normal(n))
    # At least 1 ms so a label is always strictly after its prediction.
    delay[:, k] = np.clip(np.floor(label_delay), 1, d.LABEL_DELAY_MAX_MS).astype(np.int64)
    label_as_bool = rng.random(n) < d.P_LABEL_AS_BOOL
    ts_int = rng.random((n, k + 2)) < d.P_TS_AS_INT

    rows, cols = np.nonzero(mask)
    block = _Block(
        ts=ts.tolist(),
        is_support=is_support.tolist(),
        is_v8=is_v8.tolist(),
        region=region.tolist(),
        language=language.tolist(),
        channel=channel.tolist(),
        age_band=age_band.tolist(),
        ts_int=ts_int[:, k + 1].tolist(),
        message_length=message_length.tolist(),
        sentiment=sentiment.tolist(),
        account_age_days=account_age_days.tolist(),
        topic=topic.tolist(),
        support_score=support_score.tolist(),
        amount=amount.tolist(),
        prior_refunds=prior_refunds.tolist(),
        reason=reason.tolist(),
        deserving=deserving.tolist(),
        approve=approve.tolist(),
        refund_score=refund_score.tolist(),
        label_as_bool=label_as_bool.tolist(),
        inter_row=rows.tolist(),
        inter_col=cols.tolist(),
        inter_delay=delay[rows, cols].tolist(),
        inter_ts_int=ts_int[rows, cols].tolist(),
    )
    return block, t_next


def _stream(
    schedule: Mapping[str, int],
    *,
    events: int,
    seed: int,
    rate: float,
    start_ms: int,
    block: int = _BLOCK,
) -> Iterator[dict[str, object]]:
    """Yield exactly `events` events, merging predictions with pending interactions."""
    if events == 0:
        return
    rng = np.random.Generator(np.random.PCG64(seed))
    kinds = [name for name, _, _, _ in d.FEEDBACK_KINDS] + [d.LABEL_KIND]
    label_col = len(d.FEEDBACK_KINDS)
    regions, languages = d.REGION.values, d.LANGUAGE.values
    channels, age_bands = d.CHANNEL.values, d.AGE_BAND.values
    topics, reasons = d.TOPIC.values, d.REASON.values

    # ts strings are emitted in non-decreasing order, so caching the
    # formatted second avoids a datetime round-trip for most events.
    cache_sec = -1
    cache_prefix = ""

    def ts_value(ms: int, as_int: bool) -> object:
        nonlocal cache_sec, cache_prefix
        if as_int:
            return ms
        sec, milli = divmod(ms, 1000)
        if sec != cache_sec:
            cache_sec = sec
            cache_prefix = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{cache_prefix}.{milli:03d}Z"

    heap: list[_Pending] = []
    emitted = 0
    n_pred = 0
    n_inter = 0
    seq = 0
    t0 = 0.0
    while True:
        blk, t0 = _draw_block(
            rng,
            block,
            t0,
            rate=rate,
            start_ms=start_ms,
            schedule=schedule,
        )
        j = 0
        n_rows = len(blk.inter_row)
        for i in range(block):
            ts = blk.ts[i]
            # Interactions due at or before this prediction go first, keeping ts order.
            while heap and heap[0][0] <= ts:
                its, _, rid, kind, ivalue, as_int = heapq.heappop(heap)
                n_inter += 1
                yield {
                    "type": "interaction",
                    "schema_version": d.SCHEMA_VERSION,
                    "event_id": f"i-{n_inter}",
                    "ts": ts_value(its, as_int),
                    "request_id": rid,
                    "kind": kind,
                    "value": ivalue,
                }
                emitted += 1
                if emitted == events:
                    return

            n_pred += 1
            request_id = f"r-{seed}-{n_pred}"
            attributes = {
                "region": regions[blk.region[i]],
                "language": languages[blk.language[i]],
                "age_band": age_bands[blk.age_band[i]],
                "channel": channels[blk.channel[i]],
            }
            event: dict[str, object]
            if blk.is_support[i]:
                score = blk.support_score[i]
                event = {
                    "type": "prediction",
                    "schema_version": d.SCHEMA_VERSION,
                    "event_id": f"p-{n_pred}",
                    "ts": ts_value(ts, blk.ts_int[i]),
                    "model_id": d.SUPPORT_MODEL,
                    "model_version": d.SUPPORT_SPIKE_VERSION if blk.is_v8[i] else d.SUPPORT_VERSION,
                    "request_id": request_id,
                    "attributes": attributes,
                    "features": {
                        "message_length": blk.message_length[i],
                        "sentiment": blk.sentiment[i],
                        "account_age_days": blk.account_age_days[i],
                        "topic": topics[blk.topic[i]],
                    },
                    # favourable is omitted on purpose: the daemon derives it from config.
                    "prediction": "human" if score >= 0.5 else "ai",
                    "score": score,
                }
            else:
                approve = blk.approve[i]
                event = {
                    "type": "prediction",
                    "schema_version": d.SCHEMA_VERSION,
                    "event_id": f"p-{n_pred}",
                    "ts": ts_value(ts, blk.ts_int[i]),
                    "model_id": d.REFUND_MODEL,
                    "model_version": d.REFUND_VERSION,
                    "request_id": request_id,
                    "attributes": attributes,
                    "features": {
                        "amount": blk.amount[i],
                        "account_age_days": blk.account_age_days[i],
                        "prior_refunds": blk.prior_refunds[i],
                        "reason": reasons[blk.reason[i]],
                    },
                    "prediction": "approve" if approve else "deny",
                    "score": blk.refund_score[i],
                    "favorable": approve,
                }
            yield event
            emitted += 1
            if emitted == events:
                return

            while j < n_rows and blk.inter_row[j] == i:
                col = blk.inter_col[j]
                value: str | bool | None = None
                if col == label_col:
                    deserving = blk.deserving[i]
                    if blk.label_as_bool[i]:
                        value = deserving
                    else:
                        value = "approve" if deserving else "deny"
                seq += 1
                heapq.heappush(
                    heap,
                    (
                        ts + blk.inter_delay[j],
                        seq,
                        request_id,
                        kinds[col],
                        value,
                        blk.inter_ts_int[j],
                    ),
                )
                j += 1
