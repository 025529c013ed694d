"""Malformed and malicious submissions, sent over real gRPC with mTLS: each refused with its own code, and
afterwards the registry holds no expert and the blob store no byte from any of them (SQLite and PostgreSQL).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from contributor_node.package import build_package
from coordinator.blobs import BlobStore
from coordinator.state.models import Expert, Submission
from coordinator.uploads.sessions import Uploads
from protocol import pki
from protocol.package import MANIFEST_FILE, SIGNATURE_FILE, canonical_json, describe_files, parse_manifest
from protocol.signing import sign_directory
from protocol.v1 import barfed_pb2 as pb
from tests.integration.conftest import Federation, fresh_database, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ERROR_KEY = "barfed-error-code"


@dataclass
class World:
    federation: Federation
    identity: object
    client: object
    good: Path  # a valid, signed package of test-vowels v2 (v1 is accepted at setup)
    other_key: Path
    work: Path
    accepted_files: set = field(default_factory=set)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, micro, micro_expert, micro_math, tmp_path_factory):
    from coordinator.embedded import running_coordinator
    from coordinator.keys import CoordinatorKeys
    from coordinator.setup import initialize
    from coordinator.state.db import Registry

    root = tmp_path_factory.mktemp(f"adversarial-{request.param}")
    with fresh_database(request.param, root) as url:
        settings = make_settings(root, url, chunk_bytes=256 * 1024, max_file_bytes=64 * 1024**2, max_files=12)
        initialize(settings, micro["branch"])
        registry = Registry(settings.db_url)
        with running_coordinator(settings) as address:
            federation = Federation(settings, registry, CoordinatorKeys(settings.pki_dir), address, root)
            identity = federation.enroll("acme-labs", ["test-vowels", "math"])
            with identity.client(address.service) as client:
                first = root / "v1"
                build_package(micro_expert, first, org="acme-labs", version=1, private_key=identity.key_path)
                status = client.wait(client.submit(first))
                assert status.state == pb.ACCEPTED, status
                good = root / "good"
                build_package(micro_expert, good, org="acme-labs", version=2, private_key=identity.key_path)
                other_key = pki.write_private_key(root / "other.key", pki.generate_private_key())
                build_package(micro_math, root / "math", org="acme-labs", version=2, private_key=identity.key_path)
                with registry.session() as session:
                    accepted = set(session.scalars(select(Expert)).one().files.values())
                yield World(federation, identity, client, good, other_key, root / "cases", accepted)
        registry.dispose()


# -- building bad packages -----------------------------------------------------------------------


def copy_of(world: World, name: str) -> Path:
    target = world.work / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(world.good, target)
    return target


def relist(package: Path) -> Path:
    """Make expert.json list the files as they now are."""
    raw = json.loads((package / MANIFEST_FILE).read_text())
    paths = sorted(p.name for p in package.iterdir() if p.name not in (MANIFEST_FILE, SIGNATURE_FILE))
    raw["files"] = [f.model_dump() for f in describe_files(package, paths)]
    (package / MANIFEST_FILE).write_bytes(canonical_json(raw))
    return package


def resign(package: Path, key: Path, *, refresh_manifest: bool = True) -> Path:
    """Make expert.json list the files as they now are, then sign everything again."""
    if refresh_manifest:
        relist(package)
    sign_directory(package, key)
    return package


def edit_manifest(package: Path, change) -> None:
    raw = json.loads((package / MANIFEST_FILE).read_text())
    change(raw)
    (package / MANIFEST_FILE).write_bytes(canonical_json(raw))


def edit_tensors(package: Path, change) -> None:
    tensors = load_file(package / "model.safetensors")
    change(tensors)
    save_file(tensors, package / "model.safetensors", metadata={"format": "pt"})


def first_name(package: Path, fragment: str) -> str:
    return next(n for n in sorted(load_file(package / "model.safetensors")) if fragment in n)


# -- sending --------------------------------------------------------------------------------------


def code_of(exc: grpc.RpcError) -> str:
    return dict(exc.trailing_metadata() or ()).get(ERROR_KEY, exc.code().name)


def send(world: World, files: dict[str, bytes], *, domain="test-vowels", version=2, declare=None, chunks=None) -> str:
    """Upload raw files with no client-side checks; returns the error code or the final state."""
    stub = world.client.stub
    declared = declare or [
        pb.FileDeclaration(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for p, d in files.items()
    ]
    try:
        session = stub.CreateUpload(pb.CreateUploadRequest(domain=domain, version=version, files=declared), timeout=30)
        size = world.federation.settings.chunk_bytes
        if chunks is None:
            stream = [
                pb.Chunk(session_id=session.session_id, path=p, offset=o, data=d[o : o + size])
                for p, d in files.items()
                for o in range(0, len(d), size)
            ]
        else:
            stream = [
                pb.Chunk(session_id=session.session_id, path=c.path, offset=c.offset, data=c.data) for c in chunks
            ]
        stub.WriteChunks(iter(stream), timeout=60)
        submission = stub.CommitUpload(pb.CommitUploadRequest(session_id=session.session_id), timeout=30)
    except grpc.RpcError as exc:
        return code_of(exc)
    status = world.client.wait(submission.submission_id, timeout=120)
    return status.error_code or pb.SubmissionState.Name(status.state)


def send_dir(world: World, package: Path, **kwargs) -> str:
    return send(world, {p.name: p.read_bytes() for p in sorted(package.iterdir()) if p.is_file()}, **kwargs)


# -- the cases ------------------------------------------------------------------------------------


def bad_signature(w):
    p = copy_of(w, "bad-signature")
    bundle = json.loads((p / SIGNATURE_FILE).read_text())
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[len(sig) // 2] ^= 0xFF
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (p / SIGNATURE_FILE).write_text(json.dumps(bundle))
    return send_dir(w, p)


def garbage_signature(w):
    p = copy_of(w, "garbage-signature")
    (p / SIGNATURE_FILE).write_bytes(b"\x00not a bundle")
    return send_dir(w, p)


def signed_by_another_key(w):
    return send_dir(w, resign(copy_of(w, "other-key"), w.other_key, refresh_manifest=False))


def swapped_signature(w):
    """model.sig taken from the same org's package of another expert: valid, but not for these files."""
    p = copy_of(w, "swapped")
    shutil.copy(w.work.parent / "math" / SIGNATURE_FILE, p / SIGNATURE_FILE)
    return send_dir(w, p)


