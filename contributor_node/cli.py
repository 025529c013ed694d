"""`barfed node …`: an organization's node, from its key to its accepted expert, one resumable command at a time.

Every command can be rerun: it skips what is done (records in the node home, contributor_node/home.py) and
continues what was interrupted (an anchor download, training from its checkpoints, an upload session). Every
refusal is a `BarFedError`: a stable code and what to do, exit status 2. Heavy modules (torch, grpc) are
imported inside the commands, so `barfed --help` stays fast.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from contributor_node.home import NodeHome, read_json, write_json
from contributor_node.settings import CONFIG_FILE, NodeSettings, load_node_settings, node_home, write_config
from protocol.errors import BarFedError

app = typer.Typer(
    help="An organization's node: enroll, fetch the anchor, train, package, submit.", no_args_is_help=True
)
console = Console(soft_wrap=True)  # paths and ids stay on one line, for scripts
err_console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger(__name__)

DomainOption = Annotated[
    str | None, typer.Option(help="the expert's domain (default: the one domain this organization was granted)")
]


@app.callback()
def node(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(help="the node's directory (default: $BARFED_NODE_HOME, else .barfed/node)", show_default=False),
    ] = None,
) -> None:
    ctx.obj = node_home(home)


def refusals(command):
    """A full disk becomes DISK_FULL and an unreachable coordinator says which address it tried."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise BarFedError(
                "DISK_FULL",
                f"no space left on the device holding {exc.filename or 'the node home'}; free some and rerun "
                "the command: it continues where it stopped.",
            ) from None

    return run


# -- helpers -------------------------------------------------------------------------------------


def _settings(ctx: typer.Context) -> NodeSettings:
    return load_node_settings(ctx.obj)


def _identity(settings: NodeSettings):
    from contributor_node.identity import NodeIdentity

    return NodeIdentity(settings.home, settings.org_id)


def _client(settings: NodeSettings):
    """An mTLS client as this organization, after the local checks a TLS failure would hide."""
    identity = _identity(settings)
    identity.check_certificate()
    return identity.client(settings.service_address, timeout=settings.call_timeout_s)


def _unreachable(settings: NodeSettings, address: str, exc: BarFedError) -> BarFedError:
    return BarFedError(
        "COORDINATOR_UNREACHABLE",
        f"the coordinator at {address} did not answer ({exc.message}); check the address in "
        f"{settings.home / CONFIG_FILE} and that the coordinator is running, then rerun: the command resumes.",
    )


def _retrying(settings: NodeSettings, address: str, call):
    """``call()``, retried with backoff and jitter while the coordinator is unreachable, up to retry_for_s."""
    from contributor_node.backoff import backoff_delays

    deadline = time.monotonic() + settings.retry_for_s
    delays = backoff_delays(cap=30.0)
    while True:
        try:
            return call()
        except BarFedError as exc:
            if exc.code != "COORDINATOR_UNREACHABLE":
                raise
            delay = next(delays)
            if time.monotonic() + delay > deadline:
                raise _unreachable(settings, address, exc) from None
            err_console.print(f"coordinator unreachable; retrying in {delay:.1f}s", highlight=False)
            time.sleep(delay)


def _domain(settings: NodeSettings, domain: str | None) -> str:
    if domain:
        return domain
    granted = read_json(NodeHome(settings.home).record("enrollment"), {}).get("domains", [])
    if len(granted) == 1:
        return granted[0]
    raise BarFedError(
        "DOMAIN_REQUIRED",
        f"this organization may publish {granted or 'no domain yet'}; name one with --domain.",
    )


def _anchor_fingerprint(home: NodeHome) -> str:
    record = read_json(home.record("anchor"))
    if record is None or not home.anchor.is_dir():
        raise BarFedError("NO_ANCHOR", "this node has no verified anchor yet; run `barfed node fetch-anchor`.")
    return record["fingerprint"]


def _anchor_changed(ours: str, theirs: str) -> BarFedError:
    return BarFedError(
        "ANCHOR_CHANGED",
        f"the coordinator now publishes anchor {theirs}, but this node has {ours}; move the node's anchor/ "
        "aside, run `barfed node fetch-anchor`, then train, package and submit against the new anchor.",
    )


def _transfer_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


def _quiet_libraries() -> None:
    """Training libraries' INFO and warning chatter only with `barfed --verbose`."""
    if logging.getLogger().level <= logging.DEBUG:
        return
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")


# -- identity ------------------------------------------------------------------------------------


