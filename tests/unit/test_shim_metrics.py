"""Every answer of the REST layer is counted once, by endpoint, HTTP status and err_code."""

from fastapi.testclient import TestClient
from flageval.backends.local import LocalBackend, LocalSettings
from flageval.shim.app import ShimSettings, create_app
from prometheus_client import REGISTRY


def counted(endpoint, code, err_code):
    value = REGISTRY.get_sample_value("flageval_shim_requests_total", {"endpoint": endpoint, "code": code, "err_code": err_code})
    return value or 0.0


def test_answers_are_counted_once_with_their_err_code(tmp_path):
    app = create_app(LocalBackend(LocalSettings(state_dir=tmp_path / "state", max_runs=1)), ShimSettings(token="t", max_body_bytes=4096))
    auth = {"Authorization": "Bearer t"}
    cases = [
        # (request, endpoint, HTTP status, err_code)
        (lambda c: c.post("/evaluation", headers=auth, json={"eval_infos": [{"eval_model": "m", "model": "m", "eval_url": "http://127.0.0.1:9/v1/chat/completions"}],
                                                                 "datasets": ["gsm8k"], "limit": 1}), "/evaluation", "200", "0"),
        (lambda c: c.post("/evaluation_progress", headers=auth, json={"request_id": "eval-unknown"}), "/evaluation_progress", "200", "1"),
        (lambda c: c.post("/evaluation_progress", json={"request_id": "eval-unknown"}), "/evaluation_progress", "401", "1"),
        (lambda c: c.post("/evaluation_progress", headers={**auth, "content-type": "application/json"}, content=b"{"), "/evaluation_progress", "400", "1"),
        (lambda c: c.post("/evaluation_progress", headers=auth, json={}), "/evaluation_progress", "422", "1"),
        (lambda c: c.post("/stop_evaluation", headers=auth, content=b"x" * 5000), "/stop_evaluation", "413", "1"),
        (lambda c: c.get("/no-such-endpoint"), "other", "404", "1"),
    ]
    with TestClient(app) as client:
        for send, endpoint, code, err_code in cases:
            before = counted(endpoint, code, err_code)
            answer = send(client)
            assert str(answer.status_code) == code, answer.text
            assert answer.json()["err_code"] == int(err_code)
            assert counted(endpoint, code, err_code) == before + 1, (endpoint, code, err_code)
        before = counted("other", "200", "1") + counted("other", "200", "0")
        assert client.get("/healthz").json()["status"] == "ok"
        assert counted("other", "200", "1") + counted("other", "200", "0") == before  # operations are not API answers
