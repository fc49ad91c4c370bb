"""The Helm chart charts/flageval-operator: lint, values schema, rendered objects, server-side validation
on the real control plane, and an install whose operator runs as a pod (through the node agent) and
carries an Evaluation to Succeeded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from flageval.controller.jobs import RUNNER_RULES
from flageval.controller.settings import Settings
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer, intended_accuracy
from flageval.mock_model.server import serve_in_thread
from kubernetes.client.rest import ApiException
from support.cluster import HACK, ROOT, wait_for
from support.net import free_port

CHART = ROOT / "charts/flageval-operator"
DATA = default_data_dir()
G, V, P = "flageval.io", "v1alpha1", "evaluations"

# The ServiceMonitor CRD is not part of Kubernetes: the validation test installs this minimal one,
# whose structural schema holds the fields the chart renders (types and the duration pattern as in
# prometheus-operator's CRD) and nothing else, so a strict server-side dry run refuses anything else.
DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList", "plural": "servicemonitors", "singular": "servicemonitor"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "required": ["spec"], "properties": {"spec": {
                     "type": "object", "required": ["selector"], "properties": {
                         "selector": {"type": "object", "properties": {
                             "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                         "namespaceSelector": {"type": "object", "properties": {
                             "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                         "endpoints": {"type": "array", "items": {"type": "object", "properties": {
                             "port": {"type": "string"}, "path": {"type": "string"},
                             "interval": {"type": "string", "pattern": DURATION},
                             "scrapeTimeout": {"type": "string", "pattern": DURATION}}}}}}}}}}]},
}


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned helm binary hack/control-plane builds and caches (instant when cached)."""
    subprocess.run([str(HACK / "control-plane"), "build"], check=True, capture_output=True, timeout=900)
    path = Path(subprocess.run([str(HACK / "control-plane"), "bin"], check=True, capture_output=True, text=True).stdout.strip()) / "helm"
    assert path.is_file(), path
    return str(path)


