"""The kustomize base and overlays, rendered by kubectl's kustomize: core kinds valid for Kubernetes 1.30 (strict),
prometheus-operator kinds valid against their vendored CRD schemas, the PrometheusRule accepted by promtool, the
embedded config accepted by driftwatch, and the pods hardened and wired to ports and paths that exist."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from driftwatch.config import Config, SecretRef, load_config

from .conftest import BIN, OVERLAYS, ROOT, run, tool

K8S_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests target (native sidecars are on by default from 1.29)."""
CRD_SCHEMAS = {
    "PodMonitor": "podmonitor_v1.json",
    "ServiceMonitor": "servicemonitor_v1.json",
    "PrometheusRule": "prometheusrule_v1.json",
}
SECRET_TEMPLATE = ROOT / "deploy" / "base" / "secret.template.yaml"
Docs = list[dict[str, Any]]


def _kind(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _pod_specs(docs: Docs) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in _kind(docs, "Deployment")]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def _config(docs: Docs) -> dict[str, Any]:
    (cm,) = _kind(docs, "ConfigMap")
    return cm


def _load(docs: Docs, tmp_path: Path) -> Config:
    path = tmp_path / "driftwatch.yaml"
    path.write_text(_config(docs)["data"]["driftwatch.yaml"])
    return load_config(path)


def _port(container: dict[str, Any], ref: str | int) -> int:
    if isinstance(ref, int):
        return ref
    (port,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == ref]
    return int(port)


