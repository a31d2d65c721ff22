"""The ``driftwatch`` command line: replay, check-config, simulate, baseline, schema, dead-letters.

Exit codes: 0 success, 1 unreadable input, 2 invalid configuration or usage.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from driftwatch import __version__
from driftwatch._time import rfc3339
from driftwatch.errors import ConfigError, DriftwatchError, InputError
from driftwatch.eventfile import EventFile

if TYPE_CHECKING:
    # The config (pydantic), the pipeline (numpy) and the report modules load only in the commands that use them:
    # `--help` and the light commands start in a fraction of the time.
    from driftwatch.alerts.engine import AlertTransition
    from driftwatch.config import Config
    from driftwatch.core.pipeline import MetricRow, Pipeline
    from driftwatch.reports.spec import ReportSpec

__all__ = ["app", "main"]

app = typer.Typer(
    name="driftwatch",
    help="Production monitor for customer-facing AI: per-slice drift, fairness and complaint metrics, and alerts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
baseline_app = typer.Typer(help="Reference profiles that drift is measured against.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="driftwatch YAML config.", envvar="DRIFTWATCH_CONFIG", show_envvar=True),
]


def _fail(code: int, message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load(config: Path, *, need_key: bool = True) -> tuple[Config, bytes | None]:
    from driftwatch.config import load_config, load_key

    try:
        cfg = load_config(config)
        key = None
        if need_key and any(a.sensitive for a in cfg.attributes.values()):
            key = load_key(cfg.privacy).get_secret_value()
        return cfg, key
    except ConfigError as e:
        raise _fail(2, str(e)) from None


_EVENTS_HELP = "JSON Lines file of prediction and interaction events (gzip-compressed too), or - for stdin."


class _Rejects:
    """Rejected lines: counted, the first few kept to show, every one written to ``path`` when given (line number,
    reason and field path as JSON Lines; never the value, which may be personal data)."""

    SHOWN = 5

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self.first: list[tuple[int, str, str | None]] = []
        self._fh = path.open("w", encoding="utf-8") if path is not None else None

    def add(self, line: int, reason: str, field: str | None) -> None:
        self.count += 1
        if len(self.first) < self.SHOWN:
            self.first.append((line, reason, field))
        if self._fh is not None:
            self._fh.write(json.dumps({"line": line, "reason": reason, "field": field}) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if not self.count:
            return
        shown = ", ".join(f"line {n} ({r}{f' at {f}' if f else ''})" for n, r, f in self.first)
        more = f" and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        where = f"; all of them in {self.path}" if self.path is not None else "; --rejects FILE lists them all"
        err.print(f"rejected {self.count} events: {shown}{more}{where}", highlight=False, soft_wrap=True)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _alert_json(t: AlertTransition) -> dict[str, object]:
    return {"type": "alert", **msgspec.structs.asdict(t.to_record())}


def _metric_json(r: MetricRow) -> dict[str, object]:
    return {
        "type": "metric",
        "name": r.name,
        "labels": r.labels,
        "value": _finite(r.value),
        "n": r.n,
        "interval": [_finite(r.lo), _finite(r.hi)],
        "status": r.status,
    }


@app.command()
def replay(
    events: Annotated[
        str,
        typer.Argument(help=_EVENTS_HELP),
    ],
    config: ConfigOpt,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per line: alerts as they happen, then final metrics.")
    ] = False,
    batch: Annotated[int, typer.Option(help="Events decoded and folded per batch.", min=1)] = 10_000,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
    ] = None,
    rejects_file: Annotated[
        Path | None,
        typer.Option(
            "--rejects",
            help="Write every rejected line as JSON Lines: its line number, reason and field path (never the value).",
        ),
    ] = None,
    reports_dir: Annotated[
        Path | None,
        typer.Option(
            "--reports",
            help="Write an HTML report (drift table, fairness by group, the alert's evidence) of every firing drift, "
            "fairness or complaint alert into this directory as <id>.html; --json alert lines name it.",
        ),
    ] = None,
) -> None:
    """Run the whole pure pipeline over a recorded event file: backtest rules, print metrics and alert transitions."""
    cfg, key = _load(config)
    if reports_dir is not None:
        cfg = _reporting(cfg)
    from driftwatch.core.pipeline import Pipeline
    from driftwatch.profiles import load_profiles

    try:
        pipeline = Pipeline(cfg, key, load_profiles(cfg))
    except DriftwatchError as e:
        raise _fail(2, str(e)) from None
    specs = _collect_reports(pipeline) if reports_dir is not None else {}
    out = sys.stdout
    enc = msgspec.json.Encoder()
    show_progress = sys.stderr.isatty() if progress is None else progress
    # A recorded event cannot come from the future: the wall clock bounds replay too (never the past: files are old).
    accepted = cfg.windows.event_time_range(time.time(), live=False)
    try:
        rejects = _Rejects(rejects_file)
    except OSError as e:
        raise _fail(1, f"{rejects_file}: cannot write: {e.strerror}") from None

    def emit(transitions: list[AlertTransition]) -> None:
        for t in transitions:
            spec = specs.get((t.fingerprint, t.event_time)) if t.state == "firing" else None
            if json_out:
                line = _alert_json(t)
                if spec is not None and reports_dir is not None:
                    line["report"] = str(reports_dir / f"{spec.report_id}.html")
                out.write(enc.encode(line).decode() + "\n")
            else:
                _print_transition(pipeline, t)

    try:
        source = EventFile(events)
        with (
            source,
            Progress(
                TextColumn("replay"),
                BarColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                disable=not show_progress,
                transient=True,
            ) as bar,
        ):
            task = bar.add_task("replay", total=source.size)
            for lines, numbers in source.batches(batch):
                decoded, transitions = pipeline.process(lines, time_range=accepted)
                for bad in decoded.errors:
                    rejects.add(numbers[bad.index], bad.reason, bad.field)
                emit(transitions)
                bar.update(task, completed=source.position())
        emit(pipeline.flush())
    except InputError as e:
        raise _fail(1, str(e)) from None
    finally:
        rejects.close()

    if json_out:
        for w in (0.0, *cfg.windows.windows):
            for row in pipeline.metric_rows(w):
                out.write(enc.encode(_metric_json(row)).decode() + "\n")
        out.write(enc.encode({"type": "summary", **_counters(pipeline)}).decode() + "\n")
    else:
        _print_summary(pipeline)
    if reports_dir is not None:
        _write_reports(list(specs.values()), reports_dir, cfg.reports.timeout)


@app.command()
def report(
    events: Annotated[
        str,
        typer.Argument(help=_EVENTS_HELP),
    ],
    config: ConfigOpt,
    model: Annotated[str, typer.Option(help="The model to report on.")],
    version: Annotated[
        str | None, typer.Option(help="Its version (default: the newest version that carried traffic).")
    ] = None,
    attribute: Annotated[
        str | None, typer.Option(help="Restrict the drift table to one slice: its attribute (needs --slice).")
    ] = None,
    slice_value: Annotated[
        str | None,
        typer.Option("--slice", help="The slice's value: as /metrics shows it, or the raw value of a sensitive one."),
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Window length, e.g. 5m (default: the first configured window).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="End of the window, RFC 3339 event time (default: the end of the file's events)."),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    batch: Annotated[int, typer.Option(help="Events decoded and folded per batch.", min=1)] = 10_000,
) -> None:
    """Build the report of one model version's window from a recorded event file: the same report an alert links
    to (Evidently drift table of the slice against the reference, fairness by group, the window's metrics)."""
    from driftwatch._duration import parse_duration
    from driftwatch._time import epoch
    from driftwatch.reports.assemble import spec_for
    from driftwatch.reports.runner import ReportError, ReportRunner

    cfg, key = _load(config)
    cfg = _reporting(cfg)
    if model not in cfg.models:
        raise _fail(2, f"--model {model!r} is not in {config} (models: {', '.join(sorted(cfg.models))})")
    if (attribute is None) != (slice_value is None):
        raise _fail(2, "--attribute and --slice go together")
    if attribute is not None and attribute not in cfg.dimensions():
        raise _fail(2, f"--attribute {attribute!r} is not a slice dimension (one of: {', '.join(cfg.dimensions())})")
    try:
        length = parse_duration(window) if window is not None else (cfg.windows.windows or (cfg.windows.tick,))[0]
    except ValueError as e:
        raise _fail(2, f"--window: {e}") from None
    end_at = None
    if at is not None:
        end_at = epoch(at)
        if end_at is None:
            raise _fail(2, f"--at {at!r} is not an RFC 3339 time (e.g. 2026-11-18T10:47:30Z)")
    from driftwatch.core.pipeline import Pipeline
    from driftwatch.profiles import load_profiles

    try:
        pipeline = Pipeline(cfg, key, load_profiles(cfg))
    except DriftwatchError as e:
        raise _fail(2, str(e)) from None
    pipeline.evaluator.keep_samples(length)
    tick = cfg.windows.tick
    captured: list[ReportSpec] = []
    shown = None if attribute is None else pipeline.evaluator.exposure

    def spec_at(end: float) -> ReportSpec:
        ver = version or _newest_version(pipeline, model)
        value = slice_value if shown is None or attribute is None else shown.shown_value(attribute, slice_value)
        return spec_for(
            pipeline.evaluator, model=model, version=ver, window=length, end=end,
            attribute=attribute, value=value,
        )  # fmt: skip

    if end_at is not None:
        target = math.ceil(end_at / tick - 1e-9) * tick

        def on_tick(end: float, _transitions: list[AlertTransition]) -> None:
            if not captured and end >= target - 1e-9:
                captured.append(spec_at(end))

        pipeline.evaluator.on_tick = on_tick
    try:
        with EventFile(events) as source:
            for lines, _ in source.batches(batch):
                pipeline.process(lines)
                if captured:
                    break
    except InputError as e:
        raise _fail(1, str(e)) from None
    if not captured:
        pipeline.flush()
        closed = pipeline.evaluator.closed_before
        if end_at is not None or closed is None:
            span = "" if closed is None else f" (its events end at {rfc3339(closed * tick)})"
            raise _fail(1, f"{events}: no window of {model} ends at {at or 'the end'}{span}")
        captured.append(spec_at(closed * tick))
    spec = captured[0]
    if not spec.metrics:
        raise _fail(1, f"{events}: no events of {model} {spec.version or '(no version)'} in that window")
    err.print(
        f"report: {spec.title}, window of {spec.window_seconds:g} s to {spec.window_end}, "
        f"{spec.current.rows} sampled rows against {spec.reference.rows} reference rows",
        soft_wrap=True,
    )
    try:
        with ReportRunner(timeout=cfg.reports.timeout) as runner:
            html = runner.build(spec)
        output.write_text(html, encoding="utf-8")
    except ReportError as e:
        raise _fail(1, f"report failed: {e}") from None
    except OSError as e:
        raise _fail(1, f"{output}: cannot write: {e.strerror}") from None
    typer.echo(str(output))


def _newest_version(pipeline: Pipeline, model: str) -> str:
    """The version of ``model`` that started carrying traffic last (event time), or "" without any."""
    seen = pipeline.ingestor.versions.get(model, [])
    return seen[-1] if seen else ""


def _reporting(cfg: Config) -> Config:
    """``cfg`` with reports on (the ingest keeps the samples reports are built from)."""
    return cfg.model_copy(update={"reports": cfg.reports.model_copy(update={"enabled": True})})


def _collect_reports(pipeline: Pipeline) -> dict[tuple[str, float], ReportSpec]:
    """Assemble the report of every firing alert at the tick it fires, keyed by (fingerprint, event time)."""
    from driftwatch.reports.assemble import spec_of_alert

    specs: dict[tuple[str, float], ReportSpec] = {}

    def on_tick(_end: float, transitions: list[AlertTransition]) -> None:
        for t in transitions:
            spec = spec_of_alert(pipeline.evaluator, t)
            if spec is not None:
                specs[(t.fingerprint, t.event_time)] = spec

    pipeline.evaluator.on_tick = on_tick
    return specs


def _write_reports(specs: list[ReportSpec], directory: Path, timeout: float) -> None:
    """Build each report in the report process and write it as ``<id>.html``; a failure is printed, never fatal."""
    from driftwatch.reports.runner import ReportError, ReportRunner

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _fail(1, f"{directory}: cannot create: {e.strerror}") from None
    if not specs:
        err.print(
            f"reports: no firing drift, fairness or complaint alert; nothing written to {directory}", soft_wrap=True
        )
        return
    failed = 0
    with ReportRunner(timeout=timeout) as runner:
        for i, spec in enumerate(specs, start=1):
            target = directory / f"{spec.report_id}.html"
            try:
                html = runner.build(spec)
                target.write_text(html, encoding="utf-8")
            except (ReportError, OSError) as e:
                failed += 1
                err.print(f"report {i}/{len(specs)} {spec.title}: failed: {e}", soft_wrap=True)
                continue
            err.print(f"report {i}/{len(specs)} {spec.title}: {target}", soft_wrap=True)
    if failed:
        err.print(f"reports: {failed} of {len(specs)} failed")


def _counters(p: Pipeline) -> dict[str, object]:
    c = p.counters
    out: dict[str, object] = {
        "predictions": c.predictions,
        "interactions": c.interactions,
        "rejected": dict(sorted(c.rejected.items())),
        "late_dropped": c.late_dropped,
        "join_hits": c.join_hits,
        "join_misses": c.join_misses,
        "duplicate_labels": c.duplicate_labels,
        "reference_learning": c.reference_learning,
        "folded_values": {k: v.folded for k, v in p.coders.items() if v.folded},
        "alerts": {s: sum(1 for t in p.transitions if t.state == s) for s in ("pending", "firing", "resolved")},
    }
    waiting = p.ingestor.waiting()
    if waiting:  # interactions whose prediction was not in the file (nor had their grace run out by its end)
        out["join_waiting"] = waiting
    return out


def _slice_name(p: Pipeline, labels: dict[str, str]) -> str:
    attr = labels.get("attribute")
    if not attr or attr == "*":
        return "(all)"
    value = labels.get("slice")
    if value is None:
        return attr
    if ":" in attr:
        a, b = attr.split(":")
        va, _, vb = value.partition(":") if not value.startswith("h:") else (value[:18], "", value[19:])
        return f"{a}={p.display(a, va)} x {b}={p.display(b, vb)}"
    return f"{attr}={p.display(attr, value)}"


_STATE_STYLE = {"pending": "yellow", "firing": "bold red", "resolved": "green"}


def _print_transition(p: Pipeline, t: AlertTransition) -> None:
    style = _STATE_STYLE.get(t.state, "")
    where = f"{t.labels.get('model')}/{t.labels.get('version')} {_slice_name(p, t.labels)}"
    if "feature" in t.labels:
        where += f" feature={t.labels['feature']}"
    value = "n/a" if not math.isfinite(t.value) else f"{t.value:.4g}"
    extra = ""
    low = t.evidence.get("low_group")
    if isinstance(low, str):
        extra = f" lowest group={p.display(t.labels.get('attribute', ''), low)}"
    _console().print(
        f"{rfc3339(t.event_time)}  [{style}]{t.state:<8}[/] {t.rule:<28} {where}  value={value} n={t.n}{extra}",
        highlight=False,
        soft_wrap=True,
    )


def _console() -> Console:
    # Piped output (CI logs, `| less`) gets a wide table instead of rich's 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _print_summary(p: Pipeline) -> None:
    from driftwatch.metrics.registry import TABLE_COLUMNS

    console = _console()
    window = p.config.windows.windows[0] if p.config.windows.windows else 0.0
    rows: dict[tuple[str, str, str], dict[str, MetricRow]] = {}
    for r in p.metric_rows(0.0):
        # The table shows the whole model and single attributes; pairs are in --json.
        if "slice" not in r.labels or "feature" in r.labels or ":" in r.labels["attribute"]:
            continue
        key = (r.labels["model"], r.labels["version"], _slice_name(p, r.labels))
        rows.setdefault(key, {})[r.name] = r
    drift: dict[tuple[str, str, str], tuple[float, str]] = {}
    for r in p.metric_rows(0.0):
        if r.name == "psi" and r.value is not None:
            key = (r.labels["model"], r.labels["version"], _slice_name(p, r.labels))
            if r.value > drift.get(key, (-1.0, ""))[0]:
                drift[key] = (r.value, r.labels["feature"])
    table = Table(title="Per-slice metrics since start (- = insufficient data)", title_justify="left")
    for col in ("model", "version", "slice", "n", *(m.column or m.name for m in TABLE_COLUMNS), "worst PSI"):
        table.add_column(col, justify="left" if col in ("model", "version", "slice") else "right", no_wrap=True)

    def fmt(d: dict[str, MetricRow], name: str) -> str:
        r = d.get(name)
        return "-" if r is None or r.value is None else f"{r.value:.3f}"

    for key, d in rows.items():
        n = d["selection_rate"].n if "selection_rate" in d else 0
        worst = drift.get(key)
        table.add_row(
            *key,
            str(n),
            *(fmt(d, m.name) for m in TABLE_COLUMNS),
            "-" if worst is None else f"{worst[0]:.3f} {worst[1]}",
        )
    console.print(table)
    c = _counters(p)
    console.print(
        f"predictions={c['predictions']} interactions={c['interactions']} rejected={c['rejected']} "
        f"late_dropped={c['late_dropped']} join_misses={c['join_misses']} "
        + (f"join_waiting={c['join_waiting']} " if "join_waiting" in c else "")
        + f"reference_learning={c['reference_learning']} alerts={c['alerts']} (primary window {int(window)}s)",
        highlight=False,
    )


@app.command("check-config")
def check_config(
    config: Annotated[Path, typer.Argument(help="driftwatch YAML config to validate.")],
    skip_secrets: Annotated[
        bool, typer.Option("--skip-secrets", help="Do not require the pseudonymisation key (CI without secrets).")
    ] = False,
    show: Annotated[
        bool, typer.Option("--show", help="Print the validated config (no secrets are ever in it).")
    ] = False,
) -> None:
    """Validate a config and its rules offline; list every problem with its file and key path."""
    cfg, _ = _load(config, need_key=not skip_secrets)
    from driftwatch.actions.planner import config_problems
    from driftwatch.profiles import profile_problems

    # What load_config cannot see: the profile files, and the action templates only the action side reads.
    problems = profile_problems(cfg) + [p for p in config_problems(cfg.alerting) if p not in cfg.problems()]
    if problems:
        raise _fail(2, "invalid configuration:\n" + "\n".join(f"  - {config}: {p}" for p in problems))
    if show:
        typer.echo(json.dumps(cfg.model_dump(mode="json", by_alias=True), indent=2))
    typer.echo(f"{config}: ok ({len(cfg.models)} models, {len(cfg.rules)} rules)")
    if cfg.reports.enabled:
        from driftwatch._duration import format_duration
        from driftwatch.core.sample import row_bytes, sample_ticks

        r = cfg.reports
        ticks = sample_ticks(cfg)
        widest = max((len(mc.features) + 2 + len(cfg.attributes) for mc in cfg.models.values()), default=0)
        rows = r.sample_per_tick * ticks
        typer.echo(
            f"reports: samples of at most {r.sample_per_tick} x {ticks} ticks = {rows} rows per model version "
            f"(~{rows * row_bytes(widest) / 2**20:.1f} MiB each); up to {r.max_reports} reports kept "
            f"{format_duration(r.retention)}"
        )
        if not cfg.alerting.api.enabled:
            where = f"written to {r.directory} only" if r.directory else "built, kept and counted only"
            typer.echo(f"reports: alerting.api is off, so alerts do not link their reports ({where})")


BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        help="Kafka bootstrap HOST:PORT (default: the config's kafka.bootstrap).",
        envvar="DRIFTWATCH_BOOTSTRAP",
        show_envvar=True,
    ),
]


