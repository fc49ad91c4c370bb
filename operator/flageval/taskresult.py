"""The runner's report to the operator: one EvaluationTaskResult object per Job, created and then patched
by the runner. Progress is throttled (one patch per interval, the last always sent); API errors are
logged and never stop the run — the results on the volume are the record."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from flageval.api import DatasetResult, Progress, SampleRecord
from flageval.api.evaluation import (
    API_VERSION,
    GROUP,
    TASK_RESULT_KIND,
    TASK_RESULT_PLURAL,
    VERSION,
    TaskOutcome,
    TaskProgress,
)

log = logging.getLogger("flageval.taskresult")


def _api():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


class TaskResultReporter:
    """Runner → operator channel. `progress()` is called from the event loop and never blocks on the API."""

    def __init__(self, namespace: str, name: str, *, interval: float = 2.0, api: Any = None, meta: dict | None = None):
        self.namespace, self.name, self.interval = namespace, name, interval
        if meta is None:
            meta = json.loads(os.environ.get("FLAGEVAL_TASK_RESULT_META") or "{}")
        self.meta = meta
        self.attempt = os.environ.get("FLAGEVAL_POD_NAME", "")
        self._api = api
        self._created = False
        self._lock = threading.Lock()  # one request at a time
        self._pending: Progress | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="task-result", daemon=True)
        self._thread.start()

    # -- called by the runner ---------------------------------------------------------------------

    def progress(self, progress: Progress) -> None:
        with self._wake:
            self._pending = progress
            self._wake.notify()

    def finished(self, result: DatasetResult, records: Sequence[SampleRecord] = ()) -> None:
        with self._wake:
            last, self._pending, self._closed = self._pending, None, True
            self._wake.notify()
        self._thread.join(timeout=self.interval + 30)
        body: dict[str, Any] = {"result": TaskOutcome.of(result, records).model_dump(mode="json", by_alias=True)}
        if last is not None:
            body["progress"] = TaskProgress.of(last).model_dump(mode="json", by_alias=True)
        self._send(body)

    # -- sending ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        sent_at = 0.0
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                deadline = sent_at + self.interval
                while not self._closed and (remaining := deadline - time.monotonic()) > 0:
                    self._wake.wait(remaining)  # later events replace this one meanwhile
                if self._closed:
                    return
                progress, self._pending = self._pending, None
            if progress is None:
                continue
            sent_at = time.monotonic()
            # A new attempt's first report clears the previous attempt's outcome.
            self._send({"progress": TaskProgress.of(progress).model_dump(mode="json", by_alias=True), "result": None})

    def _send(self, fields: dict[str, Any]) -> None:
        with self._lock:
            try:
                if self._api is None:
                    self._api = _api()
                body = {**fields, "attempt": self.attempt}
                if not self._created:
                    self._create_or_patch(body)
                else:
                    self._patch(body)
            except Exception as exc:  # noqa: BLE001 — the run goes on; its results are on the volume
                log.warning("could not report to %s/%s: %s", self.namespace, self.name, _short(exc))

    def _patch(self, body: dict[str, Any]) -> None:
        self._api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, TASK_RESULT_PLURAL, self.name, body)

    def _create_or_patch(self, body: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        obj = {"apiVersion": API_VERSION, "kind": TASK_RESULT_KIND,
               "metadata": {"name": self.name, "namespace": self.namespace, **self.meta}, **body}
        try:
            self._api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, TASK_RESULT_PLURAL, obj)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self._patch(body)
        self._created = True


def _short(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason}" if status else f"{type(exc).__name__}: {exc}"
