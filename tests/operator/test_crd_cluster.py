"""The generated CRD on the real API server: defaults, CEL refusals with reasons, immutability, columns."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException
from support.cluster import wait_for

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"


def evaluation(name="ev", **spec):
    infos = spec.pop("evalInfos", [{"evalModel": "q-nvidia-origin", "model": "qwen", "evalUrl": "http://127.0.0.1:9010/v1/chat/completions"},
                                   {"evalModel": "q-ascend", "model": "qwen", "evalUrl": "https://svc.example:8443/v1/completions", "chip": "Ascend-910B"}])
    return {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": name}, "spec": {"evalInfos": infos, **spec}}


def refused(kube, namespace, body) -> str:
    with pytest.raises(ApiException) as caught:
        kube.custom.create_namespaced_custom_object(G, V, namespace, P, body)
    assert caught.value.status == 422
    return caught.value.body


def test_defaults_and_refusals(kube, namespace, crds):
    created = wait_for(lambda: kube.custom.create_namespaced_custom_object(G, V, namespace, P, evaluation()), 30, "create")
    spec = created["spec"]
    assert spec["domain"] == "NLP" and spec["region"] == "bj" and spec["suspend"] is False and spec["tolerance"] == 0.5
    assert spec["evalInfos"][0]["chip"] == "Nvidia-H100" and spec["evalInfos"][0]["numRetry"] == 10

    dup = [{"evalModel": "same", "model": "m", "evalUrl": "http://h:1/v1/completions"}] * 2
    assert "evalModel must be unique within evalInfos" in refused(kube, namespace, evaluation("dup", evalInfos=dup))
    bad_chip = [{"evalModel": "a", "model": "m", "evalUrl": "http://h:1/v1/completions", "chip": "H100"}]
    assert "chip must be Vendor-ChipName" in refused(kube, namespace, evaluation("chip", evalInfos=bad_chip))
    for url in ("ftp://h/v1", "not a url", "http://"):
        bad_url = [{"evalModel": "a", "model": "m", "evalUrl": url}]
        assert "evalUrl must be an http:// or https:// URL" in refused(kube, namespace, evaluation("url", evalInfos=bad_url)), url
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/", "http://100.100.100.200/",
                "http://Metadata.Google.Internal./computeMetadata/v1/"):
        metadata = [{"evalModel": "a", "model": "m", "evalUrl": url}]
        assert "evalUrl must not be a cloud metadata service" in refused(kube, namespace, evaluation("md", evalInfos=metadata)), url
    assert "Unsupported value" in refused(kube, namespace, evaluation("dom", domain="CV"))
    assert "datasets must be unique" in refused(kube, namespace, evaluation("ds", datasets=["gsm8k", "gsm8k"]))
    assert "should be greater than or equal to 1" in refused(kube, namespace, evaluation("lim", limit=0))
    assert "metadata.name must be at most 63 characters" in refused(kube, namespace, evaluation("n" * 64))


def test_only_suspend_changes_after_creation(kube, namespace, crds):
    wait_for(lambda: kube.custom.create_namespaced_custom_object(G, V, namespace, P, evaluation(datasets=["gsm8k"], limit=5)), 30, "create")
    patched = kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "ev", {"spec": {"suspend": True, "tolerance": 1.0}})
    assert patched["spec"]["suspend"] is True
    for change, rule in (({"datasets": ["mmlu"]}, "datasets is immutable"), ({"limit": 6}, "limit is immutable"),
                         ({"mode": "gsm8k"}, "mode is immutable"), ({"domain": "MM"}, "domain is immutable"),
                         ({"queueName": "team-gpus"}, "queueName is immutable"),
                         ({"evalInfos": [{"evalModel": "x", "model": "m", "evalUrl": "http://h:1/v1/completions"}]}, "evalInfos is immutable")):
        with pytest.raises(ApiException) as caught:
            kube.custom.patch_namespaced_custom_object(G, V, namespace, P, "ev", {"spec": change})
        assert rule in caught.value.body, change


def test_kubectl_refuses_a_plain_api_key_and_explains_fields(control_plane, namespace, crds):
    body = evaluation("plain", evalInfos=[{"evalModel": "a", "model": "m", "evalUrl": "http://h:1/v1/completions", "apiKey": "sk-123"}])
    proc = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert proc.returncode != 0 and 'unknown field "spec.evalInfos[0].apiKey"' in proc.stderr
    explained = control_plane.kubectl("explain", "evaluation.spec.evalInfos.apiKeySecretRef").stdout
    assert "A plain key is never accepted" in explained and "Name of the Secret" in explained
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(evaluation("fine")))
    table = control_plane.kubectl("get", "feval", "-n", namespace).stdout.split()
    assert table[:6] == ["NAME", "DOMAIN", "PHASE", "PROGRESS", "RELEASE", "AGE"] and table[6:8] == ["fine", "NLP"]
