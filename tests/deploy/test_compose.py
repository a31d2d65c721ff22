"""docker-compose.yml: valid against the compose spec, every mounted file present, Prometheus' and
Alertmanager's configs accepted by promtool and amtool, and the driftwatch commands the containers run accepted
by driftwatch itself (no Docker engine here to start the stack)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftwatch.config import SecretRef, load_config

from .conftest import BIN, ROOT, run, tool

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _binds(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of a service's bind mounts (short syntax ``./src:/dst[:ro]``)."""
    out = []
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((ROOT / source).resolve(), target))
    return out


def _driftwatch_config(compose: dict[str, Any], name: str) -> Path:
    (host,) = [h for h, target in _binds(compose["services"][name]) if target == "/config/driftwatch.yaml"]
    return host


def test_valid_against_the_compose_spec() -> None:
    """The file validates against the vendored compose-spec JSON schema (check-jsonschema)."""
    checker = tool("check-jsonschema", "check-jsonschema (dev extra)")
    done = run(checker, "--schemafile", ROOT / "deploy" / "schemas" / "compose-spec.json", COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    """Every bind-mounted file or directory is in the repository (a file mounted as a file, a directory as one)."""
    for name, service in compose["services"].items():
        for host, target in _binds(service):
            assert host.exists(), f"{name}: mounts {host.relative_to(ROOT)} at {target}, which does not exist"
            assert host.is_dir() == (not Path(target).suffix), f"{name}: {host} -> {target}: file/directory mismatch"


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    """Each service defines a healthcheck, and every depends_on waits for service_healthy."""
    services = compose["services"]
    assert set(services) == {"kafka", "driftwatch", "simulator", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}: {cond}"


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    """apache/kafka runs as broker and controller of its own quorum, advertising the name the others use."""
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    for name in ("driftwatch", "simulator"):
        assert compose["services"][name]["environment"]["DRIFTWATCH_BOOTSTRAP"] == "kafka:9092"


def test_secrets_come_from_the_uncommitted_env_file(compose: dict[str, Any]) -> None:
    """Secrets are compose secrets read from variables that .env.example lists with placeholder values only; no
    service carries a secret in its environment."""
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    assert example, ".env.example lists nothing"
    assert all(v.startswith("CHANGE-ME") for v in example.values()), example
    declared = compose["secrets"]
    assert set(declared) == {"driftwatch-pseudonym-key", "driftwatch-api-token", "driftwatch-webhook-secret"}
    for name, spec in declared.items():
        assert set(spec) == {"environment"}, f"secret {name}: only from the environment, never a committed file"
        assert spec["environment"] in example, f"{spec['environment']} missing from .env.example"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"KEY|TOKEN|SECRET|PASSWORD", key):
                assert re.fullmatch(r"\$\{(\w+)(:\?[^}]*)?\}", str(value)), f"{name}: {key} is not interpolated"
                assert re.match(r"\$\{(\w+)", str(value)).group(1) in example  # type: ignore[union-attr]
        for secret in service.get("secrets", []):
            assert secret in declared


def test_the_mounted_config_reads_its_secrets_where_compose_puts_them(compose: dict[str, Any]) -> None:
    """Every secret file the mounted driftwatch config names is /run/secrets/<a secret the worker is given>, and
    the audit file lives in the worker's data volume."""
    worker = compose["services"]["driftwatch"]
    cfg = load_config(_driftwatch_config(compose, "driftwatch"))
    refs: list[SecretRef] = [cfg.alerting.api.token] if cfg.alerting.api.token else []
    refs += [r.secret for r in cfg.alerting.notify.receivers if r.secret is not None]
    files = [r.file for r in refs] + [cfg.privacy.key_file]
    assert all(f is not None for f in files), "compose gives secrets as files, not environment variables"
    for f in files:
        assert f is not None
        assert f.parent == Path("/run/secrets"), f
        assert f.name in worker["secrets"], f"{f} is not among the worker's secrets"
    data = [v.split(":")[1] for v in worker["volumes"] if v.startswith("driftwatch-data:")]
    assert data == ["/var/lib/driftwatch"]
    assert cfg.alerting.audit.path.is_relative_to(data[0])
    assert compose["services"]["simulator"]["secrets"] == ["driftwatch-pseudonym-key"]


