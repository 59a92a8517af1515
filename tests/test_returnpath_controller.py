"""The controller's return-path commands without the lab: `mailops suppressions` and
`mailops reports` over two "hosts" whose state directories live here, each asked through
the real hostcli (LocalRunner runs `python -m mailops.returnpath.hostcli` as SshRunner runs
it over SSH).  The event stores are filled by the real receive path (classifier, store,
suppression list) from real-looking DSN, ARF, DMARC and TLS-RPT messages."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timezone
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailops.cli import main
from mailops.errors import MailopsError
from mailops.inventory import load
from mailops.ops import returnpath as rp
from mailops.returnpath import hostcli
from mailops.returnpath.receive import receive
from mailops.returnpath.store import EventStore
from mailops.returnpath.suppression import SuppressionList
from tests.helpers import copy_inventory
from tests.test_returnpath_messages import FAILED_BOB, FEEDBACK, arf, dsn, original_message
from tests.test_returnpath_reports import dmarc_xml, report_mail, tls_json


def _two_hosts(data: dict) -> None:
    hosts = data["all"]["children"]["mailhosts"]["hosts"]
    first = next(iter(hosts.values()))
    hosts["mta2.shop.test"] = {**first, "ansible_host": "198.51.100.12", "mailops_ipv4": "198.51.100.12",
                               "mailops_ipv6": "2001:db8:51::12"}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A two-host inventory with the return path on, a state directory per host, and the
    CLI's runner pointed at them."""
    def settings(data):
        data["mailops_return_path"] = {"key": {"file": "rp.key"}, "operator_email": "ops@inbox.test"}
    inv_dir = copy_inventory(tmp_path / "inv", settings=settings, hosts=_two_hosts)
    key = inv_dir / "rp.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    inv = load(inv_dir)
    states = {}
    for host in inv.hosts:
        state = tmp_path / "state" / host.name
        state.mkdir(parents=True, mode=0o700)
        states[host.name] = state
    runner = rp.LocalRunner(states)
    monkeypatch.setattr(rp, "runner_for", lambda _inv: runner)
    return inv, runner, states


def deliver(state: Path, raw: bytes, recipient: str, sender: str = "") -> None:
    """What the Postfix pipe does on a host: receive() into the host's stores."""
    store = EventStore(str(state / hostcli.EVENTS))
    suppressions = SuppressionList(str(state / hostcli.SUPPRESSIONS), origin=state.name)
    try:
        receive(raw, recipient, sender, store=store, suppressions=suppressions)
    finally:
        store.close()
        suppressions.close()


def cli(inv, *args: str):
    result = CliRunner().invoke(main, [*args, "-i", str(inv.path)], catch_exceptions=False, env={"COLUMNS": "250"})
    return result


# --- hostcli itself ----------------------------------------------------------------------------

