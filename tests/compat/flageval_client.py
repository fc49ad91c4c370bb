"""A FlagEval Auto-Evaluation client written from the documented API only: plain HTTP, the documented
field names, `raise_for_status()` and then `err_code`, as FlagEval's own clients do."""

from __future__ import annotations

import time
from typing import Any

import httpx


class FlagEvalError(Exception):
    def __init__(self, endpoint: str, answer: dict[str, Any]):
        super().__init__(f"{endpoint}: err_code {answer.get('err_code')}: {answer.get('err_msg') or answer.get('err_message')}")
        self.answer = answer


class FlagEvalClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.transcript: list[str] = []  # every answer's text, to check what never appears in one

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, check: bool = True, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, json=body, **kwargs)
        self.transcript.append(response.text)
        response.raise_for_status()
        answer = response.json()
        assert answer["err_msg"] == answer["err_message"], answer
        if check and answer["err_code"] != 0:
            raise FlagEvalError(path, answer)
        return answer

    # -- the six documented endpoints ------------------------------------------------------------

    def evaluation(self, eval_infos: list[dict[str, Any]], domain: str = "NLP", *, mode: str | None = None, region: str = "bj",
                   special_event: str = "", user_id: str = "", check: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"eval_infos": eval_infos, "domain": domain, "region": region, "special_event": special_event, "user_id": user_id}
        if mode is not None:
            body["mode"] = mode
        return self.call("POST", "/evaluation", body, check=check)

    def evaldiffs(self, request_id: str, *, check: bool = True) -> dict[str, Any]:
        return self.call("GET", "/evaldiffs", {"request_id": request_id}, check=check)

    def stop_evaluation(self, request_id: str, *, check: bool = True) -> dict[str, Any]:
        return self.call("POST", "/stop_evaluation", {"request_id": request_id}, check=check)

    def resume_evaluation(self, request_id: str, *, check: bool = True) -> dict[str, Any]:
        return self.call("POST", "/resume_evaluation", {"request_id": request_id}, check=check)

    def evaluation_progress(self, request_id: str, domain: str = "NLP", *, check: bool = True) -> dict[str, Any]:
        return self.call("POST", "/evaluation_progress", {"request_id": request_id, "domain": domain}, check=check)

    def evaluation_diffs(self, request_ids: list[str], *, check: bool = True) -> dict[str, Any]:
        return self.call("POST", "/evaluation_diffs", {"request_ids": request_ids}, check=check)

    # -- helpers ---------------------------------------------------------------------------------

    def wait(self, request_id: str, until, timeout: float = 120, interval: float = 0.2, domain: str = "NLP") -> dict[str, Any]:
        """Poll /evaluation_progress until `until(answer)` holds."""
        deadline = time.monotonic() + timeout
        answer: dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = self.evaluation_progress(request_id, domain)
            if until(answer):
                return answer
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s; last progress: {answer}")

    def wait_finished(self, request_id: str, timeout: float = 180) -> dict[str, Any]:
        return self.wait(request_id, lambda a: a["finished"], timeout)


def eval_info(eval_model: str, model: str, eval_url: str, **fields: Any) -> dict[str, Any]:
    """An eval_info with FlagEval's documented defaults spelled out."""
    info = {
        "eval_model": eval_model, "model": model, "eval_url": eval_url, "tokenizer": "Qwen/Qwen3-8B", "api_key": "EMPTY",
        "batch_size": 1, "num_concurrent": 1, "num_retry": 10, "gen_kwargs": "temperature=0.6,top_k=20,top_p=0.95,min_p=0,max_gen_toks=16000",
        "thinking": False, "retry_time": 3600, "chip": "Nvidia-H100", "base_model_name": model,
    }
    info.update(fields)
    return info


def ratio(text: str) -> tuple[int, int]:
    """'812/1319' → (812, 1319)."""
    done, total = text.split("/")
    return int(done), int(total)
