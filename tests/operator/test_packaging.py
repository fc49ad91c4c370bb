"""Argo CD health check (Lua, run by lupa), the example manifest and the runner Dockerfile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from flageval.api.evaluation import Evaluation
from lupa import LuaRuntime

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "charts/flageval-operator/files/argocd-health.lua"


def health(obj: dict) -> dict:
    lua = LuaRuntime(unpack_returned_tuples=True)
    check = lua.eval(f"function(obj)\n{HEALTH.read_text()}\nend")
    result = check(lua.table_from(obj, recursive=True))
    return dict(result)


@pytest.mark.parametrize("status, expected, words", [
    (None, "Progressing", "Waiting for the operator"),
    ({"phase": "Pending", "progress": "0/4", "observedGeneration": 1}, "Progressing", "Pending: datasets 0/4"),
    ({"phase": "Running", "progress": "1/4", "observedGeneration": 1}, "Progressing", "Running: datasets 1/4"),
    ({"phase": "Succeeded", "progress": "4/4", "release": True, "observedGeneration": 1}, "Healthy", "release true"),
    ({"phase": "Succeeded", "progress": "4/4", "release": False, "observedGeneration": 1}, "Healthy", "release false"),
    ({"phase": "Failed", "message": "q/gsm8k: OOR: 20 of 20 samples failed", "observedGeneration": 1}, "Degraded", "OOR: 20 of 20"),
    ({"phase": "Suspended", "progress": "2/4", "observedGeneration": 1}, "Suspended", "datasets 2/4"),
    ({"phase": "Succeeded", "progress": "4/4", "observedGeneration": 0}, "Progressing", "latest spec"),
])
def test_argocd_health(status, expected, words):
    obj = {"apiVersion": "flageval.io/v1alpha1", "kind": "Evaluation", "metadata": {"name": "e", "generation": 1}}
    if status is not None:
        obj["status"] = status
    got = health(obj)
    assert got["status"] == expected and words in got["message"]


def test_example_is_a_valid_evaluation():
    docs = [d for d in yaml.safe_load_all((ROOT / "examples/evaluation.yaml").read_text()) if d]
    evaluation = next(d for d in docs if d["kind"] == "Evaluation")
    spec = Evaluation.model_validate(evaluation).spec
    assert sum(i.is_baseline for i in spec.eval_infos) == 1 and len({i.chip_vendor for i in spec.eval_infos}) == 3
    for info in spec.eval_infos:
        info.to_eval_info()
        assert info.api_key_secret_ref is not None


def test_example_is_accepted_by_the_api_server(control_plane, namespace, crds):
    proc = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(ROOT / "examples/evaluation.yaml"))
    assert "evaluation.flageval.io/qwen3-8b" in proc.stdout


def test_dockerfile_is_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), str(ROOT / "runner_image/Dockerfile")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_image_can_run_every_domain():
    """Image datasets (MM, EV) need the mm extra, the operator's report Job the report extra; the data context is
    copied whole, EV's folders included."""
    dockerfile = (ROOT / "runner_image/Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all('".[operator,mm,report]"' in line for line in installs), installs
    assert "COPY --from=datasets --chown=root:root . /data/datasets" in dockerfile


def test_sources_are_lint_clean():
    """ruff on the Python sources, shellcheck on the shell scripts, as `make lint` runs them."""
    tools = Path(sys.executable).parent
    ruff = subprocess.run([str(tools / "ruff"), "check", "operator", "hack", "tests"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    scripts = ["hack/control-plane", "hack/node-agent", "hack/kind-up.sh", "hack/browser", ".ci/run"]
    shellcheck = subprocess.run([str(tools / "shellcheck"), "--severity=style", *scripts], cwd=ROOT, capture_output=True, text=True, check=False)
    assert shellcheck.returncode == 0, shellcheck.stdout + shellcheck.stderr
