"""Coze Studio compatible routes: `/v1/workflow/run`, `stream_run`, `stream_resume`, `get_run_history`.

Same request and response fields as Coze Studio's workflow OpenAPI, so its clients work
unchanged; runs use the workflow's published version. Request errors carry real HTTP
statuses with Coze's codes in the body (4000 bad parameters, 6031 not published, 6039 a sync
run reached a question or input node); a run that fails is not a request error: the answer is
200 with the run's error code, as Coze sends it.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import request
from flask_openapi3 import APIBlueprint, Tag

from api import coze_shapes as shapes
from api.coze_models import CozeHistoryQuery, CozeHistoryResponse, CozeResumeRequest, CozeRunRequest, CozeRunResponse
from api.models import ErrorBody
from api.runtime import principal, runtime
from api.sse import STREAM_RESPONSE, frame, stream
from engine.errors import InterruptInSyncRun, RunNotFound, StillRunning, Unauthorized
from engine.statuses import FINAL_STATUSES, SETTLED_STATUSES, RunStatus
from engine.streams import StreamLease

tag = Tag(name="coze", description="Coze Studio compatible workflow OpenAPI")
bp = APIBlueprint("coze", __name__, url_prefix="/v1/workflow", abp_tags=[tag], abp_security=[{"bearer": []}])
_ERRORS: dict[str | int, Any] = {401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody}
def _debug_url(run_id: str) -> str:
    return f"{request.host_url.rstrip('/')}/v1/runs/{run_id}"


@bp.post("/run", responses={200: CozeRunResponse, 504: ErrorBody, **_ERRORS})
def run(body: CozeRunRequest) -> Any:
    """Run the workflow's published version: sync (waits for the outputs) or `is_async` (answers with execute_id)."""
    who = principal("run")
    rt = runtime()
    inputs = shapes.parse_parameters(body.parameters)
    started = rt.service.submit_run(who.space_id, body.workflow_id, inputs, published=True,
                                    run_mode="async" if body.is_async else "sync")
    run_id = started["run_id"]
    if body.is_async:
        return {"code": 0, "msg": "Success", "execute_id": run_id, "debug_url": _debug_url(run_id)}
    status = rt.follower.wait_settled(who.space_id, run_id, rt.settings.sync_wait_max_s)
    if status == RunStatus.INTERRUPTED:
        raise InterruptInSyncRun(execute_id=run_id, debug_url=_debug_url(run_id))
    if status not in SETTLED_STATUSES:
        raise StillRunning(execute_id=run_id, debug_url=_debug_url(run_id))
    found = rt.service.get_run(who.space_id, run_id)
    usage = found["usage"]
    answer: dict[str, Any] = {"code": 0, "msg": "Success", "execute_id": run_id,
                              "token": usage["input_tokens"] + usage["output_tokens"], "cost": shapes.coze_cost(usage),
                              "debug_url": _debug_url(run_id)}
    if found["status"] == RunStatus.SUCCEEDED:
        answer["data"] = json.dumps(found["outputs"] or {}, ensure_ascii=False)
    else:
        failure = shapes.error_event(found, answer["debug_url"])
        answer.update(code=failure["error_code"], msg=failure["error_message"])
    return answer


@bp.post("/stream_run", responses={200: STREAM_RESPONSE, **_ERRORS})
def stream_run(body: CozeRunRequest) -> Any:
    """Run the published version and stream it: Message (the outputs), Interrupt, Error, Done."""
    who = principal("run")
    rt = runtime()
    inputs = shapes.parse_parameters(body.parameters)
    lease = rt.streams.open(who.token_id)  # before submitting: a 429 starts no run
    with _released_on_error(lease):
        started = rt.service.submit_run(who.space_id, body.workflow_id, inputs, published=True, run_mode="stream")
        frames = _coze_frames(who.space_id, started["run_id"], 0, _debug_url(started["run_id"]), lease)
    return stream(frames, retry_ms=None, on_close=lease.release)


@bp.post("/stream_resume", responses={200: STREAM_RESPONSE, **_ERRORS})
def stream_resume(body: CozeResumeRequest) -> Any:
    """Answer an Interrupt (`event_id` as it gave it, `resume_data`) and stream the rest of the run."""
    who = principal("run")
    rt = runtime()
    run_id, event_id = shapes.split_event_id(body.event_id)
    found = rt.service.get_run(who.space_id, run_id)
    if found["workflow_id"] != body.workflow_id:
        raise RunNotFound(f"Run {run_id} is not a run of workflow {body.workflow_id}.")
    pending = found["interrupt"]
    kind = pending["type"] if pending and pending["event_id"] == event_id else "question"
    answer = shapes.resume_answer(kind, body.resume_data)
    lease = rt.streams.open(who.token_id)  # before answering: a 429 leaves the interrupt pending
    with _released_on_error(lease):
        after = rt.service.event_cursor(run_id)
        rt.service.resume_run(who.space_id, run_id, event_id, answer)
        frames = _coze_frames(who.space_id, run_id, after, _debug_url(run_id), lease)
    return stream(frames, retry_ms=None, on_close=lease.release)


