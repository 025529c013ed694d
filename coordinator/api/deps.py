"""What routes are given: the coordinator's runtime, who is calling (a bearer token's principal), the dependency
that lets only some roles through a route, and dispatching a job the route just queued."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from coordinator.runtime import Runtime
from coordinator.state import tokens
from protocol.errors import BarFedError

ROLES = tokens.ROLES
READ_ALL = ("admin", "operator", "auditor")  # who may read every resource
PRINCIPAL = "principal"  # where a request's scope["state"] keeps the principal found before its body was read

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


def authenticate(runtime: Runtime, authorization: str | None) -> Principal | None:
    """The principal of an ``Authorization: Bearer`` header, or None without one; anything else is refused."""
    if not authorization:
        return None
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not token:
        raise BarFedError("BAD_TOKEN", "the Authorization header must be `Bearer <token>`.")
    row = tokens.authenticate(runtime.registry, token)
    return Principal(row.id, row.role, row.org_id)


def optional_principal(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],  # the OpenAPI document's scheme
) -> Principal | None:
    """The caller's principal, or None without an Authorization header; a bad token is refused either way. A
    request with a body was authenticated before it was read (coordinator/api/body_guard.py): reuse that."""
    if PRINCIPAL in request.scope.get("state", {}):
        return request.scope["state"][PRINCIPAL]
    return authenticate(runtime(request), request.headers.get("authorization"))


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
