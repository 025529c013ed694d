"""Release downloads: a release's file list, any of its files, its signature, by ``rN``, channel or commit id.

Any token may download (every role, org tokens included); with ``public_releases`` no token is needed, but a
token that is sent must still be valid (a revoked one is refused either way). Files are only those the release's
verified signature lists, so no path built from a request ever reaches the filesystem. With an object store
(``artifact_store``), a file is a redirect to a presigned URL, handed out only after the token is checked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel

from coordinator.api.deps import ROLES, OptionalPrincipal, Principal, runtime
from coordinator.api.file_response import FILE_RESPONSES, file_response, redirect_response
from coordinator.release import signed_files
from coordinator.state import releases
from protocol.errors import BarFedError
from protocol.package import SIGNATURE_FILE

router = APIRouter(prefix="/v1/releases", tags=["downloads"])

ReleaseName = Annotated[
    str, Path(min_length=1, max_length=64, description="`rN`, a channel name, or the release's 40-hex commit id")
]
FilePath = Annotated[str, Path(min_length=1, max_length=512, description="a path from the release's file list")]


def download_access(request: Request, principal: OptionalPrincipal) -> Principal | None:
    """Any valid token; none at all only when the operator made releases public."""
    if principal is None and not runtime(request).settings.public_releases:
        raise BarFedError("NO_TOKEN", "downloads need an API token: send `Authorization: Bearer <token>`.")
    return principal


DOWNLOAD = {
    "dependencies": [Depends(download_access)],
    "openapi_extra": {"x-roles": list(ROLES), "x-public-when": "public_releases"},
    "description": f"Roles: {', '.join(ROLES)}; no token needed when the coordinator sets `public_releases`.",
}


class FileInfo(BaseModel):
    path: str
    size: int
    sha256: str


class FileList(BaseModel):
    release: str
    number: int
    commit: str
    files: list[FileInfo]


def _release(request: Request, name: str):
    return releases.resolve(runtime(request).registry, name)


@router.get("/{name}/files", summary="Every file of a release with its size and sha256", **DOWNLOAD)
def list_files(request: Request, name: ReleaseName) -> FileList:
    release = _release(request, name)
    entries = signed_files.release_files(runtime(request), release.number)
    return FileList(
        release=f"r{release.number}",
        number=release.number,
        commit=releases.commit_id(release),
        files=[FileInfo(path=path, size=e.size, sha256=e.sha256) for path, e in entries.items()],
    )


def _serve(request: Request, name: str, path: str) -> Response:
    release = _release(request, name)
    response = served_file(request, runtime(request), release.number, path)
    response.headers["x-barfed-release"] = f"r{release.number}"
    return response


def served_file(request: Request, runtime, number: int, path: str) -> Response:
    """The file's bytes from home, or a redirect to it on the object store (after the caller's token was checked)."""
    if runtime.store is not None:
        url, entry = signed_files.file_url(runtime, number, path)
        return redirect_response(request, url, entry.sha256, entry.size)
    disk_path, entry = signed_files.file_path(runtime, number, path)
    return file_response(request, disk_path, entry.sha256, entry.size)


def _file_route(path: str, summary: str):
    """GET and HEAD of one path, as two operations (one operation id each in the OpenAPI document)."""

    def register(endpoint):
        for method in ("GET", "HEAD"):
            router.add_api_route(
                path,
                endpoint,
                methods=[method],
                summary=summary if method == "GET" else f"{summary}: headers only",
                operation_id=f"{endpoint.__name__}{'_head' if method == 'HEAD' else ''}",
                response_class=Response,
                responses=FILE_RESPONSES,
                **DOWNLOAD,
            )
        return endpoint

    return register


@_file_route("/{name}/files/{path:path}", "One file of a release (Range, If-Range, If-None-Match, HEAD)")
def download_file(request: Request, name: ReleaseName, path: FilePath) -> Response:
    return _serve(request, name, path)


@_file_route("/{name}/signature", "The release's model-signing bundle (model.sig), checkable with its release key")
def signature(request: Request, name: ReleaseName) -> Response:
    return _serve(request, name, SIGNATURE_FILE)
