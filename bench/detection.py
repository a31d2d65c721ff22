"""Benchmark: how fast each rule catches an injected problem, and how often it cries wolf on healthy traffic.

Replays simulated streams through the pure pipeline (no broker) with the
example config as shipped, whose window rules and sequential (CUSUM) rules
run side by side on the same events:

(1) delay       per scenario (feature drift, a selection-rate drop of one age
                band, a complaint spike on a new version, a TPR drop of one
                language) and seed: event time from the injection to each
                watching rule's first firing about the injected target, and
                the median over seeds (target: <= 120 s);
(2) false alarms  ``--healthy-hours`` of the baseline scenario per seed, split
                over two versions per model and with every attribute pair as
                a dimension (for >= 300 live slices): firing alerts per rule,
                per hour (target: 0 across seeds).

Figures are printed, never asserted (the scenario tests assert bounds).

    python bench/detection.py                     # 3 seeds, 6 h of healthy traffic each
    python bench/detection.py --seeds 1 --healthy-hours 1
"""

from __future__ import annotations

import os

# Bench-only pseudonymisation key (the example config pseudonymises age_band); never a real secret.
os.environ.setdefault("DRIFTWATCH_PSEUDONYM_KEY", "driftwatch-bench-only-pseudonym-key")

import argparse
import itertools
import statistics
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import msgspec
import yaml

from driftwatch.alerts.engine import AlertTransition
from driftwatch.config import Config, load_key
from driftwatch.core.pipeline import Pipeline
from driftwatch.simulate import Injection, Truth, generate
from driftwatch.simulate._domain import expected_events_until

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "driftwatch.example.yaml"
RATE = 40.0  # predictions per second of event time: the demo's rate
BATCH = 5_000
AFTER = 900.0  # seconds of traffic after the injection in a delay run

WATCHING = {
    "feature-drift": ("feature_drift_psi", "feature_drift_fast"),
    "bias": ("selection_rate_disparity", "selection_rate_drop"),
    "complaint-spike": ("complaint_rate_high", "complaint_rate_fast"),
    "label-shift": ("tpr_gap", "tpr_drop"),
}
"""Per scenario: the rules that should catch its injection (window rule first)."""


def config(*, all_pairs: bool = False) -> Config:
    """The example config as shipped; ``all_pairs``: every pair of attributes is a dimension too (more slices)."""
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    if all_pairs:
        raw["intersections"] = [list(p) for p in itertools.combinations(raw["attributes"], 2)]
    cfg = Config.model_validate(raw)
    problems = cfg.problems()
    if problems:
        sys.exit("bench config: " + "; ".join(problems))
    return cfg


def events_for(seconds: float) -> int:
    """How many events (predictions and interactions) the generator makes in ``seconds`` of event time."""
    return int(expected_events_until(seconds * 1000.0, RATE))


def replay(
    cfg: Config, scenario: str, seconds: float, seed: int, *, canary: bool = False
) -> tuple[list[AlertTransition], Pipeline, Truth]:
    """Replay ``seconds`` of ``scenario``; return every transition, the pipeline and the stream's truth.

    ``canary``: every model runs two versions of the same behaviour, half the requests each (a canary rollout of
    a healthy build), so twice the slices watch the same traffic."""
    stream, truth = generate(scenario, events=events_for(seconds), seed=seed, rate=RATE)
    p = Pipeline(cfg, load_key(cfg.privacy).get_secret_value())
    enc = msgspec.json.Encoder()
    out: list[AlertTransition] = []
    batch: list[bytes] = []
    for ev in stream:
        if canary and ev.get("type") == "prediction" and zlib.crc32(str(ev["request_id"]).encode()) % 2:
            ev["model_version"] = f"{ev['model_version']}-canary"
        batch.append(enc.encode(ev))
        if len(batch) >= BATCH:
            out.extend(p.process(batch)[1])
            batch = []
    out.extend(p.process(batch)[1])
    out.extend(p.flush())
    return out, p, truth


def about(t: AlertTransition, inj: Injection) -> bool:
    """Whether a firing names the injected target (model, version, slice value) or the attribute it compares."""
    labels = t.labels
    if labels.get("model") != inj.model_id:
        return False
    if inj.model_version is not None and labels.get("version") != inj.model_version:
        return False
    if inj.value is None:
        return True
    if labels.get("slice") is not None:
        return inj.value in labels["slice"].split(":")
    return labels.get("attribute") == inj.attribute


def delays(cfg: Config, seeds: list[int]) -> None:
    print(f"(1) delay from injection to first firing (event time, {RATE:g} predictions/s, {AFTER:g} s after it)")
    print(f"    {'scenario':<16} {'rule':<26} " + " ".join(f"seed {s:>3}" for s in seeds) + "   median  target")
    for scenario, rules in WATCHING.items():
        per_rule: dict[str, list[float]] = defaultdict(list)
        for seed in seeds:
            # The generator injects at 40% of the stream: 60% of it is AFTER seconds.
            transitions, _, truth = replay(cfg, scenario, AFTER / 0.6, seed)
            inj = truth.injections[0]
            at = inj.at_ms / 1000
            for rule in rules:
                first = next((t for t in transitions if t.rule == rule and t.state == "firing" and about(t, inj)), None)
                per_rule[rule].append(float("inf") if first is None else first.event_time - at)
        for rule in rules:
            got = per_rule[rule]
            med = statistics.median(got)
            cells = " ".join(f"{d:>8.0f}" if d != float("inf") else "  missed" for d in got)
            verdict = "met" if med <= 120 else "MISS"
            print(f"    {scenario:<16} {rule:<26} {cells}   {med:>6.0f}  <= 120 s {verdict}", flush=True)


def false_alarms(cfg: Config, seeds: list[int], hours: float) -> None:
    print(
        f"(2) false alarms over {hours:g} h of healthy traffic per seed (two versions per model, every attribute pair)"
    )
    fired: dict[str, int] = defaultdict(int)
    slices = []
    for seed in seeds:
        t0 = time.perf_counter()
        transitions, p, _ = replay(cfg, "baseline", hours * 3600, seed, canary=True)
        live = sum(len(s.space) for s in p.evaluator.streams.values())
        slices.append(live)
        for t in transitions:
            if t.state == "firing":
                fired[t.rule] += 1
        took = time.perf_counter() - t0
        print(f"    seed {seed}: {live} live slices, {sum(fired.values())} firing so far ({took:.0f} s)", flush=True)
    total_hours = hours * len(seeds)
    for rule in sorted({r.name for r in cfg.rules}):
        n = fired.get(rule, 0)
        print(f"    {rule:<28} {n:>4} firing  {n / total_hours:.3f} per hour")
    verdict = "met" if not fired and min(slices) >= 300 else "MISS"
    print(f"    all rules: {sum(fired.values())} firing, >= {min(slices)} live slices  target: 0 with >= 300 {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per scenario (1, 2, ...)")
    ap.add_argument("--healthy-hours", type=float, default=6.0, help="hours of healthy traffic per seed")
    args = ap.parse_args()
    seeds = list(range(1, args.seeds + 1))
    cfg = config()
    print(f"config: {EXAMPLE.relative_to(ROOT)} as shipped; load {os.getloadavg()}")
    delays(cfg, seeds)
    false_alarms(config(all_pairs=True), seeds, args.healthy_hours)


if __name__ == "__main__":
    main()