@app.command()
@refusals
def init(
    ctx: typer.Context,
    org: Annotated[str, typer.Option(help="this organization's id, as its invitation names it")],
    service: Annotated[str, typer.Option(help="host:port of the coordinator's gRPC service (mutual TLS)")],
    enroll: Annotated[str, typer.Option(help="host:port of the coordinator's enrollment port")],
    ca: Annotated[Path, typer.Option(help="the federation's CA certificate (pki/ca.pem), handed over out of band")],
    release_key: Annotated[
        Path, typer.Option(help="the coordinator's release public key (pki/release.pub): signs the anchor, releases")
    ],
) -> None:
    """Create the node: its settings, the pinned CA and release key, and the organization's private key (0600),
    which never leaves this machine. Rerunning with the same organization only updates the addresses."""
    import tomllib

    from contributor_node.identity import NodeIdentity
    from protocol import pki

    home: Path = ctx.obj
    pki.check_org_id(org)
    pins = {}
    for name, path, load in (("ca.pem", ca, pki.load_certificate), ("release.pub", release_key, pki.load_public_key)):
        if not path.is_file():
            raise BarFedError("FILE_NOT_FOUND", f"{path} does not exist; give the file the operator handed over.")
        load(path.read_bytes())
        pins[name] = path.read_bytes()
    config = home / CONFIG_FILE
    if config.is_file():
        existing = tomllib.loads(config.read_text()).get("org_id")
        if existing != org:
            raise BarFedError("NODE_EXISTS", f"{home} is the node of {existing!r}; give another --home for {org!r}.")
    enrolled = (home / "org.pem").is_file()
    for name, content in pins.items():
        pinned = home / name
        if enrolled and pinned.is_file() and pinned.read_bytes().strip() != content.strip():
            raise BarFedError(
                "PIN_CHANGED",
                f"{pinned} differs from {name} given; this node is enrolled under the one it has. Use another --home "
                "to join another federation.",
            )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, content in pins.items():
        (home / name).write_bytes(content)
    write_config(home, {"org_id": org, "service_address": service, "enroll_address": enroll})
    identity = NodeIdentity(home, org)
    created = not identity.key_path.is_file()
    identity.ensure_key()
    fingerprint = pki.public_key_fingerprint(pki.load_private_key(identity.key_path))
    console.print(f"node of {org} ready in {home}")
    console.print(f"{'created' if created else 'kept'} key {identity.key_path} ({fingerprint}); it never leaves here")
    console.print("next: barfed node enroll --token TOKEN --wait")