@app.command()
def simulate(
    scenario: Annotated[
        str, typer.Option(help="baseline | feature-drift | bias | complaint-spike | label-shift")
    ] = "baseline",
    events: Annotated[int, typer.Option(help="Number of events (predictions and interactions).", min=0)] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same file.", min=0)] = 1,
    rate: Annotated[float, typer.Option(help="Predictions per second of event time.")] = 20.0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output JSON Lines file; FILE.truth.json says what was injected.")
    ] = None,
    bootstrap: BootstrapOpt = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="With --bootstrap: the config naming topics and sensitive attributes."),
    ] = None,
    realtime: Annotated[
        bool,
        typer.Option(
            "--realtime/--as-fast-as-possible",
            help="With --bootstrap: pace events at --rate in wall time, stamped now.",
        ),
    ] = True,
) -> None:
    """Write seeded synthetic customer-service traffic (to a file, or to Kafka with --bootstrap), with a known injected problem."""
    from driftwatch.simulate import SCENARIOS, write_jsonl

    if scenario not in SCENARIOS:
        raise _fail(2, f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if bootstrap is None:
        path = out or Path("events.jsonl")
        truth = write_jsonl(scenario, path, events=events, seed=seed, rate=rate)
        typer.echo(f"wrote {events} events to {path} and {path}.truth.json ({len(truth.injections)} injections)")
        return
    if config is None:
        raise _fail(2, "--bootstrap needs --config (topic names and which attributes to pseudonymise)")
    from driftwatch.daemon.produce import produce_simulation

    cfg, key = _load(config)
    try:
        sent = produce_simulation(
            cfg, key, bootstrap, scenario=scenario, events=events, seed=seed, rate=rate, realtime=realtime
        )
    except ConnectionError as e:
        raise _fail(1, str(e)) from None
    typer.echo(f"produced {sent} events to {bootstrap}")


@app.command()
def run(
    config: ConfigOpt,
    bootstrap: BootstrapOpt = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /metrics (default: the config's metrics.port; 0 = any free port).")
    ] = None,
) -> None:
    """Start one streaming worker; workers with the same config form one consumer group and split partitions."""
    import asyncio

    from driftwatch._log import configure
    from driftwatch.daemon.topics import StreamingError, alerting_topics, ensure_topics
    from driftwatch.daemon.worker import Worker

    configure()  # JSON lines on stderr unless it is a terminal
    cfg, key = _load(config)
    boot = bootstrap or cfg.kafka.bootstrap
    if metrics_port is not None:
        cfg = cfg.model_copy(update={"metrics": cfg.metrics.model_copy(update={"port": metrics_port})})
    try:
        asyncio.run(ensure_topics(boot, cfg.kafka, alerting_topics(cfg)))
    except StreamingError as e:
        raise _fail(1, str(e)) from None
    try:
        Worker(cfg, key, bootstrap=boot).run()
    except DriftwatchError as e:  # e.g. a webhook secret or API token that is missing, short or unsafe
        what = "; ".join(e.problems) if isinstance(e, ConfigError) else str(e)
        raise _fail(2, f"cannot start: {what}") from None
    except (OSError, TimeoutError) as e:  # e.g. the audit file or a port
        raise _fail(1, f"cannot start: {e}") from None


@app.command()
def sidecar(
    config: ConfigOpt,
    bootstrap: BootstrapOpt = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Listen address (default: the config's sidecar.host).",
            envvar="DRIFTWATCH_SIDECAR_HOST",
            show_envvar=True,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Listen port (default: the config's sidecar.port; 0 = any free port).",
            envvar="DRIFTWATCH_SIDECAR_PORT",
            show_envvar=True,
            min=0,
            max=65535,
        ),
    ] = None,
    unix_socket: Annotated[
        Path | None,
        typer.Option(
            "--unix-socket",
            help="Listen on this Unix socket instead of host:port (default: the config's sidecar.unix_socket).",
            envvar="DRIFTWATCH_SIDECAR_SOCKET",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Accept events from model servers in any language (POST /v1/events, NDJSON or a JSON array) and produce
    them to Kafka with the Python client's rules: validated, minimised, pseudonymised, murmur2-partitioned."""
    from driftwatch._log import configure

    configure()  # JSON lines on stderr unless it is a terminal; before the sidecar module binds its logger
    from driftwatch.daemon.sidecar import run_sidecar
    from driftwatch.errors import SecretMissingError

    cfg, key = _load(config)
    overrides = {k: v for k, v in (("host", host), ("port", port), ("unix_socket", unix_socket)) if v is not None}
    if overrides:
        cfg = cfg.model_copy(update={"sidecar": cfg.sidecar.model_copy(update=overrides)})
        problems = cfg.sidecar_problems()
        if problems:
            raise _fail(2, "; ".join(problems))
    token = None
    if cfg.sidecar.token is not None:
        try:
            token = cfg.sidecar.token.read()
        except SecretMissingError as e:
            raise _fail(2, f"sidecar.token: {e.problems[0]}") from None
        if len(token) < 16:
            raise _fail(2, "sidecar.token: use at least 16 bytes (e.g. `openssl rand -hex 32`)")
    raise typer.Exit(run_sidecar(cfg, key, bootstrap=bootstrap or cfg.kafka.bootstrap, token=token))


@app.command("dead-letters")
def dead_letters(
    config: ConfigOpt,
    bootstrap: BootstrapOpt = None,
    tail: Annotated[
        int | None,
        typer.Option(
            help="List the last N records (offset, time, reason, field, source, size, truncated) instead of the counts.",
            min=1,
        ),
    ] = None,
    show_values: Annotated[
        bool,
        typer.Option(
            "--show-values",
            help="With --tail: also print each record's value (escaped, first 200 characters). Values are raw events "
            "and may hold personal data: only for the on-call or data-protection role allowed to read the "
            "dead-letter topic, never for a shared screen, ticket or chat.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of tables.")] = False,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress on stderr (default: on a terminal).")
    ] = None,
) -> None:
    """Inspect the dead-letter topic without joining the consumer group: counts by reason, field and partition, or
    the last records (values only with --show-values). Exit 2 if the broker cannot be reached; a topic not created
    yet means no dead letters (exit 0)."""
    from driftwatch.daemon.dead_letters import run_dead_letters

    if show_values and tail is None:
        raise _fail(2, "--show-values needs --tail N (the counts never show values)")
    cfg, _ = _load(config, need_key=False)
    try:
        code = run_dead_letters(
            cfg,
            bootstrap or cfg.kafka.bootstrap,
            out=sys.stdout,
            err=err,
            tail=tail,
            show_values=show_values,
            json_out=json_out,
            progress=sys.stderr.isatty() if progress is None else progress,
        )
    except DriftwatchError as e:  # StreamingError: the broker cannot be reached
        raise _fail(2, str(e)) from None
    raise typer.Exit(code)


@app.command()
def demo(
    bootstrap: BootstrapOpt = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="Config (default: the shipped example).")] = Path(
        "config/driftwatch.example.yaml"
    ),
    scenario_schedule: Annotated[
        str, typer.Option(help="SCENARIO@OFFSET,... after the start (empty: healthy traffic only).")
    ] = "feature-drift@60s,bias@120s,complaint-spike@180s",
    rate: Annotated[float, typer.Option(help="Predictions per second (wall time).", min=1)] = 80.0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="Print lines instead of the live terminal view (logs, CI).")
    ] = False,
    audit_file: Annotated[
        Path, typer.Option(help="Hash-chained audit trail of the demo's alerts and actions (appended to).")
    ] = Path("driftwatch-demo-audit.jsonl"),
    speedup: Annotated[
        float, typer.Option(help="Divide every window and rule duration by this (the story takes ~8 min at 5).", min=1)
    ] = 5.0,
    clock_speed: Annotated[
        float,
        typer.Option(
            help="Seconds of the traffic's event time per wall second: windows, rule durations and the delays of "
            "complaints pass this much faster too (1: real time).",
            min=1,
        ),
    ] = 1.0,
    reports: Annotated[
        bool,
        typer.Option(
            "--reports/--no-reports",
            help="Build a report of each firing alert and link it in the on-call inbox (served on loopback).",
        ),
    ] = True,
) -> None:
    """Live demo: a local broker, a worker, and simulated traffic that drifts, turns unfair and draws complaints;
    the complaint spike triggers a rollback through a model-gateway stand-in and the alert resolves."""
    from driftwatch._log import configure
    from driftwatch.demo.app import parse_schedule, run_demo

    configure(level="info" if plain else "warning")  # a live view must not be scrolled away by log lines
    try:
        schedule = parse_schedule(scenario_schedule)
    except ValueError as e:
        raise _fail(2, str(e)) from None
    cfg, key = _load(config)
    raise typer.Exit(
        run_demo(
            cfg,
            key,
            bootstrap=bootstrap,
            schedule=schedule,
            rate=rate,
            duration=duration,
            plain=plain,
            audit_file=audit_file,
            speedup=speedup,
            clock_speed=clock_speed,
            reports=reports,
        )
    )


