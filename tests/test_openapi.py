"""The OpenAPI description (pieter/api/openapi.json, served at GET /openapi.json): it names exactly the app's
routes, its settings are the ones the server knows, and a property-based fuzz run generated from it (schemathesis:
valid and invalid paths, query strings and bodies) against a real server and a real Redis sees no server error,
and only the statuses, content types, headers and bodies the description documents."""

import json
import re
import time
from collections import Counter
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pieter.models import SETTINGS
from tests.conftest import PieterServer, RedisServer, wait_for_job

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILE = ROOT / "pieter" / "api" / "openapi.json"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
FUZZ_EXAMPLES = 45  # per operation, valid and invalid: about 1,000 requests, well under a minute
FUZZ_SECONDS = 60  # the whole run must stay under this (a guard, not the bound: FUZZ_EXAMPLES is)
STATS: Counter = Counter()
ERRORS = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "404": "NotFound",
    "409": "Conflict",
    "413": "TooLarge",
    "503": "Unavailable",
}  # every error response is {"error": "..."}


def spec() -> dict:
    return json.loads(SPEC_FILE.read_text())


def spec_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec()["paths"].items() for method in item if method in METHODS}


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every route the app serves, read from its router."""
    from sanic import Sanic

    from pieter.app import create_app
    from pieter.config import load

    Sanic.test_mode = True  # more than one app of one name in a process
    app = create_app(load({"PIETER_CONFIG": "/nonexistent", "PIETER_RUNNER": "local",
                           "PIETER_REDIS_URL": "unix:///nonexistent/redis.sock"}))  # fmt: skip
    routes = set()
    for route in app.router.routes:
        path = "/" + re.sub(r"<([A-Za-z_][A-Za-z0-9_]*)(?::[^>]*)?>", r"{\1}", route.path)
        routes.update((method, path) for method in route.methods)
    return routes


def test_spec_paths_and_methods_are_exactly_the_apps_routes():
    served, described = app_routes(), spec_routes()
    assert served - described == set(), "routes the description lacks"
    assert described - served == set(), "described routes the app does not serve"


def test_spec_is_valid_openapi_and_documents_errors():
    schema = schemathesis.openapi.from_path(str(SPEC_FILE))
    schema.validate()  # against the OpenAPI 3.0 meta-schema
    document = spec()
    assert document["openapi"].startswith("3.0.")
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and error["properties"]["error"]["minLength"] == 1
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            codes = set(operation["responses"])
            assert any(code.startswith("2") for code in codes), (method, path)
            assert "503" in codes, f"{method} {path}: every request may meet an unavailable Redis"
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert response == {"$ref": "#/components/responses/" + ERRORS[code]}, (method, path, code)


def test_spec_settings_are_the_servers():
    """The query parameters of PUT /repos/{repo}/{scenario} are exactly the scenario settings in models.py."""
    operation = spec()["paths"]["/repos/{repo}/{scenario}"]["put"]
    assert {p["name"] for p in operation["parameters"]} == set(SETTINGS)


def test_served_spec_is_the_file(api):
    response = api.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == spec()


# The fuzz run: one server and one Redis of its own, with a repo, a scenario and a job to find.
@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    redis_server = RedisServer(directory / "redis")
    redis_server.start()
    server = PieterServer(directory / "server", redis_server.url, PIETER_MAX_SCRIPT_BYTES="65536",
                          PIETER_JOB_TIMEOUT="5", PIETER_MAX_JOBS="2", PIETER_KEEP_JOBS="5")  # fmt: skip
    server.start()
    try:
        with server.client() as client:
            assert client.put("/repos/demo", json={"source": ""}).status_code == 201
            assert client.put("/repos/demo/build.sh", content=b"echo hello\n").status_code == 201
            wait_for_job(client, client.patch("/repos/demo/build.sh").json()["id"])
        yield server
    finally:
        server.stop()  # SIGTERM: the server stops its jobs' process groups
        redis_server.stop()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    schema.config.update(base_url=fuzz_server.url, request_timeout=20)
    schema.config.generation.update(modes=list(schemathesis.GenerationMode), max_examples=FUZZ_EXAMPLES,
                                    deterministic=True, database="none", allow_extra_parameters=False)  # fmt: skip
    schema.config.phases.update(phases=["examples", "fuzzing"])
    STATS["started"] = time.monotonic()
    return schema


fuzzed = schemathesis.pytest.from_fixture("fuzz_schema")


def harmless(case) -> None:
    """Scripts the fuzzer stores start with `exit 0`: the run tests how the API takes arbitrary bytes, not what
    arbitrary bytes do when a job runs them (the bytes after it are stored and returned all the same)."""
    if case.method.upper() == "PUT" and case.path == "/repos/{repo}/{scenario}":
        if isinstance(case.body, bytes):
            case.body = b"exit 0\n" + case.body
        elif isinstance(case.body, str):
            case.body = "exit 0\n" + case.body


@fuzzed.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck), print_blob=True)
def test_fuzz_no_server_errors(case):
    harmless(case)
    response = case.call(timeout=20)
    STATS["requests"] += 1
    STATS[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                             response_headers_conformance, response_schema_conformance, negative_data_rejection])  # fmt: skip
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], response.text


def test_fuzz_run_summary(fuzz_server):
    """Runs after the fuzz run (pytest keeps file order): it was real, bounded, and the server lives on."""
    elapsed = time.monotonic() - STATS["started"]
    print(f"fuzz run: {STATS['requests']} requests in {elapsed:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(STATS.items()) if k.endswith("xx")))  # fmt: skip
    assert STATS["requests"] >= 500, STATS
    assert STATS["5xx"] == 0
    assert elapsed < FUZZ_SECONDS * 2, "the fuzz run took too long: lower FUZZ_EXAMPLES"
    with fuzz_server.client() as client:
        assert client.get("/").json()["redis"] == "ok"
    log = (fuzz_server.directory / "server.log").read_text(errors="replace")
    assert "internal error" not in log, log[-3000:]  # pieter.app logs every 5xx it renders with these words
