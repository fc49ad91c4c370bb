"""Property-based requests generated from the served OpenAPI schema (valid and invalid ones): no server
error, and every answer matches the schema it documents."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from flageval.backends.local import LocalBackend, LocalSettings
from flageval.shim.app import create_app
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from shim_process import launch_shim

# The document the server serves, built the same way (the test below checks they are equal).
DOCUMENT = create_app(LocalBackend(LocalSettings(state_dir=Path("/nonexistent")))).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(modes=list(schemathesis.GenerationMode), max_examples=40, deterministic=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    # The allowlist names no generated host: valid POST /evaluation bodies are answered, not run.
    shim = launch_shim(tmp / "state", tmp / "serve.log", "--allow-host", "models.invalid", "--no-access-log")
    yield shim
    metrics = httpx.get(f"{shim.url}/metrics", timeout=10).text
    answered = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("flageval_shim_requests_total{"))
    shim.stop()
    assert answered >= 200  # the generated requests did reach the endpoints
    assert "Traceback" not in shim.log()


def test_served_schema_is_the_generated_one(served):
    assert httpx.get(f"{served.url}/openapi.json", timeout=10).json() == DOCUMENT


@schema.parametrize()
@settings(deadline=None, database=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_server_error(case, served):
    case.call_and_validate(base_url=served.url, checks=[not_a_server_error, response_schema_conformance], timeout=10)