@baseline_app.command("build")
def baseline_build(
    data: Annotated[
        Path,
        typer.Argument(
            help="Reference data: .csv or .parquet (feature columns, score, prediction, and label to estimate "
            "performance before labels arrive) or .jsonl events, gzip-compressed too (label interactions are joined)."
        ),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model id as named in the config.")],
    config: ConfigOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile JSON to write.")] = Path("profile.json"),
) -> None:
    """Build a reference profile: quantile bins, category frequencies and the selection rate of a model, and (with
    labels) the score's calibration for estimating performance before labels arrive."""
    from driftwatch.core.profile import build_profile, calibrate
    from driftwatch.profiles import read_table

    cfg, _ = _load(config, need_key=False)
    mc = cfg.models.get(model)
    if mc is None:
        raise _fail(2, f"model {model!r} is not in {config}; configured: {', '.join(cfg.models)}")
    try:
        cols = read_table(data, model)
        profile = build_profile(model, mc, cols, source=data.name)
    except DriftwatchError as e:
        raise _fail(1, str(e)) from None
    output.write_text(json.dumps(profile.to_json(), indent=2) + "\n", encoding="utf-8")
    typer.echo(
        f"wrote {output}: {profile.count} reference rows, {len(profile.distributions)} distributions, "
        + (f"calibration from {profile.cbpe.labelled} labelled rows" if profile.cbpe else calibrate(mc, cols)[1])
    )


@app.command()
def schema(
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Write prediction.schema.json and interaction.schema.json here.")
    ] = None,
) -> None:
    """Print (or write) the JSON Schema of both event kinds, generated from the code."""
    from driftwatch.events import json_schemas

    schemas = json_schemas()
    if out_dir is None:
        typer.echo(json.dumps(schemas, indent=2))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in schemas.items():
        (out_dir / f"{name}.schema.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"wrote {len(schemas)} schemas to {out_dir}")


audit_app = typer.Typer(help="The hash-chained audit trail of alerts, deliveries and actions.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(file: Annotated[Path, typer.Argument(help="Audit JSON Lines file to check.")]) -> None:
    """Check every hash and link of an audit file: exit 0 if intact, 1 naming the first broken record, 2 if unreadable."""
    from driftwatch.actions.audit import AuditError, verify

    try:
        report = verify(file)
    except AuditError as e:
        raise _fail(2, str(e)) from None
    if not report.ok:
        raise _fail(
            1, f"{file}: line {report.first_bad_line}: {report.reason} ({report.records} records before it intact)"
        )
    typer.echo(f"ok: {report.records} records, chain intact")


export_app = typer.Typer(
    help="Monitoring as code: Grafana dashboards, Prometheus rules, an Alertmanager route (docs/operating.md).",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")

ExportConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="driftwatch YAML config (default: the shipped example).",
        envvar="DRIFTWATCH_CONFIG",
        show_envvar=True,
    ),
]
_EXAMPLE = Path("config/driftwatch.example.yaml")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}")


