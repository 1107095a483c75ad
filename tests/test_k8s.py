"""The kustomize base in k8s/: schemas, the render, and consistency between its parts."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from promtools import REPO, RULE_FILES

from sidecar.config import load_config

K8S = REPO / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
# Native sidecars (init containers with restartPolicy: Always) are on by default
# from 1.29; check the oldest version that runs them and the newest schema known.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_KINDS = {"PodMonitor", "PrometheusRule"}

Manifest = dict[str, Any]


def load_all(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path) -> list[Manifest]:
    """What `kubectl kustomize` does for the features the base uses."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    out: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        out += load_all(folder / resource)
    renames: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (folder / f).read_text() for f in generator["files"]}
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{generator['name']}-{digest}"
        renames[generator["name"]] = name
        out.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        )
    for manifest in out:
        for volume in (
            pod_spec(manifest).get("volumes", []) if manifest["kind"] == "Deployment" else []
        ):
            if "configMap" in volume:
                volume["configMap"]["name"] = renames.get(
                    volume["configMap"]["name"], volume["configMap"]["name"]
                )
        for entry in kustomization.get("labels", []):
            manifest["metadata"].setdefault("labels", {}).update(entry["pairs"])
    return out


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def by_kind(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def mount(c: dict[str, Any], volume: str) -> str:
    (path,) = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == volume]
    return str(path)


@pytest.fixture(scope="module")
def rendered() -> list[Manifest]:
    return render(BASE)


@pytest.fixture(scope="module")
def sidecar_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((BASE / "sidecar.yaml").read_text())
    return loaded


def test_kustomization_files_exist() -> None:
    for folder in (BASE, OVERLAY):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert kustomization["kind"] == "Kustomization"
        for resource in kustomization["resources"]:
            assert (folder / resource).exists(), f"{folder}: {resource}"
        for generator in kustomization.get("configMapGenerator", []):
            for file in generator["files"]:
                assert (folder / file).exists(), f"{folder}: {file}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_kubernetes_schemas(rendered: list[Manifest], version: str) -> None:
    manifests = rendered + load_all(OVERLAY / "networkpolicy.yaml")
    checked = 0
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked += 1
    assert checked == 4


