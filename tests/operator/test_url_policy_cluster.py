"""The URL policy on the real control plane: the operator refuses an Evaluation whose evalUrl the policy
refuses (phase Failed, the field and the rule in its condition and a Warning Event, no Job), and a
runner Job, given the operator's policy, refuses a host name resolving to a denied address before
sending anything."""

from __future__ import annotations

import pytest
from flageval.datasets import default_data_dir
from flageval.mock_model.answers import default_answerer
from flageval.mock_model.server import serve_in_thread
from support.cluster import results_claim, wait_for

pytestmark = pytest.mark.cluster
G, V, P = "flageval.io", "v1alpha1", "evaluations"
DATA = default_data_dir()
DENY = "127.0.0.0/8,::1"


def create(kube, namespace, name, url, *, beside: str | None = "https://models.example/v1/chat/completions"):
    """An Evaluation of the service at `url`, beside a baseline at `beside` (the policy allows it)."""
    infos = [{"evalModel": "q-nvidia-origin", "model": "qwen3", "evalUrl": beside}] if beside else []
    infos.append({"evalModel": "q-ascend", "model": "qwen3", "evalUrl": url, "chip": "Ascend-910B"})
    body = {"apiVersion": f"{G}/{V}", "kind": "Evaluation", "metadata": {"name": name},
            "spec": {"datasets": ["gsm8k"], "limit": 5, "evalInfos": infos}}
    kube.custom.create_namespaced_custom_object(G, V, namespace, P, body)


def status(kube, namespace, name):
    return kube.custom.get_namespaced_custom_object(G, V, namespace, P, name).get("status") or {}


def jobs(kube, namespace, name):
    return kube.batch.list_namespaced_job(namespace, label_selector=f"flageval.io/evaluation={name}").items


def test_operator_refuses_refused_urls_and_runners_check_what_a_name_resolves_to(kube, namespace, start_operator):
    results_claim(kube, namespace)
    operator = start_operator(namespace, url_deny=DENY)
    with serve_in_thread(default_answerer(DATA, 0.7, 5)) as model:
        port = model.rsplit(":", 1)[1]
        refusals = {
            "link-local": ("http://169.254.10.1:9010/v1/chat/completions", "169.254.10.1 is link-local (cloud metadata services answer at 169.254.169.254); refused unless FLAGEVAL_URL_ALLOW lists it"),
            "loopback": (f"http://127.0.0.1:{port}/v1/chat/completions", "127.0.0.1 is refused by FLAGEVAL_URL_DENY (127.0.0.0/8)"),
        }
        for name, (url, _) in refusals.items():
            create(kube, namespace, name, url)
        # A name: the operator cannot know what it resolves to where the runner runs; the runner checks.
        by_name = f"http://localhost:{port}/v1/chat/completions"
        create(kube, namespace, "by-name", by_name, beside=None)

        for name, (url, rule) in refusals.items():
            done = wait_for(lambda n=name: status(kube, namespace, n).get("phase") == "Failed" and status(kube, namespace, n), 60, f"{name} Failed")
            expected = f"spec.evalInfos[1].evalUrl {url}: {rule}"
            assert done["message"] == expected, done
            failed = next(c for c in done["conditions"] if c["type"] == "Failed")
            assert (failed["status"], failed["reason"], failed["message"]) == ("True", "EvalUrlRefused", expected), done["conditions"]
            warned = wait_for(lambda n=name: [e for e in kube.core.list_namespaced_event(namespace).items
                                               if e.involved_object.name == n and e.reason == "Failed"], 30, f"Failed Event on {name}")
            assert warned[0].type == "Warning" and expected in warned[0].message
            assert jobs(kube, namespace, name) == []  # not even the allowed service's

        failed = wait_for(lambda: status(kube, namespace, "by-name").get("phase") == "Failed" and status(kube, namespace, "by-name"), 180,
                          "the runner to refuse the name")
        (ascend,) = failed["evalResults"]
        assert ascend["details"][0]["status"] == "F", failed
        assert ascend["details"][0]["message"] == (f"eval_url {by_name}: 'localhost' resolves to 127.0.0.1, which is refused by "
                                                   "FLAGEVAL_URL_DENY (127.0.0.0/8)"), ascend
        (job,) = jobs(kube, namespace, "by-name")
        env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
        assert env["FLAGEVAL_URL_DENY"] == DENY and "FLAGEVAL_URL_ALLOW" not in env
        assert model.stats()["total"] == 0  # nothing reached the model, by any path
    assert "Traceback" not in operator.log()
