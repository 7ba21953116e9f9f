"""Request and response models of the prompt library's routes (native and Coze Studio's)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.models import PgInt, Strict
from engine.prompt_docs import TEXT_MAX_CHARS, VersionDoc

_KEY = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LABEL = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PromptCreate(Strict):
    key: str = _KEY
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str = Field(default="", max_length=10_000)
    tags: list[str] = Field(default_factory=list, max_length=50)
    version: VersionDoc = Field(description="version 1: `text` or `messages` (role + text), variables, model, message")
    labels: list[str] = Field(default_factory=list, max_length=20, description="labels to put on version 1")


class PromptVersionCreate(VersionDoc):
    """A new version; `base_version` is the version it was edited from (optimistic locking)."""

    base_version: PgInt = Field(ge=1, description="the version this edit started from; 409 if another was saved since")
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)

    def doc(self) -> VersionDoc:
        """The version's content."""
        return VersionDoc.model_validate(self.model_dump(exclude={"base_version", "name", "description"}))


class PromptPath(BaseModel):
    key: str = _KEY


class PromptLabelPath(BaseModel):
    key: str = _KEY
    label: str = _LABEL


class PromptLabelMove(Strict):
    version: PgInt = Field(ge=1)


class PromptGetQuery(BaseModel):
    version: PgInt | None = Field(default=None, ge=1)
    label: str | None = Field(default=None, min_length=1, max_length=64)


class PromptListQuery(BaseModel):
    cursor: str | None = Field(default=None, max_length=32)
    limit: int = Field(default=20, ge=1, le=100)
    q: str | None = Field(default=None, max_length=200, description="substring of key, name, description or text")
    tag: str | None = Field(default=None, max_length=200)
    creator: str | None = Field(default=None, max_length=200)
    label: str | None = Field(default=None, max_length=64)


class PromptDiffQuery(BaseModel):
    from_: PgInt = Field(alias="from", ge=1)
    to: PgInt = Field(ge=1)


class PromptHistoryQuery(BaseModel):
    cursor: str | None = Field(default=None, max_length=32)
    limit: int = Field(default=50, ge=1, le=500)


class PromptVariableOut(BaseModel):
    name: str
    type: str
    required: bool
    default: Any = None
    description: str = ""


class PromptVersionOut(BaseModel):
    number: int
    text: str | None
    messages: list[dict[str, Any]] | None
    variables: list[PromptVariableOut]
    model: dict[str, Any] | None
    message: str
    author: str
    created_at: str


class PromptSummary(BaseModel):
    id: str
    key: str
    name: str
    description: str
    tags: list[str]
    creator: str
    latest_version: int
    labels: dict[str, int] = Field(description="label -> version; `latest` always included")
    created_at: str
    updated_at: str
    deleted_at: str | None


class PromptOut(PromptSummary):
    version: PromptVersionOut


class PromptList(BaseModel):
    prompts: list[PromptSummary]
    next_cursor: str | None


class PromptLabelMoved(BaseModel):
    key: str
    label: str
    version: int
    previous_version: int | None


class PromptDiff(BaseModel):
    key: str
    from_: int = Field(alias="from")
    to: int
    diff: str = Field(description="unified diff of the text (or the messages, each under its role)")
    changed: list[str] = Field(description="which of variables and model changed as well")


class PromptEventOut(BaseModel):
    id: int
    action: str = Field(description="create | version | label | update | delete | restore")
    actor: str
    token_id: int | None
    version: int | None
    detail: dict[str, Any]
    at: str


class PromptHistory(BaseModel):
    key: str
    events: list[PromptEventOut]
    next_cursor: str | None


class PromptDeleted(BaseModel):
    key: str
    deleted_at: str
    restorable_until: str = Field(description="an admin may restore it until then (POST …/restore)")


# -- Coze Studio's shapes (idl/playground/prompt_resource.thrift): ids as strings --------------------
class CozePromptIn(BaseModel):
    id: str | int | None = Field(default=None, description="absent or 0: create; else the prompt to update")
    space_id: str | int | None = None
    name: str = Field(min_length=1, max_length=255)
    description: str = Field(default="", max_length=255)
    prompt_text: str = Field(min_length=1, max_length=TEXT_MAX_CHARS)


class CozeUpsertRequest(BaseModel):
    prompt: CozePromptIn


class CozePromptIdQuery(BaseModel):
    prompt_resource_id: str = Field(max_length=20, pattern=r"^[0-9]+$")


class CozeDeleteRequest(BaseModel):
    prompt_resource_id: str | int


class CozeOfficialRequest(BaseModel):
    keyword: str | None = Field(default=None, max_length=200)


class CozePromptResource(BaseModel):
    id: str
    space_id: str
    name: str
    description: str
    prompt_text: str


class CozeUpsertData(BaseModel):
    id: str


class CozeUpsertResponse(BaseModel):
    code: int
    msg: str
    data: CozeUpsertData


class CozePromptInfoResponse(BaseModel):
    code: int
    msg: str
    data: CozePromptResource


class CozeOfficialResponse(BaseModel):
    code: int
    msg: str
    data: list[CozePromptResource]


class CozeCodeResponse(BaseModel):
    code: int
    msg: str


class CozeLibraryRequest(BaseModel):
    # strict: a boolean where the schema says integer (`user_filter: false`) is refused, not coerced
    model_config = ConfigDict(strict=True)

    space_id: str | int | None = None
    res_type_filter: list[int] | None = None
    name: str | None = Field(default=None, max_length=200)
    user_filter: int | None = Field(default=None, description="1: only mine")
    publish_status_filter: int | None = None
    size: int = Field(default=10, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=32)
    search_keys: list[str] | None = None


class CozeResourceAction(BaseModel):
    key: int
    enable: bool


class CozeResourceInfo(BaseModel):
    res_id: str
    res_type: int
    res_sub_type: int
    name: str
    desc: str
    icon: str
    creator_id: str
    creator_name: str
    publish_status: int
    biz_res_status: int
    edit_time: str
    space_id: str
    actions: list[CozeResourceAction]
    detail_disable: bool
    del_flag: bool


class CozeLibraryResponse(BaseModel):
    code: int
    msg: str
    resource_list: list[CozeResourceInfo]
    cursor: str
    has_more: bool
