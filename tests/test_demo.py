"""`mailops demo`, the README's main command, end to end on the lab, twice.

The first run brings the lab up (reusing what is running), generates DKIM keys,
publishes DNS through the Cloudflare emulator and RFC 2136, provisions vps1,
runs `mailops verify` and shows the live message's Authentication-Results. The
second run must reuse all of it: no new keys, no DNS change, no changed task.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import require_lab_prerequisites
from tests.helpers import mailops

pytestmark = pytest.mark.lab

# wide output so the summary table keeps one row per step
ENV = dict(os.environ, COLUMNS="250", TERM="dumb")
STEPS = ("lab up", "ssh into a fresh VPS", "resolve through the lab DNS", "deliver to the receiving host",
         "generate DKIM keys", "publish DNS records (dns sync)", "provision new-vps mta1.shop.test",
         "mailops verify", "live send on 587 with AUTH", "the return path: a bounce suppresses")


def _demo() -> subprocess.CompletedProcess:
    return mailops("demo", timeout=1500, env=ENV)


def _summary(out: str) -> dict[str, str]:
    """step name -> its result text, from the summary table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        for step in STEPS:
            if step in cells:
                rows[step] = " ".join(cells[cells.index(step) + 2:])
    return rows


@pytest.fixture(scope="module")
def runs(lab):
    require_lab_prerequisites()
    # vps1 stays converged: tests/test_provision.py goes on with it
    return _demo(), _demo()


def test_demo_runs_every_step_and_shows_the_authentication_results(runs):
    first, _ = runs
    rows = _summary(first.stdout)
    assert list(rows) == list(STEPS), f"summary rows: {list(rows)}\n{first.stdout[-3000:]}"
    assert "all " in rows["mailops verify"] and "checks pass" in rows["mailops verify"]
    assert "news.test" in rows["publish DNS records (dns sync)"] and "Cloudflare" in rows["publish DNS records (dns sync)"]
    results = [line for line in first.stdout.splitlines() if "Authentication-Results:" in line]
    assert results, first.stdout[-3000:]
    joined = " ".join(results)
    for verdict in ("dkim=pass", "spf=pass", "dmarc=pass"):
        assert verdict in joined, joined
    assert "mailops lab down" in first.stdout
    loop = rows["the return path: a bounce suppresses"]
    assert "suppressed it (hard-bounce)" in loop and "the next submission was refused" in loop, loop
    assert re.search(r"refused: .*5\.\d+\.\d+ .*suppressed", first.stdout), first.stdout[-3000:]


def test_every_step_has_its_time(runs):
    first, _ = runs
    for line in first.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if any(step in cells for step in STEPS):
            step = next(s for s in STEPS if s in cells)
            assert re.fullmatch(r"\d+\.\d", cells[cells.index(step) + 1]), line


def test_second_run_reuses_what_exists(runs):
    _, second = runs
    rows = _summary(second.stdout)
    assert list(rows) == list(STEPS)
    assert "images from cache" in rows["lab up"]
    assert rows["generate DKIM keys"].startswith("keys exist")
    assert "dns sync: 0 change(s)" in rows["publish DNS records (dns sync)"]
    assert re.search(r"converged: 0 changed tasks", rows["provision new-vps mta1.shop.test"]), rows
    assert "dkim=pass" in " ".join(line for line in second.stdout.splitlines() if "Authentication-Results" in line)


def test_a_failing_step_is_named_with_its_reason(lab, lab_cfg, tmp_path):
    """With the Cloudflare API token wrong, the demo stops at the DNS step and says why, in one line."""
    token = lab_cfg.state_dir / "cloudflare" / "token"
    saved = token.read_text()
    token.write_text("not-the-token\n")
    try:
        proc = mailops("demo", check=False, timeout=900, env=ENV)
    finally:
        token.write_text(saved)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "demo step 'publish DNS records (dns sync)' failed" in err[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "done: generate DKIM keys" in proc.stdout  # the steps before it ran and were reported
