"""`flageval serve` (local backend) as users run it: eval_urls the policy refuses are refused with the
field and the rule before anything starts; a planted API key, quoted back by the endpoint in its error
bodies, appears in no answer, log line, metric or file the run produced (its 0600 key file aside)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
from flageval.mock_model.answers import default_answerer
from flageval.mock_model.server import FaultPlan, serve_in_thread
from flageval_client import FlagEvalClient, eval_info
from shim_process import DATA
from support.secrets import places_holding


def evaluation(client: FlagEvalClient, url: str, key: str = "EMPTY", **fields) -> dict:
    body = {"eval_infos": [eval_info("q-nvidia-origin", "qwen3", url, api_key=key, **fields)], "domain": "NLP", "datasets": ["gsm8k"]}
    return client.call("POST", "/evaluation", body, check=False)


def test_refused_urls_are_refused_with_the_field_and_the_rule(start_shim, tmp_path):
    shim = start_shim()
    client = FlagEvalClient(shim.url)
    for url, rule in [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("http://100.100.100.200/latest/meta-data/", "100.100.100.200 is the Alibaba Cloud metadata service"),
        ("http://metadata.google.internal/computeMetadata/v1/", "host 'metadata.google.internal' is a cloud metadata service"),
        ("http://2852039166/v1/chat/completions", "'2852039166' is 169.254.169.254, which is link-local"),
    ]:
        answer = evaluation(client, url)
        assert answer["err_code"] == 1 and answer["err_msg"].startswith(f"eval_infos[q-nvidia-origin].eval_url {url}: {rule}"), answer
        assert answer["err_msg"].endswith("refused unless FLAGEVAL_URL_ALLOW lists it"), answer
    scheme = httpx.post(f"{shim.url}/evaluation", json={"eval_infos": [eval_info("q-nvidia-origin", "qwen3", "gopher://host:70/x")]})
    assert scheme.status_code == 422 and "eval_url" in scheme.json()["err_msg"]
    assert not list(shim.state_dir.glob("evaluations/*")), "a refused request started something"

    # A site that denies loopback: a name is judged by what it resolves to.
    with serve_in_thread(default_answerer(DATA, 0.7, 5)) as model:
        denying = start_shim(state_dir=tmp_path / "denying", env={"FLAGEVAL_URL_DENY": "127.0.0.0/8,::1"})
        url = model.chat_url.replace("127.0.0.1", "localhost")
        answer = evaluation(FlagEvalClient(denying.url), url)
        assert answer["err_msg"] == (f"eval_infos[q-nvidia-origin].eval_url {url}: 'localhost' resolves to 127.0.0.1, which is "
                                     "refused by FLAGEVAL_URL_DENY (127.0.0.0/8)"), answer
        assert model.stats()["total"] == 0

    bad = subprocess.run([sys.executable, "-m", "flageval.cli", "serve", "--port", "0", "--state-dir", str(tmp_path / "bad")],
                         check=False, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "FLAGEVAL_URL_ALLOW": "10.0.0.0/33"})
    assert bad.returncode == 2 and "FLAGEVAL_URL_ALLOW/FLAGEVAL_URL_DENY/--allow-host: '10.0.0.0/33' is not a CIDR" in bad.stderr, bad.stderr


def test_a_quoted_key_is_nowhere_but_in_its_key_file(start_shim):
    key = f"sk-rest-{uuid.uuid4()}"
    with serve_in_thread(default_answerer(DATA, 0.7, 5), api_key=key, echo_auth=True, faults=FaultPlan({"500": 0.5}, seed=2)) as model:
        shim = start_shim("--limit", "30")
        client = FlagEvalClient(shim.url)
        rid = evaluation(client, model.chat_url, key, num_retry=1, num_concurrent=2)["request_id"]
        final = client.wait_finished(rid, timeout=180)
        assert final["status"] == "OOR" and model.stats()["faults"]["500"] > 0, final  # failed samples quoted the header
        client.evaldiffs(rid, check=False)
        client.evaluation_diffs([rid], check=False)
        metrics = client.http.get("/metrics").text
        client.close()
        shim.stop()
    key_files = list(shim.state_dir.glob("evaluations/*/api_keys.json"))
    files = [p for p in shim.state_dir.rglob("*") if p.is_file() and p not in key_files]
    texts = {"shim log": shim.log(), "/metrics": metrics, **{f"answer #{i}": t for i, t in enumerate(client.transcript)}}
    found, read = places_holding(key, texts, files)
    assert not found, f"the API key is in {found}"
    redacted, _ = places_holding("Authorization: Bearer [redacted]", texts, files)
    assert read >= 4 and any(p.endswith("journal.jsonl") for p in redacted), (read, redacted)
    assert len(key_files) == 1 and key in key_files[0].read_text()  # kept for restarts, mode 0600 (test_local_cycle)
