"""What routes are given: the coordinator's runtime, who is calling (a bearer token's principal), the dependency
that lets only some roles through a route, and dispatching a job the route just queued."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coordinator.runtime import Runtime
from coordinator.state import tokens
from protocol.errors import BarFedError

ROLES = tokens.ROLES
READ_ALL = ("admin", "operator", "auditor")  # who may read every resource

bearer = HTTPBearer(auto_error=False, description="an API token from `barfed coordinator tokens create`")


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: str
    org_id: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"api:{self.role}:{self.org_id}:{self.token_id}" if self.org_id else f"api:{self.role}:{self.token_id}"

    def may_see_org(self, org_id: str) -> bool:
        return self.role != "org" or self.org_id == org_id


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def dispatch(request: Request, job_id: int) -> None:
    """Send a job a route just queued to the workers now; the sweeper covers a failure."""
    runtime(request).dispatch(job_id)


def optional_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal | None:
    """The caller's principal, or None without an Authorization header; a bad token is refused either way."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise BarFedError("BAD_TOKEN", "the Authorization header must be `Bearer <token>`.")
        return None
    row = tokens.authenticate(runtime(request).registry, credentials.credentials)
    return Principal(row.id, row.role, row.org_id)


def current_principal(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise BarFedError("NO_TOKEN", "this call needs an API token: send `Authorization: Bearer <token>`.")
    return principal


def allow(*roles: str) -> dict:
    """Route keyword arguments: a dependency that refuses every other role, and the roles in the OpenAPI document."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> None:
        if principal.role not in roles:
            raise BarFedError(
                "FORBIDDEN", f"the {principal.role} role may not make this call; it needs {' or '.join(roles)}."
            )

    return {
        "dependencies": [Depends(check)],
        "openapi_extra": {"x-roles": list(roles)},
        "description": f"Roles: {', '.join(roles)}.",
    }


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
CurrentRuntime = Annotated[Runtime, Depends(runtime)]
