"""verify's server group: the shipped testinfra checks over one persistent SSH connection per
host (mailops.checks.connection), several hosts per pytest process.

Without the lab: the command loop run locally (what it returns for exit status, binary
output, stderr, a command that hangs, a connection that dies) and the JUnit rows split by
host.  On the lab (vps1, mta1.shop.test): a stopped OpenDKIM and a DKIM key with a wrong
mode are named by the server group exactly as with testinfra's ssh per command (same
names, details and fixes), and `pytest --pyargs mailops.checks` still names them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mailops.checks.connection import AGENT_COMMAND, Agent, ConnectionLost
from mailops.lab import core
from mailops.verify.server import _split_host, parse_junit
from tests.helpers import HOSTS, LAB_INVENTORY, copy_inventory, edit_yaml, mailops, venv_env

HOST = "mta1.shop.test"


# --- the command loop, run on this machine instead of over ssh ----------------------

@pytest.fixture
def agent():
    a = Agent(AGENT_COMMAND, timeout=2)
    yield a
    a.close()


def test_the_loop_returns_exit_status_and_both_streams_byte_for_byte(agent):
    rc, out, err = agent.run("printf 'a\\000b\\377'; echo warn >&2; exit 3")
    assert (rc, out, err) == (3, b"a\x00b\xff", b"warn\n")
    assert agent.run("echo $((6*7))") == (0, b"42\n", b"")  # the user's shell, like ssh's


def test_a_command_reads_no_stdin_and_cannot_swallow_the_next_one(agent):
    assert agent.run("cat; echo done") == (0, b"done\n", b"")
    assert agent.run("echo next") == (0, b"next\n", b"")


def test_a_hanging_command_is_a_failed_command_not_a_hang(agent):
    t = time.monotonic()
    rc, out, err = agent.run("sleep 30")
    assert rc == 124 and b"timed out after 2 s" in err and time.monotonic() - t < 10
    assert agent.run("echo still here")[1] == b"still here\n"


def test_a_connection_that_dies_is_named(agent):
    with pytest.raises(ConnectionLost):
        agent.run("kill -9 $PPID")  # the loop itself, mid-command
    with pytest.raises(ConnectionLost):
        agent.run("true")


def test_a_loop_that_does_not_start_says_why():
    with pytest.raises(ConnectionLost, match="no-such-python"):
        Agent("echo 'ssh: no-such-python: not found' >&2; exit 255")


# --- JUnit rows of several hosts ------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="" file="mailops/checks/test_opendkim.py" name="test_opendkim_enabled_and_running[ansible://mx-1.example.org]"/>
<testcase classname="" file="mailops/checks/test_opendkim.py" name="test_opendkim_enabled_and_running[ansible://mx-1.example.org.eu]">
  <failure message="AssertionError: opendkim is not running: submissions are refused with 4xx">E   AssertionError</failure></testcase>
<testcase classname="" file="mailops/checks/test_postfix.py" name="test_main_cf_value[ansible://mx-1.example.org-smtpd_milters-]"/>
<testcase classname="" file="mailops/checks/test_postfix.py" name="test_main_cf_value[ansible://mx-1.example.org.eu-maximal_queue_lifetime-2d]">
  <failure message="AssertionError: main.cf maximal_queue_lifetime = '5d', expected '2d'">x</failure></testcase>
<testcase classname="" file="mailops/checks/test_base.py" name="test_no_pending_security_updates[ansible://mx-1.example.org]">
  <failure message="AssertionError: 2 security update(s) pending: libc6, openssl">x</failure></testcase>
<testcase classname="" file="mailops/checks/test_tls.py" name="test_tls_acme_renewal_timer_enabled[ansible://mx-1.example.org]">
  <skipped message="TLS mode is self-signed, not acme"/></testcase>
</testsuite></testsuites>"""


