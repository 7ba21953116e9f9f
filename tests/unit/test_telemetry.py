"""Which exporter the standard OTEL_* variables ask for, and the ids that tie a run's spans together."""
from __future__ import annotations

import uuid

import pytest

from engine.telemetry import exporter_from_env, span_id_of, trace_id_of


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
    ({"OTEL_TRACES_EXPORTER": "zipkin,otlp"}, "otlp"),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
])
def test_traces_are_exported_only_when_an_exporter_is_configured(env: dict[str, str], expected: str | None) -> None:
    assert exporter_from_env(env) == expected


def test_a_trace_id_is_the_top_run_id_and_a_run_span_id_is_the_same_in_every_process() -> None:
    run_id = uuid.uuid4()
    assert format(trace_id_of(run_id), "032x") == run_id.hex
    assert span_id_of(run_id) == span_id_of(uuid.UUID(str(run_id))) != span_id_of(uuid.uuid4())
    assert 0 < span_id_of(run_id) < 2**64