@app.command()
@refusals
def enroll(
    ctx: typer.Context,
    token: Annotated[str | None, typer.Option(help="the one-time token of the invitation")] = None,
    wait: Annotated[bool, typer.Option(help="wait until an operator approves or rejects")] = False,
    contact: Annotated[str, typer.Option(help="who the operator may contact (shown when approving)")] = "",
    timeout: Annotated[float | None, typer.Option(help="seconds --wait waits (default: wait_timeout_s)")] = None,
) -> None:
    """Send a certificate request for this node's key with the invitation token; with --wait, poll until the
    enrollment is decided and store the certificate. Rerunning asks about the same enrollment."""
    from contributor_node.client import CoordinatorClient
    from protocol import pki
    from protocol.v1 import barfed_pb2 as pb

    settings = _settings(ctx)
    home, identity = NodeHome(settings.home), _identity(settings)
    try:
        cert = identity.check_certificate()
        console.print(f"already enrolled: certificate valid until {cert.not_valid_after_utc:%Y-%m-%d} UTC")
        return
    except BarFedError as exc:
        if exc.code not in ("NOT_ENROLLED", "CERT_EXPIRED"):
            raise
    record = read_json(home.record("enrollment"))
    token_sha = hashlib.sha256(token.encode()).hexdigest() if token else None
    ca_pem = settings.ca_path.read_bytes()

    def ask() -> pb.Enrollment:
        nonlocal record
        with CoordinatorClient(settings.enroll_address, ca_pem=ca_pem, timeout=settings.call_timeout_s) as anonymous:
            if record is not None and token_sha in (None, record["token_sha256"]):
                return anonymous.enrollment(record["enrollment_id"])
            if token is None:
                raise BarFedError("TOKEN_REQUIRED", "give the invitation's one-time token: enroll --token TOKEN.")
            answer = anonymous.enroll(settings.org_id, identity.csr(), token, contact)
            record = {"enrollment_id": answer.enrollment_id, "token_sha256": token_sha, "domains": []}
            write_json(home.record("enrollment"), record)
            return answer

    enrollment = _retrying(settings, settings.enroll_address, ask)
    deadline = time.monotonic() + (timeout or settings.wait_timeout_s)
    if wait and enrollment.state == pb.ENROLLMENT_PENDING:
        with console.status(f"enrollment {enrollment.enrollment_id} waits for an operator's approval"):
            while enrollment.state == pb.ENROLLMENT_PENDING and time.monotonic() < deadline:
                time.sleep(settings.poll_s)
                enrollment = _retrying(settings, settings.enroll_address, ask)
    if enrollment.state == pb.ENROLLMENT_APPROVED:
        issued_ca = pki.load_certificate(enrollment.ca_certificate_pem.encode())
        if pki.certificate_fingerprint(issued_ca) != pki.certificate_fingerprint(pki.load_certificate(ca_pem)):
            raise BarFedError("PIN_CHANGED", "the enrollment answer names another CA than the one pinned at init.")
        identity.save_enrollment(enrollment)
        write_json(home.record("enrollment"), {**record, "domains": list(enrollment.domains)})
        cert = identity.check_certificate()
        console.print(
            f"enrolled {settings.org_id}: may publish {', '.join(enrollment.domains)}; certificate valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d} UTC"
        )
        console.print("next: barfed node fetch-anchor")
    elif enrollment.state == pb.ENROLLMENT_PENDING:
        console.print(
            f"enrollment {enrollment.enrollment_id} is pending an operator's approval; "
            "rerun `barfed node enroll --wait` to follow it"
        )
    elif enrollment.state == pb.ENROLLMENT_REJECTED:
        raise BarFedError(
            "ENROLLMENT_REJECTED",
            f"the operator rejected enrollment {enrollment.enrollment_id}: {enrollment.reason or 'no reason given'}; "
            "ask for a new invitation and run `barfed node enroll --token NEW`.",
        )
    else:
        raise BarFedError(
            "ENROLLMENT_REVOKED",
            f"enrollment {enrollment.enrollment_id} was revoked: {enrollment.reason or 'no reason given'}; "
            "contact the federation operator.",
        )


# -- anchor --------------------------------------------------------------------------------------


@app.command("fetch-anchor")
@refusals
def fetch_anchor(ctx: typer.Context) -> None:
    """Download the federation's anchor over mTLS and verify the coordinator's release signature before it is
    used; an interrupted download continues without fetching again what it already has."""
    from contributor_node.throttle import Throttle

    settings = _settings(ctx)
    home = NodeHome(settings.home)
    release_pub = settings.release_key_path.read_bytes()
    with _client(settings) as client:
        if home.anchor.is_dir() and read_json(home.record("anchor")):
            ours = _anchor_fingerprint(home)
            theirs = _retrying(settings, settings.service_address, client.anchor_manifest).fingerprint
            if theirs != ours:
                raise _anchor_changed(ours, theirs)
            console.print(f"anchor {ours} is here and current")
            return
        throttle = Throttle(settings.max_bytes_per_s)
        received = {"bytes": 0}
        with _transfer_progress() as progress:
            task = progress.add_task("anchor", total=None)

            def on_bytes(path: str, nbytes: int, done: int, size: int) -> None:
                received["bytes"] += nbytes
                progress.update(task, description=path, completed=done, total=size)
                throttle.wait(nbytes)

            fingerprint = _retrying(
                settings,
                settings.service_address,
                lambda: client.fetch_anchor(home.anchor, release_pub, on_bytes=on_bytes),
            )
    write_json(home.record("anchor"), {"fingerprint": fingerprint, "fetched_at": int(time.time())})
    console.print(f"anchor {fingerprint}: signature verified with {settings.release_key_path}")
    console.print(f"downloaded {received['bytes']} bytes")


# -- training ------------------------------------------------------------------------------------