def test_schema_validation_catches_a_bad_field(rendered: list[Manifest]) -> None:
    deployment = json.loads(json.dumps(by_kind(rendered, "Deployment")))
    container(pod_spec(deployment), "drift-sidecar")["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_sidecar_is_a_native_sidecar_that_never_gates_the_pod(
    rendered: list[Manifest], sidecar_config: dict[str, Any]
) -> None:
    spec = pod_spec(by_kind(rendered, "Deployment"))
    sidecar = container(spec, "drift-sidecar")
    assert sidecar in spec["initContainers"] and sidecar["restartPolicy"] == "Always"
    assert "readinessProbe" not in sidecar
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["metrics"] == sidecar_config["http"]["port"] == 9108
    for probe in ("startupProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert sidecar["args"] == ["--config", "/etc/drift-sidecar/sidecar.yaml"]


def test_volumes_and_config_agree(rendered: list[Manifest], sidecar_config: dict[str, Any]) -> None:
    spec = pod_spec(by_kind(rendered, "Deployment"))
    sidecar, server = container(spec, "drift-sidecar"), container(spec, "model-server")
    volumes = {v["name"]: v for v in spec["volumes"]}

    socket_path = Path(sidecar_config["socket"]["path"])
    assert "emptyDir" in volumes["socket"]
    assert str(socket_path.parent) == mount(sidecar, "socket") == mount(server, "socket")
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["DRIFT_SIDECAR_SOCKET"] == str(socket_path)

    assert sidecar_config["http"]["host"] == "0.0.0.0"
    assert sidecar_config["state_dir"] == mount(sidecar, "state")
    assert "emptyDir" in volumes["state"]

    config_map = by_kind(rendered, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert Path(sidecar["args"][1]).parent == Path(mount(sidecar, "config"))
    assert Path(sidecar["args"][1]).name in config_map["data"]

    baselines = Path(mount(sidecar, "baselines"))
    assert mount(container(spec, "baselines"), "baselines")
    for model in sidecar_config["models"]:
        assert Path(model["baseline"]["path"]).parent == baselines, model["name"]


def test_configmap_holds_a_valid_sidecar_config(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    shutil.copy(BASE / "sidecar.yaml", path)
    config = load_config(path)
    assert config.http.host == "0.0.0.0"
    assert config.http.ingest_enabled is False
    assert [m.name for m in config.models] == ["fraud"]


def test_every_container_is_locked_down_and_sized(rendered: list[Manifest]) -> None:
    deployment = by_kind(rendered, "Deployment")
    spec = pod_spec(deployment)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    account = by_kind(rendered, "ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    for c in spec["initContainers"] + spec["containers"]:
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, c["name"]
        assert security["allowPrivilegeEscalation"] is False, c["name"]
        assert security["capabilities"]["drop"] == ["ALL"], c["name"]
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# The monitoring.coreos.com/v1 fields this base uses; CRDs are not in the schemas.
PODMONITOR_SPEC = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "replacement", "action"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod"}
RULE_FIELDS = {"alert", "record", "expr", "for", "labels", "annotations"}


def test_podmonitor_targets_the_sidecar_port(rendered: list[Manifest]) -> None:
    monitor = by_kind(rendered, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= PODMONITOR_SPEC
    deployment = by_kind(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    sidecar = container(pod_spec(deployment), "drift-sidecar")
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) <= ENDPOINT_FIELDS
    assert endpoint["port"] in {p["name"] for p in sidecar["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    for relabel in endpoint["relabelings"]:
        assert set(relabel) <= RELABEL_FIELDS and relabel["action"] in RELABEL_ACTIONS
    keep = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert [r["regex"] for r in keep] == [sidecar["name"]]
    assert {"targetLabel": "job", "replacement": "drift-sidecar", "action": "replace"} in (
        endpoint["relabelings"]
    )


def test_prometheusrule_is_in_sync_with_the_rule_files(rendered: list[Manifest]) -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "render_rules.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rule = by_kind(rendered, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    expected = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for r in group["rules"]:
            assert set(r) <= RULE_FIELDS and ("alert" in r) != ("record" in r)
            assert isinstance(r["expr"], str)


def test_render_check_notices_a_stale_prometheusrule(tmp_path: Path) -> None:
    script = (K8S / "render_rules.py").read_text()
    stale = tmp_path / "k8s" / "render_rules.py"
    stale.parent.mkdir()
    stale.write_text(script)
    (tmp_path / "k8s" / "base").mkdir()
    (tmp_path / "k8s" / "base" / "prometheusrule.yaml").write_text("stale\n")
    shutil.copytree(REPO / "configs" / "prometheus", tmp_path / "configs" / "prometheus")
    result = subprocess.run(
        [sys.executable, str(stale), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "out of date" in result.stdout


def kubectl_kustomize(folder: Path) -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH: the render is checked by the equivalent above")
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def without_generated_hash(manifests: list[Manifest]) -> list[Manifest]:
    """Copies with the ConfigMap's hash suffix removed (ours differs from kustomize's)."""
    out = json.loads(json.dumps(manifests))
    for m in out:
        if m["kind"] == "ConfigMap":
            m["metadata"]["name"] = m["metadata"]["name"].rsplit("-", 1)[0]
        if m["kind"] == "Deployment":
            for volume in pod_spec(m)["volumes"]:
                if "configMap" in volume:
                    volume["configMap"]["name"] = volume["configMap"]["name"].rsplit("-", 1)[0]
    return sorted(out, key=lambda m: (m["kind"], m["metadata"]["name"]))


def test_kubectl_kustomize_agrees_with_the_equivalent_render(rendered: list[Manifest]) -> None:
    real = kubectl_kustomize(BASE)
    config_map = by_kind(real, "ConfigMap")["metadata"]["name"]
    assert (
        next(v for v in pod_spec(by_kind(real, "Deployment"))["volumes"] if v["name"] == "config")[
            "configMap"
        ]["name"]
        == config_map
    )
    assert without_generated_hash(real) == without_generated_hash(rendered)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubectl_kustomize_overlay_is_valid(version: str) -> None:
    manifests = kubectl_kustomize(OVERLAY)
    assert {m["metadata"]["namespace"] for m in manifests} == {"ml-serving"}
    for manifest in manifests:
        if manifest["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(manifest, version, strict=True)
