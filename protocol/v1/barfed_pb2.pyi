from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollmentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENROLLMENT_STATE_UNSPECIFIED: _ClassVar[EnrollmentState]
    ENROLLMENT_PENDING: _ClassVar[EnrollmentState]
    ENROLLMENT_APPROVED: _ClassVar[EnrollmentState]
    ENROLLMENT_REJECTED: _ClassVar[EnrollmentState]
    ENROLLMENT_REVOKED: _ClassVar[EnrollmentState]

class SubmissionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBMISSION_STATE_UNSPECIFIED: _ClassVar[SubmissionState]
    RECEIVED: _ClassVar[SubmissionState]
    VERIFYING: _ClassVar[SubmissionState]
    ACCEPTED: _ClassVar[SubmissionState]
    REJECTED: _ClassVar[SubmissionState]
    QUARANTINED: _ClassVar[SubmissionState]
    DEPRECATED: _ClassVar[SubmissionState]
    OPTED_OUT: _ClassVar[SubmissionState]
ENROLLMENT_STATE_UNSPECIFIED: EnrollmentState
ENROLLMENT_PENDING: EnrollmentState
ENROLLMENT_APPROVED: EnrollmentState
ENROLLMENT_REJECTED: EnrollmentState
ENROLLMENT_REVOKED: EnrollmentState
SUBMISSION_STATE_UNSPECIFIED: SubmissionState
RECEIVED: SubmissionState
VERIFYING: SubmissionState
ACCEPTED: SubmissionState
REJECTED: SubmissionState
QUARANTINED: SubmissionState
DEPRECATED: SubmissionState
OPTED_OUT: SubmissionState

class FileDeclaration(_message.Message):
    __slots__ = ("path", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class FileProgress(_message.Message):
    __slots__ = ("path", "size", "committed")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    committed: int
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., committed: _Optional[int] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("org_id", "csr_pem", "enrollment_token", "contact")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    csr_pem: str
    enrollment_token: str
    contact: str
    def __init__(self, org_id: _Optional[str] = ..., csr_pem: _Optional[str] = ..., enrollment_token: _Optional[str] = ..., contact: _Optional[str] = ...) -> None: ...

class GetEnrollmentRequest(_message.Message):
    __slots__ = ("enrollment_id",)
    ENROLLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    enrollment_id: str
    def __init__(self, enrollment_id: _Optional[str] = ...) -> None: ...

class Enrollment(_message.Message):
    __slots__ = ("enrollment_id", "org_id", "state", "certificate_pem", "ca_certificate_pem", "domains", "reason")
    ENROLLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    enrollment_id: str
    org_id: str
    state: EnrollmentState
    certificate_pem: str
    ca_certificate_pem: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, enrollment_id: _Optional[str] = ..., org_id: _Optional[str] = ..., state: _Optional[_Union[EnrollmentState, str]] = ..., certificate_pem: _Optional[str] = ..., ca_certificate_pem: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class FetchAnchorRequest(_message.Message):
    __slots__ = ("fingerprint", "have")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    have: _containers.RepeatedCompositeFieldContainer[FileOffset]
    def __init__(self, fingerprint: _Optional[str] = ..., have: _Optional[_Iterable[_Union[FileOffset, _Mapping]]] = ...) -> None: ...

class FileOffset(_message.Message):
    __slots__ = ("path", "offset")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class AnchorManifest(_message.Message):
    __slots__ = ("fingerprint", "files")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    files: _containers.RepeatedCompositeFieldContainer[FileDeclaration]
    def __init__(self, fingerprint: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileDeclaration, _Mapping]]] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("path", "offset", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AnchorPart(_message.Message):
    __slots__ = ("manifest", "chunk")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    manifest: AnchorManifest
    chunk: FileChunk
    def __init__(self, manifest: _Optional[_Union[AnchorManifest, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...

class CreateUploadRequest(_message.Message):
    __slots__ = ("domain", "version", "files")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    domain: str
    version: int
    files: _containers.RepeatedCompositeFieldContainer[FileDeclaration]
    def __init__(self, domain: _Optional[str] = ..., version: _Optional[int] = ..., files: _Optional[_Iterable[_Union[FileDeclaration, _Mapping]]] = ...) -> None: ...

class UploadSession(_message.Message):
    __slots__ = ("session_id", "max_chunk_bytes", "expires_at_unix", "files")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    max_chunk_bytes: int
    expires_at_unix: int
    files: _containers.RepeatedCompositeFieldContainer[FileProgress]
    def __init__(self, session_id: _Optional[str] = ..., max_chunk_bytes: _Optional[int] = ..., expires_at_unix: _Optional[int] = ..., files: _Optional[_Iterable[_Union[FileProgress, _Mapping]]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("session_id", "path", "offset", "data")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    offset: int
    data: bytes
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetUploadRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class UploadProgress(_message.Message):
    __slots__ = ("session_id", "files", "complete")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    files: _containers.RepeatedCompositeFieldContainer[FileProgress]
    complete: bool
    def __init__(self, session_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileProgress, _Mapping]]] = ..., complete: _Optional[bool] = ...) -> None: ...

class CommitUploadRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSubmissionRequest(_message.Message):
    __slots__ = ("submission_id",)
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    def __init__(self, submission_id: _Optional[str] = ...) -> None: ...

class Submission(_message.Message):
    __slots__ = ("submission_id", "org_id", "domain", "version", "state", "package_digest", "error_code", "message", "expert_status", "release", "retention")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPERT_STATUS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    org_id: str
    domain: str
    version: int
    state: SubmissionState
    package_digest: str
    error_code: str
    message: str
    expert_status: str
    release: str
    retention: DomainRetention
    def __init__(self, submission_id: _Optional[str] = ..., org_id: _Optional[str] = ..., domain: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[SubmissionState, str]] = ..., package_digest: _Optional[str] = ..., error_code: _Optional[str] = ..., message: _Optional[str] = ..., expert_status: _Optional[str] = ..., release: _Optional[str] = ..., retention: _Optional[_Union[DomainRetention, _Mapping]] = ...) -> None: ...

class DomainRetention(_message.Message):
    __slots__ = ("domain", "expert", "release", "retention", "difference")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    expert: float
    release: float
    retention: float
    difference: float
    def __init__(self, domain: _Optional[str] = ..., expert: _Optional[float] = ..., release: _Optional[float] = ..., retention: _Optional[float] = ..., difference: _Optional[float] = ...) -> None: ...

class WatchReleasesRequest(_message.Message):
    __slots__ = ("after_release", "channel")
    AFTER_RELEASE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    after_release: int
    channel: str
    def __init__(self, after_release: _Optional[int] = ..., channel: _Optional[str] = ...) -> None: ...

class ReleaseEvent(_message.Message):
    __slots__ = ("release", "name", "channels", "manifest_sha256", "published_at_unix", "domains", "retention")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    release: int
    name: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    manifest_sha256: str
    published_at_unix: int
    domains: _containers.RepeatedScalarFieldContainer[str]
    retention: _containers.RepeatedCompositeFieldContainer[DomainRetention]
    def __init__(self, release: _Optional[int] = ..., name: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., manifest_sha256: _Optional[str] = ..., published_at_unix: _Optional[int] = ..., domains: _Optional[_Iterable[str]] = ..., retention: _Optional[_Iterable[_Union[DomainRetention, _Mapping]]] = ...) -> None: ...