@export_app.command("grafana")
def export_grafana(
    config: ExportConfigOpt = _EXAMPLE,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            help="Writes dashboards/*.json and provisioning/ here.",
            envvar="DRIFTWATCH_GRAFANA_OUT_DIR",
            show_envvar=True,
        ),
    ] = Path("grafana"),
    dashboards_path: Annotated[
        str,
        typer.Option(
            help="Where Grafana reads the dashboards (the provisioning file's path).",
            envvar="DRIFTWATCH_GRAFANA_DASHBOARDS_PATH",
            show_envvar=True,
        ),
    ] = "/var/lib/grafana/dashboards/driftwatch",
) -> None:
    """Write the overview, fairness, drift and worker-health dashboards and Grafana's provisioning files."""
    from driftwatch.exports.grafana import dashboards, provisioning, to_json

    cfg, _ = _load(config, need_key=False)
    for name, doc in dashboards(cfg).items():
        _write(out_dir / "dashboards" / f"{name}.json", to_json(doc))
    for rel, text in provisioning(dashboards_path).items():
        _write(out_dir / rel, text)


@export_app.command("prometheus-rules")
def export_prometheus_rules(
    config: ExportConfigOpt = _EXAMPLE,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Rule file to write.", envvar="DRIFTWATCH_RULES_OUT", show_envvar=True),
    ] = Path("deploy/prometheus/driftwatch-rules.yaml"),
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes",
            help="Write a monitoring.coreos.com/v1 PrometheusRule manifest instead of a rule file.",
            envvar="DRIFTWATCH_RULES_KUBERNETES",
            show_envvar=True,
        ),
    ] = False,
) -> None:
    """Write recording and alerting rules for the workers' own health (promtool-checked in the tests)."""
    from driftwatch.exports.prometheus_rules import prometheus_rule, rules_yaml

    cfg, _ = _load(config, need_key=False)
    _write(out, prometheus_rule(cfg) if kubernetes else rules_yaml(cfg))


