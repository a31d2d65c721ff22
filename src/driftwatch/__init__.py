"""driftwatch: a streaming production monitor for customer-facing AI.

Per-slice drift, fairness and complaint-rate metrics over prediction and
interaction events, alert rules with a deterministic lifecycle, and a pure
core that runs the same way live, over a file, and in tests.

The public names are importable from here. They load lazily, so a model
server that only needs :class:`Client` never imports numpy or the pipeline::

    from driftwatch import Client, load_config
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from driftwatch.errors import (
    ConfigError,
    DriftwatchError,
    InputError,
    ProfileError,
    SecretMissingError,
)

if TYPE_CHECKING:
    from driftwatch.alerts.records import AlertRecord
    from driftwatch.client import Client
    from driftwatch.config import Config, load_config
    from driftwatch.core.pipeline import Pipeline
    from driftwatch.core.report import MetricRow
    from driftwatch.events import EventDecoder, Interaction, Prediction
    from driftwatch.profiles import load_profiles

__all__ = [
    "AlertRecord",
    "Client",
    "Config",
    "ConfigError",
    "DriftwatchError",
    "EventDecoder",
    "InputError",
    "Interaction",
    "MetricRow",
    "Pipeline",
    "Prediction",
    "ProfileError",
    "SecretMissingError",
    "__version__",
    "load_config",
    "load_profiles",
]

__version__ = "0.1.0"

_LAZY = {
    "AlertRecord": "driftwatch.alerts.records",
    "Client": "driftwatch.client",
    "Config": "driftwatch.config",
    "load_config": "driftwatch.config",
    "Pipeline": "driftwatch.core.pipeline",
    "MetricRow": "driftwatch.core.report",
    "EventDecoder": "driftwatch.events",
    "Interaction": "driftwatch.events",
    "Prediction": "driftwatch.events",
    "load_profiles": "driftwatch.profiles",
}


def __getattr__(name: str) -> object:
    """Import a public name on first use (PEP 562), so ``import driftwatch`` stays cheap."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'driftwatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
