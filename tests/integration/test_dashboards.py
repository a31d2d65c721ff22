"""Every panel of the generated Grafana dashboards shows data: each query runs on a real Prometheus scraping a real worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftwatch.config import load_config
from driftwatch.daemon.topics import alerting_topics, ensure_topics
from driftwatch.simulate import generate

from .conftest import WorkerProcess, free_port, produce, reference_profiles, unique_config, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "driftwatch-rules.yaml"
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")
RATE_INTERVAL = "30s"


class _Hook(BaseHTTPRequestHandler):
    """A webhook receiver that accepts everything (the notifier's counters need a receiver to exist)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


class Prometheus:
    """Debian's /usr/bin/prometheus on a free loopback port, scraping ``target`` every second, with our rules loaded."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            pytest.fail("prometheus not found: install Debian's `prometheus` package (`make system-deps`)")
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "driftwatch", "static_configs": [{"targets": [target]}]}],
        }
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = tmp_path / "prometheus.log"
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self._ready() or self.proc.poll() is not None, 30, "Prometheus to be ready")
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-3000:]}")

    def _ready(self) -> bool:
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status == 200
        return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._fh.close()


def _substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for what the dashboards use: $name, ${name}, $__rate_interval."""
    text = text.replace("$__rate_interval", RATE_INTERVAL)
    for name in sorted(values, key=len, reverse=True):
        text = text.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return text


def _resolve(prom: Prometheus, board: dict[str, Any]) -> dict[str, str]:
    """Each template variable in order: All -> its allValue; otherwise the first value label_values finds."""
    values: dict[str, str] = {}
    for var in board["templating"]["list"]:
        if var["type"] == "datasource":
            continue
        if var.get("includeAll"):
            values[var["name"]] = var["allValue"]
            continue
        m = LABEL_VALUES.match(_substitute(var["query"]["query"], values))
        assert m is not None, var["query"]
        params = {"match[]": m["selector"]} if m["selector"] else {}
        found = prom.api(f"label/{m['label']}/values", **params)
        if var.get("regex"):
            pattern = re.compile(var["regex"].strip("/"))
            found = [v for v in found if pattern.search(v)]
        assert found, f"{board['uid']}: variable {var['name']} has no values ({m['selector']})"
        values[var["name"]] = sorted(found)[0]
    return values


def test_every_panel_shows_data(
    tmp_path: Path, example_config: Path, kafka_bootstrap: str, worker_env: dict[str, str], pseudonym_key: bytes
) -> None:
    """With a worker fed biased traffic that fires alerts, every target of every panel of every dashboard returns at least one series from Prometheus."""
    events = list(generate("bias", events=30_000, seed=21)[0])
    cfg_path = unique_config(tmp_path, example_config, "dash")
    data = yaml.safe_load(cfg_path.read_text())
    reference_profiles(data, example_config, events, tmp_path)
    data["metrics"] = {"window": 0, "max_series": 100_000}  # since start: every closed tick, no budget cut
    with _hook() as hook:
        data["alerting"] = {
            **data["alerting"],
            "notify": {"group_wait": "1s", "group_interval": "2s", "receivers": [{"name": "oncall", "url": hook}]},
            "egress": {"allow": ["127.0.0.1/32"]},
        }
        cfg_path.write_text(json.dumps(data))
        cfg = load_config(cfg_path)
        asyncio.run(ensure_topics(kafka_bootstrap, cfg.kafka, alerting_topics(cfg)))
        produce(cfg, pseudonym_key, kafka_bootstrap, events)

        worker = WorkerProcess(cfg_path, kafka_bootstrap, worker_env, tmp_path / "worker.log")
        prom = Prometheus(tmp_path, f"127.0.0.1:{worker.port}")
        try:
            wait_for(
                lambda: prom.query('driftwatch_alerts{alertname="selection_rate_disparity", state="firing"} > 0'),
                60,
                "selection_rate_disparity firing in Prometheus",
                interval=0.5,
            )
            # The health rules are loaded and evaluated (they stay quiet on a healthy worker).
            groups = {g["name"] for g in prom.api("rules")["groups"]}
            assert groups == {"driftwatch-health"}
            # rate() over the rate interval needs two scrapes of every counter inside it.
            wait_for(
                lambda: prom.query(f"count_over_time(driftwatch_events_total[{RATE_INTERVAL}]) >= 3"),
                30,
                "three scrapes",
                interval=0.5,
            )

            empty: list[str] = []
            checked = 0
            for path in sorted(DASHBOARDS.glob("*.json")):
                board = json.loads(path.read_text())
                values = _resolve(prom, board)
                for panel in board["panels"]:
                    for target in panel["targets"]:
                        expr = _substitute(target["expr"], values)
                        checked += 1
                        if not prom.query(expr):
                            empty.append(f"{path.name}: {panel['title']!r} [{target['refId']}] {expr}")
            assert checked > 40
            assert not empty, f"{len(empty)} of {checked} panel queries return no series:\n" + "\n".join(empty)
        finally:
            prom.stop()
            assert worker.stop() == 0, worker.log.read_text()[-3000:]
