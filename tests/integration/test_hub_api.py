"""The Hub-compatible read API against a real coordinator on loopback (HTTPS with the federation's CA), on SQLite
and PostgreSQL: stock huggingface_hub and transformers, in subprocesses with HF_ENDPOINT, HF_TOKEN and
SSL_CERT_FILE set as a user would, download and load a real r1 by rN, channel and commit id; the Hub's error
shapes reach the client as its own exception classes; a revoked token is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from coordinator.embedded import running_coordinator
from coordinator.setup import initialize
from coordinator.state import releases as state
from coordinator.state import tokens

from .conftest import fresh_database
from .release_helpers import accept, build, coordinator_for, package, release_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = "barfed/federation"


@dataclass
class Served:
    api: str
    ca: Path
    token: str
    revoked: str
    commit: str
    files: dict[str, int]  # name -> size, from the release directory itself
    home: Path


@pytest.fixture(scope="module", params=["sqlite"])
def served(request, micro, say_experts, tmp_path_factory):
    """One real r1 (a single micro expert), served by a running coordinator for the whole module. SQLite only: the
    Hub routes read releases through the same resolvers as the downloads, which test_api_downloads runs on both
    databases, and each case here loads transformers in a subprocess (minutes of the suite per database)."""
    root = tmp_path_factory.mktemp(f"hub-{request.param}")
    with fresh_database(request.param, root) as db_url:
        settings = release_settings(root, db_url)
        initialize(settings, micro["branch"])
        coordinator = coordinator_for(settings)
        accept(coordinator, package(coordinator, say_experts["yes"], "org-yes", 1, root / "pkg-yes"), "org-yes")
        build(coordinator, root)
        token, _ = tokens.create(coordinator.registry, "org", "test", org_id="org-yes")
        revoked, row = tokens.create(coordinator.registry, "auditor", "test")
        tokens.revoke(coordinator.registry, row.id, "test")
        commit = state.commit_id(state.resolve(coordinator.registry, "r1"))
        release = settings.releases_dir / "r1"
        files = {p.name: p.stat().st_size for p in release.iterdir()}
        with running_coordinator(settings) as address:
            yield Served(address.api, settings.pki_dir / "ca.pem", token, revoked, commit, files, root)
        coordinator.registry.dispose()


def hub_env(served: Served, tmp_path: Path, token: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=served.api, SSL_CERT_FILE=str(served.ca), HF_HOME=str(tmp_path / "hf-home"))
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_client(script: str, env: dict, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


LOAD = """
    import json, os, sys
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM, AutoTokenizer

    repo, cache, out = sys.argv[1], sys.argv[2], {}
    for revision in sys.argv[3:]:
        folder = snapshot_download(repo, revision=revision, cache_dir=os.path.join(cache, "snap-" + revision[:8]))
        loads = os.path.join(cache, "tf-" + revision[:8])
        model = AutoModelForCausalLM.from_pretrained(repo, revision=revision, cache_dir=loads)
        tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision, cache_dir=loads)
        prompt = tokenizer("yes yes yes yes yes yes 12", return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=3, do_sample=False)
        out[revision] = {
            "files": {name: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)},
            "class": type(model).__name__,
            "new_tokens": int(generated.shape[1] - prompt["input_ids"].shape[1]),
            "commit": os.path.basename(os.path.realpath(folder)),
        }
    print(json.dumps(out))
"""


def test_stock_hub_client_and_transformers_load_r1_by_release_channel_and_commit(served, tmp_path):
    result = run_client(
        LOAD, hub_env(served, tmp_path, served.token), REPO, str(tmp_path / "c"), "r1", "stable", served.commit
    )
    for revision in ("r1", "stable", served.commit):
        got = result[revision]
        assert got["files"] == served.files, revision  # every file, model.sig included, byte for byte in size
        assert got["class"] == "FlexOlmoForCausalLM" and got["new_tokens"] > 0
        assert got["commit"] == served.commit  # the snapshot folder is named by the release's commit id


ERRORS = """
    import json, sys
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    repo, commit, cache = sys.argv[1], sys.argv[2], sys.argv[3]

    def outcome(call):
        try:
            value = call()
            return {"ok": True, "value": value}
        except HfHubHTTPError as exc:
            got = exc.response
            code = got.headers.get("x-barfed-error-code")
            return {"ok": False, "type": type(exc).__name__, "status": got.status_code, "text": str(exc), "code": code}

    api = HfApi()
    out = {
        "info": outcome(lambda: [api.model_info(repo, revision="stable").sha, api.model_info(repo).sha]),
        "files": outcome(lambda: sorted(api.list_repo_files(repo, revision="r1"))),
        "other_repo": outcome(lambda: api.model_info("someone/else", revision="r1").sha),
        "no_revision": outcome(lambda: api.model_info(repo, revision="r99").sha),
        "no_file": outcome(lambda: hf_hub_download(repo, "adapter_config.json", revision="r1", cache_dir=cache)),
        "no_folder": outcome(lambda: list(api.list_repo_tree(repo, "additional_chat_templates", revision="r1"))),
        "snapshot": outcome(lambda: snapshot_download(repo, revision=commit, cache_dir=cache + "-s") and "done"),
    }
    print(json.dumps(out))
