"""Request and response models of the Coze Studio compatible routes (`/v1/workflow/*`).

Field names and types are Coze Studio's OpenAPI (`OpenAPIRunFlowRequest` and friends); fields
Coze declares but ignores (`execute_mode`, `version`, `connector_id`) are accepted and ignored
too, so a Coze client works unchanged.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CozeModel(BaseModel):
    # Coze clients send fields we do not use (bot_id, connector_id, ...): accept them quietly.
    model_config = ConfigDict(extra="ignore")


class CozeRunRequest(CozeModel):
    workflow_id: str = Field(min_length=1, max_length=64)
    parameters: dict[str, Any] | str | None = Field(
        default=None, description="The workflow inputs, as an object or as a JSON string of one.")
    is_async: bool = False
    ext: dict[str, str] | None = None
    bot_id: str | None = None
    app_id: str | None = None
    project_id: str | None = None
    execute_mode: str | None = None
    version: str | None = None
    connector_id: str | None = None


class CozeResumeRequest(CozeModel):
    workflow_id: str = Field(min_length=1, max_length=64)
    event_id: str = Field(min_length=1, max_length=200, description="`<execute_id>/<event_id>` from the Interrupt.")
    resume_data: str = Field(max_length=1_000_000, description="The answer: text for a question, a JSON object "
                                                               "string for an input form.")
    interrupt_type: int | None = None
    ext: dict[str, str] | None = None
    connector_id: str | None = None


class CozeHistoryQuery(BaseModel):
    workflow_id: str = Field(min_length=1, max_length=64)
    execute_id: str = Field(min_length=1, max_length=64)


class CozeRunResponse(BaseModel):
    code: int
    msg: str
    execute_id: str | None = None
    data: str | None = Field(default=None, description="JSON string of the outputs (sync runs).")
    token: int | None = None
    cost: str | None = None
    debug_url: str | None = None


class CozeHistoryRecord(BaseModel):
    execute_id: str
    execute_status: str
    input: str
    output: str
    error_code: str
    error_msg: str
    token: int
    cost: str
    run_mode: int
    create_time: int
    update_time: int
    debug_url: str
    connector_id: str
    connector_uid: str
    bot_id: str
    log_id: str
    logid: str
    error_message: str
    is_output_trimmed: bool
    usage: dict[str, int]


class CozeHistoryResponse(BaseModel):
    code: int
    msg: str
    data: list[CozeHistoryRecord]
