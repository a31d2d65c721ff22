"""Seeded, deterministic synthetic traffic for the driftwatch demo domain.

`generate` streams prediction and interaction events (schema version 1) for one
of the `SCENARIOS`, together with a `Truth` naming every injected problem and
the alert rule expected to catch it; `write_jsonl` writes both to disk.
"""

from driftwatch.simulate._generator import (
    ROLLBACK,
    SCENARIOS,
    Injection,
    Scenario,
    Truth,
    generate,
    generate_schedule,
    write_jsonl,
)

__all__ = ["ROLLBACK", "SCENARIOS", "Injection", "Scenario", "Truth", "generate", "generate_schedule", "write_jsonl"]