"""


def test_hub_errors_reach_the_client_as_its_own_exceptions(served, tmp_path):
    def args(who: str) -> tuple[str, ...]:  # a cache of its own: the client falls back on cached files
        return (REPO, served.commit, str(tmp_path / f"cache-{who}"))

    good = run_client(ERRORS, hub_env(served, tmp_path, served.token), *args("good"))
    assert good["info"]["value"] == [served.commit, served.commit]  # "main" (no revision) is the stable channel
    assert good["files"]["value"] == sorted(served.files)
    assert good["other_repo"]["type"] == "RepositoryNotFoundError" and good["other_repo"]["status"] == 404
    assert good["no_revision"]["type"] == "RevisionNotFoundError" and "UNKNOWN_RELEASE" in good["no_revision"]["text"]
    assert good["no_file"]["type"] == "RemoteEntryNotFoundError"  # transformers reads this as "file absent"
    assert good["no_folder"]["type"] == "RemoteEntryNotFoundError"
    assert good["snapshot"]["value"] == "done"

    revoked = run_client(ERRORS, hub_env(served, tmp_path, served.revoked), *args("revoked"))
    for name in ("info", "files", "no_file"):
        assert revoked[name]["type"] == "HfHubHTTPError" and revoked[name]["status"] == 401, revoked[name]
        assert "Invalid credentials" in revoked[name]["text"] and revoked[name]["code"] == "TOKEN_REVOKED"
    assert revoked["snapshot"]["ok"] is False and revoked["snapshot"]["status"] == 401

    anonymous = run_client(ERRORS, hub_env(served, tmp_path, None), *args("anonymous"))
    assert anonymous["info"]["type"] == "RepositoryNotFoundError" and anonymous["info"]["status"] == 401
    assert "HF_TOKEN" in anonymous["info"]["text"]


def test_resolve_headers_ranges_and_the_public_release_key(served):
    client = httpx.Client(base_url=served.api, verify=str(served.ca), timeout=30)
    auth = {"Authorization": f"Bearer {served.token}"}
    files = client.get("/v1/releases/r1/files", headers=auth).json()["files"]
    config = next(f for f in files if f["path"] == "config.json")

    head = client.head(f"/{REPO}/resolve/stable/config.json", headers=auth)
    assert head.status_code == 200 and head.headers["x-repo-commit"] == served.commit
    assert head.headers["etag"] == head.headers["x-linked-etag"] == f'"{config["sha256"]}"'
    assert int(head.headers["x-linked-size"]) == int(head.headers["content-length"]) == config["size"]
    whole = client.get(f"/{REPO}/resolve/{served.commit}/config.json", headers=auth).content
    part = client.get(f"/{REPO}/resolve/r1/config.json", headers={**auth, "Range": "bytes=10-"})
    assert part.status_code == 206 and part.content == whole[10:]
    cached = client.get(f"/{REPO}/resolve/r1/config.json", headers={**auth, "If-None-Match": head.headers["etag"]})
    assert cached.status_code == 304

    missing = client.head(f"/{REPO}/resolve/r1/adapter_config.json", headers=auth)
    assert missing.status_code == 404 and missing.headers["x-error-code"] == "EntryNotFound"
    assert missing.headers["x-repo-commit"] == served.commit
    assert client.get("/api/models/someone/else", headers=auth).headers["x-error-code"] == "RepoNotFound"
    assert client.post(f"/api/models/{REPO}/revision/r1", headers=auth).status_code == 405  # read-only

    key = client.get("/v1/keys/release")  # public: no token
    pem = (served.home / "coordinator" / "pki" / "release.pub").read_text()
    assert key.status_code == 200 and key.json()["public_key_pem"] == pem
    assert key.json()["fingerprint"].startswith("sha256:")
