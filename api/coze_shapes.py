"""Translations between Relayflow's runs and events and Coze Studio's OpenAPI shapes. No I/O.

Sources: Coze Studio `idl/workflow/workflow.thrift` and `backend/application/workflow/workflow.go`
(see shared/reference/coze-studio.md §1): statuses Running/Success/Fail/Cancel/Interrupted, run
modes 0 sync / 1 stream / 2 async, interrupt types 2 Question / 5 Input, SSE events Message,
Interrupt, Error, Done.
"""
from __future__ import annotations

import json
from typing import Any

from engine.errors import InvalidInputs
from engine.statuses import RunStatus

EXECUTE_STATUS: dict[str, str] = {
    RunStatus.QUEUED: "Running", RunStatus.RUNNING: "Running", RunStatus.SUCCEEDED: "Success",
    RunStatus.FAILED: "Fail", RunStatus.CANCELLED: "Cancel", RunStatus.INTERRUPTED: "Interrupted"}
RUN_MODE = {"sync": 0, "stream": 1, "async": 2}
INTERRUPT_TYPE = {"question": 2, "input": 5}
CANCELLED_CODE = 777777777  # Coze's "cancelled by user"
END_NODE = {"node_id": "900001", "node_title": "End", "node_type": "End"}


def parse_parameters(parameters: dict[str, Any] | str | None) -> dict[str, Any]:
    """Coze's `parameters`: an object, or a JSON string of one (InvalidInputs → code 4000)."""
    if parameters is None or parameters == "":
        return {}
    if isinstance(parameters, dict):
        return parameters
    try:
        parsed = json.loads(parameters)
    except ValueError:
        raise InvalidInputs(errors=[{"field": "parameters", "message": "is not valid JSON"}]) from None
    if not isinstance(parsed, dict):
        raise InvalidInputs(errors=[{"field": "parameters", "message": "must be a JSON object"}])
    return parsed


def split_event_id(event_id: str) -> tuple[str, str]:
    """Coze's `<execute_id>/<event_id>` into its two parts."""
    execute_id, sep, event = event_id.partition("/")
    if not sep or not execute_id or not event:
        raise InvalidInputs(errors=[{"field": "event_id",
                                     "message": "must be '<execute_id>/<event_id>' as the Interrupt event gave it"}])
    return execute_id, event


def resume_answer(kind: str, resume_data: str) -> Any:
    """The answer inside Coze's `resume_data` string: text for a question, a JSON object for a form."""
    if kind != "input":
        return resume_data
    try:
        return json.loads(resume_data)
    except ValueError:
        raise InvalidInputs(errors=[{"field": "resume_data", "message": "must be a JSON object string"}]) from None


def interrupt_data(run_id: str, pending: dict[str, Any]) -> dict[str, Any]:
    """The `interrupt_data` of Coze's Interrupt event for one pending interrupt."""
    asked = pending["data"] or {}
    data: dict[str, Any]
    content: str | None
    if pending["type"] == "question":
        if asked.get("answer_type") == "option":
            content = json.dumps({"question": asked.get("question"),
                                  "options": [{"name": o} for o in asked.get("options") or []]}, ensure_ascii=False)
            content_type = "option"
        else:
            content, content_type = asked.get("question"), "text"
        data = {"messages": [{"type": "question", "content_type": content_type, "content": content,
                              "id": f"{pending['node_id']}_0"}]}
    else:
        data = {"content_type": "form_schema", "content": json.dumps(asked.get("schema") or {}, ensure_ascii=False),
                "prompt": asked.get("prompt")}
    return {"event_id": f"{run_id}/{pending['event_id']}", "type": INTERRUPT_TYPE.get(pending["type"], 0),
            "data": json.dumps(data, ensure_ascii=False)}


def end_message(outputs: dict[str, Any] | None) -> dict[str, Any]:
    """The Message event carrying the run's outputs (Coze's End node in returnVariables mode)."""
    return {"content": json.dumps(outputs or {}, ensure_ascii=False), "content_type": "text",
            "node_seq_id": "0", "node_is_finish": True, **END_NODE}


def node_message(node_id: str, title: str | None, content: Any) -> dict[str, Any]:
    """The Message event of a `message` node (Coze's OutputEmitter, non-streaming: one finished chunk)."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return {"content": text, "content_type": "text", "node_seq_id": "0", "node_is_finish": True,
            "node_id": node_id, "node_title": title or node_id, "node_type": "Message"}


def error_event(run: dict[str, Any], debug_url: str) -> dict[str, Any]:
    """The Error event of a failed or cancelled run."""
    if run["status"] == RunStatus.CANCELLED:
        return {"error_code": CANCELLED_CODE, "error_message": "The run was cancelled.", "debug_url": debug_url}
    error = run.get("error") or {}
    where = f" (node {error['node_id']})" if error.get("node_id") else ""
    return {"error_code": error.get("code") or 7000, "error_message": f"{error.get('message') or 'failed'}{where}",
            "debug_url": debug_url}


def coze_cost(usage: dict[str, Any]) -> str:
    """Coze's `cost`: the run's USD as text with 5 decimals ("0.00012")."""
    return f"{float(usage.get('cost') or 0):.5f}"


def history_record(run: dict[str, Any], debug_url: str) -> dict[str, Any]:
    """One `get_run_history` entry."""
    error = run.get("error") or {}
    usage = run.get("usage") or {}
    return {
        "execute_id": run["run_id"], "execute_status": EXECUTE_STATUS.get(run["status"], run["status"]),
        "input": json.dumps(run.get("inputs") or {}, ensure_ascii=False),
        "output": json.dumps(run["outputs"], ensure_ascii=False) if run.get("outputs") is not None else "",
        "error_code": str(error.get("code") or (CANCELLED_CODE if run["status"] == RunStatus.CANCELLED else "")),
        "error_msg": str(error.get("message") or ""),
        "token": int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0)), "cost": coze_cost(usage),
        "run_mode": RUN_MODE.get(run.get("run_mode") or "async", 2),
        "create_time": _unix(run.get("created_at")), "update_time": _unix(run.get("updated_at") or run.get("created_at")),
        "debug_url": debug_url, "connector_id": "1024", "connector_uid": "", "bot_id": "", "log_id": "",
        # the spellings Coze's SDK (cozepy) reads
        "logid": "", "error_message": str(error.get("message") or ""), "is_output_trimmed": False,
        "usage": {"input_count": int(usage.get("input_tokens", 0)), "output_count": int(usage.get("output_tokens", 0)),
                  "token_count": int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))},
    }


def _unix(iso: str | None) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp()) if iso else 0