def manifest_edited_after_signing(w):
    """expert.json changed after signing (still a valid manifest): its stored digest is not the signed one."""
    p = copy_of(w, "edited-manifest")
    edit_manifest(p, lambda m: m.update(eval_scores={"test-vowels": 99.0}))
    return send_dir(w, p)


def tensors_edited_after_signing(w):
    """Weights changed and expert.json listing them again, but not signed again."""
    p = copy_of(w, "edited-tensors")
    name = first_name(p, "experts.1.up_proj")
    edit_tensors(p, lambda t: t[name].mul_(1.01))
    return send_dir(w, relist(p))


def replayed_version(w):
    """A valid, freshly signed package for the version already accepted."""
    p = copy_of(w, "replay")
    edit_manifest(p, lambda m: m.update(version=1))
    return send_dir(w, resign(p, w.identity.key_path), version=1)


def replayed_package_at_new_version(w):
    """The accepted v1 package, byte for byte, declared as v2: its signed manifest still says v1."""
    return send_dir(w, w.work.parent / "v1", version=2)


def wrong_anchor(w):
    p = copy_of(w, "wrong-anchor")
    edit_manifest(p, lambda m: m.update(anchor_fingerprint="sha256:" + "1" * 64))
    return send_dir(w, resign(p, w.identity.key_path))


def wrong_shape(w):
    p = copy_of(w, "wrong-shape")
    name = first_name(p, "experts.1.up_proj")
    edit_tensors(p, lambda t: t.__setitem__(name, torch.zeros(t[name].shape[0] + 1, t[name].shape[1])))
    return send_dir(w, resign(p, w.identity.key_path))


def wrong_dtype(w):
    p = copy_of(w, "wrong-dtype")
    name = first_name(p, "experts.1.up_proj")
    edit_tensors(p, lambda t: t.__setitem__(name, t[name].to(torch.bfloat16)))
    return send_dir(w, resign(p, w.identity.key_path))


def extra_tensor(w):
    p = copy_of(w, "extra-tensor")
    edit_tensors(p, lambda t: t.__setitem__("model.layers.0.mlp.backdoor.weight", torch.zeros(2, 2)))
    return send_dir(w, resign(p, w.identity.key_path))


def missing_tensor(w):
    p = copy_of(w, "missing-tensor")
    name = first_name(p, "experts.1.down_proj")
    edit_tensors(p, lambda t: t.pop(name))
    return send_dir(w, resign(p, w.identity.key_path))