@app.command()
@refusals
def train(
    ctx: typer.Context,
    domain: DomainOption = None,
    recipe: Annotated[str | None, typer.Option(help="expert recipe: a name (tiny, micro) or a TOML file")] = None,
    stages: Annotated[str, typer.Option(help="comma-separated, in order")] = "mid,sft,rl",
    version: Annotated[int, typer.Option(help="which expert version this training makes", min=1)] = 1,
    from_version: Annotated[
        int | None, typer.Option(help="improve this earlier version (train further from it) instead of the anchor")
    ] = None,
) -> None:
    """Train this organization's expert on the anchor through mid-training, SFT and RL (bar_model's stages), or
    improve an earlier version with `--version 2 --from-version 1 --stages sft --recipe …`.

    Resumes from the last checkpoint when interrupted. On GPUs run it under accelerate (HF Trainer and TRL
    underneath): `accelerate launch -m barfed.cli node train …`; on CPU or one GPU run it as is."""
    settings = _settings(ctx)
    home = NodeHome(settings.home)
    domain = _domain(settings, domain)
    _anchor_fingerprint(home)
    start = home.anchor
    if from_version is not None:
        start = home.expert(domain, from_version)
        if from_version >= version or not start.is_dir():
            raise BarFedError(
                "BAD_VERSION",
                f"--from-version must name an earlier expert this node trained (have: "
                f"{home.expert_versions(domain) or 'none'}); train v{version} from one of them.",
            )
    from bar_model.card import expert_card
    from bar_model.recipe import load_expert_recipe, parse_stages

    chosen = load_expert_recipe(recipe or settings.recipe)
    out = home.expert(domain, version)
    if out.exists():  # decided before torch is imported, so a rerun with nothing to do answers at once
        card = expert_card(out)
        declared = set(parse_stages(stages)) | set(expert_card(start)["stages"] if from_version else ())
        if card["recipe"] == chosen.model_dump() and set(card["stages"]) == declared:
            console.print(f"{domain} expert already trained (v{version}): {out}")
            return
        raise BarFedError(
            "EXPERT_EXISTS",
            f"{out} was trained with another recipe or stages; give another --version, or package it as is.",
        )
    _quiet_libraries()
    from bar_model.expert import train_expert

    train_expert(start, domain, stages, out, chosen, progress=False)  # one log line per stage, with its time
    console.print(f"{domain} expert trained (v{version}): {out}")
    console.print(f"next: barfed node eval --version {version}, then barfed node package --version {version}")


@app.command("eval")
@refusals
def eval_command(
    ctx: typer.Context,
    domain: DomainOption = None,
    n: Annotated[int | None, typer.Option(help="held-out problems per domain (default: the recipe's)", min=1)] = None,
    version: Annotated[int, typer.Option(help="which expert version to score", min=1)] = 1,
) -> None:
    """Score the trained expert on its domain and the core domains; `package` records the scores."""
    settings = _settings(ctx)
    home = NodeHome(settings.home)
    domain = _domain(settings, domain)
    from bar_model.card import expert_card
    from bar_model.cli import CORE_DOMAINS, score_table

    card = expert_card(home.expert(domain, version))
    n = n or card["recipe"]["eval_examples"]
    saved = read_json(home.scores(domain, version))
    if not (saved and saved["expert_created_at"] == card["created_at"] and saved["n"] == n):
        _quiet_libraries()
        from bar_model.evaluate import evaluate, load_model

        model, tokenizer = load_model(home.expert(domain, version))
        domains = [domain, *(d for d in CORE_DOMAINS if d != domain)]
        with console.status(f"scoring the {domain} expert on {n} problems of {len(domains)} domains"):
            scores = evaluate(model, tokenizer, domains, n=n)
        saved = {"scores": scores, "n": n, "expert_created_at": card["created_at"]}
        write_json(home.scores(domain, version), saved)
    console.print(
        score_table({f"{domain} expert v{version}": saved["scores"]}, title=f"held-out score (0-100), n = {n}")
    )


# -- package and submit --------------------------------------------------------------------------