def test_ports_and_health_probes_match_the_config(compose: dict[str, Any]) -> None:
    """The worker's healthcheck asks /readyz on the config's metrics port (on every interface), which Prometheus
    scrapes too; the API is enabled on every interface for approvals."""
    cfg = load_config(_driftwatch_config(compose, "driftwatch"))
    api = cfg.alerting.api
    assert api.enabled
    assert api.host == "0.0.0.0"
    assert cfg.metrics.host == "0.0.0.0"
    probe = " ".join(compose["services"]["driftwatch"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{cfg.metrics.port}/readyz" in probe
    prom = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    targets = [
        t
        for job in prom["scrape_configs"]
        if job["job_name"] == "driftwatch"
        for sc in job["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == [f"driftwatch:{cfg.metrics.port}"]
    assert f"{cfg.metrics.port}:{cfg.metrics.port}" in compose["services"]["driftwatch"]["ports"]


def test_python_healthchecks_compile_and_import(compose: dict[str, Any]) -> None:
    """The Python one-liners the driftwatch containers use as healthchecks compile and import what exists."""
    for name in ("driftwatch", "simulator"):
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        compile(test[3], f"<{name} healthcheck>", "exec")
        imports = re.findall(r"from ([\w.]+) import (\w+)", test[3])
        for module, attr in imports:
            done = run(sys.executable, "-c", f"from {module} import {attr}")
            assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("service", ["driftwatch", "simulator"])
def test_container_commands_parse(compose: dict[str, Any], service: str) -> None:
    """`driftwatch <the service's exact command> --help` exits 0, so a misspelt subcommand or flag fails here."""
    command = compose["services"][service]["command"]
    assert all(isinstance(a, str) for a in command), "quote numbers: compose passes strings"
    done = run(BIN / "driftwatch", *command, "--help")
    assert done.returncode == 0, f"driftwatch {' '.join(command)}: {done.stdout}{done.stderr}"


def test_mounted_config_passes_check_config(compose: dict[str, Any]) -> None:
    """The config compose mounts passes `driftwatch check-config --skip-secrets`, and keeps the example's domain
    (attributes, models, rules) so the simulator's traffic means the same thing."""
    path = _driftwatch_config(compose, "driftwatch")
    assert _driftwatch_config(compose, "simulator") == path
    done = run(BIN / "driftwatch", "check-config", "--skip-secrets", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok (2 models, 11 rules)" in done.stdout


def _layout(tmp_path: Path, service: dict[str, Any]) -> Path:
    """Copy a service's bind mounts to their container paths under ``tmp_path``; return that root."""
    for host, target in _binds(service):
        dest = tmp_path / target.lstrip("/")
        if host.is_dir():
            shutil.copytree(host, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(host, dest)
    return tmp_path


def test_promtool_accepts_the_prometheus_config_with_its_rules(compose: dict[str, Any], tmp_path: Path) -> None:
    """`promtool check config` passes on prometheus.yml laid out as compose mounts it, rule files included."""
    promtool = tool("promtool", "Debian's prometheus package")
    service = compose["services"]["prometheus"]
    root = _layout(tmp_path, service)
    flag = [a for a in service["command"] if a.startswith("--config.file=")]
    config = root / flag[0].split("=", 1)[1].lstrip("/")
    done = run(promtool, "check", "config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout), done.stdout


def test_amtool_accepts_the_alertmanager_config(compose: dict[str, Any]) -> None:
    """`amtool check-config` passes on the Alertmanager config compose mounts."""
    amtool = tool("amtool", "Debian's prometheus-alertmanager package")
    (host,) = [h for h, t in _binds(compose["services"]["alertmanager"]) if t == "/etc/alertmanager/alertmanager.yml"]
    done = run(amtool, "check-config", host)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_grafana_mounts_where_its_provisioning_looks(compose: dict[str, Any]) -> None:
    """The dashboards are mounted at the file provider's path, and the data source's ${VARS} are set."""
    grafana = compose["services"]["grafana"]
    binds = {host.relative_to(ROOT).as_posix(): target for host, target in _binds(grafana)}
    assert binds["grafana/provisioning"] == "/etc/grafana/provisioning"
    paths = []
    for f in (ROOT / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"):
        paths += [p["options"]["path"] for p in yaml.safe_load(f.read_text())["providers"]]
    assert paths == [binds["grafana/dashboards"]]
    for f in (ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml"):
        for var in re.findall(r"\$\{(\w+)\}", f.read_text()):
            assert var in grafana["environment"], f"{f.name} needs {var}"
