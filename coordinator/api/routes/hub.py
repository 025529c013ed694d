"""The Hugging Face Hub's read endpoints, so the tools users already have load releases unchanged: with
``HF_ENDPOINT`` set to this API, stock ``huggingface_hub.snapshot_download(repo, revision=...)`` and
``transformers``' ``from_pretrained(repo, revision=...)`` fetch a release.

What huggingface_hub 2.x calls, and what this module answers:

- ``GET /api/models/{repo}[/revision/{rev}]`` (``model_info``/``repo_info``): ``sha`` (the commit) and ``siblings``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``list_repo_tree``, ``list_repo_files``): every file, as an LFS
  entry whose ``lfs.oid`` is its sha256 (the Hub's own shape for large files);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` (``hf_hub_download``, ``has_file``): the bytes, with the
  ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag`` (the sha256) and ``X-Linked-Size`` headers the client requires,
  Range and If-None-Match through ``file_response``.

There is one repository, ``settings.hub_repo`` (the federation's model); a revision is ``rN``, a channel, or a
release's commit id (the first 40 hex digits of its release.json's sha256), and ``main``, the clients' default,
is the ``stable`` channel. Refusals carry the Hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound,
EntryNotFound), so the client raises its own RepositoryNotFoundError, RevisionNotFoundError or
EntryNotFoundError (transformers treats a file that answers EntryNotFound as absent); a bad, expired or revoked
token gets the Hub's 401 for invalid credentials. Read-only: nothing here changes anything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from coordinator.api.deps import CurrentRuntime
from coordinator.api.errors import status_of
from coordinator.api.file_response import FILE_RESPONSES, etag_of
from coordinator.api.routes.downloads import DOWNLOAD, served_file
from coordinator.release.signed_files import FileEntry, local_copy, release_files
from coordinator.state import releases as state
from coordinator.state.models import Release
from protocol.errors import BarFedError

DEFAULT_REVISION = "main"  # what Hub clients ask for without a revision
DEFAULT_CHANNEL = "stable"
MAX_CONFIG_BYTES = 1024 * 1024
AUTH_CODES = ("BAD_TOKEN", "UNKNOWN_TOKEN", "TOKEN_REVOKED", "TOKEN_EXPIRED")
# The client maps this exact message on a 401 to "your credentials are wrong", not to "no such repository".
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
HUB_ERRORS = {  # our code -> (HTTP status, the Hub's X-Error-Code)
    "UNKNOWN_REPO": (404, "RepoNotFound"),
    "UNKNOWN_RELEASE": (404, "RevisionNotFound"),
    "UNKNOWN_CHANNEL": (404, "RevisionNotFound"),
    "UNKNOWN_FILE": (404, "EntryNotFound"),
    "NO_TOKEN": (401, "RepoNotFound"),  # the Hub's answer for a private repository without credentials
}
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"

RepoId = Annotated[str, PathParam(min_length=1, max_length=200, description="the federation's repo id")]
Revision = Annotated[str, PathParam(min_length=1, max_length=64, description="rN, a channel, a commit id or main")]
RepoPath = Annotated[str, PathParam(min_length=1, max_length=1000, description="a file's path in the release")]
# The properties the Hub's `expand` knows (huggingface_hub's ExpandModelProperty_T), and ours: an unknown one is
# refused (422), as the Hub refuses it, rather than silently answered with less.
EXPAND_PROPERTIES = Literal[
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled", "downloads",
    "downloadsAllTime", "evalResults", "gated", "gguf", "inference", "inferenceProviderMapping", "lastModified",
    "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private", "resourceGroup", "safetensors",
    "sha", "siblings", "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage", "widgetData", "barfed",
]  # fmt: skip
Expand = Annotated[list[EXPAND_PROPERTIES] | None, Query(max_length=40, description="only these properties")]


def hub_error(code: str, message: str, commit: str | None = None) -> JSONResponse:
    """A refusal the Hub client classifies as the Hub's own: its X-Error-Code, and X-Error-Message, which the
    client prints (the Hub's exact sentence for bad credentials, which it maps to a 401 error of its own);
    the body is the project's ``{code, message}`` as on every route, and X-Barfed-Error-Code names the code."""
    status, hub_code = HUB_ERRORS.get(code, (status_of(code), None))
    if code == "NO_TOKEN":
        message += " With huggingface_hub, set HF_TOKEN (or pass token=)."
    shown = INVALID_CREDENTIALS if code in AUTH_CODES else f"{code}: {message}".replace("\n", " ").replace("\r", " ")
    headers = {"X-Error-Message": shown.encode("ascii", "replace").decode(), "X-Barfed-Error-Code": code}
    if hub_code:
        headers["X-Error-Code"] = hub_code
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if commit:
        headers["X-Repo-Commit"] = commit
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


class HubRoute(APIRoute):
    """Every refusal of these routes, those of the token dependency included, in the Hub's shape."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def hub_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except BarFedError as exc:
                return hub_error(exc.code, exc.message, getattr(exc, "commit", None))

        return hub_handler


router = APIRouter(tags=["hub"], route_class=HubRoute)
READ = DOWNLOAD  # who may read: the same rule as the release downloads (any token; none when public_releases)


def resolve_revision(runtime, repo_id: str, revision: str) -> Release:
    settings = runtime.settings
    if repo_id != settings.hub_repo:
        raise BarFedError(
            "UNKNOWN_REPO", f"this coordinator serves one repository, {settings.hub_repo}; {repo_id[:200]!r} is not it."
        )
    return state.resolve(runtime.registry, DEFAULT_CHANNEL if revision == DEFAULT_REVISION else revision)


def _lfs(entry: FileEntry) -> tuple[str, dict]:
    """The git blob id of the file's LFS pointer (what the Hub reports as an LFS file's oid) and its LFS record."""
    pointer = LFS_POINTER.format(sha256=entry.sha256, size=entry.size).encode()
    oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer, usedforsecurity=False).hexdigest()
    return oid, {"oid": entry.sha256, "size": entry.size, "pointerSize": len(pointer)}


def _config(runtime, release: Release, files: dict[str, FileEntry]) -> dict:
    """The architecture fields of config.json the Hub reports (pipelines read them); nothing when unreadable."""
    entry = files.get("config.json")
    if entry is None or entry.size > MAX_CONFIG_BYTES:
        return {}
    try:
        config = json.loads((local_copy(runtime, release.number, ("config.json",)) / "config.json").read_text())
    except (OSError, ValueError, BarFedError):
        return {}
    return {key: config[key] for key in ("architectures", "model_type") if key in config}


def _info(runtime, repo_id: str, release: Release, blobs: bool, expand: list[str] | None) -> dict:
    files = release_files(runtime, release.number)
    published = release.published_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    siblings = []
    for path, entry in files.items():
        sibling: dict = {"rfilename": path}
        if blobs:
            oid, lfs = _lfs(entry)
            sibling.update(size=entry.size, blobId=oid, lfs={"sha256": lfs["oid"], **lfs})
        siblings.append(sibling)
    commit = state.commit_id(release)
    info = {
        "_id": commit,
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/")[0],
        "sha": commit,
        "lastModified": published,
        "createdAt": published,
        "private": not runtime.settings.public_releases,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["transformers", "safetensors", "flex_olmo", "text-generation", "barfed"],
        "config": _config(runtime, release, files),
        "siblings": siblings,
        "barfed": {
            "release": f"r{release.number}",
            "channels": state.channels_of(runtime.registry, release.number),
            "manifest_sha256": release.manifest_sha256,
        },
    }
    if expand:
        info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
    return info


@router.get("/api/models/{repo_id:path}/tree/{revision}/{path:path}", summary="Files under a folder (Hub)", **READ)
def tree_under(
    repo_id: RepoId,
    revision: Revision,
    path: RepoPath,
    runtime: CurrentRuntime,
    recursive: bool = False,
    expand: bool = False,
) -> list[dict]:
    return _tree(runtime, repo_id, revision, path.strip("/"), recursive)


@router.get("/api/models/{repo_id:path}/tree/{revision}", summary="The release's files (Hub list_repo_tree)", **READ)
def tree(
    repo_id: RepoId,
    revision: Revision,
    runtime: CurrentRuntime,
    recursive: bool = False,
    expand: bool = False,
) -> list[dict]:
    return _tree(runtime, repo_id, revision, "", recursive)


def _tree(runtime, repo_id: str, revision: str, folder: str, recursive: bool) -> list[dict]:
    release = resolve_revision(runtime, repo_id, revision)
    files = release_files(runtime, release.number)
    prefix = f"{folder}/" if folder else ""
    entries: list[dict] = []
    folders: set[str] = set()
    for path, entry in files.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        if "/" in rest and not recursive:
            folders.add(prefix + rest.split("/", 1)[0])
            continue
        if recursive:  # every folder above a file is listed too, as the Hub does
            parts = rest.split("/")[:-1]
            folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
        oid, lfs = _lfs(entry)
        entries.append({"type": "file", "oid": oid, "size": entry.size, "path": path, "lfs": lfs})
    if not entries and not folders:
        error = BarFedError("UNKNOWN_FILE", f"r{release.number} has no folder {folder[:200]!r}.")
        error.commit = state.commit_id(release)
        raise error
    directories = [
        {
            "type": "directory",
            "oid": hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest(),
            "size": 0,
            "path": name,
        }
        for name in sorted(folders)
    ]
    return directories + entries


@router.get("/api/models/{repo_id:path}/revision/{revision}", summary="Model info at a revision (Hub)", **READ)
def model_info_at(
    repo_id: RepoId,
    revision: Revision,
    runtime: CurrentRuntime,
    blobs: bool = False,
    expand: Expand = None,
) -> dict:
    return _info(runtime, repo_id, resolve_revision(runtime, repo_id, revision), blobs, expand)


@router.get("/api/models/{repo_id:path}", summary="Model info of the stable release (Hub)", **READ)
def model_info(repo_id: RepoId, runtime: CurrentRuntime, blobs: bool = False, expand: Expand = None) -> dict:
    return _info(runtime, repo_id, resolve_revision(runtime, repo_id, DEFAULT_REVISION), blobs, expand)


RESOLVE = {
    "response_class": Response,
    "responses": FILE_RESPONSES,
    **READ,
}
RESOLVE_PATH = "/{repo_id:path}/resolve/{revision}/{filename:path}"


@router.head(
    RESOLVE_PATH, summary="A release file's headers (Hub get_hf_file_metadata)", operation_id="hub_head", **RESOLVE
)
@router.get(
    RESOLVE_PATH,
    summary="A release file (Hub hf_hub_download): Range, ETag = sha256",
    operation_id="hub_get",
    **RESOLVE,
)
def resolve(
    request: Request,
    repo_id: RepoId,
    revision: Revision,
    filename: RepoPath,
    runtime: CurrentRuntime,
) -> Response:
    release = resolve_revision(runtime, repo_id, revision)
    commit = state.commit_id(release)
    try:
        entry = release_files(runtime, release.number).get(filename)
        response = served_file(request, runtime, release.number, filename)
    except BarFedError as exc:
        exc.commit = commit  # the client caches "absent at this commit" from it
        raise
    response.headers["X-Repo-Commit"] = commit
    response.headers["X-Linked-Etag"] = etag_of(entry.sha256)
    response.headers["X-Linked-Size"] = str(entry.size)
    return response
