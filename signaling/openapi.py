"""The OpenAPI 3.1 document, built from the route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import __version__
from .api import ROUTES
from .models import ErrorResponse

_ERRORS = {
    "400": "Malformed request (code: bad_json, invalid_body, invalid_case_id, ...)",
    "401": "Missing, forged or expired token (code: missing_token, invalid_token, token_expired)",
    "403": "Valid token without the right (code: forbidden)",
    "404": "Unknown case, session or invitation",
    "409": "Conflicting state (code: session_ended, invitation_closed)",
    "413": "Body larger than the limit (code: payload_too_large)",
    "415": "Body of a type the route does not take: JSON routes need application/json"
    " (code: unsupported_media_type)",
    "422": "Well-formed but refers to what does not exist (unknown_department, not_a_reviewer)",
    "429": "Too many attempts or messages (code: rate_limited; retry_after_ms, Retry-After)",
    "503": "Not available now (code: store_unavailable: the state store is down or its disk "
    "cannot be written, retry later; signing_unavailable; storage_unavailable)",
    "507": "The case file's disk is full (code: insufficient_storage)",
}


def build_openapi() -> dict[str, Any]:
    wanted: set[tuple[type[BaseModel], Any]] = {(ErrorResponse, "serialization")}
    for r in ROUTES:
        if r.body is not None:
            wanted.add((r.body, "validation"))
        if r.response is not None:
            wanted.add((r.response, "serialization"))
    refs, schema = models_json_schema(
        sorted(wanted, key=lambda x: (x[0].__name__, x[1])),
        ref_template="#/components/schemas/{model}",
    )
    error = {"content": {"application/json": {"schema": refs[(ErrorResponse, "serialization")]}}}
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.handler.__name__,
            "tags": [r.tag],
            "responses": {},
        }
        if r.roles is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = "Roles: " + ", ".join(sorted(r.roles))
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", r.path)
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": desc,
                "schema": {"type": "string"},
            }
            for name, desc in r.query.items()
        ]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(r.body, "validation")]}},
            }
        if r.upload:
            op["requestBody"] = {
                "required": True,
                "content": {
                    t: {"schema": {"type": "string", "format": "binary"}} for t in r.upload
                },
            }
        ok: dict[str, Any] = {"description": "OK" if r.status == 200 else "Created"}
        if r.produces:
            ok["content"] = {
                t: {"schema": {"type": "string", "format": "binary"}} for t in r.produces
            }
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": refs[(r.response, "serialization")]}}
        op["responses"][str(r.status)] = ok
        if r.no_content:
            op["responses"]["204"] = {"description": r.no_content}
        codes = ["400"] if r.body is not None or r.upload or params else []
        if r.roles is not None:
            codes += ["401", "403"]
        if any("id}" in p["name"] + "}" for p in params if p["in"] == "path"):
            codes += ["404", "409"]
        if r.body is not None:
            codes += ["413", "415"]
        # Every route may meet a store outage; some routes have statuses of their own.
        codes += [c for c in (*r.errors, "503") if c in _ERRORS and c not in codes]
        for code in codes:
            op["responses"][code] = {"description": _ERRORS[code], **error}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    paths["/ws"] = {
        "get": {
            "summary": "WebSocket signaling (see docs/protocol.md)",
            "operationId": "signaling",
            "tags": ["signaling"],
            "parameters": [
                {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "101": {"description": "Switching protocols"},
                "401": {"description": _ERRORS["401"], **error},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jointreview API",
            "version": __version__,
            "description": "Remote video joint review: cases, sessions, invitations.",
        },
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