@app.command()
@refusals
def package(
    ctx: typer.Context,
    domain: DomainOption = None,
    version: Annotated[int | None, typer.Option(help="expert version (default: the next one)", min=1)] = None,
    no_calibration: Annotated[
        bool,
        typer.Option(
            "--no-calibration",
            help="share no data: no calibration sample or eval set; the router row comes from this node's own "
            "data (mean hidden states), and the coordinator keeps it",
        ),
    ] = False,
    expert_version: Annotated[
        int | None, typer.Option("--expert", help="which trained expert version to package (default: the newest)")
    ] = None,
) -> None:
    """Build and sign the expert's package with the organization's key: the tensors its stages changed, a
    stratified calibration sample and a held-out eval set (unless --no-calibration), and the local scores."""
    settings = _settings(ctx)
    home = NodeHome(settings.home)
    domain = _domain(settings, domain)
    from bar_model.card import expert_card

    trained = home.expert_versions(domain)
    if not trained or (expert_version is not None and expert_version not in trained):
        raise BarFedError(
            "NO_EXPERT",
            f"no {domain} expert {f'v{expert_version} ' if expert_version else ''}on this node; "
            "run `barfed node train` first.",
        )
    expert_version = expert_version or trained[-1]
    expert = home.expert(domain, expert_version)
    card = expert_card(expert)
    ours = _anchor_fingerprint(home)
    if card["anchor_fingerprint"] != ours:
        raise _anchor_changed(card["anchor_fingerprint"], ours)
    built = read_json(home.record("packages"), {})
    made = {"expert_created_at": card["created_at"], "calibration": not no_calibration}
    if version is None:
        mine = [v for v in home.package_versions(domain) if built.get(f"{domain}-v{v}") == made]
        submitted = [s["version"] for s in read_json(home.record("submissions"), {}).values() if s["domain"] == domain]
        version = mine[-1] if mine else max([*home.package_versions(domain), *submitted], default=0) + 1
    out = home.package(domain, version)
    name = f"{domain}-v{version}"
    if out.exists():
        if built.get(name) != made:
            raise BarFedError(
                "PACKAGE_EXISTS",
                f"{out} holds another build of {domain} v{version}; give --version {version + 1} or move it aside.",
            )
        console.print(f"package {name} already built: {out}")
        return
    scores = read_json(home.scores(domain, expert_version))
    if scores is None or scores["expert_created_at"] != card["created_at"]:
        err_console.print("no local scores for this expert (run `barfed node eval` first); packaging without them")
        scores = None
    from bar_model.calibration import stratified_sample
    from bar_model.domains import get_domain
    from bar_model.recipe import load_router_recipe
    from contributor_node.identity import NodeIdentity
    from contributor_node.package import build_package

    router_recipe = load_router_recipe(settings.router_recipe)
    calibration = eval_set = replace = None
    with console.status(f"packaging {name}"):
        if no_calibration:
            _quiet_libraries()  # the privacy row runs the anchor: the one packaging path that loads transformers
            from contributor_node.privacy_router import privacy_router_rows

            replace = privacy_router_rows(home.anchor, expert, domain, router_recipe)
        else:
            calibration = stratified_sample([domain], router_recipe)
            eval_set = get_domain(domain).eval_set(card["recipe"]["eval_examples"], seed=1)
        build_package(
            expert,
            out,
            org=settings.org_id,
            version=version,
            private_key=NodeIdentity(settings.home, settings.org_id).key_path,
            calibration=calibration,
            eval_set=eval_set,
            eval_scores=scores["scores"] if scores else None,
            replace_tensors=replace,
        )
    write_json(home.record("packages"), {**built, name: made})
    shared = "no data (privacy router row)" if no_calibration else f"{len(calibration)} calibration examples"
    console.print(f"package {name} built and signed: {out} ({shared})")
    console.print("next: barfed node submit --wait")


@app.command()
@refusals
def submit(
    ctx: typer.Context,
    domain: DomainOption = None,
    version: Annotated[int | None, typer.Option(help="package version (default: the newest)", min=1)] = None,
    wait: Annotated[bool, typer.Option(help="follow the submission until it is accepted or rejected")] = False,
    timeout: Annotated[float | None, typer.Option(help="seconds --wait waits (default: wait_timeout_s)")] = None,
) -> None:
    """Upload the package (resumable, with progress, retried with backoff while the coordinator is unreachable)
    and commit it; a rerun after any crash continues the same upload session."""
    from contributor_node.throttle import Throttle
    from protocol.package import read_package

    settings = _settings(ctx)
    home = NodeHome(settings.home)
    domain = _domain(settings, domain)
    versions = home.package_versions(domain)
    if not versions:
        raise BarFedError("NO_PACKAGE", f"no {domain} package on this node; run `barfed node package`.")
    version = version or versions[-1]
    name, package_dir = f"{domain}-v{version}", home.package(domain, version)
    if not package_dir.is_dir():
        raise BarFedError(
            "NO_PACKAGE", f"no package {name} on this node; run `barfed node package --version {version}`."
        )
    submissions = read_json(home.record("submissions"), {})
    with _client(settings) as client:
        if name in submissions:
            submission_id = submissions[name]["submission_id"]
            console.print(f"{name} was already submitted as {submission_id}")
        else:
            manifest = read_package(package_dir, check_digests=False)
            if manifest.org != settings.org_id:
                raise BarFedError(
                    "PACKAGE_NOT_OURS", f"{package_dir} is signed for {manifest.org}, not this node's org."
                )
            ours = _anchor_fingerprint(home)
            if manifest.anchor_fingerprint != ours:
                raise _anchor_changed(manifest.anchor_fingerprint, ours)
            theirs = _retrying(settings, settings.service_address, client.anchor_manifest).fingerprint
            if theirs != ours:
                raise _anchor_changed(ours, theirs)
            upload_record = home.upload(domain, version)
            total = sum(p.stat().st_size for p in package_dir.iterdir() if p.is_file())
            throttle = Throttle(settings.max_bytes_per_s)
            sent: dict[str, int] = {}
            with _transfer_progress() as progress:
                task = progress.add_task(f"upload {name}", total=total)

                def on_chunk(path: str, offset: int, size: int) -> None:
                    chunk = min(settings.chunk_bytes or size, size - offset)
                    throttle.wait(chunk)
                    sent[path] = offset + chunk
                    progress.update(task, completed=sum(sent.values()))

                def upload() -> str:
                    saved = read_json(upload_record)
                    return client.submit(
                        package_dir,
                        chunk_bytes=settings.chunk_bytes,
                        on_chunk=on_chunk,
                        session=(saved["session_id"], saved["max_chunk_bytes"]) if saved else None,
                        on_session=lambda sid, most: write_json(
                            upload_record, {"session_id": sid, "max_chunk_bytes": most}
                        ),
                    )

                submission_id = _retrying(settings, settings.service_address, upload)
            submissions[name] = {"submission_id": submission_id, "domain": domain, "version": version}
            write_json(home.record("submissions"), submissions)
            upload_record.unlink(missing_ok=True)
            console.print(f"{name} submitted as {submission_id}")
        if wait:
            _follow(settings, client, name, submission_id, timeout or settings.wait_timeout_s)


