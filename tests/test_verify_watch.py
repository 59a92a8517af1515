"""Watching over time without the lab: `verify --baseline/--state/--changes-only` compare this
run with a previous `--json` output, print what changed first, and let the change decide the
exit status.  (The lab run with a real check going from pass to fail is in test_verify.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import copy_inventory, mailops


@pytest.fixture
def inventory(tmp_path) -> Path:
    # no seed mailbox: the send group answers the same rows every time, without any network
    return copy_inventory(tmp_path / "inv", settings=lambda s: s["mailops_verify"].pop("mailboxes"))


def run(inventory: Path, *args: str):
    proc = mailops("verify", "--only", "send", "-i", str(inventory), *args, check=False, timeout=120)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


def test_two_identical_runs_exit_0_in_changes_only_mode(inventory, tmp_path):
    state = tmp_path / "state" / "verify.json"
    first = run(inventory, "--state", str(state), "--changes-only")
    assert first.returncode == 0 and "no baseline yet" in first.stdout and state.exists()
    second = run(inventory, "--state", str(state), "--changes-only")
    assert second.returncode == 0, second.stdout
    assert second.stdout.strip() == "no change since the baseline"
    assert [p.name for p in state.parent.iterdir()] == ["verify.json"]  # no temporary file left


def test_a_changed_check_is_printed_first_and_decides_the_exit_status(inventory, tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(run(inventory, "--json").stdout)
    data = json.loads(baseline.read_text())
    changed = data["results"][0]
    changed["status"] = "pass"  # it passed last time; this run it is inconclusive
    data["results"].append({"group": "send", "subject": "old.test", "name": "live-send", "status": "pass",
                            "detail": "a domain no longer in the inventory"})
    baseline.write_text(json.dumps(data))

    proc = run(inventory, "--baseline", str(baseline), "--changes-only")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "2 change(s) since the baseline:", proc.stdout
    assert f"{changed['subject']} send live-send: pass -> inconclusive" in lines[1]
    assert "old.test send live-send: pass -> gone" in lines[2]
    assert "mailops verify" not in proc.stdout  # --changes-only: no full table

    full = run(inventory, "--baseline", str(baseline))
    assert full.stdout.index("change(s) since the baseline") < full.stdout.index("inconclusive;")
    assert full.returncode == 0  # nothing fails: without --changes-only the checks decide

    as_json = json.loads(run(inventory, "--baseline", str(baseline), "--json").stdout)
    assert [(c["subject"], c["before"], c["after"]) for c in as_json["changes"]] == [
        (changed["subject"], "pass", "inconclusive"), ("old.test", "pass", None)]


@pytest.mark.parametrize("content, says", [
    (None, "no such file; write one with mailops verify --json >"),
    ("{not json", "not JSON"),
    ('{"results": [{"group": "send"}]}', "results[0] lacks 'subject'"),
    ('{"results": [{"group": "g", "subject": "s", "name": "n", "status": "great"}]}', "'great' is not one of"),
    ("[1, 2]", "no results list"),
])
def test_a_bad_baseline_is_one_line_naming_the_file(inventory, tmp_path, content, says):
    baseline = tmp_path / "baseline.json"
    if content is not None:
        baseline.write_text(content)
    proc = run(inventory, "--baseline", str(baseline))
    assert proc.returncode != 0 and says in proc.stderr and str(baseline) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_changes_only_needs_something_to_compare_with(inventory):
    proc = run(inventory, "--changes-only")
    assert proc.returncode != 0 and "--changes-only needs --baseline FILE or --state FILE" in proc.stderr


def test_the_shipped_daily_alert_script_mails_only_a_change(inventory, tmp_path):
    """docs/examples/mailops-verify-alert (what the shipped timer runs), with mail(1) replaced
    by a script that keeps what it was given."""
    import os
    import subprocess

    from tests.helpers import ROOT, VENV_BIN

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    outbox = tmp_path / "outbox"
    (bin_dir / "mail").write_text(f'#!/bin/sh\n{{ echo "args: $*"; cat; }} >> {outbox}\n')
    (bin_dir / "mail").chmod(0o755)
    (bin_dir / "hostname").write_text("#!/bin/sh\necho controller\n")
    (bin_dir / "hostname").chmod(0o755)
    state = tmp_path / "verify-state.json"
    env = {**os.environ, "PATH": f"{bin_dir}:{VENV_BIN}:/usr/bin:/bin"}

    def alert() -> None:
        subprocess.run([str(ROOT / "docs/examples/mailops-verify-alert"), str(inventory), str(state),
                        # the send group only: keep the run offline and quick
                        "ops@example.test", "--only", "send"], env=env, check=True, timeout=120, cwd=tmp_path)

    alert()  # first run: no baseline yet, nothing fails: no mail
    alert()  # nothing changed: no mail
    assert not outbox.exists()
    data = json.loads(state.read_text())
    data["results"][0]["status"] = "pass"
    state.write_text(json.dumps(data))
    alert()
    mail = outbox.read_text()
    assert mail.startswith("args: -s mailops verify: changes seen from controller ops@example.test\n")
    assert "1 change(s) since the baseline:" in mail and "pass -> inconclusive" in mail