def test_hostcli_json_and_one_line_errors(tmp_path, capsys):
    assert hostcli.main(["--state-dir", str(tmp_path), "--origin", "h1", "add", "Bob@Example.ORG",
                         "--detail", "asked"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert (added["target"], added["scope"], added["cause"], added["origin"]) == ("bob@example.org", "*", "manual",
                                                                                 "h1")
    assert hostcli.main(["--state-dir", str(tmp_path), "list"]) == 0
    assert [e["target"] for e in json.loads(capsys.readouterr().out)] == ["bob@example.org"]
    assert hostcli.main(["--state-dir", str(tmp_path), "changes-since", ""]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    for argv, words in ((["add", "not an address"], "target: "), (["add", "x@y.test", "--cause", "bogus"], "usage"),
                        (["changes-since", "yesterday-ish"], "stamp"), (["events", "--since", "soon"], "since")):
        assert hostcli.main(["--state-dir", str(tmp_path), *argv]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err
    assert hostcli.main(["--state-dir", str(tmp_path / "none"), "list"]) == 1
    assert "no return-path state directory" in capsys.readouterr().err


def test_hostcli_merge_reads_stdin_and_refuses_bad_entries(tmp_path, capsys):
    import io
    entry = {"target": "carol@example.org", "scope": "shop.test", "cause": "complaint", "since": "2026-12-01",
             "updated": "2026-12-01T00:00:00Z", "origin": "peer"}
    assert hostcli.main(["--state-dir", str(tmp_path), "merge"], stdin=io.StringIO(json.dumps([entry]))) == 0
    assert json.loads(capsys.readouterr().out) == {"changed": 1, "received": 1}
    assert hostcli.main(["--state-dir", str(tmp_path), "merge"], stdin=io.StringIO('[{"target": "x"}]')) == 1
    assert "merge: entry 0: target:" in capsys.readouterr().err
    assert hostcli.main(["--state-dir", str(tmp_path), "merge"], stdin=io.StringIO("{nope")) == 1
    assert "not JSON" in capsys.readouterr().err


# --- suppressions -----------------------------------------------------------------------------

def test_bounce_and_complaint_suppress_on_their_host_and_list_shows_where_missing(world):
    inv, runner, states = world
    mta1, mta2 = (h.name for h in inv.hosts)
    deliver(states[mta1], dsn(FAILED_BOB), "b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.test")
    deliver(states[mta2], arf(FEEDBACK.replace("bob@", "carol@"), original=original_message(to="carol@example.org")),
            "abuse@shop.test", "feedback@fbl.example.org")
    listing = rp.list_suppressions(inv.hosts, runner)
    by_target = {e["target"]: e for e in listing["entries"]}
    assert by_target["bob@example.org"]["cause"] == "hard-bounce" and by_target["bob@example.org"]["scope"] == "*"
    assert (by_target["carol@example.org"]["cause"], by_target["carol@example.org"]["scope"]) == ("complaint",
                                                                                                "shop.test")
    assert by_target["carol@example.org"]["hosts"] == [mta2]
    assert by_target["bob@example.org"]["hosts"] == [mta1] and by_target["bob@example.org"]["missing"] == [mta2]
    assert by_target["bob@example.org"]["detail"].startswith("5.1.1")
    assert listing["unreachable"] == {}

    result = cli(inv, "suppressions", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {(e["target"], e["cause"]) for e in data["entries"]} == {(t, e["cause"]) for t, e in by_target.items()}
    table = cli(inv, "suppressions", "list")
    assert "bob@example.org" in table.output and mta2 in table.output


def test_add_reaches_every_host_with_one_entry_and_remove_lifts_it(world):
    inv, runner, states = world
    result = cli(inv, "suppressions", "add", "Dave@Example.org", "--domain", "shop.test", "--detail", "asked",
                 "--json")
    assert result.exit_code == 0, result.output
    added = json.loads(result.output)
    assert sorted(added["applied"]) == sorted(h.name for h in inv.hosts) and added["unreachable"] == {}
    listing = rp.list_suppressions(inv.hosts, runner, scope="shop.test")
    (entry,) = listing["entries"]
    assert entry["target"] == "dave@example.org" and entry["missing"] == [] and len(entry["hosts"]) == 2
    # the same entry (stamp and origin) on both: the hosts' replication has nothing to fight over
    stamps = {SuppressionList(str(s / hostcli.SUPPRESSIONS)).lookup("dave@example.org", "shop.test").updated
              for s in states.values()}
    assert len(stamps) == 1
    assert rp.list_suppressions(inv.hosts, runner, scope="news.test")["entries"] == []

    removed = cli(inv, "suppressions", "remove", "dave@example.org", "--domain", "shop.test", "--json")
    assert removed.exit_code == 0 and json.loads(removed.output)["removed"] is True
    assert rp.list_suppressions(inv.hosts, runner)["entries"] == []
    again = cli(inv, "suppressions", "remove", "dave@example.org", "--domain", "shop.test")
    assert again.exit_code == 0 and "was not suppressed" in again.output


def test_a_host_down_is_named_exit_non_zero_and_the_others_still_get_it(world):
    inv, runner, states = world
    mta1, mta2 = (h.name for h in inv.hosts)
    states[mta1].rename(states[mta1].with_name("gone"))        # mta1 answers nothing useful
    result = cli(inv, "suppressions", "add", "erin@example.org")
    assert result.exit_code == 1
    assert f"{mta1}: not reached" in result.output and "no return-path state directory" in result.output
    assert "Traceback" not in result.output
    listing = rp.list_suppressions(inv.hosts, runner)
    assert [e["target"] for e in listing["entries"]] == ["erin@example.org"]
    assert listing["entries"][0]["hosts"] == [mta2] and list(listing["unreachable"]) == [mta1]
    assert cli(inv, "suppressions", "list").exit_code == 1


def test_bad_target_is_one_line(world):
    inv, _, _ = world
    result = CliRunner().invoke(main, ["suppressions", "add", "not an address", "-i", str(inv.path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "mailops: error: target: 'not an address' is not an address or a domain (alice@example.org, example.org)"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_import_round_trip(world, tmp_path, fmt):
    inv, runner, states = world
    rp.add_suppression(inv.hosts, runner, "frank@example.org", cause="complaint", detail="feedback-type abuse")
    rp.add_suppression(inv.hosts, runner, "example.net", scope="news.test")
    out = tmp_path / f"list.{fmt}"
    result = cli(inv, "suppressions", "export", "--format", fmt, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    text = out.read_text()
    assert "frank@example.org" in text and "example.net" in text
    # a fresh fleet imports it
    for state in states.values():
        for name in os.listdir(state):
            (state / name).unlink()
    result = cli(inv, "suppressions", "import", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["entries"] == 2
    listing = rp.list_suppressions(inv.hosts, runner)
    assert {(e["target"], e["scope"], e["cause"]) for e in listing["entries"]} == {
        ("frank@example.org", "*", "complaint"), ("example.net", "news.test", "manual")}
    assert all(e["missing"] == [] for e in listing["entries"])
    stdout = cli(inv, "suppressions", "export", "--format", "json", "--global")
    assert [e["target"] for e in json.loads(stdout.output)] == ["frank@example.org"]


def test_import_of_a_bad_file_changes_nothing(world, tmp_path):
    inv, runner, _ = world
    bad = tmp_path / "bad.csv"
    bad.write_text("target,cause\nok@example.org,manual\nnot-an-address,manual\n")
    result = CliRunner().invoke(main, ["suppressions", "import", str(bad), "-i", str(inv.path)])
    assert result.exit_code == 1
    assert f"{bad}:3: target:" in result.output and "nothing was imported" in result.output
    assert rp.list_suppressions(inv.hosts, runner)["entries"] == []


# --- reports ----------------------------------------------------------------------------------

def _dmarc_mail(report_id: str, records) -> bytes:
    return report_mail(gzip.compress(dmarc_xml(report_id=report_id, records=records)), "application/gzip",
                       f"inbox.test!shop.test!{report_id}.xml.gz")


def _tls_mail(doc: dict) -> bytes:
    msg = MIMEMultipart()
    msg["From"], msg["To"], msg["Subject"] = "tlsrpt@inbox.test", "tlsrpt@shop.test", "Report Domain: shop.test"
    msg.attach(MIMEText("TLS report\n"))
    part = MIMEApplication(gzip.compress(json.dumps(doc).encode()), "tlsrpt+gzip")
    part.add_header("Content-Disposition", "attachment", filename="inbox.test!shop.test!1!2.json.gz")
    msg.attach(part)
    return msg.as_bytes()


def test_dmarc_report_sums_hosts_and_flags_sources_outside_the_inventory(world):
    inv, runner, states = world
    mta1, mta2 = (h.name for h in inv.hosts)
    deliver(states[mta1], _dmarc_mail("r-1", [("198.51.100.11", 7, "none", "pass", "pass", "shop.test"),
                                              ("203.0.113.9", 2, "reject", "fail", "fail", "shop.test")]),
            "dmarc@shop.test", "noreply-dmarc@inbox.test")
    deliver(states[mta2], _dmarc_mail("r-2", [("198.51.100.11", 3, "none", "pass", "fail", "shop.test"),
                                              ("2001:db8:51:0::12", 4, "none", "pass", "pass", "shop.test")]),
            "dmarc@shop.test", "noreply-dmarc@inbox.test")
    result = cli(inv, "reports", "dmarc", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["source_ip"]: r for r in json.loads(result.output)["rows"]}
    ours = rows["198.51.100.11"]
    assert (ours["messages"], ours["dkim_pass"], ours["spf_pass"], ours["dmarc_pass"]) == (10, 10, 7, 10)
    assert (ours["host"], ours["flagged"]) == (mta1, False)
    assert rows["2001:db8:51::12"]["host"] == mta2
    spoof = rows["203.0.113.9"]
    assert spoof["flagged"] is True and spoof["reject"] == 2 and spoof["dmarc_pass"] == 0
    assert spoof["spf_auth_pass"] == 0 and ours["dkim_auth_pass"] == 10
    table = cli(inv, "reports", "dmarc", "--domain", "shop.test")
    assert "NOT OURS" in table.output and "203.0.113.9" in table.output
    later = rp.dmarc_report(inv, inv.hosts, runner, since=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert later["rows"] == []


def test_tls_report_failures_by_type(world):
    inv, _, states = world
    deliver(states[inv.hosts[0].name], _tls_mail(tls_json()), "tlsrpt@shop.test", "tlsrpt@inbox.test")
    result = cli(inv, "reports", "tls", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(r["domain"], r["result_type"], r["sessions"]) for r in data["failures"]] == [
        ("shop.test", "certificate-expired", 2), ("shop.test", "starttls-not-supported", 1)]
    assert {(p["domain"], p["policy_type"], p["successful"]) for p in data["policies"]} == {
        ("shop.test", "sts", 40), ("news.test", "no-policy-found", 5)}
    assert "certificate-expired" in cli(inv, "reports", "tls").output


def test_complaint_rate_against_sent_counts_from_the_log(world, tmp_path):
    inv, runner, states = world
    # the day the complaint is recorded (now) and the day of the log lines must be the same
    # (taken when the test runs, not when the module was imported: a run may cross midnight)
    today = datetime.now(timezone.utc)
    ts, day = today.strftime("%Y-%m-%dT%H:%M:%S+0000"), today.strftime("%Y-%m-%d")
    deliver(states[inv.hosts[0].name], arf(), "abuse@shop.test", "feedback@fbl.example.org")
    lines = []
    for i in range(400):
        qid = f"4Q{i:08X}"
        sender = "b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.test" if i % 2 else "alice@shop.test"
        lines.append(f"{ts} mta1 postfix/qmgr[900]: {qid}: from=<{sender}>, size=4211, nrcpt=1 (queue active)")
        lines.append(f"{ts} mta1 postfix/smtp[3120]: {qid}: to=<u{i}@inbox.test>, relay=mx.inbox.test"
                     "[198.51.100.2]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)")
    lines.append(f"{ts} mta1 postfix/qmgr[900]: 4QNEWS0001: from=<news@news.test>, size=1, nrcpt=1 (queue active)")
    lines.append(f"{ts} mta1 postfix/smtp[3120]: 4QNEWS0001: to=<x@inbox.test>, relay=mx.inbox.test"
                 "[198.51.100.2]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)")
    log = tmp_path / "mail.log"
    log.write_text("\n".join(lines) + "\n")
    result = cli(inv, "reports", "complaints", "--file", str(log), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {(r["domain"], r["day"]): r for r in data["rows"]}
    shop = rows[("shop.test", day)]
    assert (shop["complaints"], shop["sent"]) == (1, 400)
    assert shop["rate"] == pytest.approx(0.0025) and shop["over"] == [0.001]
    assert rows[("news.test", day)]["rate"] == 0.0 and data["lines"] == [0.001, 0.003]
    table = cli(inv, "reports", "complaints", "--file", str(log))
    assert "0.250 %" in table.output and "OVER" in table.output
    # a complaint on a day nothing was sent: the rate is unknown, not infinite or zero
    nothing = tmp_path / "empty.log"
    nothing.write_text("")
    data = rp.complaint_rates(inv, inv.hosts, runner, local_log=nothing)
    assert [(r["domain"], r["complaints"], r["sent"], r["rate"]) for r in data["rows"]] == [
        ("shop.test", 1, 0, None)]
    assert "unknown" in cli(inv, "reports", "complaints", "--file", str(nothing)).output


def test_shared_return_path_domain_is_attributed_through_the_token(world):
    from mailops.returnpath import address
    inv, _, _ = world
    shared = inv.model_copy(update={"domains": {d: s.model_copy(update={"return_path": "rp.shop.test"})
                                                for d, s in inv.domains.items()}})
    keys = [bytes.fromhex("ab" * 32)]
    token = address.encode(keys, "news.test", return_domain="rp.shop.test").address
    assert rp.sending_domain_of(shared, token, keys) == "news.test"
    assert rp.sending_domain_of(shared, token, None) is None
    assert rp.sending_domain_of(shared, "alice@shop.test") == "shop.test"
    assert rp.sending_domain_of(inv, token.replace("rp.shop.test", "bounces.news.test")) == "news.test"


def test_ssh_runner_command_runs_as_the_service_user():
    inv_host = type("H", (), {"ssh_user": "root"})()
    command = rp.SshRunner.command(inv_host, ["add", "a b@x.test", "--detail", "it's"])
    assert command.startswith("runuser -u mailops-rp -- env PYTHONPATH=/usr/local/lib/mailops-returnpath "
                              "python3 -m mailops.returnpath.hostcli ")
    assert "'a b@x.test'" in command and "'it'\"'\"'s'" in command
    inv_host.ssh_user = "deploy"
    assert rp.SshRunner.command(inv_host, ["list"]).startswith("sudo -n -u mailops-rp env ")


def test_no_hosts_is_an_error():
    with pytest.raises(MailopsError, match="no mail hosts"):
        rp.list_suppressions([], rp.LocalRunner({}))


def test_a_removal_not_yet_replicated_is_not_listed_as_in_force(world):
    inv, runner, states = world
    mta1, mta2 = (h.name for h in inv.hosts)
    rp.add_suppression(inv.hosts, runner, "gina@example.org")
    # lifted on mta2 only (as if mta1 had been down): the newest version is the tombstone
    lst = SuppressionList(str(states[mta2] / hostcli.SUPPRESSIONS), origin=mta2)
    lst.remove("gina@example.org")
    lst.close()
    assert rp.list_suppressions(inv.hosts, runner)["entries"] == []
    # and an entry one host holds in an older version is missing there
    rp.add_suppression(inv.hosts, runner, "hank@example.org", detail="first")
    lst = SuppressionList(str(states[mta1] / hostcli.SUPPRESSIONS), origin=mta1)
    lst.add("hank@example.org", detail="second")
    lst.close()
    (entry,) = rp.list_suppressions(inv.hosts, runner)["entries"]
    assert (entry["detail"], entry["hosts"], entry["missing"]) == ("second", [mta1], [mta2])
