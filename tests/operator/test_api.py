"""Evaluation types and the CRDs generated from them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flageval.api.crd import CRDS, evaluation_crd, task_result_crd
from flageval.api.evaluation import EvalInfoSpec, EvaluationSpec, EvaluationStatus
from pydantic import ValidationError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def info(**kw):
    return {"evalModel": "q-nvidia-origin", "model": "qwen", "evalUrl": "http://127.0.0.1:9010/v1/chat/completions", **kw}


def test_spec_defaults_and_camel_case():
    spec = EvaluationSpec.model_validate({"evalInfos": [info(chip="Ascend-910B", apiKeySecretRef={"name": "k"})]})
    assert spec.domain.value == "NLP" and spec.region == "bj" and spec.suspend is False and spec.tolerance == 0.5
    one = spec.eval_infos[0]
    assert one.api_key_secret_ref.key == "api_key" and one.chip_vendor == "ascend" and one.is_baseline
    assert one.batch_size == 1 and one.num_retry == 10 and one.retry_time == 3600


def test_to_eval_info_reuses_evalinfo_validation():
    spec = EvalInfoSpec.model_validate(info(genKwargs="temperature=0.6", baseModelName="Qwen3-8B"))
    converted = spec.to_eval_info("s3cret")
    assert converted.api_key == "s3cret" and converted.base_model_name == "Qwen3-8B" and converted.eval_url.endswith("/completions")
    with pytest.raises(ValidationError, match="gen_kwargs"):
        EvalInfoSpec.model_validate(info(genKwargs="oops")).to_eval_info()
    with pytest.raises(ValidationError):
        EvalInfoSpec.model_validate(info(apiKey="plain"))  # a plain key is not a field


def test_generated_crds_are_committed_and_check_detects_drift(tmp_path):
    ok = subprocess.run([sys.executable, str(ROOT / "hack/gen_crds.py"), "--check"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    repo, chart = tmp_path / "crds", tmp_path / "chart-crds"
    subprocess.run([sys.executable, str(ROOT / "hack/gen_crds.py"), "--out", str(repo), "--out", str(chart)], check=True)
    name = next(iter(CRDS))
    assert (repo / name).read_text() == (chart / name).read_text()
    # Drift in either copy — here the second, as the chart's is by default — fails the check.
    (chart / name).write_text((chart / name).read_text().replace("feval", "fe"))
    drift = subprocess.run([sys.executable, str(ROOT / "hack/gen_crds.py"), "--check", "--out", str(repo), "--out", str(chart)],
                           capture_output=True, text=True, check=False)
    assert drift.returncode == 1 and "+    - feval" in drift.stdout and str(chart / name) in drift.stdout
    assert str(repo / name) not in drift.stdout


def test_the_chart_ships_the_same_crds_and_the_default_check_covers_them():
    chart = ROOT / "charts/flageval-operator/crds"
    assert sorted(p.name for p in chart.glob("*.yaml")) == sorted(CRDS) == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in CRDS:
        assert (chart / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name
    listed = subprocess.run([sys.executable, "-c", "import runpy; g = runpy.run_path('hack/gen_crds.py'); print(*g['OUTPUTS'], sep=chr(10))"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert [str(ROOT / "crds"), str(chart)] == listed


def _walk(node, path=""):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural_and_described():
    for crd in (evaluation_crd(), task_result_crd()):
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "type" in node, path
            assert not {"anyOf", "allOf", "oneOf", "$ref", "title"} & set(node), path
            scalar_item = path.endswith("[]") and node["type"] != "object"
            if path.startswith((".spec", ".status", ".progress", ".result")) and not scalar_item:
                assert node.get("description"), f"{path} has no description"
    version = evaluation_crd()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Domain", "Phase", "Progress", "Release", "Age"]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert all("default" not in node for _, node in _walk(status))  # the operator writes every field


def test_status_round_trips_in_camel_case():
    status = EvaluationStatus.model_validate({"phase": "Running", "evalResults": [{"evalModel": "a", "status": "R", "datasetsProgress": "1/2",
                                              "details": [{"dataset": "gsm8k", "status": "S", "baseAccuracy": 70.0, "diffCI": None}]}]})
    dumped = status.model_dump(by_alias=True, mode="json")
    assert dumped["evalResults"][0]["details"][0]["baseAccuracy"] == 70.0 and "diffCI" in dumped["evalResults"][0]["details"][0]