def run_helm(helm: str, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, env=env or {**os.environ, "HOME": os.environ.get("HOME", "/root")},
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(helm: str, *sets: str, release: str = "fe", namespace: str = "flageval", values: dict | None = None,
           crds: bool = False, tmp: Path | None = None) -> list[dict]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    if values is not None:
        assert tmp is not None
        path = tmp / f"values-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    if crds:
        args.append("--include-crds")
    return [d for d in yaml.safe_load_all(run_helm(helm, *args).stdout) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def operator_container(docs: list[dict]) -> dict:
    return find(docs, "Deployment", "fe-operator")["spec"]["template"]["spec"]["containers"][0]


# -- lint and schema ------------------------------------------------------------------------------------


def test_chart_metadata_and_helm_lint(helm, tmp_path):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["name"], chart["version"], str(chart["appVersion"])) == ("v2", "flageval-operator", "0.1.0", "0.1.0")
    assert chart["description"]
    out = run_helm(helm, "lint", "--strict", str(CHART)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    values = tmp_path / "all-on.yaml"
    values.write_text(yaml.safe_dump({"shim": {"enabled": True}, "serviceMonitor": {"enabled": True}, "watchNamespaces": ["a", "b"]}))
    assert "0 chart(s) failed" in run_helm(helm, "lint", "--strict", str(CHART), "--values", str(values)).stdout


@pytest.mark.parametrize("sets, words", [
    (["watchNamspaces[0]=evals"], "watchNamspaces"),                      # a typo'd top-level key
    (["imag.repository=x"], "imag"),
    (["operator.logformat=json"], "logformat"),                          # a typo'd nested key
    (["shim.replica=2"], "replica"),
    (["runner.backoffLimit=three"], "backoffLimit"),                     # wrong types
    (["runner.maxRunningJobs=0"], "maxRunningJobs"),
    (["kueue.queueName=Team_GPUs"], "queueName"),
    (["kueue.enable=true"], "enable"),
    (["metrics.enabled=yes"], "enabled"),
    (["operator.logFormat=xml"], "logFormat"),
    (["results.accessModes[0]=ReadWriteAll"], "accessModes"),
    (["serviceMonitor.interval=30 seconds"], "interval"),
    (["shim.limit=many"], "limit"),
])
def test_values_schema_refuses_typos_and_wrong_types(helm, sets, words):
    args = ["template", "fe", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = run_helm(helm, *args, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert "values don't meet the specifications of the schema" in proc.stderr and words in proc.stderr, proc.stderr


def test_values_schema_accepts_the_defaults_and_documented_settings(helm, tmp_path):
    docs = render(helm, "shim.limit=20", "shim.allowHosts[0]=h100", "results.storageClassName=-", "runner.dataDir=/data/x",
                  "serviceMonitor.enabled=true", "serviceMonitor.scrapeTimeout=10s", "watchNamespaces[0]=evals")
    assert find(docs, "Deployment", "fe-operator")
    # the ServiceMonitor needs the metrics Service
    proc = run_helm(helm, "template", "fe", str(CHART), "--set", "serviceMonitor.enabled=true", "--set", "metrics.enabled=false", check=False)
    assert proc.returncode != 0 and "serviceMonitor.enabled needs metrics.enabled" in proc.stderr


def test_shim_values_are_the_defaults_docs_shim_md_documents():
    text = (ROOT / "docs/shim.md").read_text()
    section = text[text.index("### In the cluster (Helm)"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    documented = yaml.safe_load(block)["shim"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["shim"]
    assert values == documented


# -- what the chart renders ------------------------------------------------------------------------------


def test_default_objects_names_and_labels(helm):
    docs = render(helm)
    assert kinds(docs) == sorted([
        ("ServiceAccount", "fe-operator"), ("ClusterRole", "fe-operator"), ("ClusterRole", "fe-operator-cluster"),
        ("ClusterRoleBinding", "fe-operator"), ("ClusterRoleBinding", "fe-operator-cluster"),
        ("Deployment", "fe-operator"), ("Service", "fe-operator-metrics"), ("PersistentVolumeClaim", "flageval-results"),
    ])
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "fe" and labels["app.kubernetes.io/name"] == "flageval-operator", doc["metadata"]
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "flageval"
    # cluster-scoped names follow the release: two releases never collide
    other = render(helm, release="other")
    assert not {n for k, n in kinds(docs) if k.startswith("Cluster")} & {n for k, n in kinds(other) if k.startswith("Cluster")}


def test_operator_deployment(helm):
    docs = render(helm, "watchNamespaces[0]=evals", "watchNamespaces[1]=team-b", "operator.healthPort=8181", "metrics.port=9191",
                  "image.repository=reg.example/flageval", "image.tag=1.2.3",
                  "operator.nodeSelector.role=infra", "operator.tolerations[0].key=infra", "operator.tolerations[0].operator=Exists")
    deploy = find(docs, "Deployment", "fe-operator")
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "reg.example/flageval:1.2.3" and "command" not in container  # the image's entry point: flageval
    assert container["args"] == ["operator", "--log-format=json", "--liveness=http://0.0.0.0:8181/healthz", "--metrics-port=9191",
                                 "--namespace=evals", "--namespace=team-b"]
    from flageval.controller.run import parser
    parsed = parser().parse_args(container["args"][1:])
    assert parsed.namespace == ["evals", "team-b"] and parsed.metrics_port == 9191 and parsed.log_format == "json"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8181, "metrics": 9191}
    assert pod["serviceAccountName"] == "fe-operator"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["nodeSelector"] == {"role": "infra"} and pod["tolerations"] == [{"key": "infra", "operator": "Exists"}]
    service = find(docs, "Service", "fe-operator-metrics")
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    # cluster-wide by default
    assert not any(a.startswith("--namespace") for a in operator_container(render(helm))["args"])
    # metrics off: port 0, no Service
    off = render(helm, "metrics.enabled=false")
    assert "--metrics-port=0" in operator_container(off)["args"] and not [d for d in off if d["kind"] == "Service"]


def settings_from(container: dict, monkeypatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("FLAGEVAL_")]:
        monkeypatch.delenv(key)
    for var in container["env"]:
        monkeypatch.setenv(var["name"], var["value"])
    return Settings()


def test_every_operator_setting_is_set_from_values_and_the_defaults_match_the_code(helm, monkeypatch):
    container = operator_container(render(helm))
    names = {v["name"] for v in container["env"] if v["name"].startswith("FLAGEVAL_")}
    assert names == {f"FLAGEVAL_{field.upper()}" for field in Settings.model_fields}
    chart = settings_from(container, monkeypatch).model_dump()
    code = Settings.model_construct().model_dump()
    assert chart.pop("runner_image") == "ghcr.io/flageval/flageval-runner:0.1.0" == code.pop("runner_image")
    assert chart.pop("data_dir") == "" and code.pop("data_dir") is None  # both: the runner image's own
    assert chart == code


def test_operator_settings_follow_the_values(helm, monkeypatch, tmp_path):
    values = {
        "image": {"repository": "reg/op", "tag": "7"},
        "runner": {"image": {"repository": "reg/runner", "tag": "8", "pullPolicy": "Always"}, "serviceAccountName": "evals-runner",
                   "manageRBAC": False, "dataDir": "/data/d", "backoffLimit": 5, "maxRunningJobs": 10, "maxRunningJobsPerEvaluation": 2,
                   "terminationGracePeriodSeconds": 60, "metricsPort": 0, "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
                   "tolerations": [{"key": "flageval.io/chip-vendor", "operator": "Exists", "effect": "NoSchedule"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                       {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}}},
        "nodeLabels": {"vendor": "example.com/vendor", "region": "topology.kubernetes.io/region"},
        "results": {"claimName": "evals-results", "mountPath": "/results"},
        "operator": {"statusInterval": 0.5, "resyncInterval": 10},
        "urlPolicy": {"allow": ["169.254.7.0/24", "models.link.local"], "deny": ["127.0.0.0/8", "::1"]},
    }
    s = settings_from(operator_container(render(helm, values=values, tmp=tmp_path)), monkeypatch)
    r = values["runner"]
    assert (s.runner_image, s.image_pull_policy, s.runner_service_account, s.manage_runner_rbac) == ("reg/runner:8", "Always", "evals-runner", False)
    assert (s.data_dir, s.backoff_limit, s.max_running_jobs, s.max_running_jobs_per_evaluation, s.termination_grace_seconds) == ("/data/d", 5, 10, 2, 60)
    assert s.runner_metrics_port == 0
    assert s.resources == r["resources"] and s.tolerations == r["tolerations"] and s.affinity == r["affinity"]
    assert (s.vendor_label, s.region_label, s.results_claim, s.volume_mount_path) == ("example.com/vendor", "topology.kubernetes.io/region", "evals-results", "/results")
    assert (s.status_interval, s.resync_interval) == (0.5, 10)
    assert (s.url_allow, s.url_deny) == ("169.254.7.0/24,models.link.local", "127.0.0.0/8,::1")


def test_the_operator_holds_exactly_the_rights_of_the_runner_role_it_grants_and_binds_nothing_else(helm):
    """The API server lets the operator create the runner's Role and RoleBinding only when it holds every
    right in them (RBAC's escalation check); no cluster-wide role for runners exists to bind."""
    docs = render(helm)
    assert not [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "fe-runner"]
    operator = grants(find(docs, "ClusterRole", "fe-operator")["rules"])
    assert grants(RUNNER_RULES) <= operator
    assert not [g for g in operator if g[2] in ("bind", "escalate")]


def grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


OPERATOR_GRANTS = {
    ("flageval.io", "evaluations", "list"), ("flageval.io", "evaluations", "watch"),
    ("flageval.io", "evaluationtaskresults", "list"), ("flageval.io", "evaluationtaskresults", "watch"),
    ("flageval.io", "evaluations/status", "patch"), ("flageval.io", "evaluations/finalizers", "update"),
    ("batch", "jobs", "list"), ("batch", "jobs", "watch"), ("batch", "jobs", "create"), ("batch", "jobs", "patch"),
    ("", "events", "create"), ("", "pods", "list"),
}
RUNNER_RBAC_GRANTS = {("", "serviceaccounts", "create"), ("rbac.authorization.k8s.io", "roles", "create"),
                      ("rbac.authorization.k8s.io", "rolebindings", "create"), *grants(RUNNER_RULES)}


def test_operator_rbac_is_least_privilege(helm):
    docs = render(helm)
    assert grants(find(docs, "ClusterRole", "fe-operator")["rules"]) == OPERATOR_GRANTS | RUNNER_RBAC_GRANTS
    cluster = find(docs, "ClusterRole", "fe-operator-cluster")
    assert grants(cluster["rules"]) == {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
                                        ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}
    for name in ("fe-operator", "fe-operator-cluster"):
        binding = find(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"]["name"] == name and binding["subjects"] == [{"kind": "ServiceAccount", "name": "fe-operator", "namespace": "flageval"}]
    # The runner ServiceAccount and RoleBinding made by hand: no rights on them.
    assert grants(find(render(helm, "runner.manageRBAC=false"), "ClusterRole", "fe-operator")["rules"]) == OPERATOR_GRANTS

KUEUE_GRANTS = {("kueue.x-k8s.io", "workloads", "list"), ("kueue.x-k8s.io", "workloads", "watch"), ("kueue.x-k8s.io", "workloads", "patch"),
                ("kueue.x-k8s.io", "localqueues", "list"), ("kueue.x-k8s.io", "localqueues", "watch")}


def test_kueue_values_set_the_operator_and_its_rights_on_workloads(helm, monkeypatch):
    docs = render(helm, "kueue.enabled=true", "kueue.queueName=team-gpus")
    s = settings_from(operator_container(docs), monkeypatch)
    assert (s.kueue_enabled, s.kueue_queue_name, s.max_running_jobs, s.running_cap) == (True, "team-gpus", None, float("inf"))
    assert grants(find(docs, "ClusterRole", "fe-operator")["rules"]) == OPERATOR_GRANTS | RUNNER_RBAC_GRANTS | KUEUE_GRANTS
    # Caps set beside Kueue still apply; without Kueue the defaults are the operator's own.
    s = settings_from(operator_container(render(helm, "kueue.enabled=true", "runner.maxRunningJobs=5")), monkeypatch)
    assert (s.running_cap, s.running_cap_per_evaluation) == (5, float("inf"))
    s = settings_from(operator_container(render(helm)), monkeypatch)
    assert (s.kueue_enabled, s.running_cap, s.running_cap_per_evaluation) == (False, 64, 8)
    # Given namespaces: the in-namespace rights through a RoleBinding in each; kopf lists and watches namespaces.
    scoped = render(helm, "watchNamespaces[0]=evals", "watchNamespaces[1]=team-b")
    assert not [d for d in scoped if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "fe-operator"]
    bindings = [d for d in scoped if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["evals", "team-b"]
    assert all(b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "fe-operator"} for b in bindings)
    assert ("", "namespaces", "watch") in grants(find(scoped, "ClusterRole", "fe-operator-cluster")["rules"])
    assert not any(g[1] == "jobs" for g in grants(find(scoped, "ClusterRole", "fe-operator-cluster")["rules"]))  # Jobs listed per namespace


def test_results_claim(helm):
    claim = find(render(helm), "PersistentVolumeClaim", "flageval-results")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert "storageClassName" not in claim["spec"] and claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    claim = find(render(helm, "results.storageClassName=-", "results.keep=false", "results.size=5Gi", "results.claimName=mine"), "PersistentVolumeClaim", "mine")
    assert claim["spec"]["storageClassName"] == "" and "annotations" not in claim["metadata"]
    assert find(render(helm, "results.storageClassName=nfs"), "PersistentVolumeClaim")["spec"]["storageClassName"] == "nfs"
    existing = render(helm, "results.create=false", "results.claimName=shared")
    assert not [d for d in existing if d["kind"] == "PersistentVolumeClaim"]
    assert {"name": "FLAGEVAL_RESULTS_CLAIM", "value": "shared"} in operator_container(existing)["env"]


def test_shim_and_service_monitor(helm):
    docs = render(helm, "shim.enabled=true", "serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom")
    names = kinds(docs)
    for obj in [("Deployment", "fe-shim"), ("Service", "fe-shim"), ("ServiceAccount", "fe-shim"), ("Role", "fe-shim"),
                ("RoleBinding", "fe-shim"), ("Secret", "fe-shim-token"), ("ServiceMonitor", "fe-operator")]:
        assert obj in names
    shim = find(docs, "Deployment", "fe-shim")["spec"]["template"]["spec"]["containers"][0]
    assert shim["image"] == "ghcr.io/flageval/flageval-runner:0.1.0" and shim["command"][:2] == ["flageval", "serve"]
    # The REST server's limits come from values, with the server's own defaults.
    from flageval.shim.serve import build_parser as serve_parser
    parsed = serve_parser().parse_args(shim["command"][2:])
    defaults = serve_parser().parse_args([])
    for option in ("rate_limit", "rate_burst", "header_timeout", "body_timeout", "keep_alive_timeout", "max_body_bytes"):
        assert getattr(parsed, option) == getattr(defaults, option), option
    tuned = find(render(helm, "shim.enabled=true", "shim.rateLimit=20", "shim.bodyTimeout=0"), "Deployment", "fe-shim")
    tuned_args = serve_parser().parse_args(tuned["spec"]["template"]["spec"]["containers"][0]["command"][2:])
    assert (tuned_args.rate_limit, tuned_args.body_timeout) == (20, 0)
    monitor = find(docs, "ServiceMonitor", "fe-operator")
    service = find(docs, "Service", "fe-operator-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert not selector.items() <= find(docs, "Service", "fe-shim")["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["flageval"]}


def test_shim_mounts_the_results_read_only_for_reports_when_asked(helm):
    plain = find(render(helm, "shim.enabled=true"), "Deployment", "fe-shim")["spec"]["template"]["spec"]
    assert "volumes" not in plain and "volumeMounts" not in plain["containers"][0]
    spec = find(render(helm, "shim.enabled=true", "shim.mountResults=true"), "Deployment", "fe-shim")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["volumes"] == [{"name": "results", "persistentVolumeClaim": {"claimName": "flageval-results", "readOnly": True}}]
    assert container["volumeMounts"] == [{"name": "results", "mountPath": "/var/lib/flageval", "readOnly": True}]
    assert {"name": "FLAGEVAL_SHIM_RESULTS_PATH", "value": "/var/lib/flageval"} in container["env"]


def test_users_suites_reach_the_operator_and_the_rest_api_as_a_file_they_read(helm, tmp_path):
    from flageval.datasets import user_suites

    plain = render(helm, "shim.enabled=true")
    assert not [d for d in plain if d["kind"] == "ConfigMap"]
    suites = {"NLP": {"parity": ["gsm8k", "arc_challenge"]}, "EV": {"robots": ["erqa"]}}
    docs = render(helm, "shim.enabled=true", values={"suites": suites}, tmp=tmp_path)
    config_map = find(docs, "ConfigMap", "fe-suites")
    written = tmp_path / "suites.yaml"
    written.write_text(config_map["data"]["suites.yaml"])
    assert user_suites(written) == suites  # what the chart writes, flageval reads
    for name in ("fe-operator", "fe-shim"):
        spec = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert {"name": "FLAGEVAL_SUITES", "value": "/etc/flageval/suites/suites.yaml"} in container["env"]
        assert {"name": "suites", "mountPath": "/etc/flageval/suites", "readOnly": True} in container["volumeMounts"]
        assert {"name": "suites", "configMap": {"name": "fe-suites"}} in spec["volumes"]
    proc = run_helm(helm, "template", "fe", str(CHART), "--set", "suites.XX.a[0]=gsm8k", check=False)
    assert proc.returncode != 0 and "suites" in proc.stderr


def test_chart_readme_documents_every_top_level_value_and_argocd():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in values:
        assert f"`{key}" in readme, key
    assert "resource.customizations.health.flageval.io_Evaluation" in readme and "flageval.io/chip-vendor" in readme
    lua = (CHART / "files/argocd-health.lua").read_text()
    assert lua.splitlines()[1] in readme  # the README shows the check itself


def test_kind_up_script_is_shellcheck_clean_and_checks_its_tools():
    script = ROOT / "hack/kind-up.sh"
    text = script.read_text()
    assert "set -euo pipefail" in text and "--build-context" in text and "kind load docker-image" in text and "helm upgrade --install" in text
    shellcheck = Path(sys.executable).parent / "shellcheck"
    proc = subprocess.run([str(shellcheck), "--severity=style", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: hack/kind-up.sh")
    bad = subprocess.run([str(script), "--frobnicate"], capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "unknown argument: --frobnicate" in bad.stderr
    empty = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip())
    try:
        (empty / "bash").symlink_to("/bin/bash")
        for tool in ("mkdir", "chmod", "dirname"):
            (empty / tool).symlink_to(subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True, check=True).stdout.strip())
        nothing = subprocess.run(["/bin/bash", str(script)], capture_output=True, text=True, check=False, env={"PATH": str(empty)})
        assert nothing.returncode != 0 and "missing tools: docker kind kubectl helm" in nothing.stderr, nothing.stderr
    finally:
        for item in empty.iterdir():
            item.unlink()
        empty.rmdir()


# -- on the control plane ----------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize("sets", [[], ["shim.enabled=true", "serviceMonitor.enabled=true", "suites.NLP.parity[0]=gsm8k", "runner.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
                                        "runner.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].key=pool",
                                        "runner.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].operator=Exists"]],
                         ids=["defaults", "shim-and-servicemonitor"])
def test_rendered_manifests_pass_strict_server_side_validation(helm, control_plane, kube, namespace, sets):
    try:
        kube.apiext.create_custom_resource_definition(SERVICE_MONITOR_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise
    wait_for(lambda: any(c.type == "Established" and c.status == "True" for c in
                         kube.apiext.read_custom_resource_definition("servicemonitors.monitoring.coreos.com").status.conditions or []), 30, "ServiceMonitor CRD")
    docs = render(helm, *sets, f"watchNamespaces[0]={namespace}", release=f"v{namespace}", namespace=namespace, crds=True)
    assert ("CustomResourceDefinition", "evaluations.flageval.io") in kinds(docs)
    assert ("ServiceMonitor" in {d["kind"] for d in docs}) == bool(sets)
    manifest = "\n---\n".join(json.dumps(d) for d in docs)
    proc = control_plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=manifest, check=False)
    assert proc.returncode == 0, proc.stderr
    applied = proc.stdout.splitlines()
    assert len(applied) == len(docs) and all("(server dry run)" in line for line in applied), proc.stdout
    # The check has teeth: an unknown field in the operator's pod spec is refused.
    broken = [json.loads(json.dumps(d)) for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
    broken[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    proc = control_plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=json.dumps(broken[0]), check=False)
    assert proc.returncode != 0 and "pth" in proc.stderr


def operator_processes(health_port: int) -> list[int]:
    """Processes running this install's operator (the node agent runs pods as local processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--liveness=http://0.0.0.0:{health_port}/healthz".encode() in argv and b"operator" in argv:
            found.append(int(entry.name))
    return found


def healthz(port: int) -> int | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


@pytest.mark.cluster
def test_helm_install_runs_the_operator_as_a_pod_that_carries_an_evaluation_to_succeeded(helm, control_plane, kube, namespace):
    release = f"fe-{namespace}"
    health, metrics, runner_metrics = free_port(), free_port(), free_port()
    claim = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-chart-results"},
             "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "", "persistentVolumeReclaimPolicy": "Delete",
                      "hostPath": {"path": f"/tmp/{namespace}-chart-results"}, "claimRef": {"namespace": namespace, "name": "flageval-results"}}}
    kube.core.create_persistent_volume(claim)
    env = {**control_plane.env, "KUBECONFIG": str(control_plane.kubeconfig)}
    installed = False
    try:
        run_helm(helm, "install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "180s",
                 "--set", "image.repository=local/flageval", "--set", "image.tag=dev", f"--set=watchNamespaces[0]={namespace}",
                 "--set", f"operator.healthPort={health}", "--set", f"metrics.port={metrics}", "--set", "operator.statusInterval=1",
                 "--set", f"runner.metricsPort={runner_metrics}",
                 "--set", "results.storageClassName=-", "--set", "results.size=1Gi", env=env, timeout=240)
        installed = True
        for crd in ("evaluations.flageval.io", "evaluationtaskresults.flageval.io"):  # installed by the chart, or already there
            wait_for(lambda crd=crd: any(c.type == "Established" and c.status == "True"
                                         for c in kube.apiext.read_custom_resource_definition(crd).status.conditions or []), 30, f"{crd} established")
        pods = kube.core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator").items
        assert len(pods) == 1 and pods[0].spec.node_name and pods[0].status.phase == "Running"
        assert kube.core.read_namespaced_persistent_volume_claim("flageval-results", namespace).status.phase == "Bound"
        wait_for(lambda: healthz(health) == 200, 60, "the operator's liveness endpoint")
        assert operator_processes(health), "the operator runs as a process of the node agent"

        limit, accuracy, seed = 6, 0.7, 11
        with serve_in_thread(default_answerer(DATA, accuracy, seed)) as model:
            body = {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": "chart"},
                    "spec": {"domain": "NLP", "datasets": ["gsm8k"], "limit": limit, "evalInfos": [
                        {"evalModel": "chart-nvidia-origin", "model": "qwen3", "evalUrl": model.chat_url, "numConcurrent": 2}]}}
            kube.custom.create_namespaced_custom_object(G, V, namespace, P, body)

            def finished():
                status = kube.custom.get_namespaced_custom_object(G, V, namespace, P, "chart").get("status") or {}
                return status if status.get("phase") in ("Succeeded", "Failed") else None
            status = wait_for(finished, 240, "the Evaluation to finish")
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        detail = status["evalResults"][0]["details"][0]
        assert detail["status"] == "S" and detail["accuracy"] == intended_accuracy("gsm8k", DATA, accuracy, seed, limit)
        assert detail["progress"] == f"{limit}/{limit}"

        # The operator made the runner's ServiceAccount, Role and RoleBinding with the chart's rights (RBAC let it grant them).
        job = kube.batch.list_namespaced_job(namespace, label_selector="flageval.io/evaluation=chart").items[0]
        assert job.spec.template.spec.service_account_name == "flageval-runner" and job.spec.template.spec.containers[0].image == "local/flageval:dev"
        assert [p.container_port for p in job.spec.template.spec.containers[0].ports] == [runner_metrics]  # runner.metricsPort
        binding = kube.rbac.read_namespaced_role_binding("flageval-runner", namespace)
        assert binding.role_ref.kind == "Role" and binding.role_ref.name == "flageval-runner"
        role = kube.rbac.read_namespaced_role("flageval-runner", namespace)
        assert [kube.api.sanitize_for_serialization(r) for r in role.rules] == RUNNER_RULES
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        assert "flageval_jobs_created_total 1.0" in text

        # Its rights sufficed: no refusal in its log (kopf warns on 403s; the client raises them).
        pod = pods[0]
        log = control_plane.agent_state / "pods" / f"{namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}" / "logs" / "operator.log"
        lines = log.read_text(errors="replace").splitlines()
        assert lines and all(json.loads(line) for line in lines if line.startswith("{"))  # --log-format json
        messages = [json.loads(line).get("message", "") if line.startswith("{") else line for line in lines]
        refusals = [m for m in messages if re.search(r"\bforbidden\b|\b403\b|Not enough permissions", m, re.IGNORECASE)]
        assert not refusals, "\n".join(refusals[:5])
    finally:
        if installed or run_helm(helm, "status", release, "--namespace", namespace, env=env, check=False).returncode == 0:
            run_helm(helm, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s", env=env, timeout=180)
        try:
            wait_for(lambda: not operator_processes(health), 60, "the operator process to stop")
        finally:
            kube.core.delete_persistent_volume(claim["metadata"]["name"])
    assert healthz(health) is None
    # The pod object goes once the node has seen its process end: a moment after the process.
    wait_for(lambda: not kube.core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={release}").items,
             30, "the operator pod object to be removed")
    for name in (f"{release}-operator", f"{release}-operator-cluster"):
        with pytest.raises(ApiException) as gone:
            kube.rbac.read_cluster_role(name)
        assert gone.value.status == 404
    # The results claim is kept on uninstall (helm.sh/resource-policy: keep).
    assert kube.core.read_namespaced_persistent_volume_claim("flageval-results", namespace)
