"""Deep links into the Grafana dashboards, for alert notifications (pure, no Grafana SDK).

>>> links = DashboardLinks("https://grafana.example.internal/", {"feature_drift_psi": "drift"})
>>> links.url("feature_drift_psi", {"model": "support-router", "version": "v8", "attribute": "region", "slice": "EU"})
'https://grafana.example.internal/d/driftwatch-drift?var-model=support-router&var-version=v8&var-attribute=region&var-slice=EU'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from driftwatch.config import Config, Rule
from driftwatch.metrics.registry import spec

__all__ = ["DASHBOARDS", "UIDS", "DashboardLinks", "dashboard_for_rule"]

DASHBOARDS: Final = ("overview", "fairness", "drift", "health")
UIDS: Final[Mapping[str, str]] = {name: f"driftwatch-{name}" for name in DASHBOARDS}
"""Stable dashboard uids (deep links and provisioning rely on them)."""

_VARIABLES: Final = ("model", "version", "attribute", "slice")


def dashboard_for_rule(rule: Rule) -> str:
    """The dashboard an alert of ``rule`` links to: drift → drift, comparison → fairness, anything else overview."""
    kind = spec(rule.metric).kind
    if kind == "drift":
        return "drift"
    if kind == "comparison":
        return "fairness"
    return "overview"


@dataclass(frozen=True, slots=True)
class DashboardLinks:
    """Grafana's base URL and the dashboard of each rule."""

    base: str
    dashboards: Mapping[str, str] = field(default_factory=dict)
    """Rule name -> dashboard name (a rule not named links to the overview)."""

    @classmethod
    def from_config(cls, config: Config) -> DashboardLinks | None:
        """The links of a config, or None when its ``grafana.url`` is not set."""
        if config.grafana.url is None:
            return None
        return cls(config.grafana.url, {r.name: dashboard_for_rule(r) for r in config.rules})

    def url(self, rule: str, labels: Mapping[str, str]) -> str:
        """The dashboard of ``rule`` with the variables filled from an alert's labels (``*`` values left out)."""
        params = {f"var-{n}": labels[n] for n in _VARIABLES if labels.get(n) and labels[n] != "*"}
        url = f"{self.base.rstrip('/')}/d/{UIDS[self.dashboards.get(rule, 'overview')]}"
        return f"{url}?{urlencode(params)}" if params else url
