"""The coordinator's release public key, for clients that pin it on first use (`barfed pull`): public, no token."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from coordinator.api.deps import CurrentRuntime
from protocol import pki
from protocol.errors import BarFedError

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class ReleaseKey(BaseModel):
    algorithm: str
    fingerprint: str  # sha256 of the DER SubjectPublicKeyInfo, as `barfed pull` prints it
    public_key_pem: str


@router.get(
    "/release",
    summary="The key every release is signed with (no token needed)",
    description="Roles: none needed (public). Pin it: compare its fingerprint with the one your operator gave you.",
    openapi_extra={"x-roles": ["public"]},
)
def release_key(runtime: CurrentRuntime) -> ReleaseKey:
    path = runtime.keys.release_public_path
    if not path.is_file():
        raise BarFedError("NOT_INITIALIZED", "this coordinator has no release key yet; `barfed coordinator init`.")
    pem = path.read_bytes()
    return ReleaseKey(
        algorithm="ecdsa-p256-sha256",
        fingerprint=pki.public_key_fingerprint(pki.load_public_key(pem)),
        public_key_pem=pem.decode("ascii"),
    )
