"""Schemathesis fuzzes every documented route (but the streaming ones) through the WSGI app:
no input makes the API fail with a 5xx, every client error is `{code, msg}` JSON, and no answer
echoes the caller's bearer token, nor an error echoes a secret sent in the body or headers."""
from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from engine.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "sk-probe-7f3a9c1e5b"  # a marker: it must never come back in an error body
STREAMING = r"(/events$|^/v1/workflow/stream_(run|resume)$)"
DEFINITION = {"inputs": {"ticket": {"type": "string", "required": True}},
              "nodes": [{"id": "clean", "type": "template", "config": {"template": "{{ inputs.ticket | trim }}"}}],
              "outputs": {"text": "{{ clean.text }}"}}


@pytest.fixture(name="settings")
def lenient_settings(settings: Settings) -> Settings:
    """The test settings, with the failed-login limit out of the way: schemathesis sends many bad tokens on purpose."""
    return settings.model_copy(update={"auth_failure_limit": 1_000_000})


@pytest.fixture
def seeded(api: Any) -> dict[str, str]:
    """One workflow, one (queued) run and one prompt, so that path ids and keys can be real."""
    workflow_id = api.create_workflow(DEFINITION, name="fuzz")
    created = api.client.post("/v1/prompts", json={"key": "fuzz", "version": {"text": "Hi {{ name }}"},
                                                    "labels": ["production"]})
    assert created.status_code == 201, created.get_json()
    return {"workflow_id": workflow_id, "run_id": api.submit(workflow_id, {"ticket": "t"}), "key": "fuzz"}


@pytest.fixture
def api_schema(app: Any, token: str, seeded: dict[str, str]) -> Any:
    """The app's own OpenAPI document, a valid token on every case, a fixed seed."""
    config = schemathesis.Config.from_dict({
        "seed": 20240611,
        "headers": {"Authorization": f"Bearer {token}", "X-Api-Key": SECRET},
        "generation": {"mode": "all", "max-examples": 30, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        # A schema-valid definition or run input can still be refused by the engine's own
        # validation (node types, references, the workflow's declared inputs): that is a 422.
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2XX", "401", "403", "404", "409", "422"]}},
    })
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=STREAMING)


def _error_body_is_code_and_msg(ctx: Any, response: Any, case: Any) -> None:
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from None
        assert isinstance(body, dict), body
        assert isinstance(body.get("code"), int) and not isinstance(body["code"], bool) and body["code"] != 0, body
        assert isinstance(body.get("msg"), str) and body["msg"].strip(), body


def _echoes_no_secret(token: str) -> Any:
    def check(ctx: Any, response: Any, case: Any) -> None:
        text = response.content.decode("utf-8", "replace")
        assert token not in text, "the bearer token came back in a response"
        if response.status_code >= 400:
            assert SECRET not in text, f"an error body echoed the secret: {text[:300]}"
    return check


def _with_text(value: Any, text: str, extra_key: bool) -> Any:
    """The body with every string replaced by `text`, maybe plus an unknown key holding it (a
    valid seed definition is kept, so that the other fields reach the database). Identifiers
    (`*_id`) are kept too: a 404 names the id it did not find, which is no secret."""
    if isinstance(value, dict):
        out = {k: v if v is DEFINITION or k.endswith("_id") else _with_text(v, text, extra_key)
               for k, v in value.items()}
        return {**out, "api_key": text} if extra_key else out
    if isinstance(value, list):
        return [_with_text(v, text, extra_key) for v in value]
    return text if isinstance(value, str) else value


_MOSTLY = st.sampled_from([True, True, False])  # Hypothesis starts from the first element


def _bounded_waits(case: Any) -> None:
    """No worker runs here: a sync submit would wait its full `wait_s` for nothing."""
    if isinstance(case.body, dict) and isinstance(case.body.get("wait_s"), (int, float)) and case.body["wait_s"] > 0.2:
        case.body["wait_s"] = 0.2


def _reach_deeper(case: Any, data: Any, seeded: dict[str, str]) -> None:
    """Sometimes swap in a real id, a valid definition or valid run inputs, so that the other
    fuzzed fields get past the engine's own validation and reach the database (positive cases
    only: a negative case must stay schema-violating)."""
    if case.meta is not None and case.meta.generation.mode is not GenerationMode.POSITIVE:
        return
    for name, real in seeded.items():
        if case.path_parameters and name in case.path_parameters and data.draw(_MOSTLY, label=name):
            case.path_parameters[name] = real
    if isinstance(case.body, dict):
        if "workflow_id" in case.body and data.draw(_MOSTLY, label="real workflow_id"):
            case.body["workflow_id"] = seeded["workflow_id"]
        if "definition" in case.body and data.draw(_MOSTLY, label="valid definition"):
            case.body["definition"] = DEFINITION
        if "inputs" in case.body and data.draw(_MOSTLY, label="valid inputs"):
            case.body["inputs"] = {"ticket": data.draw(st.text(max_size=40), label="ticket")}


# One test function walks every operation (30 examples each): past the suite's 120 s per test
# once the prompt library's 14 operations joined, on a shared 2-core machine.
@pytest.mark.timeout(600)
@schema.parametrize()
@schema.given(data=st.data())
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_api_never_fails_and_errors_are_code_and_msg(case: Any, data: Any, token: str,
                                                     seeded: dict[str, str]) -> None:
    _reach_deeper(case, data, seeded)
    _bounded_waits(case)
    checks = [_error_body_is_code_and_msg, _echoes_no_secret(token)]
    case.call_and_validate(additional_checks=checks)
    if isinstance(case.body, dict):
        generated = case.body
        # No longer schemathesis-generated bodies: only the server-error and echo checks apply.
        # The secret as every string and an unknown key, then every string with a NUL
        # character that PostgreSQL cannot store.
        for text, extra_key in ((SECRET, True), (SECRET + "\x00", False)):
            case.body = _with_text(generated, text, extra_key)
            case.call_and_validate(checks=[not_a_server_error, *checks])
