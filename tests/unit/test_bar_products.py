"""The BAR table bench builds its products two at a time: in other processes, one thread each, in dependency order."""

from __future__ import annotations

import argparse
import os
import shutil

import torch

from bench.bar_products import Job, run_jobs, table_jobs
from bench.bar_table import pick_family


def test_jobs_run_in_one_thread_worker_processes_after_what_they_need(tmp_path):
    (tmp_path / "seed").write_text("x")
    jobs = {
        "first": Job(shutil.copyfile, (tmp_path / "seed", tmp_path / "first")),
        "second": Job(shutil.copyfile, (tmp_path / "first", tmp_path / "second"), ["first"]),
        "threads": Job(torch.get_num_threads, ()),
        "pid": Job(os.getpid, ()),
    }
    results = run_jobs(jobs, workers=2)
    assert (tmp_path / "second").read_text() == "x"
    assert results["threads"] == 1
    assert results["pid"] != os.getpid()


def test_every_table_job_comes_after_what_it_needs(tmp_path):
    """In dict order, so one worker (--jobs 1) builds the same products in a valid order."""
    jobs = table_jobs(tmp_path, tmp_path / "anchor", tmp_path / "branch", None, None, None, tmp_path / "s.json", 200)
    seen: set[str] = set()
    for name, job in jobs.items():
        assert set(job.after) <= seen, name
        seen.add(name)
    scored = [job.args[1] for name, job in jobs.items() if name.startswith("score ")]
    assert len(scored) == len(set(scored)) == 12  # anchor, 5 experts, average, BTX, multitask, 3 BAR models


def test_family_picks_its_three_recipes():
    args = argparse.Namespace(family="medium", base_recipe="tiny", expert_recipe="tiny", router_recipe="tiny")
    pick_family(args)
    assert (args.base_recipe, args.expert_recipe, args.router_recipe) == ("medium", "medium", "medium")
    args = argparse.Namespace(family="small", base_recipe="tiny", expert_recipe="tiny", router_recipe="tiny")
    pick_family(args)  # there is no router-small: the tiny router
    assert (args.base_recipe, args.expert_recipe, args.router_recipe) == ("small", "small", "tiny")
    args = argparse.Namespace(family=None, base_recipe="tiny", expert_recipe="x.toml", router_recipe="tiny")
    pick_family(args)
    assert (args.base_recipe, args.expert_recipe, args.router_recipe) == ("tiny", "x.toml", "tiny")