def nan_values(w):
    p = copy_of(w, "nan")
    name = first_name(p, "experts.1.gate_proj")
    edit_tensors(p, lambda t: t[name].view(-1).__setitem__(0, float("nan")))
    return send_dir(w, resign(p, w.identity.key_path))


def inf_values(w):
    p = copy_of(w, "inf")
    name = first_name(p, "self_attn.q_proj")
    edit_tensors(p, lambda t: t[name].view(-1).__setitem__(-1, float("inf")))
    return send_dir(w, resign(p, w.identity.key_path))


def slot0_shipped(w):
    p = copy_of(w, "slot0")
    name = first_name(p, "experts.1.up_proj").replace("experts.1.", "experts.0.")
    edit_tensors(p, lambda t: t.__setitem__(name, t[name.replace("experts.0.", "experts.1.")].clone()))
    return send_dir(w, resign(p, w.identity.key_path))


def router_row0_modified(w):
    p = copy_of(w, "router-row0")
    name = first_name(p, "mlp.gate.weight")
    edit_tensors(p, lambda t: t[name][0].add_(0.5))
    return send_dir(w, resign(p, w.identity.key_path))


def excessive_drift(w):
    p = copy_of(w, "drift")
    name = first_name(p, "self_attn.o_proj")
    edit_tensors(p, lambda t: t[name].mul_(5.0))
    return send_dir(w, resign(p, w.identity.key_path))


