"""`barfed demo`: a whole tiny federation on one machine, on embedded defaults (SQLite, local blobs, no services).

1. the tiny base and anchor are built and branched into the 2-expert training anchor;
2. a coordinator is initialised (CA, keys, registry) and publishes that anchor, serving gRPC on loopback with
   its task worker in-process;
3. two organizations enroll over TLS with their own keys, fetch the anchor over mutual TLS and check the
   coordinator's signature, each train an expert (math, tool_use) through mid-training, SFT and GRPO,
   package and sign it with a 5% calibration sample and a held-out eval set, and submit it; the coordinator's
   worker verifies and accepts both;
4. the coordinator builds release r1 as a job on its worker: merge, router training on the calibration samples,
   evaluation, gate, signature, publication;
5. anchor, experts and r1 (loaded from its published directory) are evaluated on every core domain.

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
    from bar_model.base import build_base
    from bar_model.branch import init_anchor
    from bar_model.cli import CORE_DOMAINS, score_table
    from bar_model.domains import get_domain
    from bar_model.evaluate import evaluate, load_model
    from bar_model.expert import train_expert
    from bar_model.recipe import load_base_recipe, load_expert_recipe, load_router_recipe
    from bar_model.router import stratified_sample
    from contributor_node.client import CoordinatorClient
    from contributor_node.identity import NodeIdentity
    from contributor_node.package import build_package
    from coordinator.embedded import running_coordinator
    from coordinator.enrollment import approve, invite
    from coordinator.keys import CoordinatorKeys
    from coordinator.release import actions
    from coordinator.settings import load_settings
    from coordinator.setup import initialize
    from coordinator.state import jobs
    from coordinator.state import releases as release_state
    from coordinator.state.db import Registry
    from protocol.errors import BarFedError
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
    recipe = load_expert_recipe(recipes)
    settings = load_settings(
        home=work / "coordinator",
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        router_recipe=recipes,
        eval_examples=recipe.eval_examples,
        auto_build=False,  # the demo asks for r1 once both experts are in
    )
    fingerprint = initialize(settings, branch)
    console.print(f"anchor {fingerprint}")
    registry = Registry(settings.db_url)
    keys = CoordinatorKeys(settings.pki_dir)
    router_recipe = load_router_recipe(recipes)
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
                if not any(e.domain == domain for e in release_state.expert_rows(registry)):
                    package = node.home / "packages" / f"{domain}-v1"
                    if not package.exists():
                        build_package(
                            expert,
                            package,
                            org=org,
                            version=1,
                            private_key=node.key_path,
                            calibration=stratified_sample([domain], router_recipe),
                            eval_set=get_domain(domain).eval_set(recipe.eval_examples, seed=1),
                        )
                    status = client.wait(client.submit(package))
                    console.print(f"{org}/{domain} v1: {pb.SubmissionState.Name(status.state)} {status.error_code}")

        console.rule("4/5 coordinator: build r1 (merge, router, evaluation, gate, signature) on its worker")
        if release_state.latest_release(registry) is None:
            job = actions.request_build(registry, {}, False, "demo-operator")
            while (job := jobs.get(registry, job.id)).state not in jobs.FINAL:
                time.sleep(1.0)
            if job.state != "done":
                message = job.error_message or f"the build ended {job.state}."
                raise BarFedError(job.error_code or "BUILD_FAILED", message)
        release = release_state.latest_release(registry)
        console.print(f"published r{release.number}: {', '.join(release.domains)}")
    registry.dispose()

    console.rule("5/5 evaluate")
    columns = {}
    checkpoints = {"anchor": anchor}
    checkpoints |= {f"{d} expert": work / "nodes" / o / "experts" / d for o, d in ORGS.items()}
    checkpoints[f"r{release.number} (BAR)"] = settings.releases_dir / f"r{release.number}"
    for name, path in checkpoints.items():
        model, tokenizer = load_model(path)
        columns[name] = evaluate(model, tokenizer, list(CORE_DOMAINS), n=recipe.eval_examples)
    console.print(score_table(columns, title="held-out score (0-100)"))
    console.print(f"demo finished in {time.perf_counter() - started:.0f}s; files in {work}")
    return columns
