"""The exporter over real HTTP passes ``promtool check metrics`` (Prometheus' own parser and linter)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from driftwatch.config import load_config
from driftwatch.core.pipeline import Pipeline
from driftwatch.daemon.metrics import registry_for
from driftwatch.simulate import generate

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail(
            "promtool not found: install Debian's `prometheus` package (apt-get install prometheus), "
            "which ships /usr/bin/promtool; this check is required, not optional"
        )
    return found


def _raws(scenario: str, events: int) -> list[bytes]:
    enc = msgspec.json.Encoder()
    return [enc.encode(e) for e in generate(scenario, events=events, seed=5)[0]]


def _scrape(url: str, accept: str | None = None) -> tuple[str, str]:
    """GET ``url``; return (content type, body)."""
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return resp.headers["Content-Type"], resp.read().decode()


@contextlib.contextmanager
def _serve(registry: CollectorRegistry) -> Iterator[str]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def _check(promtool: str, text: str) -> None:
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60, check=False
    )
    report = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, f"promtool check metrics failed ({result.returncode}):\n{report}"
    assert report.strip() == "", f"promtool lint output:\n{report}"


def _firing(text: str, rule: str) -> bool:
    """Whether the scrape shows one firing alert of ``rule`` for some model version."""
    return any(
        line.startswith(f'driftwatch_alerts{{alertname="{rule}",model="') and 'state="firing"' in line
        for line in text.splitlines()
        if line.endswith(" 1.0")
    )


def test_scraped_metrics_pass_promtool(pseudonym_key: bytes, example_config: Path) -> None:
    """A served scrape after simulated bias traffic parses and lints clean in promtool and as OpenMetrics."""
    promtool = _promtool()
    pipeline = Pipeline(load_config(example_config), pseudonym_key)
    raws = _raws("bias", 40_000)
    for i in range(0, len(raws), 2_000):
        pipeline.process(raws[i : i + 2_000])
    pipeline.flush()
    with _serve(registry_for(pipeline)) as url:
        ctype, text = _scrape(url)
        assert ctype.startswith("text/plain; version=0.0.4")
        assert _firing(text, "selection_rate_disparity")
        assert "driftwatch_fairness_disparate_impact_ratio{" in text
        assert "driftwatch_fairness_disparate_impact_ratio_lower{" in text
        assert "driftwatch_selection_rate_samples{" in text
        assert "driftwatch_feature_samples{" in text
        assert 'quantile="0.9"' in text
        _check(promtool, text)
        ctype, om = _scrape(url, OPENMETRICS)
        assert ctype.startswith("application/openmetrics-text")
        names = {f.name for f in text_string_to_metric_families(om)}  # type: ignore[no-untyped-call]
        assert {"driftwatch_selection_rate", "driftwatch_events", "driftwatch_label_delay_seconds"} <= names


def test_scrapes_during_processing_with_a_lock(pseudonym_key: bytes, example_config: Path) -> None:
    """Scraped from the server thread while the main thread ingests under the shared lock: every scrape is valid."""
    promtool = _promtool()
    pipeline = Pipeline(load_config(example_config), pseudonym_key)
    lock = threading.Lock()
    raws = _raws("complaint-spike", 30_000)
    texts: list[str] = []
    errors: list[BaseException] = []
    with _serve(registry_for(pipeline, lock=lock, max_series=500)) as url:
        done = threading.Event()

        def scrape_loop(url: str = url, done: threading.Event = done) -> None:
            try:
                while not done.is_set():
                    texts.append(_scrape(url)[1])
            except BaseException as e:  # reported on the main thread
                errors.append(e)

        scraper = threading.Thread(target=scrape_loop)
        scraper.start()
        try:
            for i in range(0, len(raws), 1_000):
                with lock:
                    pipeline.process(raws[i : i + 1_000])
            with lock:
                pipeline.flush()
        finally:
            done.set()
            scraper.join(timeout=30)
        texts.append(_scrape(url)[1])
    assert not errors, errors
    assert len(texts) >= 2
    final = texts[-1]
    assert f'driftwatch_events_total{{kind="prediction"}} {float(pipeline.counters.predictions)}' in final
    assert _firing(final, "complaint_rate_high")
    for text in (texts[0], texts[len(texts) // 2], final):
        _check(promtool, text)
