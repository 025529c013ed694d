"""`barfed demo`: a whole tiny federation on one machine, on embedded defaults (SQLite, local blobs, no services).

1. the tiny base and anchor are built and branched into the 2-expert training anchor;
2. a coordinator is initialised (CA, keys, registry) and publishes that anchor, serving gRPC on loopback;
3. two organizations enroll over TLS with their own keys, fetch the anchor over mutual TLS and check the
   coordinator's signature, each train an expert (math, tool_use) through mid-training, SFT and GRPO,
   package and sign it, and submit it; the coordinator verifies and accepts both;
4. the coordinator merges the accepted experts with the anchor and trains the router;
5. anchor, experts and the merged model are evaluated on every core domain.

Every step is skipped when its output exists, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rich.console import Console

log = logging.getLogger(__name__)
ORGS = {"acme-labs": "math", "globex": "tool_use"}


def run_demo(home: Path, console: Console | None = None, recipes: str = "tiny") -> dict[str, dict[str, float]]:
    """Run the demo under ``home``; ``recipes="micro"`` is a seconds-long smoke run that learns nothing."""
    from sqlalchemy import select

    from bar_model.base import build_base
    from bar_model.branch import init_anchor
    from bar_model.cli import CORE_DOMAINS, score_table
    from bar_model.evaluate import evaluate, load_model
    from bar_model.expert import train_expert
    from bar_model.merge import merge_experts
    from bar_model.recipe import load_base_recipe, load_expert_recipe, load_router_recipe
    from bar_model.router import train_router
    from contributor_node.client import CoordinatorClient
    from contributor_node.identity import NodeIdentity
    from contributor_node.package import build_package
    from coordinator.blobs import BlobStore
    from coordinator.embedded import running_coordinator
    from coordinator.enrollment import approve, invite
    from coordinator.keys import CoordinatorKeys
    from coordinator.settings import load_settings
    from coordinator.setup import initialize
    from coordinator.state.db import Registry
    from coordinator.state.models import Expert
    from protocol.v1 import barfed_pb2 as pb

    console = console or Console()
    work = home / ("demo" if recipes == "tiny" else f"demo-{recipes}")
    started = time.perf_counter()
    console.rule("1/5 tiny base and anchor")
    base, anchor = build_base(load_base_recipe(recipes), work)
    branch = work / "anchor-2x"
    if not branch.exists():
        init_anchor(anchor, branch, base)

    console.rule("2/5 coordinator: CA, keys, registry, published anchor")
    settings = load_settings(home=work / "coordinator", listen="127.0.0.1:0", enroll_listen="127.0.0.1:0")
    fingerprint = initialize(settings, branch)
    console.print(f"anchor {fingerprint}")
    registry = Registry(settings.db_url)
    keys = CoordinatorKeys(settings.pki_dir)
    recipe = load_expert_recipe(recipes)
    with running_coordinator(settings) as address:
        console.print(f"coordinator on {address.service} (mTLS) and {address.enroll} (enrollment)")
        for org, domain in ORGS.items():
            console.rule(f"3/5 {org}: enroll, fetch anchor, train {domain}, package, submit")
            node = NodeIdentity(work / "nodes" / org, org)
            if not node.cert_path.is_file():
                token = invite(registry, org, [domain])
                with CoordinatorClient(address.enroll, ca_pem=keys.ca_cert_path.read_bytes()) as anonymous:
                    pending = anonymous.enroll(org, node.csr(), token, contact=f"ml@{org}.example")
                    approve(registry, keys, pending.enrollment_id, actor="demo-operator")
                    node.save_enrollment(anonymous.enrollment(pending.enrollment_id))
            with node.client(address.service) as client:
                node_anchor = node.home / "anchor"
                if not node_anchor.exists():
                    client.fetch_anchor(node_anchor, keys.release_public_path.read_bytes())
                expert = node.home / "experts" / domain
                if not expert.exists():
                    train_expert(node_anchor, domain, "mid,sft,rl", expert, recipe)
                with registry.session() as session:
                    accepted = session.scalar(select(Expert).where(Expert.domain == domain))
                if accepted is None:
                    package = node.home / "packages" / f"{domain}-v1"
                    if not package.exists():
                        build_package(expert, package, org=org, version=1, private_key=node.key_path)
                    status = client.wait(client.submit(package))
                    console.print(f"{org}/{domain} v1: {pb.SubmissionState.Name(status.state)} {status.error_code}")

    console.rule("4/5 coordinator: merge accepted experts, train the router")
    candidate = work / "release-candidate"
    if not candidate.exists():
        blobs = BlobStore(settings.blob_dir)
        with registry.session() as session:
            experts = session.scalars(select(Expert).where(Expert.status == "ACCEPTED").order_by(Expert.domain)).all()
        packages = [blobs.materialize(dict(e.files), work / "accepted" / e.domain) for e in experts]
        merged = work / "merged-unrouted"
        if not merged.exists():
            merge_experts(settings.anchor_dir, packages, merged)
        train_router(merged, candidate, load_router_recipe(recipes))
    registry.dispose()

    console.rule("5/5 evaluate")
    columns = {}
    checkpoints = {"anchor": anchor}
    checkpoints |= {f"{d} expert": work / "nodes" / o / "experts" / d for o, d in ORGS.items()}
    checkpoints["merged (BAR)"] = candidate
    for name, path in checkpoints.items():
        model, tokenizer = load_model(path)
        columns[name] = evaluate(model, tokenizer, list(CORE_DOMAINS), n=recipe.eval_examples)
    console.print(score_table(columns, title="held-out score (0-100)"))
    console.print(f"demo finished in {time.perf_counter() - started:.0f}s; files in {work}")
    return columns