def _secret_keys() -> set[str]:
    return set(yaml.safe_load(SECRET_TEMPLATE.read_text())["stringData"])


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_valid_for_kubernetes(rendered: dict[str, Docs], overlay: str) -> None:
    """Every non-CRD manifest validates (strict: unknown fields fail) against the Kubernetes 1.30 schemas."""
    core = [d for d in rendered[overlay] if d["kind"] not in CRD_SCHEMAS]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_bites(rendered: dict[str, Docs]) -> None:
    """The validator rejects a misspelt field (so the test above can fail)."""
    doc = copy.deepcopy(_one(rendered["base"], "Deployment", "driftwatch-worker"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_secret_template_is_valid_and_only_placeholders() -> None:
    """The Secret template validates, is not part of any kustomization, and holds placeholders only."""
    doc = yaml.safe_load(SECRET_TEMPLATE.read_text())
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert all(v.startswith("REPLACE-ME") for v in doc["stringData"].values())
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((ROOT / "deploy" / overlay / "kustomization.yaml").read_text())
        assert "secret.template.yaml" not in kustomization.get("resources", [])


@pytest.mark.parametrize("overlay", ["overlays/sidecar", "overlays/consumer-group"])
def test_crd_kinds_valid_against_vendored_schemas(rendered: dict[str, Docs], overlay: str, tmp_path: Path) -> None:
    """PodMonitor, ServiceMonitor and PrometheusRule validate against prometheus-operator's CRD schemas."""
    checker = tool("check-jsonschema", "check-jsonschema (dev extra)")
    crds = [d for d in rendered[overlay] if d["kind"] in CRD_SCHEMAS]
    assert crds
    for i, doc in enumerate(crds):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(doc))
        done = run(checker, "--schemafile", ROOT / "deploy" / "schemas" / CRD_SCHEMAS[doc["kind"]], path)
        assert done.returncode == 0, f"{doc['kind']} {doc['metadata']['name']}: {done.stdout}{done.stderr}"


def test_crd_schema_bites(tmp_path: Path) -> None:
    """The vendored ServiceMonitor schema rejects an unknown field (so the test above can fail)."""
    checker = tool("check-jsonschema", "check-jsonschema (dev extra)")
    path = tmp_path / "bad.json"
    bad = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"}}
    path.write_text(json.dumps({**bad, "spec": {"selector": {}, "endpoints": [{"prot": "metrics"}]}}))
    done = run(checker, "--schemafile", ROOT / "deploy" / "schemas" / "servicemonitor_v1.json", path)
    assert done.returncode == 1, done.stdout


def test_prometheusrule_groups_pass_promtool(rendered: dict[str, Docs], tmp_path: Path) -> None:
    """The consumer-group overlay carries the generated PrometheusRule, whose groups `promtool check rules`
    accepts."""
    promtool = tool("promtool", "Debian's prometheus package")
    (rule,) = _kind(rendered["overlays/consumer-group"], "PrometheusRule")
    assert rule["metadata"]["namespace"] == "driftwatch"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    done = run(promtool, "check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_in_one_namespace_with_resolved_references(rendered: dict[str, Docs], overlay: str) -> None:
    """Every namespaced object lands in `driftwatch`, images are pinned, each ConfigMap a pod mounts is rendered
    (with its hash suffix), and each Secret it uses is the template's, with keys the template has."""
    docs = rendered[overlay]
    configmaps = {d["metadata"]["name"] for d in _kind(docs, "ConfigMap")}
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "driftwatch", f"{d['kind']} {d['metadata']['name']}"
    for name, pod in _pod_specs(docs):
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{name}: {volume}"
            if "secret" in volume:
                assert volume["secret"]["secretName"] == "driftwatch-secrets"
        for c in _containers(pod):
            assert ":" in c["image"], c["image"]
            assert not c["image"].endswith(":latest"), c["image"]
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "driftwatch-secrets"
                    assert ref["key"] in _secret_keys()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened(rendered: dict[str, Docs], overlay: str) -> None:
    """Every container runs as non-root with a read-only root filesystem, no privilege escalation, no
    capabilities, resource requests and a memory limit, and an emptyDir at /tmp; no API token is mounted."""
    for name, pod in _pod_specs(rendered[overlay]):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for c in _containers(pod):
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc.get("runAsUser", pod["securityContext"].get("runAsUser", 1)) != 0, where
            assert c["resources"]["requests"]["cpu"], where
            assert c["resources"]["limits"]["memory"], where
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp, f"{where}: nothing mounted at /tmp"
            assert tmp[0]["name"] in empty_dirs, f"{where}: /tmp is not an emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_embedded_config_passes_check_config(rendered: dict[str, Docs], overlay: str, tmp_path: Path) -> None:
    """The ConfigMap's driftwatch.yaml passes `driftwatch check-config --skip-secrets`."""
    path = tmp_path / "driftwatch.yaml"
    path.write_text(_config(rendered[overlay])["data"]["driftwatch.yaml"])
    done = run(BIN / "driftwatch", "check-config", "--skip-secrets", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_deploy_configs_keep_the_example_domain() -> None:
    """The Kubernetes and compose configs monitor what the example config does (attributes, models, rules,
    windows, join, privacy thresholds): only where things run and where secrets live differ."""
    example = load_config(ROOT / "config" / "driftwatch.example.yaml")
    for path in (ROOT / "deploy" / "base" / "driftwatch.yaml", ROOT / "deploy" / "compose" / "driftwatch.yaml"):
        cfg = load_config(path)
        for part in ("attributes", "protected", "intersections", "models", "rules", "windows", "join", "min_samples"):
            assert getattr(cfg, part) == getattr(example, part), f"{path.name}: {part} differs from the example"
        assert cfg.privacy.min_group_size == example.privacy.min_group_size
        assert cfg.kafka.model_dump(exclude={"bootstrap"}) == example.kafka.model_dump(exclude={"bootstrap"})
        assert cfg.alerting.dry_run is True


def test_worker_probes_hit_the_metrics_port(rendered: dict[str, Docs], tmp_path: Path) -> None:
    """The worker's probes ask /healthz and /readyz on the container port of the config's metrics endpoint (on every
    interface), which serves them with or without the API."""
    docs = rendered["base"]
    cfg = _load(docs, tmp_path)
    (container,) = _one(docs, "Deployment", "driftwatch-worker")["spec"]["template"]["spec"]["containers"]
    assert cfg.alerting.api.enabled
    assert cfg.alerting.api.host == "0.0.0.0"
    assert cfg.metrics.host == "0.0.0.0"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert _port(container, get["port"]) == cfg.metrics.port
    assert _port(container, "metrics") == cfg.metrics.port
    assert container["args"] == ["run", "-c", "/etc/driftwatch/config/driftwatch.yaml"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_paths_exist_in_the_pod(rendered: dict[str, Docs], overlay: str, tmp_path: Path) -> None:
    """Every path the config names is mounted in the driftwatch containers: secret files are keys of the mounted
    Secret, the audit file is in the data volume, and the config is where the container's -c points."""
    docs = rendered[overlay]
    cfg = _load(docs, tmp_path)
    refs: list[SecretRef] = [r for r in (cfg.alerting.api.token, cfg.sidecar.token) if r is not None]
    refs += [r.secret for r in cfg.alerting.notify.receivers if r.secret is not None]
    files = [cfg.privacy.key_file] + [r.file for r in refs]
    for _, pod in _pod_specs(docs):
        for c in _containers(pod):
            if not c["image"].startswith("driftwatch:"):
                continue
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert c["args"][1:] == ["-c", "/etc/driftwatch/config/driftwatch.yaml"]
            assert "configMap" in volumes[mounts["/etc/driftwatch/config"]]
            for f in files:
                assert f is not None, "secrets are mounted files"
                assert "secret" in volumes[mounts[str(f.parent)]], f
                assert f.name in _secret_keys(), f
            if c["args"][0] == "run":
                assert cfg.alerting.audit.path.parent == Path("/var/lib/driftwatch")
                assert "emptyDir" in volumes[mounts["/var/lib/driftwatch"]]


def test_sidecar_is_native_and_probed_where_it_listens(rendered: dict[str, Docs], tmp_path: Path) -> None:
    """The sidecar is an initContainer with restartPolicy Always next to the model server, listens on the pod's
    interfaces (with a token) on the port its probes and its PodMonitor use, and the model server gets the token."""
    docs = rendered["overlays/sidecar"]
    cfg = _load(docs, tmp_path)
    pod = _one(docs, "Deployment", "model-server")["spec"]["template"]
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"][0] == "sidecar"
    assert cfg.sidecar.host == "0.0.0.0"
    assert cfg.sidecar.token is not None
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = sidecar[probe]["httpGet"]
        assert get["path"] == path
        assert _port(sidecar, get["port"]) == cfg.sidecar.port
    assert pod["spec"]["terminationGracePeriodSeconds"] > cfg.sidecar.drain_grace
    (server,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in server["env"]}
    assert env["DRIFTWATCH_SIDECAR_URL"]["value"] == f"http://127.0.0.1:{cfg.sidecar.port}/v1/events"
    assert cfg.sidecar.token.file is not None
    assert env["DRIFTWATCH_SIDECAR_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == cfg.sidecar.token.file.name
    monitors = {m["metadata"]["name"]: m for m in _kind(docs, "PodMonitor")}
    sidecar_monitor = monitors["driftwatch-sidecar"]["spec"]
    assert _matches(sidecar_monitor["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert [(e["port"], e["path"]) for e in sidecar_monitor["podMetricsEndpoints"]] == [("sidecar", "/metrics")]
    worker = _one(docs, "Deployment", "driftwatch-worker")["spec"]["template"]
    worker_monitor = monitors["driftwatch-worker"]["spec"]
    assert _matches(worker_monitor["selector"]["matchLabels"], worker["metadata"]["labels"])
    assert not _matches(worker_monitor["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert [(e["port"], e["path"]) for e in worker_monitor["podMetricsEndpoints"]] == [("metrics", "/metrics")]


def test_consumer_group_wiring(rendered: dict[str, Docs], tmp_path: Path) -> None:
    """Several workers, no more than the predictions topic's partitions; the Service, ServiceMonitor and
    PodDisruptionBudget select exactly the workers, by port names that exist."""
    docs = rendered["overlays/consumer-group"]
    cfg = _load(docs, tmp_path)
    deployment = _one(docs, "Deployment", "driftwatch-worker")
    replicas = deployment["spec"]["replicas"]
    assert 1 < replicas <= cfg.kafka.predictions.partitions
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    service = _one(docs, "Service", "driftwatch-worker")
    assert _matches(service["spec"]["selector"], labels)
    for port in service["spec"]["ports"]:
        assert _port(container, port["targetPort"]) == port["port"]
    (monitor,) = _kind(docs, "ServiceMonitor")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in service_ports
    (pdb,) = _kind(docs, "PodDisruptionBudget")
    assert _matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
