"""The Helm chart, rendered by Helm's own Go SDK and validated against Kubernetes' schemas.

``helm-python-sdk`` binds Helm v4's Go SDK (the code ``helm template`` runs) and
``kubernetes-validate`` carries the Kubernetes OpenAPI schemas: both offline, both from the dev
lock. No cluster is involved: what a real API server, scheduler or kubelet would do with these
manifests is not tested here (docs/deploy.md says so).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from cigate.gateway.links import load_link_secret
from cigate.gateway.settings import GatewaySettings
from tests.deploy.settings_names import real_setting_names

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "deploy" / "helm" / "cigate-gateway"
CHART = helm.Chart.load(CHART_DIR)
KUBERNETES = "1.32"
#: Custom resources: no schema in Kubernetes' own; checked by hand below.
CRDS = {"ServiceMonitor"}
LINK_SECRET = "Hq7Zp2Lw9Xv4Nc8Rb1Td6Mf3Ks5Gy0Ju-chart-test"
VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example.com/cigate-gateway", "tag": "1.0.0"},
    "upstream": {"url": "https://res.openai.azure.com"},
    "database": {"url": "postgresql://cigate:pw@db:5432/cigate"},
    "blobs": {"url": "azure://files?account=acct"},
    "secrets": {"upstreamKey": "azure-key", "linkSecret": LINK_SECRET},
}
FULL: dict[str, Any] = {
    **VALUES,
    "secrets": {**VALUES["secrets"], "metricsToken": "metrics-token-value"},
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
    "autoscaling": {"enabled": True},
    "config": {"public_url": "https://files.example.com", "rewrite_links": True},
}


def merged(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with dotted keys replaced (``merged(VALUES, **{"secrets.linkSecret": ""})``)."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifests by kind (names are unique per kind in this chart)."""
    CHART.validate_schema(values)
    out = CHART.render(values, name="rel", namespace="ns", is_install=True)
    manifests: dict[str, dict[str, Any]] = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert doc["kind"] not in manifests, path
                manifests[doc["kind"]] = doc
    return manifests


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("values", [VALUES, FULL], ids=["minimal", "every-option"])
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(
    values: dict[str, Any],
) -> None:
    manifests = render(values)
    for kind, manifest in manifests.items():
        if kind in CRDS:
            continue
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    expected = {"ConfigMap", "Deployment", "Job", "Secret", "Service", "ServiceAccount"}
    if values is FULL:
        expected |= {"HorizontalPodAutoscaler", "ServiceMonitor"}
    assert set(manifests) == expected


def test_helm_lint_finds_no_error_or_warning() -> None:
    result = helm.lint(CHART_DIR, FULL, strict=True)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []  # 1: info only


def test_the_gateway_pods_run_non_root_read_only_with_probes_and_never_migrate() -> None:
    deployment = render(VALUES)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["args"] == ["serve", "--no-migrate"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/cigate", "/run/secrets/cigate"} <= mounts  # writable: volumes only


def test_the_migration_job_runs_the_same_image_before_install_and_upgrade_after_the_secret() -> (
    None
):
    manifests = render(VALUES)
    job, secret = manifests["Job"], manifests["Secret"]
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        hooks["helm.sh/hook-weight"]
    )  # the Secret the Job reads exists first
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (gateway,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert container["image"] == gateway["image"] == "registry.example.com/cigate-gateway:1.0.0"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_without_the_migration_job_the_gateways_migrate_themselves() -> None:
    manifests = render(merged(VALUES, **{"migration.enabled": False}))
    assert "Job" not in manifests
    (gateway,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert gateway["args"] == ["serve"]


def test_every_gateway_variable_is_a_real_setting_and_every_secret_file_exists() -> None:
    manifests = render(FULL)
    known = real_setting_names()
    config = manifests["ConfigMap"]["data"]
    secret_keys = set(manifests["Secret"]["stringData"])
    containers = [
        *manifests["Deployment"]["spec"]["template"]["spec"]["containers"],
        *manifests["Job"]["spec"]["template"]["spec"]["containers"],
    ]
    for name in [*config, *(n for c in containers for n in env_of(c))]:
        assert name in known, f"{name} is not a gateway setting"
    for container in containers:
        for name, value in env_of(container).items():
            if name.endswith("_FILE"):
                assert value.startswith("/run/secrets/cigate/"), name
                assert value.removeprefix("/run/secrets/cigate/") in secret_keys, name


def test_a_pod_of_the_chart_loads_its_settings_as_a_replica_with_the_shared_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered ConfigMap, env and Secret files, read by cigate's own settings loader."""
    manifests = render(FULL)
    for key, value in manifests["Secret"]["stringData"].items():
        (tmp_path / key).write_text(value + "\n")
    for name, value in manifests["ConfigMap"]["data"].items():
        monkeypatch.setenv(name, value)
    (gateway,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    for name, value in env_of(gateway).items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value.replace("/run/secrets/cigate", str(tmp_path)))
    settings = GatewaySettings.from_env(migrate="--no-migrate" not in gateway["args"])
    settings.require_upstream()
    assert settings.migrate is False
    assert (settings.upstream, settings.upstream_key) == (
        "https://res.openai.azure.com",
        "azure-key",
    )
    assert settings.database_url == FULL["database"]["url"]
    assert settings.blobs_url == FULL["blobs"]["url"]
    assert settings.metrics is True
    assert settings.metrics_token == "metrics-token-value"
    assert settings.public_url == "https://files.example.com"
    assert load_link_secret(settings) == LINK_SECRET.encode()


def test_an_existing_secret_replaces_the_charts_own() -> None:
    values = merged(VALUES, **{"secrets.existingSecret": "cigate-from-vault"})
    for key in ("upstreamKey", "linkSecret"):
        values["secrets"].pop(key)
    values.pop("database")
    values.pop("blobs")
    manifests = render(values)
    assert "Secret" not in manifests
    for kind in ("Deployment", "Job"):
        (volume,) = [
            v for v in manifests[kind]["spec"]["template"]["spec"]["volumes"] if "secret" in v
        ]
        assert volume["secret"]["secretName"] == "cigate-from-vault"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"secrets.linkSecret": ""}, "secrets.linkSecret must be set"),
        ({"secrets.linkSecret": "x" * 31}, "at least 32 characters"),
        ({"database.url": ""}, "database.url is required"),
        ({"blobs.url": ""}, "blobs.url is required"),
        ({"secrets.upstreamKey": ""}, "secrets.upstreamKey is required"),
        ({"upstream.url": ""}, "upstream.url is required"),
    ],
    ids=["no-link-secret", "short-link-secret", "no-database", "no-blobs", "no-key", "no-upstream"],
)
def test_values_that_would_start_broken_replicas_fail_to_render(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(merged(VALUES, **changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"replicaCount": 0},
        {"upstream.auth": "password"},
        {"podSecurityContext.runAsNonRoot": False},
        {"database.url": "sqlite:///gateway.db"},
        {"config": {"Bad-Name": "x"}},
    ],
    ids=["no-replicas", "auth-mode", "root-pods", "sqlite-database", "config-name"],
)
def test_the_values_schema_refuses_bad_values(changes: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        CHART.validate_schema(merged(VALUES, **changes))
