"""The error bodies the API answers, declared once so the OpenAPI document carries them.

Every error travels in FastAPI's ``detail`` envelope, in one of two shapes:
a refusal ``{"detail": {"reason": CODE, "message": TEXT}}`` (provisioning,
node commands, rate limits: a client acts on the code and shows the text)
or, from the older routes, a plain message ``{"detail": TEXT}``. A 422 is
FastAPI's list of validation problems, or one of those two when a route's
own check refuses a well-formed body (an escalation ladder out of order, a
bad feed cursor, a command's arguments). `API_ERROR_RESPONSES` declares all
of them for every route under `/api/v1`, so a generated client can decode
every answer the server gives (tests/integration/test_server_openapi.py).
A route that declares one of these codes itself (to say *when* it answers
it) replaces the whole entry, body included; `declare_error_bodies` puts
the body back into the generated document.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "API_ERROR_RESPONSES",
    "RETRY_AFTER_HEADER",
    "ErrorBody",
    "Refusal",
    "ValidationErrorBody",
    "ValidationProblem",
    "declare_error_bodies",
]


class Refusal(BaseModel):
    """Why the server said no: a stable code to act on and a sentence to show."""

    reason: str = Field(description="a stable code, e.g. `rate_limited`, `node_unknown`")
    message: str = Field(description="what happened and what to do, for a person")


class ErrorBody(BaseModel):
    """Any 4xx/5xx answer: a refusal or, from the older routes, a plain message."""

    detail: Refusal | str


class ValidationProblem(BaseModel):
    """One problem FastAPI found in a request (path, query, header or body)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="where: ['query', 'offset'], ['body', 'levels', 0]")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A 422: FastAPI's list of problems, or a route's own refusal of a well-formed request."""

    detail: list[ValidationProblem] | Refusal | str


RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


API_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the request cannot be carried out as sent"),
    401: _error(
        "not signed in, or the token is malformed, badly signed or expired",
        headers={"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    ),
    403: _error("the user's role may not do this, or the node/token is refused"),
    404: _error("no such resource"),
    409: _error("the resource is not in a state that allows this"),
    422: {
        "model": ValidationErrorBody,
        "description": "the request is malformed (FastAPI's problem list) or refused by a rule",
    },
    429: _error("rate limited; wait as long as Retry-After says", headers=RETRY_AFTER_HEADER),
    503: _error("a part this needs is not running here (MQTT link, issuing CA)"),
}


def _body_ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def declare_error_bodies(document: dict[str, Any], *, prefix: str) -> dict[str, Any]:
    """Give every error answer under `prefix` that names no body the shared one (in place)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (Refusal, ErrorBody, ValidationProblem, ValidationErrorBody):
        schemas.setdefault(
            model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}")
        )
    for path, item in document.get("paths", {}).items():
        if not path.startswith(prefix):
            continue
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for code, answer in operation.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400 and "content" not in answer:
                    answer["content"] = _body_ref(
                        ValidationErrorBody if code == "422" else ErrorBody
                    )
    return document