def test_rows_go_to_the_host_their_test_id_names(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    rows = [(r.subject, r.name, r.status, r.detail, r.fix) for r in
            parse_junit(path, ["mx-1.example.org", "mx-1.example.org.eu"])]
    assert rows == [
        ("mx-1.example.org", "opendkim.enabled_and_running", "pass", "ok", ""),
        ("mx-1.example.org.eu", "opendkim.enabled_and_running", "fail",
         "AssertionError: opendkim is not running: submissions are refused with 4xx",
         "re-converge: mailops provision apply --tags opendkim --limit mx-1.example.org.eu"),
        ("mx-1.example.org", "postfix.main_cf_value[smtpd_milters-]", "pass", "ok", ""),
        ("mx-1.example.org.eu", "postfix.main_cf_value[maximal_queue_lifetime-2d]", "fail",
         "AssertionError: main.cf maximal_queue_lifetime = '5d', expected '2d'",
         "re-converge: mailops provision apply --tags postfix --limit mx-1.example.org.eu"),
        ("mx-1.example.org", "base.no_pending_security_updates", "warn",
         "AssertionError: 2 security update(s) pending: libc6, openssl",
         "re-converge: mailops provision apply --tags base --limit mx-1.example.org"),
    ]


def test_one_host_keeps_the_row_names_it_had():
    assert _split_host("ansible://mta1.shop.test-passwordauthentication-allowed0", ["mta1.shop.test"]) == \
        ("mta1.shop.test", "passwordauthentication-allowed0")
    assert _split_host("25-ansible://mta1.shop.test", ["mta1.shop.test"]) == ("mta1.shop.test", "25")
    assert _split_host("ansible://mta1.shop.test", ["mta1.shop.test"]) == ("mta1.shop.test", "")


# --- on the lab: a broken server named as before --------------------------------------

def vps1(lab_cfg, script: str) -> str:
    proc = core.ssh_run(lab_cfg, "vps1", script)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def server_rows(connection: str) -> tuple[float, dict[str, dict]]:
    t = time.monotonic()
    proc = mailops("verify", "-i", str(LAB_INVENTORY), "--json", "--only", "server", "--host", HOST, check=False,
                   env=venv_env(MAILOPS_CHECKS_CONNECTION=connection))
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    return time.monotonic() - t, {r["name"]: r for r in json.loads(proc.stdout)["results"]}


@pytest.fixture(scope="module")
def green(lab, lab_cfg):
    """vps1 as converged from the lab inventory (converged again only if a check fails)."""
    seconds, rows = server_rows("persistent")
    if any(r["status"] == "fail" for r in rows.values()):
        mailops("provision", "apply", "-i", str(LAB_INVENTORY), "--limit", HOST, "--json")
        seconds, rows = server_rows("persistent")
    assert [r for r in rows.values() if r["status"] == "fail"] == []
    return rows


@pytest.mark.lab
def test_a_stopped_opendkim_and_a_readable_key_are_named_as_before(green, lab_cfg):
    key = vps1(lab_cfg, "find /etc/opendkim/keys -type f -name '*.private' | sort | head -1").strip()
    assert key.endswith(".private"), key
    vps1(lab_cfg, f"chmod 0640 {key} && systemctl stop opendkim")
    try:
        persistent_s, persistent = server_rows("persistent")
        ssh_s, per_command = server_rows("ssh")
        failed = {name: r for name, r in persistent.items() if r["status"] == "fail"}
        # a stopped OpenDKIM also takes its socket away
        assert sorted(failed) == ["opendkim.enabled_and_running", "opendkim.key_files_private",
                                  "opendkim.socket_reachable_by_postfix"], failed
        assert "opendkim is not running" in failed["opendkim.enabled_and_running"]["detail"]
        assert f"{key} has mode 0o640, expected 0600" in failed["opendkim.key_files_private"]["detail"]
        assert failed["opendkim.key_files_private"]["fix"] == \
            f"re-converge: mailops provision apply --tags opendkim --limit {HOST}"
        # the same rows, word for word, as testinfra's ssh per command gives
        assert persistent == per_command
        assert set(persistent) == set(green)
        assert persistent_s < ssh_s / 3, (persistent_s, ssh_s)
        # and the operator's own way still names them
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                               "mailops.checks.test_opendkim", f"--hosts=ansible://{HOST}",
                               f"--ansible-inventory={LAB_INVENTORY}"], capture_output=True, text=True,
                              env=venv_env(), cwd=os.environ.get("TMPDIR", "/tmp"), timeout=300)
        assert proc.returncode == 1, proc.stdout[-2000:]
        assert "FAILED" in proc.stdout and "test_opendkim_enabled_and_running" in proc.stdout
        assert "opendkim is not running" in proc.stdout and "has mode 0o640, expected 0600" in proc.stdout
    finally:
        vps1(lab_cfg, f"chmod 0600 {key} && systemctl start opendkim")
    assert [r for r in server_rows("persistent")[1].values() if r["status"] == "fail"] == []


@pytest.mark.lab
def test_an_unreachable_host_is_one_row_and_the_others_are_checked(green, tmp_path):
    inventory = copy_inventory(tmp_path / "inv")

    def add_dead_host(data):
        mail = data["all"]["children"]["mailhosts"]["hosts"]
        mail["mta9.shop.test"] = dict(mail[HOST], ansible_host="198.51.100.250")

    edit_yaml(inventory / HOSTS, add_dead_host)
    proc = mailops("verify", "-i", str(inventory), "--json", "--only", "server", "--host", HOST,
                   "--host", "mta9.shop.test", check=False)
    rows = json.loads(proc.stdout)["results"]
    assert [(r["subject"], r["name"], r["status"]) for r in rows if r["subject"] == "mta9.shop.test"] == \
        [("mta9.shop.test", "ssh", "inconclusive")]
    mine = {r["name"]: r for r in rows if r["subject"] == HOST}
    assert {n: r["status"] for n, r in mine.items()} == {n: r["status"] for n, r in green.items()}
