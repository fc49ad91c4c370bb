"""The runner's report to the operator: one EvaluationTaskResult object per Job, created and then patched
by the runner. Progress is throttled (one patch per interval, the last always sent).

A run whose result cannot be reported has not succeeded as far as anyone can see, so:
- a progress report that fails for a passing reason (the API server unreachable, 5xx, 429) is dropped
  and the next one tries again; the final report is retried with backoff for `patience` seconds;
- a refusal (401, 403: the runner's ServiceAccount lacks the right) or a request the server rejects can
  never succeed — once it has lasted `refusal_grace` seconds: an API server that has just started
  answers 403 until its authorizer's caches are filled and 404 until it serves the custom resources, and
  a run must not be stopped by that. Then the reporter says which right is missing in `failure`, calls
  `on_failure` (the runner stops at once; its finished samples are in the journal) and `finished` raises
  ReportError;
- a final report still not accepted when patience runs out raises ReportError too.
The runner then exits non-zero, so the Job's backoff retries it (resuming from the journal) and its
dataset ends OOR, never S without an accuracy."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
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

REQUEST_TIMEOUT = 15.0  # seconds per API call: a server that stopped answering is a passing failure, not a hang
PATIENCE = 600.0  # seconds the final report is retried (FLAGEVAL_REPORT_PATIENCE)
REFUSAL_GRACE = 20.0  # seconds a refusal must last to be final (FLAGEVAL_REPORT_REFUSAL_GRACE)


class ReportError(RuntimeError):
    """The run's result could not be reported to the operator."""


def _transient(exc: Exception) -> bool:
    """A failure that may pass: the API server unreachable or overloaded. Anything the server refused on
    purpose (401, 403, 400, 422…) or a broken configuration is not."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        return exc.status in (0, 408, 429) or exc.status >= 500
    return isinstance(exc, (HTTPError, OSError))


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
        self.patience = float(os.environ.get("FLAGEVAL_REPORT_PATIENCE") or PATIENCE)
        self.refusal_grace = float(os.environ.get("FLAGEVAL_REPORT_REFUSAL_GRACE") or REFUSAL_GRACE)
        self.failure: str | None = None  # why reporting can never succeed, once known
        self.on_failure: Callable[[], None] | None = None
        self._unreachable_since: float | None = None  # a passing failure is logged once, not at every report
        self._refused_since: float | None = None  # first refusal of a series not yet confirmed
        self._created = False
        self._last_error = ""
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
        """Send the result; raises ReportError when it was not accepted (see the module's docstring)."""
        with self._wake:
            last, self._pending, self._closed = self._pending, None, True
            self._wake.notify()
        self._thread.join(timeout=self.interval + 2 * REQUEST_TIMEOUT)
        body: dict[str, Any] = {"result": TaskOutcome.of(result, records).model_dump(mode="json", by_alias=True)}
        if last is not None:
            body["progress"] = TaskProgress.of(last).model_dump(mode="json", by_alias=True)
        deadline, delay = time.monotonic() + self.patience, 1.0
        while self.failure is None and not self._send(body):
            if time.monotonic() >= deadline:
                raise ReportError(f"the result of {self.namespace}/{self.name} was not accepted within {self.patience:.0f} s: "
                                  f"{self._last_error}")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 15.0)
        if self.failure is not None:
            raise ReportError(self.failure)

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

    def _send(self, fields: dict[str, Any]) -> bool:
        """One report; True when the server accepted it. A refusal sets `failure`."""
        with self._lock:
            if self.failure is not None:
                return False
            try:
                if self._api is None:
                    self._api = _api()
                body = {**fields, "attempt": self.attempt}
                if not self._created:
                    self._create_or_patch(body)
                else:
                    self._patch(body)
            except Exception as exc:  # noqa: BLE001 — whatever it is, it is either passing or fatal
                self._last_error = _short(exc)
                if _transient(exc):
                    if self._unreachable_since is None:
                        self._unreachable_since = time.monotonic()
                        log.warning("cannot report to %s/%s for now, retrying: %s", self.namespace, self.name, self._last_error)
                    return False
                now = time.monotonic()
                if self._refused_since is None:
                    self._refused_since = now
                if now - self._refused_since < self.refusal_grace:
                    if self._unreachable_since is None:
                        self._unreachable_since = now
                        log.warning("report to %s/%s refused, trying again for %.0f s before giving up: %s",
                                    self.namespace, self.name, self.refusal_grace, self._last_error)
                    return False
                self.failure = self._refusal(exc)
                log.error("%s", self.failure)
                if self.on_failure is not None:
                    self.on_failure()
                return False
            if self._unreachable_since is not None:
                log.info("reporting to %s/%s again after %.1f s", self.namespace, self.name, time.monotonic() - self._unreachable_since)
                self._unreachable_since = None
            self._refused_since = None
            return True

    def _refusal(self, exc: Exception) -> str:
        status = getattr(exc, "status", None)
        verb = "patch" if self._created else "create"
        if status in (401, 403):
            return (f"the runner may not {verb} evaluationtaskresults.flageval.io {self.name} in namespace {self.namespace} "
                    f"({self._last_error}): its ServiceAccount needs the runner Role (get, create, patch on "
                    f"evaluationtaskresults), which the operator creates unless FLAGEVAL_MANAGE_RUNNER_RBAC=false")
        return f"cannot report to {self.namespace}/{self.name}: {self._last_error}"

    def _patch(self, body: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self._api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, TASK_RESULT_PLURAL, self.name, body,
                                                     _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404 or not self._created:
                raise
            self._created = False  # removed meanwhile: made again
            self._create_or_patch(body)

    def _create_or_patch(self, body: dict[str, Any]) -> None:
        from kubernetes.client.rest import ApiException

        obj = {"apiVersion": API_VERSION, "kind": TASK_RESULT_KIND,
               "metadata": {"name": self.name, "namespace": self.namespace, **self.meta}, **body}
        try:
            self._api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, TASK_RESULT_PLURAL, obj,
                                                      _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self._patch(body)
        self._created = True


def _short(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason}" if status else f"{type(exc).__name__}: {exc}"