def _follow(settings: NodeSettings, client, name: str, submission_id: str, timeout: float) -> None:
    from protocol.v1 import barfed_pb2 as pb

    with console.status(f"{name}: the coordinator verifies it"):
        status = _retrying(settings, settings.service_address, lambda: client.wait(submission_id, timeout=timeout))
    state = pb.SubmissionState.Name(status.state)
    if status.state == pb.REJECTED:
        raise BarFedError(
            status.error_code or "SUBMISSION_REJECTED",
            f"{name} was rejected: {status.message or 'no reason given'} Fix it, then package a new version "
            "(`barfed node package --version N`) and submit that.",
        )
    if status.state in (pb.RECEIVED, pb.VERIFYING):
        raise BarFedError(
            "STILL_VERIFYING",
            f"{name} is still {state} after {timeout:.0f}s; rerun `barfed node submit --wait` or check `barfed node "
            "status` later.",
        )
    console.print(f"{name}: {state}")


# -- following -----------------------------------------------------------------------------------


@app.command()
@refusals
def status(ctx: typer.Context) -> None:
    """This organization's submissions (recorded on this node) and their states at the coordinator."""
    from protocol.v1 import barfed_pb2 as pb

    settings = _settings(ctx)
    submissions = read_json(NodeHome(settings.home).record("submissions"), {})
    if not submissions:
        console.print("no submissions yet; `barfed node submit` makes one")
        return
    table = Table("package", "submission", "state", "code", "message")
    with _client(settings) as client:
        for name, record in sorted(submissions.items()):
            found = _retrying(
                settings, settings.service_address, lambda r=record: client.submission(r["submission_id"])
            )
            table.add_row(
                name, record["submission_id"], pb.SubmissionState.Name(found.state), found.error_code, found.message
            )
    console.print(table)


@app.command()
@refusals
def watch(
    ctx: typer.Context,
    after: Annotated[int | None, typer.Option(help="replay releases newer than rN (default: the last seen)")] = None,
    channel: Annotated[str, typer.Option(help="follow one channel's moves (default: every release)")] = "",
    once: Annotated[bool, typer.Option(help="stop after the first release")] = False,
    timeout: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
) -> None:
    """Follow releases as the coordinator publishes them (the WatchReleases stream); remembers the last seen."""
    settings = _settings(ctx)
    home = NodeHome(settings.home)
    seen = read_json(home.record("watch"), {"last_release": 0})
    last = seen["last_release"] if after is None else after
    with _client(settings) as client:
        for event in client.watch_releases(last, channel, timeout):
            published = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.published_at_unix))
            channels = f" [{', '.join(event.channels)}]" if event.channels else ""
            console.print(f"{event.name}{channels} published {published} UTC: {', '.join(event.domains)}")
            if event.release > seen["last_release"]:
                seen["last_release"] = event.release
                write_json(home.record("watch"), seen)
            if once:
                break