def pickle_disguised(w):
    p = copy_of(w, "pickle")
    (p / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return send_dir(w, resign(p, w.identity.key_path))


def oversized_header(w):
    p = copy_of(w, "huge-header")
    (p / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{" + b" " * 64)
    return send_dir(w, resign(p, w.identity.key_path))


def truncated_file(w):
    p = copy_of(w, "truncated")
    data = (p / "model.safetensors").read_bytes()
    (p / "model.safetensors").write_bytes(data[: len(data) // 2])
    return send_dir(w, resign(p, w.identity.key_path))


def unknown_manifest_field(w):
    p = copy_of(w, "unknown-field")
    edit_manifest(p, lambda m: m.update(execute="rm -rf /"))
    return send_dir(w, resign(p, w.identity.key_path))


def manifest_not_json(w):
    p = copy_of(w, "not-json")
    (p / MANIFEST_FILE).write_bytes(b"{this is not json")
    return send_dir(w, resign(p, w.identity.key_path, refresh_manifest=False))


def manifest_for_another_org(w):
    p = copy_of(w, "other-org")
    edit_manifest(p, lambda m: m.update(org="globex"))
    return send_dir(w, resign(p, w.identity.key_path))


def manifest_domain_differs(w):
    return send_dir(w, w.good, domain="math")


def path_traversal(w):
    return send(w, {"../../etc/passwd.safetensors": b"x", MANIFEST_FILE: b"{}", SIGNATURE_FILE: b"{}"})


def absolute_path(w):
    return send(w, {"/tmp/model.safetensors": b"x", MANIFEST_FILE: b"{}", SIGNATURE_FILE: b"{}"})


def file_not_allowed(w):
    return send(w, {"model.safetensors": b"x", "pytorch_model.bin": b"x", MANIFEST_FILE: b"{}", SIGNATURE_FILE: b"{}"})


def no_signature_file(w):
    return send(w, {"model.safetensors": b"x", MANIFEST_FILE: b"{}"})


def too_many_files(w):
    files = {f"shard-{i}.safetensors": b"x" for i in range(20)} | {MANIFEST_FILE: b"{}", SIGNATURE_FILE: b"{}"}
    return send(w, files)


def declared_too_large(w):
    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    declare = [pb.FileDeclaration(path=p, size=len(d), sha256="0" * 64) for p, d in files.items()]
    declare[0].size = 10 * 1024**3
    return send(w, files, declare=declare)


def duplicate_declaration(w):
    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    declare = [pb.FileDeclaration(path=p, size=len(d), sha256="0" * 64) for p, d in files.items()]
    return send(w, files, declare=[*declare, declare[0]])


def size_that_lies(w):
    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    declare = [pb.FileDeclaration(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for p, d in files.items()]
    declare[0].size -= 10  # claims fewer bytes than it sends
    return send(w, files, declare=declare)


def digest_that_lies(w):
    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    declare = [pb.FileDeclaration(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for p, d in files.items()]
    declare[-1].sha256 = "ab" * 32
    return send(w, files, declare=declare)


def oversized_chunk(w):
    data = b"x" * (w.federation.settings.chunk_bytes + 1)
    files = {"model.safetensors": data, MANIFEST_FILE: b"{}", SIGNATURE_FILE: b"{}"}
    return send(w, files, chunks=[pb.Chunk(path="model.safetensors", offset=0, data=data)])


def wrong_offset(w):
    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    first = next(iter(files))
    return send(w, files, chunks=[pb.Chunk(path=first, offset=7, data=files[first][7:100])])


def undeclared_file_chunk(w):
    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    return send(w, files, chunks=[pb.Chunk(path="surprise.safetensors", offset=0, data=b"x")])


def commit_before_complete(w):
    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    first = next(iter(files))
    return send(w, files, chunks=[pb.Chunk(path=first, offset=0, data=files[first][:10])])


def version_zero(w):
    return send_dir(w, w.good, version=0)


def domain_not_owned(w):
    return send_dir(w, w.good, domain="safety")


def unsigned_extra_file(w):
    p = copy_of(w, "extra-file")
    (p / "eval.jsonl").write_text('{"prompt": "a", "response": "b", "answer": "c"}\n')
    return send_dir(w, p)


def bad_sidecar(w):
    p = copy_of(w, "bad-sidecar")
    (p / "calibration.jsonl").write_text('{"prompt": "a", "response": "b"}\nimport os; os.system("x")\n')
    return send_dir(w, resign(p, w.identity.key_path))


def tensors_beyond_declared_stages(w):
    p = copy_of(w, "stages")
    edit_manifest(p, lambda m: m.update(stages=["mid"]))  # mid changes no embeddings, yet they are shipped
    return send_dir(w, resign(p, w.identity.key_path))


def stray_tensor_file(w):
    """A second, signed and listed .safetensors that the tensor reader would never look at."""
    p = copy_of(w, "stray")
    save_file(
        {"model.layers.0.mlp.experts.0.up_proj.weight": torch.full((2, 2), float("nan"))},
        p / "extra.safetensors",
        metadata={"format": "pt"},
    )
    return send_dir(w, resign(p, w.identity.key_path))


def index_and_single_file(w):
    p = copy_of(w, "index-and-single")
    names = load_file(p / "model.safetensors")
    (p / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": dict.fromkeys(names, "model.safetensors")})
    )
    return send_dir(w, resign(p, w.identity.key_path))


def lying_index(w):
    """Shards whose index describes other tensors than the shards hold."""
    p = copy_of(w, "lying-index")
    tensors = load_file(p / "model.safetensors")
    names = sorted(tensors)
    save_file(
        {n: tensors[n] for n in names[: len(names) // 2]},
        p / "model-00001-of-00002.safetensors",
        metadata={"format": "pt"},
    )
    save_file(
        {n: tensors[n] for n in names[len(names) // 2 :]},
        p / "model-00002-of-00002.safetensors",
        metadata={"format": "pt"},
    )
    (p / "model.safetensors").unlink()
    weight_map = dict.fromkeys(names, "model-00001-of-00002.safetensors")
    (p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return send_dir(w, resign(p, w.identity.key_path))


def zeroed_shared_tensor(w):
    p = copy_of(w, "zeroed")
    name = first_name(p, "self_attn.k_proj")
    edit_tensors(p, lambda t: t[name].zero_())
    return send_dir(w, resign(p, w.identity.key_path))


def nested_path(w):
    return send(w, {"weights/model.safetensors": b"x", MANIFEST_FILE: b"{}", SIGNATURE_FILE: b"{}"})


def not_a_session_id(w):
    try:
        w.client.stub.GetUpload(pb.GetUploadRequest(session_id="x" * 100_000), timeout=30)
    except grpc.RpcError as exc:
        assert len(exc.details()) < 5000, "the error echoed the whole bogus id back"
        return code_of(exc)
    return "OK"


def second_stream_on_a_busy_session(w):
    """Still one writer per session: the organization's second stream takes the session over, the first ends
    with SESSION_TAKEN_OVER once what it sent is durable, and the second continues where it stopped."""
    import threading

    files = {p.name: p.read_bytes() for p in sorted(w.good.iterdir())}
    stub = w.client.stub
    declared = [pb.FileDeclaration(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for p, d in files.items()]
    session = stub.CreateUpload(pb.CreateUploadRequest(domain="test-vowels", version=2, files=declared), timeout=30)
    first = next(iter(files))
    hold, sent = threading.Event(), threading.Event()
    outcome: dict = {}

    def slow_stream():
        yield pb.Chunk(session_id=session.session_id, path=first, offset=0, data=files[first][:10])
        sent.set()
        hold.wait(timeout=30)

    def first_stream():
        try:
            stub.WriteChunks(slow_stream(), timeout=60)
            outcome["code"] = "OK"
        except grpc.RpcError as exc:
            outcome["code"] = code_of(exc)

    holder = threading.Thread(target=first_stream)
    holder.start()
    try:
        sent.wait(timeout=30)  # a probe sent before the holder's first chunk could claim the session itself
        time.sleep(0.2)
        for _ in range(100):  # until a probe finds the first stream holding the session
            _swallow(
                lambda: stub.WriteChunks(
                    iter([pb.Chunk(session_id=session.session_id, path=first, offset=10, data=files[first][10:20])]),
                    timeout=30,
                )
            )
            holder.join(timeout=0.05)
            if not holder.is_alive():
                return outcome["code"]
        return "NEVER_TAKEN_OVER"
    finally:
        hold.set()
        holder.join()


def _rewrite_safetensors(package: Path, change) -> Path:
    """Rewrite model.safetensors' header (and data) by hand, as no writer would: ``change(header, data)``
    returns the header text and the data that follow it."""
    path = package / "model.safetensors"
    blob = path.read_bytes()
    length = int.from_bytes(blob[:8], "little")
    text, data = change(json.loads(blob[8 : 8 + length]), blob[8 + length :])
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return package


def _twin_tensors(header: dict) -> tuple[str, str]:
    """Two tensors of the same dtype and shape."""
    seen: dict = {}
    for name, entry in sorted(header.items()):
        if name != "__metadata__":
            key = (entry["dtype"], tuple(entry["shape"]))
            if key in seen:
                return seen[key], name
            seen[key] = name
    raise AssertionError("no two tensors alike")


def appended_pickle(w):
    """A valid file with a pickle after the last tensor: bytes no tensor covers ride along into a release."""
    p = copy_of(w, "appended-pickle")
    payload = pickle.dumps({"run": "os.system"})
    _rewrite_safetensors(p, lambda h, d: (json.dumps(h).encode(), d + payload))
    return send_dir(w, resign(p, w.identity.key_path))


def overlapping_offsets(w):
    """Two tensors declared over the same bytes (the second one's own bytes left unread in the file)."""
    p = copy_of(w, "overlap")

    def overlap(header, data):
        first, second = _twin_tensors(header)
        header[second]["data_offsets"] = list(header[first]["data_offsets"])
        return json.dumps(header).encode(), data

    _rewrite_safetensors(p, overlap)
    return send_dir(w, resign(p, w.identity.key_path))


def fractional_shape(w):
    """A dimension of 2.9 where an integer belongs (once read as 2)."""
    p = copy_of(w, "fractional-shape")

    def fractional(header, data):
        name = next(n for n in sorted(header) if n != "__metadata__" and header[n]["shape"])
        header[name]["shape"][0] += 0.9
        return json.dumps(header).encode(), data

    _rewrite_safetensors(p, fractional)
    return send_dir(w, resign(p, w.identity.key_path))


def overflowing_shape(w):
    """A dimension of 1e999 (once an uncaught OverflowError, reported as VERIFICATION_ERROR)."""
    p = copy_of(w, "overflowing-shape")

    def overflow(header, data):
        name = next(n for n in sorted(header) if n != "__metadata__" and header[n]["shape"])
        header[name]["shape"][0] = "OVERFLOW"
        return json.dumps(header).replace('"OVERFLOW"', "1e999").encode(), data

    _rewrite_safetensors(p, overflow)
    return send_dir(w, resign(p, w.identity.key_path))


def version_past_the_manifests_bound(w):
    """2^31 fits CreateUpload's uint32 but no manifest or registry column."""
    return send_dir(w, w.good, version=2**31)


def _swallow(fn):
    with contextlib.suppress(grpc.RpcError):
        fn()


CASES = {
    appended_pickle: ("BAD_SAFETENSORS",),
    overlapping_offsets: ("BAD_SAFETENSORS",),
    fractional_shape: ("BAD_SAFETENSORS",),
    overflowing_shape: ("BAD_SAFETENSORS",),
    version_past_the_manifests_bound: ("BAD_VERSION",),
    stray_tensor_file: ("BAD_SAFETENSORS",),
    index_and_single_file: ("BAD_SAFETENSORS",),
    lying_index: ("BAD_SAFETENSORS",),
    zeroed_shared_tensor: ("DRIFT_EXCEEDED",),
    nested_path: ("BAD_PATH",),
    not_a_session_id: ("UNKNOWN_SESSION",),
    second_stream_on_a_busy_session: ("SESSION_TAKEN_OVER",),
    bad_signature: ("SIGNATURE_INVALID", "SIGNATURE_MALFORMED"),
    garbage_signature: ("SIGNATURE_MALFORMED",),
    signed_by_another_key: ("SIGNATURE_WRONG_KEY",),
    swapped_signature: ("SIGNATURE_NOT_FOR_PACKAGE",),
    manifest_edited_after_signing: ("PACKAGE_FILE_MODIFIED",),
    tensors_edited_after_signing: ("SIGNATURE_NOT_FOR_PACKAGE",),
    replayed_version: ("VERSION_NOT_NEWER",),
    replayed_package_at_new_version: ("MANIFEST_MISMATCH",),
    wrong_anchor: ("ANCHOR_MISMATCH",),
    wrong_shape: ("SHAPE_MISMATCH",),
    wrong_dtype: ("DTYPE_MISMATCH",),
    extra_tensor: ("EXTRA_TENSOR",),
    missing_tensor: ("MISSING_TENSOR",),
    nan_values: ("NON_FINITE",),
    inf_values: ("NON_FINITE",),
    slot0_shipped: ("SLOT0_MODIFIED",),
    router_row0_modified: ("SLOT0_MODIFIED",),
    excessive_drift: ("DRIFT_EXCEEDED",),
    pickle_disguised: ("BAD_SAFETENSORS",),
    oversized_header: ("BAD_SAFETENSORS",),
    truncated_file: ("BAD_SAFETENSORS",),
    unknown_manifest_field: ("MANIFEST_INVALID",),
    manifest_not_json: ("MANIFEST_INVALID",),
    manifest_for_another_org: ("ORG_MISMATCH",),
    manifest_domain_differs: ("MANIFEST_MISMATCH",),
    path_traversal: ("BAD_PATH",),
    absolute_path: ("BAD_PATH",),
    file_not_allowed: ("FILE_NOT_ALLOWED",),
    no_signature_file: ("PACKAGE_INCOMPLETE",),
    too_many_files: ("BAD_FILE_LIST",),
    declared_too_large: ("FILE_TOO_LARGE",),
    duplicate_declaration: ("BAD_FILE_LIST",),
    size_that_lies: ("SIZE_EXCEEDED",),
    digest_that_lies: ("DIGEST_MISMATCH",),
    oversized_chunk: ("CHUNK_TOO_LARGE",),
    wrong_offset: ("OFFSET_MISMATCH",),
    undeclared_file_chunk: ("UNKNOWN_FILE",),
    commit_before_complete: ("UPLOAD_INCOMPLETE",),
    version_zero: ("BAD_VERSION",),
    domain_not_owned: ("DOMAIN_NOT_OWNED",),
    unsigned_extra_file: ("PACKAGE_EXTRA_FILE",),
    bad_sidecar: ("BAD_SIDECAR",),
    tensors_beyond_declared_stages: ("EXTRA_TENSOR",),
}


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES), ids=[c.__name__ for c in CASES])
def test_rejected_with_its_code_and_leaves_nothing(world, case):
    code = case(world)
    assert code in CASES[case], f"{case.__name__}: got {code}, expected {CASES[case]}"
    federation = world.federation
    with federation.registry.session() as session:
        experts = session.scalars(select(Expert)).all()
        assert [(e.domain, e.version) for e in experts] == [("test-vowels", 1)], "a bad package became an expert"
        assert all(s.state in ("ACCEPTED", "REJECTED") for s in session.scalars(select(Submission)))
    blobs = BlobStore(federation.settings.blob_dir)
    assert blobs.digests() <= world.accepted_files, "bytes of a rejected package stayed in the blob store"
    uploads = Uploads(federation.registry, federation.settings, blobs)
    uploads.expire(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    uploads.close()  # the discarded bytes are deleted
    leftovers = [p for p in federation.settings.staging_dir.rglob("*") if p.is_file()]
    assert leftovers == [], f"staged bytes remain: {leftovers[:3]}"


def test_manifest_bytes_are_parsed_strictly(world):
    """The same parser the coordinator uses refuses the v1 manifest once tampered (sanity for the cases above)."""
    data = (world.work.parent / "v1" / MANIFEST_FILE).read_bytes()
    assert parse_manifest(data).version == 1
