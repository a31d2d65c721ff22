"""Grafana dashboards and their provisioning files, built from a config with the Grafana Foundation SDK.

:func:`dashboards` returns the four dashboards (``overview``, ``fairness``,
``drift``, ``health``) as JSON-able dicts; :func:`provisioning` the
provisioning YAML for a dashboards folder and a Prometheus data source.
Pure: ``driftwatch export grafana`` writes the files.

Every dashboard has the same template variables: ``datasource`` (a data
source variable, never ``__inputs``, so file provisioning works), then
``model`` → ``version`` → ``attribute`` → ``slice``, chained
``label_values`` queries. Panel queries name families of
:mod:`driftwatch.daemon.metrics` (see ``docs/metrics.md``).

:mod:`driftwatch.exports.links` makes the deep links an alert's webhook carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from grafana_foundation_sdk.builders import common as gcommon
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from driftwatch.config import Config, Rule
from driftwatch.exports.links import UIDS
from driftwatch.metrics.registry import spec

__all__ = ["dashboards", "provisioning", "to_json"]

_DS: Final = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
_TAGS: Final = ["driftwatch"]
_MV: Final = 'model=~"$model", version=~"$version"'
_SEL: Final = _MV + ', attribute="$attribute", slice="$slice"'
_WHOLE: Final = _MV + ', attribute="*", slice="*"'
_DI_THRESHOLD: Final = 0.8
"""The four-fifths rule: a disparate impact ratio below this is the usual red line."""


def _target(expr: str, legend: str, ref: str = "A") -> gprom.Dataquery:
    return gprom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range().datasource(_DS)


def _refs(targets: list[tuple[str, str]]) -> list[gprom.Dataquery]:
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)]


def _line(value: float) -> gd.ThresholdsConfig:
    """A dashed threshold line at ``value``."""
    return (
        gd.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=None, color="green"), dm.Threshold(value=value, color="red")])
    )


def _timeseries(
    pid: int,
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    description: str = "",
    threshold: float | None = None,
    width: int = 12,
) -> gts.Panel:
    panel = (
        gts.Panel()
        .id(pid)
        .title(title)
        .description(description)
        .datasource(_DS)
        .targets(list(_refs(targets)))
        .unit(unit)
        .height(8)
        .span(width)
        .legend(
            gcommon.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
        )
    )
    if threshold is not None:
        panel = panel.thresholds(_line(threshold)).thresholds_style(
            gcommon.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
        )
    return panel


def _band(pid: int, title: str, family: str, description: str) -> gts.Panel:
    """A rate of the selected slice with its 95% interval as a band (the ``_lower`` and ``_upper`` families)."""
    panel = _timeseries(
        pid,
        title,
        [
            (f"{family}{{{_SEL}}}", "{{model}} {{version}} rate"),
            (f"{family}_lower{{{_SEL}}}", "{{model}} {{version}} lower"),
            (f"{family}_upper{{{_SEL}}}", "{{model}} {{version}} upper"),
        ],
        unit="percentunit",
        description=description,
    )
    # The bounds are thin dashed lines with a light fill between them (one band per model and version).
    bound = [
        dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [4, 4]}),
        dm.DynamicConfigValue(id_val="custom.lineWidth", value=1),
    ]
    return panel.override_by_regexp(
        ".* upper$", [*bound, dm.DynamicConfigValue(id_val="custom.fillOpacity", value=15)]
    ).override_by_regexp(".* lower$", bound)


def _stat(pid: int, title: str, expr: str, legend: str, *, unit: str = "short", width: int = 6) -> gstat.Panel:
    return (
        gstat.Panel()
        .id(pid)
        .title(title)
        .datasource(_DS)
        .with_target(_target(expr, legend).instant())
        .unit(unit)
        .height(4)
        .span(width)
    )


def _variables(attribute_family: str, slice_family: str) -> list[gd.DatasourceVariable | gd.QueryVariable]:
    """datasource, then model → version → attribute → slice, each a ``label_values`` query on the one before."""

    def query(name: str, label: str, q: str, *, all_values: bool = False, regex: str = "") -> gd.QueryVariable:
        var = (
            gd.QueryVariable(name)
            .label(label)
            .datasource(_DS)
            .query({"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
        if regex:
            var = var.regex(regex)
        if all_values:
            var = (
                var.include_all(True)
                .multi(True)
                .all_value(".*")
                .current(dm.VariableOption(selected=True, text="All", value="$__all"))
            )
        return var

    return [
        gd.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query("model", "Model", "label_values(driftwatch_predictions, model)", all_values=True),
        query("version", "Version", 'label_values(driftwatch_predictions{model=~"$model"}, version)', all_values=True),
        query(
            "attribute",
            "Attribute",
            f"label_values({attribute_family}{{{_MV}}}, attribute)",
            regex="/^[^*]+$/",
        ),
        query(
            "slice",
            "Slice",
            f'label_values({slice_family}{{{_MV}, attribute="$attribute"}}, slice)',
            regex="/^[^*]+$/",
        ),
    ]


def _dashboard(name: str, title: str, description: str, attribute_family: str) -> gd.Dashboard:
    board = (
        gd.Dashboard(title)
        .uid(UIDS[name])
        .description(description)
        .tags(_TAGS)
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
    )
    for var in _variables(attribute_family, "driftwatch_selection_rate"):
        board = board.with_variable(var)
    return board


def _overview(config: Config) -> gd.Dashboard:
    board = _dashboard(
        "overview",
        "driftwatch / overview",
        "Per model and version: traffic, outcome rates, worst drift, fairness, alerts and label coverage.",
        "driftwatch_predictions",
    )
    pid = iter(range(1, 100))
    board = board.with_panel(
        _stat(
            next(pid),
            "Alerts firing",
            f'sum by (model, version) (driftwatch_alerts{{state="firing", {_MV}}})',
            "{{model}} {{version}}",
        )
    )
    board = board.with_panel(
        _stat(
            next(pid),
            "Predictions in the window",
            f"sum by (model, version) (driftwatch_predictions{{{_WHOLE}}})",
            "{{model}} {{version}}",
        )
    )
    board = board.with_panel(
        _stat(
            next(pid),
            "Worst drift (PSI)",
            f"max by (model, version) (driftwatch_feature_psi{{{_MV}}})",
            "{{model}} {{version}}",
        )
    )
    board = board.with_panel(
        _stat(
            next(pid),
            "Lowest disparate impact",
            f"min by (model, version) (driftwatch_fairness_disparate_impact_ratio{{{_MV}}})",
            "{{model}} {{version}}",
            unit="percentunit",
        )
    )
    rows: list[tuple[str, list[tuple[str, str]], str, float | None]] = [
        (
            "Traffic (predictions in the window)",
            [(f"driftwatch_predictions{{{_WHOLE}}}", "{{model}} {{version}}")],
            "short",
            None,
        ),
        (
            "Selection, complaint and escalation rates",
            [
                (f"driftwatch_selection_rate{{{_WHOLE}}}", "{{model}} {{version}} selection"),
                (f"driftwatch_complaint_rate{{{_WHOLE}}}", "{{model}} {{version}} complaint"),
                (f"driftwatch_escalation_rate{{{_WHOLE}}}", "{{model}} {{version}} escalation"),
            ],
            "percentunit",
            None,
        ),
        (
            "Worst drift per feature (PSI, any slice)",
            [
                (
                    f"max by (model, version, feature) (driftwatch_feature_psi{{{_MV}}})",
                    "{{model}} {{version}} {{feature}}",
                )
            ],
            "short",
            None,
        ),
        (
            "Disparate impact per protected attribute",
            [
                (
                    f"driftwatch_fairness_disparate_impact_ratio{{{_MV}}}",
                    "{{model}} {{version}} {{attribute}}",
                )
            ],
            "percentunit",
            _DI_THRESHOLD,
        ),
        (
            "Alerts firing per rule",
            [
                (
                    f'sum by (alertname, model, version) (driftwatch_alerts{{state="firing", {_MV}}})',
                    "{{alertname}} {{model}} {{version}}",
                )
            ],
            "short",
            None,
        ),
        (
            "Label coverage",
            [(f"driftwatch_label_coverage_ratio{{{_WHOLE}}}", "{{model}} {{version}}")],
            "percentunit",
            None,
        ),
        (
            "TPR and accuracy: estimated before labels (CBPE) and realised once labels arrive",
            [
                (f"driftwatch_estimated_true_positive_rate{{{_WHOLE}}}", "{{model}} {{version}} TPR estimated"),
                (f"driftwatch_true_positive_rate{{{_WHOLE}}}", "{{model}} {{version}} TPR realised"),
                (f"driftwatch_estimated_accuracy{{{_WHOLE}}}", "{{model}} {{version}} accuracy estimated"),
                (f"1 - driftwatch_error_rate{{{_WHOLE}}}", "{{model}} {{version}} accuracy realised"),
            ],
            "percentunit",
            None,
        ),
        (
            "Sequential tests: CUSUM statistic of the worst slice per rule (fires at the rule's h, 18 by default)",
            [
                (
                    f"max by (alertname, model, version) (driftwatch_rule_statistic{{{_MV}}})",
                    "{{alertname}} {{model}} {{version}}",
                )
            ],
            "short",
            None,
        ),
    ]
    for title, targets, unit, threshold in rows:
        board = board.with_panel(_timeseries(next(pid), title, targets, unit=unit, threshold=threshold))
    return board


def _fairness(config: Config) -> gd.Dashboard:
    di = "driftwatch_fairness_disparate_impact_ratio"
    board = _dashboard(
        "fairness",
        "driftwatch / fairness",
        "Group rates of a protected attribute with 95% intervals, disparate impact against the four-fifths line, "
        "and the TPR/FPR gaps.",
        di,
    )
    pid = iter(range(1, 100))
    board = board.with_panel(
        _timeseries(
            next(pid),
            "Disparate impact ratio ($attribute)",
            [(f'{di}{{{_MV}, attribute="$attribute"}}', "{{model}} {{version}}")],
            unit="percentunit",
            threshold=_DI_THRESHOLD,
            description="Lowest over highest selection rate across the attribute's groups; below 0.8 fails the four-fifths rule.",
        )
    )
    board = board.with_panel(
        _timeseries(
            next(pid),
            "Selection rate per group ($attribute)",
            [(f'driftwatch_selection_rate{{{_MV}, attribute="$attribute"}}', "{{model}} {{version}} {{slice}}")],
            unit="percentunit",
        )
    )
    board = board.with_panel(
        _timeseries(
            next(pid),
            "Predictions per group ($attribute)",
            [
                (
                    f'driftwatch_selection_rate_samples{{{_MV}, attribute="$attribute"}}',
                    "{{model}} {{version}} {{slice}}",
                )
            ],
            description="The n behind each group's selection rate; a small group has a wide interval.",
        )
    )
    for family, what in (
        ("driftwatch_selection_rate", "Selection rate"),
        ("driftwatch_complaint_rate", "Complaint rate"),
        ("driftwatch_escalation_rate", "Escalation rate"),
    ):
        board = board.with_panel(
            _band(
                next(pid),
                f"{what} of $attribute=$slice with 95% interval",
                family,
                f"{what}; the band is its Wilson 95% interval.",
            )
        )
    board = board.with_panel(
        _timeseries(
            next(pid),
            "TPR and FPR gaps ($attribute)",
            [
                (
                    f'driftwatch_fairness_equal_opportunity_difference{{{_MV}, attribute="$attribute"}}',
                    "{{model}} {{version}} TPR gap",
                ),
                (
                    f'driftwatch_fairness_equalized_odds_difference{{{_MV}, attribute="$attribute"}}',
                    "{{model}} {{version}} equalized odds",
                ),
            ],
            description="Needs ground-truth labels: absent where a model has none.",
        )
    )
    board = board.with_panel(
        _timeseries(
            next(pid),
            "Complaint and escalation parity ($attribute)",
            [
                (
                    f'driftwatch_complaint_parity_ratio{{{_MV}, attribute="$attribute"}}',
                    "{{model}} {{version}} complaint",
                ),
                (
                    f'driftwatch_escalation_parity_ratio{{{_MV}, attribute="$attribute"}}',
                    "{{model}} {{version}} escalation",
                ),
            ],
            unit="percentunit",
        )
    )
    return board


def _drift_rules(config: Config) -> list[Rule]:
    return [r for r in config.rules if spec(r.metric).kind == "drift" and r.threshold is not None]


def _drift(config: Config) -> gd.Dashboard:
    board = _dashboard(
        "drift",
        "driftwatch / drift",
        "PSI and Jensen-Shannon distance per feature and slice, each configured drift rule against its threshold.",
        "driftwatch_feature_psi",
    )
    pid = iter(range(1, 100))
    for family, what in (("driftwatch_feature_psi", "PSI"), ("driftwatch_feature_js_distance", "JS distance")):
        board = board.with_panel(
            _timeseries(
                next(pid),
                f"{what} per feature of $attribute=$slice",
                [(f"{family}{{{_SEL}}}", "{{model}} {{version}} {{feature}}")],
            )
        )
    board = board.with_panel(
        _timeseries(
            next(pid),
            "Feature values behind the distances ($attribute=$slice)",
            [("driftwatch_feature_samples{" + _SEL + "}", "{{model}} {{version}} {{feature}}")],
            description="How many values of each feature the PSI and JS distance of the window are computed from.",
        )
    )
    for rule in _drift_rules(config):
        matchers = [_MV]
        if rule.model != "*":
            matchers.append(f'model="{rule.model}"')
        if rule.version != "*":
            matchers.append(f'version="{rule.version}"')
        if rule.attribute is None:
            matchers.append('attribute="*"')
        elif rule.attribute != "*":
            matchers.append(f'attribute="{rule.attribute}"')
        if rule.feature is not None:
            matchers.append(f'feature="{rule.feature}"')
        family = spec(rule.metric).family
        assert rule.threshold is not None
        board = board.with_panel(
            _timeseries(
                next(pid),
                f"Rule {rule.name}: {rule.metric} {rule.op} {rule.threshold:g}",
                [(f"{family}{{{', '.join(matchers)}}}", "{{model}} {{version}} {{attribute}}={{slice}} {{feature}}")],
                threshold=rule.threshold,
                description=f"The rule's threshold is the dashed line (window {rule.window:g}s; the gauges show the exported window).",
            )
        )
    return board


def _health(config: Config) -> gd.Dashboard:
    board = _dashboard(
        "health",
        "driftwatch / worker health",
        "The workers themselves: consumer lag, stalls, evaluation freshness and time, dead letters, checkpoints, "
        "notifications and runbook actions.",
        "driftwatch_predictions",
    )
    pid = iter(range(1, 100))
    rate = "[$__rate_interval]"
    panels: list[tuple[str, list[tuple[str, str]], str]] = [
        (
            "Consumer lag (messages)",
            [("sum by (instance, topic) (driftwatch_consumer_lag)", "{{instance}} {{topic}}")],
            "short",
        ),
        (
            "Stalled partitions (seconds without progress)",
            [("max by (instance, topic) (driftwatch_consumer_stalled_seconds)", "{{instance}} {{topic}}")],
            "s",
        ),
        ("Last closed tick age", [("driftwatch_last_tick_age_seconds", "{{instance}}")], "s"),
        (
            "Dead letters by reason (per second)",
            [
                (f"sum by (reason) (rate(driftwatch_events_rejected_total{rate}))", "{{reason}}"),
                (f"sum by (instance) (rate(driftwatch_dead_lettered_total{rate}))", "dead-lettered {{instance}}"),
            ],
            "ops",
        ),
        (
            "Evaluation time (p50, p90)",
            [
                (
                    f"histogram_quantile(0.5, sum by (le) (rate(driftwatch_evaluation_duration_seconds_bucket{rate})))",
                    "p50",
                ),
                (
                    f"histogram_quantile(0.9, sum by (le) (rate(driftwatch_evaluation_duration_seconds_bucket{rate})))",
                    "p90",
                ),
            ],
            "s",
        ),
        (
            "Checkpoints written (total)",
            [("sum by (instance) (driftwatch_checkpoints_written_total)", "{{instance}}")],
            "short",
        ),
        (
            "Notifications (total)",
            [
                ("sum(driftwatch_notifications_sent_total)", "sent"),
                ("sum(driftwatch_notifications_retried_total)", "retried"),
                ("sum(driftwatch_notifications_dead_lettered_total)", "dead-lettered"),
            ],
            "short",
        ),
        (
            "Runbook actions (total)",
            [
                ("sum by (outcome) (driftwatch_actions_total)", "{{outcome}}"),
                ("sum(driftwatch_actions_awaiting_approval)", "awaiting approval"),
            ],
            "short",
        ),
    ]
    for title, targets, unit in panels:
        board = board.with_panel(_timeseries(next(pid), title, targets, unit=unit))
    return board


def dashboards(config: Config) -> dict[str, dict[str, object]]:
    """Name -> dashboard JSON (a dict) for ``overview``, ``fairness``, ``drift`` and ``health``."""
    built = {
        "overview": _overview(config),
        "fairness": _fairness(config),
        "drift": _drift(config),
        "health": _health(config),
    }
    out: dict[str, dict[str, object]] = {}
    for name, board in built.items():
        doc = json.loads(json.dumps(board.build(), cls=JSONEncoder))
        assert isinstance(doc, dict)
        out[name] = doc
    return out


def to_json(doc: Mapping[str, object]) -> str:
    """The committed form of a dashboard: sorted keys, two-space indent, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def provisioning(dashboards_path: str = "/var/lib/grafana/dashboards/driftwatch") -> dict[str, str]:
    """Relative path -> YAML text of Grafana's dashboard and data source provisioning files."""
    return {
        "provisioning/dashboards/driftwatch.yaml": (
            "# Generated by `driftwatch export grafana`; do not edit.\n"
            "apiVersion: 1\n"
            "providers:\n"
            "  - name: driftwatch\n"
            "    folder: driftwatch\n"
            "    type: file\n"
            "    disableDeletion: true\n"
            "    allowUiUpdates: false\n"
            "    updateIntervalSeconds: 60\n"
            "    options:\n"
            f"      path: {dashboards_path}\n"
            "      foldersFromFilesStructure: false\n"
        ),
        "provisioning/datasources/prometheus.yaml": (
            "# Generated by `driftwatch export grafana`; do not edit. Point url at the Prometheus that scrapes\n"
            "# driftwatch (PROMETHEUS_URL in Grafana's environment).\n"
            "apiVersion: 1\n"
            "datasources:\n"
            "  - name: Prometheus\n"
            "    uid: prometheus\n"
            "    type: prometheus\n"
            "    access: proxy\n"
            "    url: ${PROMETHEUS_URL}\n"
            "    isDefault: true\n"
            "    jsonData:\n"
            "      timeInterval: 15s\n"
        ),
    }
