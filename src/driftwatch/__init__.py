"""driftwatch: a streaming production monitor for customer-facing AI.

Per-slice drift, fairness and complaint-rate metrics over prediction and
interaction events, alert rules with a deterministic lifecycle, and a pure
core that runs the same way live, over a file, and in tests.
"""

from __future__ import annotations

from driftwatch.config import Config, load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.errors import ConfigError, DriftwatchError
from driftwatch.events import EventDecoder, Interaction, Prediction

__all__ = [
    "Config",
    "ConfigError",
    "DriftwatchError",
    "EventDecoder",
    "Interaction",
    "Pipeline",
    "Prediction",
    "__version__",
    "load_config",
]

__version__ = "0.1.0"
