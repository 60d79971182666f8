"""Property-based fuzzing of every HTTP door of a real server (issue 10).

Schemathesis reads the server's own ``/openapi.json`` and sends generated
requests (valid and invalid bodies, parameters and path values) to every
operation, authenticated with the tenant's ``*`` key. A 5xx, a dropped connection
or a response that is not JSON where JSON was promised fails the test. Budget:
a few examples per operation (``FUZZ_EXAMPLES``, default 4), tens of seconds in
all; raise it locally to dig deeper (``FUZZ_EXAMPLES=200``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.integration.live import LiveServer
from tests.sandbox.conftest import sandbox_root

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    s = LiveServer(tmp / "data", env={"MYRIAD_SANDBOX__ROOT": str(sandbox_root(tmp))}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer) -> Any:
    doc = httpx.get(fuzz_server.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=fuzz_server.url, headers={"Authorization": f"Bearer {fuzz_server.key}"})
    if os.environ.get("FUZZ_COVERAGE", "1") == "0":  # the coverage phase (boundary and wrong-typed values) takes ~35 s here
        schema.config.phases.coverage.enabled = False
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_door_answers_5xx_or_drops_the_connection(case: Any) -> None:
    try:
        response = case.call(timeout=30)
    except (ConnectionError, OSError) as e:  # requests' ConnectionError subclasses OSError
        raise AssertionError(f"{case.method} {case.formatted_path}: connection dropped: {e}") from None
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}\n"
        f"reproduce: {case.as_curl_command()}")
    assert "Traceback" not in response.text


def test_openapi_document_covers_the_http_doors(fuzz_server: LiveServer) -> None:
    """Every HTTP route of the app is in the document (or deliberately left out)."""
    from starlette.routing import Route

    from myriad.server.openapi import document

    documented = {(m.upper(), p) for p, ops in document(["counter"])["paths"].items() for m in ops}
    # HTML pages, the document itself, catch-all paths documented by their concrete forms
    # (/agents/{agent}/{name}, /v1/models/{model}), and the MCP SSE stream (GET) and session end (DELETE)
    left_out = {"/dashboard", "/dashboard/static/{name}", "/agents/{path:path}", "/openapi.json",
                "/v1/oauth/authorize", "/v1/models/{model:path}"}
    left_out_ops = {("GET", "/mcp/{agent}/{name}"), ("DELETE", "/mcp/{agent}/{name}"), ("GET", "/mcp/{agent}")}

    from myriad.server import (agents_api, gateway_api, identity_api, mcp_api, oauth_api, openapi, responses_api,
                               sandbox_api, telemetry_api, usage_api)

    routes = [r for m in (agents_api, gateway_api, identity_api, mcp_api, oauth_api, openapi, responses_api,
                          sandbox_api, telemetry_api, usage_api) for r in m.routes()]
    missing = []
    for route in routes:
        if not isinstance(route, Route) or route.path in left_out:
            continue
        for method in route.methods or ():
            if method in ("HEAD", "OPTIONS") or (method, route.path) in left_out_ops:
                continue
            if (method, route.path) not in documented:
                missing.append(f"{method} {route.path}")
    assert not missing, missing
