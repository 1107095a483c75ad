"""The Helm chart in charts/drift-sidecar: lint, render, Kubernetes schemas, consistency.

Helm itself runs in process (helm-python-sdk bundles Helm v4 as a library): no helm
binary, no cluster, no network. Every ci/*-values.yaml is rendered twice: by the chart
alone (ConfigMap, monitors, rules, dashboard) and through the example model server
chart, whose pod spec holds the sidecar from the chart's named templates.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from promtools import DASHBOARD_FILE, PROMETHEUS_CONFIGS, REPO, RULE_FILES

import sidecar
from sidecar.cli import build_parser
from sidecar.config import load_config

CHART = REPO / "charts" / "drift-sidecar"
EXAMPLE = CHART / "examples" / "model-server"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# As in test_k8s: native sidecars need 1.29; the newest schema known as well.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
RELEASE, NAMESPACE = "fraud", "ml-serving"

Manifest = dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def _helm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Helm's cache, config and data folders in a temporary folder, not the user's."""
    home = tmp_path_factory.mktemp("helm-home")
    names = ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(home / name.lower())
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def ci_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def manifests_of(rendered: dict[str, str]) -> list[Manifest]:
    """The Kubernetes objects of a render, NOTES.txt left out."""
    out: list[Manifest] = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        out += [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def render_chart(values: dict[str, Any] | None = None, chart: Path = CHART) -> list[Manifest]:
    with helm.Chart.load(chart) as loaded:
        return manifests_of(loaded.render(values, name=RELEASE, namespace=NAMESPACE))


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = by_kind(manifests, kind)
    return found


def sidecar_config_map(manifests: list[Manifest]) -> Manifest:
    """The ConfigMap holding sidecar.yaml (the dashboards have one of their own)."""
    (found,) = [m for m in by_kind(manifests, "ConfigMap") if "sidecar.yaml" in m.get("data", {})]
    return found


def copy_tree(destination: Path) -> Path:
    """charts/ and configs/ copied with their layout, so the chart's links still resolve."""
    shutil.copytree(REPO / "charts", destination / "charts", symlinks=True)
    shutil.copytree(REPO / "configs", destination / "configs", symlinks=True)
    return destination / "charts" / "drift-sidecar"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example chart with its dependency fetched as a user does: `helm dependency update`."""
    chart = copy_tree(tmp_path_factory.mktemp("example"))
    example_dir = chart / "examples" / "model-server"
    helm.dependency_update(example_dir)
    assert [p.name for p in (example_dir / "charts").iterdir()] == ["drift-sidecar-0.1.0.tgz"]
    return example_dir


def render_example(example_dir: Path, values: dict[str, Any] | None = None) -> list[Manifest]:
    return render_chart(values, chart=example_dir)


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def mount(c: dict[str, Any], volume: str) -> str:
    (path,) = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == volume]
    return str(path)


def lint_problems(report: dict[str, Any]) -> list[str]:
    """Lint errors and any message above info (severity 1: `icon is recommended`)."""
    problems = list(report["errors"])
    problems += [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems


def test_every_ci_values_file_is_found() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "monitoring-values.yaml", "custom-config-values.yaml"} <= names


def test_chart_versions_follow_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == sidecar.__version__
    assert chart["kubeVersion"] == ">=1.29.0-0"
    dependency = yaml.safe_load((EXAMPLE / "Chart.yaml").read_text())["dependencies"][0]
    assert (dependency["name"], dependency["version"]) == (chart["name"], chart["version"])


@pytest.mark.parametrize("version", [f"v{v}" for v in KUBERNETES_VERSIONS])
@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_chart_lints_clean(values_file: Path, version: str) -> None:
    report = helm.lint(CHART, ci_values(values_file), strict=True, kube_version=version)
    assert report["total_charts_linted"] == 1
    assert lint_problems(report) == []


def test_example_chart_lints_clean(example: Path) -> None:
    report = helm.lint(example, strict=True, kube_version=f"v{KUBERNETES_VERSIONS[0]}")
    assert lint_problems(report) == []


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    chart = copy_tree(tmp_path)
    (chart / "templates" / "broken.yaml").write_text("kind: ConfigMap\n{{ .Values.x | nope }}\n")
    assert lint_problems(helm.lint(chart, strict=True)) != []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_render_to_valid_kubernetes_objects(
    example: Path, values_file: Path, version: str
) -> None:
    values = ci_values(values_file)
    alone = render_chart(values)
    with_server = render_example(example, {"drift-sidecar": values})
    checked = set()
    for manifest in alone + with_server:
        if manifest["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked.add(manifest["kind"])
    assert {"ConfigMap", "Deployment", "ServiceAccount", "Service"} <= checked


def test_schema_validation_catches_a_bad_pod_field(example: Path) -> None:
    deployment = one(render_example(example), "Deployment")
    container(pod_spec(deployment), "drift-sidecar")["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_pod_and_config_agree(example: Path, tmp_path: Path, values_file: Path) -> None:
    """The rendered sidecar.yaml loads, and the pod mounts and serves what it names."""
    manifests = render_example(example, {"drift-sidecar": ci_values(values_file)})
    config_map = sidecar_config_map(manifests)
    path = tmp_path / "sidecar.yaml"
    path.write_text(config_map["data"]["sidecar.yaml"])
    config = load_config(path)
    raw = yaml.safe_load(path.read_text())

    spec = pod_spec(one(manifests, "Deployment"))
    sidecar_c, server = container(spec, "drift-sidecar"), container(spec, "model-server")
    volumes = {v["name"]: v for v in spec["volumes"]}

    socket_path = Path(raw["socket"]["path"])
    assert Path(config.socket_path) == socket_path
    assert config.socket_mode == 0o660
    assert "emptyDir" in volumes["drift-sidecar-socket"]
    assert mount(sidecar_c, "drift-sidecar-socket") == str(socket_path.parent)
    assert mount(server, "drift-sidecar-socket") == str(socket_path.parent)
    assert {"name": "DRIFT_SIDECAR_SOCKET", "value": str(socket_path)} in server["env"]

    assert config.http.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in sidecar_c["ports"]}
    assert ports == {"drift-metrics": config.http.port}
    assert mount(sidecar_c, "drift-sidecar-state") == raw["state_dir"]
    assert "emptyDir" in volumes["drift-sidecar-state"]

    assert volumes["drift-sidecar-config"]["configMap"]["name"] == config_map["metadata"]["name"]
    # The image's ENTRYPOINT is `drift-sidecar run`: the args must parse after it.
    parsed = build_parser().parse_args(["run", *sidecar_c["args"]])
    config_file = Path(parsed.config)
    assert str(config_file.parent) == mount(sidecar_c, "drift-sidecar-config")
    assert config_file.name in config_map["data"]

    files = [m.baseline.path for m in config.models if m.baseline.path is not None]
    if files:
        baselines = Path(mount(sidecar_c, "drift-sidecar-baselines"))
        assert all(Path(f).parent == baselines for f in files)
        assert "drift-sidecar-baselines" in volumes
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/drift-sidecar-config"]) == 64


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_chart_alone_renders_a_config_the_sidecar_accepts(
    tmp_path: Path, values_file: Path
) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(
        sidecar_config_map(render_chart(ci_values(values_file)))["data"]["sidecar.yaml"]
    )
    config = load_config(path)
    assert config.http.host == "0.0.0.0"
    assert config.http.ingest_enabled is False


def test_extra_volumes_and_mounts_reach_the_pod(example: Path) -> None:
    values = ci_values(CHART / "ci" / "custom-config-values.yaml")
    spec = pod_spec(one(render_example(example, {"drift-sidecar": values}), "Deployment"))
    sidecar_c = container(spec, "drift-sidecar")
    assert mount(sidecar_c, "extra-baselines") == "/data/extra"
    assert {"name": "TZ", "value": "UTC"} in sidecar_c["env"]
    assert sidecar_c["args"][-2:] == ["--log-level", "debug"]
    assert "extra-baselines" in {v["name"] for v in spec["volumes"]}
    assert sidecar_c["image"].endswith("@" + values["image"]["digest"])


def test_config_change_changes_the_pod_checksum(example: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(render_example(example, values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"].popitem()[1])

    before = checksum({})
    assert checksum({}) == before
    assert checksum({"drift-sidecar": {"config": {"drift": {"window_size": 5000}}}}) != before


def test_sidecar_is_a_locked_down_native_sidecar(example: Path) -> None:
    spec = pod_spec(one(render_example(example), "Deployment"))
    sidecar_c = container(spec, "drift-sidecar")
    assert sidecar_c in spec["initContainers"] and sidecar_c["restartPolicy"] == "Always"
    # The baseline copy runs first, before the sidecar reads the baselines.
    assert [c["name"] for c in spec["initContainers"]] == [
        "drift-sidecar-baselines",
        "drift-sidecar",
    ]
    assert "readinessProbe" not in sidecar_c
    for probe in ("startupProbe", "livenessProbe"):
        assert sidecar_c[probe]["httpGet"] == {"path": "/healthz", "port": "drift-metrics"}
    assert sidecar_c["image"] == f"registry.example.com/ml/drift-sidecar:{sidecar.__version__}"
    for c in spec["initContainers"]:
        security = c["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, c["name"]
        assert security["allowPrivilegeEscalation"] is False, c["name"]
        assert security["capabilities"]["drop"] == ["ALL"], c["name"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, c["name"]
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    dockerfile_user = next(
        line.split()[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    )
    assert sidecar_c["securityContext"]["runAsUser"] == int(dockerfile_user.split(":")[0])
    assert spec["securityContext"]["fsGroup"] == sidecar_c["securityContext"]["runAsGroup"]


def test_named_templates_follow_an_aliased_dependency(example: Path, tmp_path: Path) -> None:
    """A parent may alias the dependency: the templates find its values all the same."""
    aliased = tmp_path / "model-server"
    shutil.copytree(example, aliased)
    chart = yaml.safe_load((aliased / "Chart.yaml").read_text())
    chart["dependencies"][0]["alias"] = "drift"
    (aliased / "Chart.yaml").write_text(yaml.safe_dump(chart))
    values = yaml.safe_load((aliased / "values.yaml").read_text())
    values["drift"] = values.pop("drift-sidecar")
    values["drift"]["config"]["http"] = {"host": "0.0.0.0", "port": 9300}
    (aliased / "values.yaml").write_text(yaml.safe_dump(values))

    manifests = render_example(aliased)
    sidecar_c = container(pod_spec(one(manifests, "Deployment")), "drift-sidecar")
    assert sidecar_c["ports"] == [
        {"name": "drift-metrics", "containerPort": 9300, "protocol": "TCP"}
    ]
    assert sidecar_c["image"].startswith("registry.example.com/ml/drift-sidecar:")
    volumes = pod_spec(one(manifests, "Deployment"))["volumes"]
    config_name = next(v for v in volumes if v["name"] == "drift-sidecar-config")
    assert config_name["configMap"]["name"] == sidecar_config_map(manifests)["metadata"]["name"]


def test_monitors_select_the_pod_and_the_sidecar_port(example: Path) -> None:
    values = ci_values(CHART / "ci" / "monitoring-values.yaml")
    manifests = render_example(example, {"drift-sidecar": values})
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    sidecar_c = container(pod_spec(deployment), "drift-sidecar")
    port = sidecar_c["ports"][0]

    monitor = one(manifests, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    keep = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert [r["regex"] for r in keep] == [sidecar_c["name"]]
    job = {"targetLabel": "job", "replacement": "drift-sidecar", "action": "replace"}
    assert job in endpoint["relabelings"]

    services = [s for s in by_kind(manifests, "Service") if s["spec"].get("clusterIP") == "None"]
    (service,) = services
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    # Numeric: a named targetPort is looked up among regular containers only.
    assert service_port["targetPort"] == port["containerPort"]
    service_monitor = one(manifests, "ServiceMonitor")
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"]
    assert job in endpoint["relabelings"]


def rule_files_of_prometheus_yml(configs: Path = PROMETHEUS_CONFIGS) -> list[Path]:
    listed = yaml.safe_load((configs / "prometheus.yml").read_text())["rule_files"]
    return [configs / name for name in listed]


def test_prometheusrule_holds_the_rule_files_of_configs() -> None:
    assert tuple(rule_files_of_prometheus_yml()) == RULE_FILES
    rule = one(render_chart({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    expected = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    assert rule["spec"]["groups"] == expected
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"


def test_rules_follow_configs_without_any_edit_to_the_chart(tmp_path: Path) -> None:
    """A rule added to alerts.yml, and a rule file added to prometheus.yml, reach the CR."""
    chart = copy_tree(tmp_path)
    configs = tmp_path / "configs" / "prometheus"
    alerts = yaml.safe_load((configs / "alerts.yml").read_text())
    alerts["groups"][0]["rules"].append({"alert": "AddedAlert", "expr": "vector(1)"})
    (configs / "alerts.yml").write_text(yaml.safe_dump(alerts))
    (configs / "extra.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "extra", "rules": [{"record": "a:b", "expr": "1"}]}]})
    )
    prometheus = yaml.safe_load((configs / "prometheus.yml").read_text())
    prometheus["rule_files"].append("extra.yml")
    (configs / "prometheus.yml").write_text(yaml.safe_dump(prometheus))

    rule = one(render_chart({"prometheusRule": {"enabled": True}}, chart=chart), "PrometheusRule")
    expected = [
        g
        for path in rule_files_of_prometheus_yml(configs)
        for g in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == expected
    assert {"alert": "AddedAlert", "expr": "vector(1)"} in rule["spec"]["groups"][0]["rules"]
    assert rule["spec"]["groups"][-1]["name"] == "extra"


def test_a_missing_rule_file_fails_the_render(tmp_path: Path) -> None:
    chart = copy_tree(tmp_path)
    prometheus_yml = tmp_path / "configs" / "prometheus" / "prometheus.yml"
    prometheus = yaml.safe_load(prometheus_yml.read_text())
    prometheus["rule_files"].append("missing.yml")
    prometheus_yml.write_text(yaml.safe_dump(prometheus))
    with pytest.raises(helm.HelmRenderError, match=r"missing\.yml"):
        render_chart({"prometheusRule": {"enabled": True}}, chart=chart)


def test_dashboard_configmap_holds_the_dashboards_of_configs() -> None:
    values = ci_values(CHART / "ci" / "monitoring-values.yaml")
    (board,) = [
        m
        for m in by_kind(render_chart(values), "ConfigMap")
        if m["metadata"]["name"].endswith("-dashboards")
    ]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["annotations"] == {"grafana_folder": "ML"}
    dashboards = sorted(DASHBOARD_FILE.parent.glob("*.json"))
    assert DASHBOARD_FILE in dashboards
    assert sorted(board["data"]) == [p.name for p in dashboards]
    for path in dashboards:
        assert json.loads(board["data"][path.name]) == json.loads(path.read_text())


def test_monitoring_is_off_by_default() -> None:
    kinds = sorted(m["kind"] for m in render_chart())
    assert kinds == ["ConfigMap"]


def test_chart_files_are_links_into_configs() -> None:
    for name, target in (("prometheus", "configs/prometheus"), ("grafana", "configs/grafana")):
        link = CHART / "files" / name
        assert link.is_symlink(), f"{link} must link to {target}, not copy it"
        assert link.resolve() == (REPO / target).resolve()


def test_packaged_chart_carries_the_linked_files_and_renders_the_same(tmp_path: Path) -> None:
    archive = Path(helm.package(CHART, destination=tmp_path))
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for path in RULE_FILES:
            member = members[f"drift-sidecar/files/prometheus/{path.name}"]
            assert member.isfile()
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == path.read_bytes()
    assert not [n for n in members if "/tests/" in n or "/provisioning/" in n]
    assert not [n for n in members if "/examples/" in n]

    values = ci_values(CHART / "ci" / "monitoring-values.yaml")
    with helm.Chart.load(archive) as packed, helm.Chart.load(CHART) as unpacked:
        assert packed.render(values, name=RELEASE) == unpacked.render(values, name=RELEASE)


BAD_VALUES = [
    ({"podMonitor": {"enabled": "yes"}}, "/podMonitor/enabled"),
    ({"config": {"http": {"host": "0.0.0.0", "port": 99999}}}, "/config/http/port"),
    ({"config": {"socket": {"path": "events.sock"}}}, "/config/socket/path"),
    ({"config": {"state_dir": "state"}}, "/config/state_dir"),
    ({"imagee": {"repository": "x"}}, "imagee"),
    ({"podMonitor": {"enabled": True, "interval": "30 seconds"}}, "/podMonitor/interval"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_are_refused_with_their_path(values: dict[str, Any], where: str) -> None:
    with (
        helm.Chart.load(CHART) as chart,
        pytest.raises(helm.HelmValuesError, match=re.escape(where)),
    ):
        chart.render(values, name=RELEASE)


def test_default_values_pass_the_schema() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(copy.deepcopy(chart.values))