@export_app.command("alertmanager")
def export_alertmanager(
    config: ExportConfigOpt = _EXAMPLE,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="File to write.", envvar="DRIFTWATCH_ALERTMANAGER_OUT", show_envvar=True),
    ] = Path("deploy/alertmanager/driftwatch-route.yaml"),
    receiver: Annotated[
        str,
        typer.Option(help="Receiver name.", envvar="DRIFTWATCH_ALERTMANAGER_RECEIVER", show_envvar=True),
    ] = "driftwatch",
    webhook_url: Annotated[
        str | None,
        typer.Option(
            help="Give the receiver a webhook_config to this URL (default: none; add your own integration).",
            envvar="DRIFTWATCH_ALERTMANAGER_WEBHOOK_URL",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Write an Alertmanager route and receiver for the alerts driftwatch pushes to your Alertmanager."""
    from driftwatch.exports.alertmanager import route_yaml

    cfg, _ = _load(config, need_key=False)
    _write(out, route_yaml(cfg, receiver=receiver, webhook_url=webhook_url))


@app.command()
def version() -> None:
    """Print the driftwatch version."""
    typer.echo(__version__)


def main() -> None:
    """Console entry point."""
    # Line-buffer stdout so piped --json output streams as alerts happen.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    app()


if __name__ == "__main__":
    main()