@contextmanager
def _released_on_error(lease: StreamLease) -> Iterator[None]:
    try:
        yield
    except BaseException:
        lease.release()
        raise


@bp.get("/get_run_history", responses={200: CozeHistoryResponse, **_ERRORS})
def get_run_history(query: CozeHistoryQuery) -> Any:
    """One run's record by execute_id: status, output, error, token, run mode, times."""
    return _history(query)


history_bp = APIBlueprint("coze_history", __name__, url_prefix="/v1", abp_tags=[tag], abp_security=[{"bearer": []}])


@history_bp.get("/workflows/<workflow_id>/run_histories/<execute_id>",
                responses={200: CozeHistoryResponse, **_ERRORS})
def run_history_by_path(path: CozeHistoryQuery) -> Any:
    """The same record as get_run_history, at the path Coze's SDKs (cozepy) call."""
    return _history(path)


def _history(query: CozeHistoryQuery) -> Any:
    who = principal()
    found = runtime().service.get_run(who.space_id, query.execute_id)
    if found["workflow_id"] != query.workflow_id:
        raise RunNotFound(f"Run {query.execute_id} is not a run of workflow {query.workflow_id}.")
    return {"code": 0, "msg": "Success", "data": [shapes.history_record(found, _debug_url(query.execute_id))]}


def _coze_frames(space_id: str, run_id: str, after: int, debug_url: str, lease: StreamLease) -> Iterator[str]:
    """Our run events as Coze's stream: it ends after Done, Error or the first Interrupt, or with an
    Error naming why when its token is revoked or expires (Coze streams are not reconnected)."""
    rt = runtime()
    service, settings = rt.service, rt.settings
    feed = rt.follower.events(space_id, run_id, after, keepalive_s=settings.sse_keepalive_s,
                              max_s=settings.sse_max_s, until=frozenset(), check=lease.check,
                              check_every_s=settings.stream_recheck_s)
    seq = iter(range(1 << 62))

    def settled(current: dict[str, Any]) -> list[str] | None:
        if current["status"] == RunStatus.INTERRUPTED and current["interrupt"]:
            node_id = current["interrupt"]["node_id"]
            title = next((n.get("title") for n in current["nodes"] if n["node_id"] == node_id), None) or node_id
            return [frame("Interrupt", {"interrupt_data": shapes.interrupt_data(run_id, current["interrupt"]),
                                        "node_id": node_id, "node_title": title, "debug_url": debug_url},
                          next(seq))]
        if current["status"] == RunStatus.SUCCEEDED:
            return [frame("Message", shapes.end_message(current["outputs"]), next(seq)),
                    frame("Done", {"debug_url": debug_url}, next(seq))]
        if current["status"] in FINAL_STATUSES:
            return [frame("Error", shapes.error_event(current, debug_url), next(seq))]
        return None

    titles: dict[str, str | None] = {}

    def message(event: dict[str, Any]) -> str:
        if event["node_id"] not in titles:  # read when a node's message first shows
            titles.update((n["node_id"], n.get("title")) for n in service.get_run(space_id, run_id)["nodes"])
        return frame("Message", shapes.node_message(event["node_id"], titles.get(event["node_id"]),
                                                    event["data"]["message"].get("content")), next(seq))

    def frames() -> Iterator[str]:
        # A run may have ended already (its messages first), or a resume may have left another interrupt pending.
        current = service.get_run(space_id, run_id)
        if current["status"] in FINAL_STATUSES or (current["status"] == RunStatus.INTERRUPTED and current["interrupt"]):
            yield from [message(event) for event in service.node_messages(run_id, after)]
            yield from settled(current) or []
            return
        for event in feed:
            if event is not None and event["type"] == "node.succeeded" and "message" in (event.get("data") or {}):
                yield message(event)
                continue
            # Coze clients (cozepy) reject any line but id/event/data: no keep-alive comments here
            if event is not None and event["type"] in _SETTLING_EVENTS and (done := settled(service.get_run(space_id, run_id))):
                yield from done
                return
        if lease.reason is not None:
            yield frame("Error", {"error_code": Unauthorized.code, "error_message": f"Stream closed: {lease.reason}",
                                  "debug_url": debug_url}, next(seq))

    return frames()


_SETTLING_EVENTS = frozenset({"run.succeeded", "run.failed", "run.cancelled", "run.interrupted", "node.interrupted"})
