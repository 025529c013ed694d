"""Every refusal as JSON ``{"code", "message"}`` with the HTTP status its code's kind calls for (the same codes and
kinds as gRPC); request validation errors say which field; an unexpected error is logged, never shown, and a
database outage is 503 ``DATABASE_UNAVAILABLE`` with Retry-After, not a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from coordinator.errors import kind_of
from coordinator.state.db import unavailable
from protocol.errors import BarFedError

log = logging.getLogger(__name__)

HTTP_STATUS = {
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "INVALID_ARGUMENT": 400,
}
RETRY_AFTER_S = 5  # a database restart takes seconds
HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 415: "UNSUPPORTED_MEDIA_TYPE"}


class ErrorBody(BaseModel):
    code: str
    message: str


ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "the request was wrong; the message says how",
        401: "no token, or a malformed, unknown, expired or revoked one",
        403: "the token's role may not make this call",
        404: "no such resource",
        409: "the resource is not in a state that allows this",
        422: "the request body or parameters did not validate",
        429: "a limit was reached; retry later",
        503: "the database is unavailable for a moment; retry after Retry-After seconds",
    }.items()
}


def status_of(code: str) -> int:
    return HTTP_STATUS[kind_of(code)]


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


async def _barfed_error(request: Request, exc: BarFedError) -> JSONResponse:
    return error_response(status_of(exc.code), exc.code, exc.message)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()[:10]
    )
    return error_response(422, "BAD_REQUEST", f"the request did not validate ({problems[:1500]}); fix it and retry.")


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else "the request was refused"
    if exc.status_code == 404:
        message = f"there is no route {request.url.path}; /docs lists them."
    response = error_response(exc.status_code, code, message)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # Starlette names only the first route of the path; RFC 9110 §15.5.6 wants them all
        response.headers["allow"] = ", ".join(_methods_of(request))
    return response


def _methods_of(request: Request) -> list[str]:
    """Every method of the path the request matched, as the OpenAPI document lists them: those of every route
    with the path template of the first route that matches (the one Starlette refused the method on)."""
    routes = [route for route in iter_route_contexts(request.app.router.routes) if route.methods]  # included too
    matched = next((r.path_format for r in routes if r.matches(request.scope)[0] is not Match.NONE), None)
    return sorted({method for r in routes if r.path_format == matched for method in r.methods})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if (error := unavailable(exc)) is not None:
        log.warning("%s %s: %s (%s)", request.method, request.url.path, error.code, type(exc).__name__)
        return error_response(status_of(error.code), error.code, error.message)
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return error_response(500, "INTERNAL_ERROR", "the coordinator failed unexpectedly; its log has the details.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(BarFedError, _barfed_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _unexpected)  # answered here, so the server logs no traceback
    app.add_exception_handler(Exception, _unexpected)
