"""`barfed node package` on the node: which expert, under which version, checked against the anchor this node holds,
then built and signed (package.py), with a calibration sample and eval set or, sharing no data, the router row
computed here. packages.json records what each package was built from, so a rerun finds it built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bar_model.card import expert_card
from contributor_node.anchor import anchor_changed, our_anchor
from contributor_node.home import NodeHome, read_json, write_json
from contributor_node.settings import NodeSettings
from contributor_node.versions import expert_to_package, package_version
from protocol.errors import BarFedError


@dataclass(frozen=True)
class PackagePlan:
    home: NodeHome
    domain: str
    version: int
    expert_version: int
    card: dict  # the expert's bar_expert.json
    made: dict  # what the package is built from: the expert (its creation time) and whether it shares data

    @property
    def name(self) -> str:
        return f"{self.domain}-v{self.version}"

    @property
    def out(self) -> Path:
        return self.home.package(self.domain, self.version)


def plan_package(
    home: NodeHome, domain: str, version: int | None, expert_version: int | None, calibration: bool
) -> PackagePlan:
    """What `package` would build; PACKAGE_EXISTS when that version holds another build."""
    expert_version = expert_to_package(home, domain, expert_version)
    card = expert_card(home.expert(domain, expert_version))
    ours = our_anchor(home)
    if card["anchor_fingerprint"] != ours:
        raise anchor_changed(card["anchor_fingerprint"], ours)
    made = {"expert_created_at": card["created_at"], "calibration": calibration}
    plan = PackagePlan(home, domain, package_version(home, domain, made, version), expert_version, card, made)
    if plan.out.exists() and read_json(home.record("packages"), {}).get(plan.name) != made:
        raise BarFedError(
            "PACKAGE_EXISTS",
            f"{plan.out} holds another build of {domain} v{plan.version}; give --version {plan.version + 1} or "
            "move it aside.",
        )
    return plan


def build(settings: NodeSettings, plan: PackagePlan, scores: dict | None) -> int | None:
    """Build and sign the planned package, with the local ``scores`` if any, and record it: how many calibration
    examples it shares (None: none, the router row was computed here)."""
    # torch (and, for the router row, transformers): only once there is a package to build
    from bar_model.calibration import stratified_sample
    from bar_model.domains import get_domain
    from bar_model.recipe import load_router_recipe
    from contributor_node.identity import NodeIdentity
    from contributor_node.package import build_package

    router_recipe = load_router_recipe(settings.router_recipe)
    expert = plan.home.expert(plan.domain, plan.expert_version)
    calibration = eval_set = replace = None
    if plan.made["calibration"]:
        calibration = stratified_sample([plan.domain], router_recipe)
        eval_set = get_domain(plan.domain).eval_set(plan.card["recipe"]["eval_examples"], seed=1)
    else:
        from contributor_node.privacy_router import privacy_router_rows

        replace = privacy_router_rows(plan.home.anchor, expert, plan.domain, router_recipe)
    build_package(
        expert,
        plan.out,
        org=settings.org_id,
        version=plan.version,
        private_key=NodeIdentity(settings.home, settings.org_id).key_path,
        calibration=calibration,
        eval_set=eval_set,
        eval_scores=scores["scores"] if scores else None,
        replace_tensors=replace,
    )
    write_json(plan.home.record("packages"), {**read_json(plan.home.record("packages"), {}), plan.name: plan.made})
    return len(calibration) if calibration is not None else None
