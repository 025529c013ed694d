"""README.md is tested: every shell block a reader runs runs here, in order, against one federation on loopback
(the rules, the substitutions and the environment are in tests/e2e/readme_harness.py), so a command that stops
working, or that never worked as written, fails here. About 3 minutes on 2 cores, most of it the README's own
training (micro recipes)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.readme_harness import NOT_RUN, README, SUBSTITUTIONS, Reader, read_blocks


def test_every_block_runs_or_says_why_from_the_short_list():
    """No block escapes the run: shell is only ever fenced as bash, a block not run gives a documented reason
    right above it, no marker stands loose, and every substitution still finds its text."""
    blocks, languages, stray = read_blocks(README.read_text())
    assert set(languages) <= {"bash", "text", "mermaid"}, f"a block fenced as {set(languages)} would not be run"
    assert stray == [], f"README lines {stray}: a not-run marker with no bash block right below it"
    reasons = [(b.number, b.not_run) for b in blocks if b.not_run]
    assert [(n, r) for n, r in reasons if not any(r.startswith(known) for known in NOT_RUN)] == []
    run = "".join(b.text for b in blocks if not b.not_run)
    assert len(reasons) <= 4 and len(blocks) - len(reasons) >= 15
    assert [p for p, _, _ in SUBSTITUTIONS if not re.search(p, run)] == [], "a substitution matches nothing"
    assert "…" not in re.sub(r"#.*", "", run.replace("bft_…", "")), "a shorthand `…` outside a comment"


@pytest.mark.e2e
@pytest.mark.slow
def test_the_readme_runs_top_to_bottom(tmp_path):
    reader = Reader(tmp_path)
    blocks = [b for b in read_blocks(README.read_text())[0] if not b.not_run]
    try:
        for block in blocks:
            reader.run(block)
        # What the reader would see at the end: nothing they started has died, the node's `watch` saw the
        # releases the operator published, and the server certificate names the host coordinator.toml gave.
        assert [b.line for b in reader.background if not (b.alive() or b.replaced)] == []
        watch = next(b for b in reader.background if "node watch" in b.line)
        # r1 is on stable; it is also latest when the watch saw it before r2 was published
        assert re.search(r"^r1 \[(latest, )?stable\] published", watch.output(), re.M), watch.output()[-2000:]
        names = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", reader.coordinator_home / "pki/server.pem"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        assert "DNS:coord.example" in names and "IP Address:127.0.0.1" in names
    finally:
        reader.stop()
    print("seconds per block:", ", ".join(f"{number}: {seconds:.0f}" for number, seconds in reader.timings))
