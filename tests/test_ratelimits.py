"""Sending limits without the lab: the inventory model, mailops.ratelimits, the
policy daemon of role policyd (its logic, its protocol on loopback, --status and
--check-config) and the postfix role's rate-limit filters, which must agree
with each other."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import socket
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mailops.inventory.model import PerUserLimit, RateLimits, SubmissionUser, Warmup
from mailops.ratelimits import (
    format_window,
    parse_window,
    per_user_limit,
    rate_delay_seconds,
    transport_name,
    warmup_allowance,
)
from tests.helpers import LAB_INVENTORY, ROOT as REPO, SETTINGS, VENV_BIN, copy_inventory

DAEMON = REPO / "roles" / "policyd" / "files" / "mailops-policyd"


def _load(name: str, path: Path):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


policyd = _load("mailops_policyd", DAEMON)
pf_filters = _load("postfix_rate_limits", REPO / "roles" / "postfix" / "filter_plugins" / "postfix_rate_limits.py")


# --- the model -------------------------------------------------------------------

@pytest.mark.parametrize("data,limit,window", [
    ({"messages_per_hour": 500}, 500, 3600),
    ({"messages": 3, "window": "10s"}, 3, 10),
    ({"messages": 100, "window": "15m"}, 100, 900),
    ({"messages": 1000, "window": "1d"}, 1000, 86400),
    ({"messages": 5, "window": 30}, 5, 30),
    ({"messages": 7}, 7, 3600),
])
def test_per_user_limit_forms(data, limit, window):
    parsed = PerUserLimit.model_validate(data)
    assert (parsed.limit, parsed.window_seconds) == (limit, window)
    assert per_user_limit(data) == per_user_limit(parsed) == (limit, window)
    assert policyd.Config({"per_user": data}).per_user == (limit, window)


@pytest.mark.parametrize("data,text", [
    ({"messages_per_hour": 5, "messages": 5}, "not both"),
    ({"messages_per_hour": 5, "window": "1h"}, "not both"),
    ({}, "set messages: N with window: DURATION"),
    ({"window": "10s"}, "set messages: N with window: DURATION"),
    ({"messages": 3, "window": "10 seconds"}, "is not a window"),
    ({"messages": 3, "window": "8d"}, "out of range"),
    ({"messages": 3, "window": 0}, "out of range"),
    ({"messages": 0, "window": "1h"}, "greater than or equal to 1"),
    ({"messages_per_hour": 5, "per": "day"}, "Extra inputs"),
])
def test_per_user_limit_refused(data, text):
    with pytest.raises(ValidationError) as err:
        PerUserLimit.model_validate(data)
    assert text in str(err.value)
    with pytest.raises(policyd.ConfigError):
        policyd.Config({"per_user": data})


def test_submission_user_rate_limit_and_rate_limits():
    user = SubmissionUser.model_validate({"login": "bob@shop.test", "password": {"env": "X"},
                                          "rate_limit": {"messages": 100, "window": "1h"}})
    assert user.rate_limit is not None and user.rate_limit.window_seconds == 3600
    limits = RateLimits.model_validate({"per_user": {"messages": 3, "window": "10s"}})
    assert limits.per_user.limit == 3 and limits.per_user.window_seconds == 10


def _lab_copy(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return copy_inventory(tmp_path / "inv")


def test_inventory_accepts_a_window_and_reports_both_forms_in_one_line(tmp_path, monkeypatch):
    from mailops.inventory import check_inventory, load_inventory

    inv = _lab_copy(tmp_path, monkeypatch)
    path = inv / SETTINGS
    text = path.read_text()
    assert "    messages_per_hour: 500\n" in text
    path.write_text(text.replace("    messages_per_hour: 500\n", "    messages: 3\n    window: 10s\n"))
    inventory, problems = load_inventory(inv)
    assert problems == [] and inventory.rate_limits.per_user.window_seconds == 10
    path.write_text(text.replace("    messages_per_hour: 500\n", "    messages_per_hour: 500\n    messages: 3\n"))
    (problem,) = check_inventory(inv)
    assert problem.field == "mailops_rate_limits.per_user"
    assert "set either messages_per_hour: N or messages: N with window: DURATION, not both" in problem.message
    path.write_text(text.replace("    messages_per_hour: 500\n", "    messages: 3\n    window: soon\n"))
    (problem,) = check_inventory(inv)
    assert problem.field == "mailops_rate_limits.per_user.window" and "is not a window" in problem.message


def test_window_parsing_and_formatting_agree():
    for text, seconds in [("10s", 10), ("5m", 300), ("1h", 3600), ("1d", 86400), ("90", 90), (45, 45)]:
        assert parse_window(text) == policyd.parse_window(text) == seconds
    for seconds, text in [(10, "10s"), (600, "10m"), (3600, "1h"), (86400, "1d"), (90, "90s"), (5400, "90m")]:
        assert format_window(seconds) == policyd.format_window(seconds) == text
    for bad in ("", "1w", "1.5h", True, None, -5, "0s"):
        with pytest.raises(ValueError):
            parse_window(bad)
        with pytest.raises(ValueError):
            policyd.parse_window(bad)


# --- warm-up allowance ----------------------------------------------------------------

SCHEDULE = {"start": "2025-01-06", "schedule": [{"day": 1, "volume": 50}, {"day": 3, "volume": 200},
                                                {"day": 7, "volume": 1000}, {"day": 14, "volume": 5000}]}


@pytest.mark.parametrize("today,expected", [
    (date(2025, 1, 1), (None, 50)),      # before the start: the first step's volume
    (date(2025, 1, 5), (None, 50)),      # the day before
    (date(2025, 1, 6), (1, 50)),         # day 1 = start
    (date(2025, 1, 7), (2, 50)),         # between steps: the last step reached
    (date(2025, 1, 8), (3, 200)),        # on a step's day
    (date(2025, 1, 18), (13, 1000)),
    (date(2025, 1, 19), (14, 5000)),     # the last step holds on its own day
    (date(2025, 1, 20), (None, None)),   # after it the warm-up is over: no limit
    (date(2026, 11, 22), (None, None)),
])
def test_warmup_allowance(today, expected):
    model = Warmup.model_validate(SCHEDULE)
    assert warmup_allowance(model, today) == expected
    assert warmup_allowance(SCHEDULE, today) == expected
    assert policyd.warmup_allowance(policyd.Config({"warmup": SCHEDULE}).warmup, today) == expected


def test_warmup_allowance_edge_cases():
    late = {"start": "2026-03-01", "schedule": [{"day": 3, "volume": 10}, {"day": 5, "volume": 20}]}
    # days before the first step's day use its volume
    assert warmup_allowance(late, date(2026, 3, 1)) == (1, 10)
    assert warmup_allowance(late, date(2026, 3, 5)) == (5, 20)
    assert warmup_allowance(late, date(2026, 3, 6)) == (None, None)
    assert warmup_allowance(None, date(2026, 3, 1)) == (None, None)
    one = {"start": date(2026, 3, 1), "schedule": [{"day": 1, "volume": 2}]}
    assert warmup_allowance(one, date(2026, 3, 1)) == (1, 2)
    assert warmup_allowance(one, date(2026, 3, 2)) == (None, None)
    for case in (late, one):
        cfg = policyd.Config({"warmup": {**case, "start": str(case["start"])}}).warmup
        for d in range(-2, 8):
            today = date(2026, 3, 1).fromordinal(date(2026, 3, 1).toordinal() + d)
            assert policyd.warmup_allowance(cfg, today) == warmup_allowance(case, today)


# --- postfix transports ---------------------------------------------------------------

def test_transport_names_and_delays():
    assert transport_name("gmail.com") == pf_filters.transport_name("gmail.com") == "rl_gmail_com"
    assert transport_name("t-online.de") == pf_filters.transport_name("t-online.de") == "rl_t__online_de"
    assert transport_name("a-b.com") != transport_name("a.b.com")
    for delay, mpm, seconds in [("1s", None, 1), ("0", None, 0), (0, 30, 2), ("2s", 30, 2), ("500ms", None, 1),
                                ("1m", None, 60), ("0", 120, 1), ("1s", 7, 9)]:
        assert rate_delay_seconds(delay, mpm) == pf_filters.rate_delay_seconds(delay, mpm) == seconds


def test_postfix_filters():
    transports = pf_filters.postfix_rate_limit_transports(
        {"outlook.com": {"concurrency": 1, "delay": "2s", "messages_per_minute": 20},
         "gmail.com": {"concurrency": 5, "delay": "0"}}, 2)
    assert transports == [
        {"domain": "gmail.com", "transport": "rl_gmail_com", "concurrency": 5, "initial_concurrency": 2,
         "rate_delay": 0},
        {"domain": "outlook.com", "transport": "rl_outlook_com", "concurrency": 1, "initial_concurrency": 1,
         "rate_delay": 3}]
    assert pf_filters.postfix_rate_limit_main_cf(transports, "texthash:/t", 10) == {
        "transport_maps": "texthash:/t",
        "rl_gmail_com_destination_concurrency_limit": 5, "rl_gmail_com_initial_destination_concurrency": 2,
        "rl_gmail_com_destination_rate_delay": "0s",
        "rl_outlook_com_destination_concurrency_limit": 1, "rl_outlook_com_initial_destination_concurrency": 1,
        "rl_outlook_com_destination_rate_delay": "3s",
        "rl_outlook_com_destination_concurrency_failed_cohort_limit": 10}
    assert pf_filters.postfix_rate_limit_services(transports)[1] == {
        "service": "rl_outlook_com", "type": "unix", "chroot": "y", "command": "smtp",
        "options": {"syslog_name": "postfix/rl_outlook_com"}}
    assert pf_filters.postfix_rate_limit_transports({}) == []
    assert pf_filters.postfix_rate_limit_main_cf([]) == {}
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError):
        pf_filters.postfix_rate_limit_transports({"gmail.com": {"concurrency": 1, "delay": "1 sec"}})


# --- role variables, rendered by Ansible (no host is contacted) --------------------------

def _render(inventory: Path, tmp_path: Path) -> dict:
    play = tmp_path / "render.yml"
    play.write_text(yaml.safe_dump([{
        "name": "render", "hosts": "mailhosts", "gather_facts": False, "tasks": [
            {"name": "postfix defaults", "ansible.builtin.include_vars": {
                "file": str(REPO / "roles/postfix/defaults/main.yml")}},
            {"name": "policyd defaults", "ansible.builtin.include_vars": {
                "file": str(REPO / "roles/policyd/defaults/main.yml")}},
            # the values computed from the options (the role's vars/main.yml)
            {"name": "postfix vars", "ansible.builtin.include_vars": {
                "file": str(REPO / "roles/postfix/vars/main.yml")}},
            {"name": "print", "ansible.builtin.debug": {"msg": {
                "main": "{{ _postfix_main_cf_rate_limits }}", "services": "{{ _postfix_rate_limit_services }}",
                "submission": "{{ postfix_submission_options.smtpd_recipient_restrictions }}",
                "eod": "{{ _postfix_submission_policy_options }}", "enabled": "{{ policyd_enabled }}",
                "config": "{{ policyd_config }}"}}}]}]))
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "ANSIBLE_FILTER_PLUGINS": str(REPO / "roles/postfix/filter_plugins"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path),
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "MAILOPS_APP_PASSWORD": "x"}
    # include_vars and debug run on the controller: no host is contacted
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(play)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    text = proc.stdout.split("TASK [print]", 1)[1]
    result, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    return result["msg"]


def test_lab_inventory_renders_transports_and_policy(tmp_path):
    got = _render(LAB_INVENTORY, tmp_path)
    assert got["main"]["transport_maps"] == "texthash:/etc/postfix/transport_rate_limits"
    assert got["main"]["rl_gmail_com_destination_rate_delay"] == "1s"
    assert got["main"]["rl_outlook_com_destination_rate_delay"] == "2s"  # max(2s, 60/30)
    assert got["main"]["smtpd_policy_service_timeout"] == "10s"
    assert [s["service"] for s in got["services"]] == ["rl_gmail_com", "rl_outlook_com"]
    # the lab has the return path on: its suppression check comes first
    assert got["submission"] == ["mailops_suppression", "check_policy_service", "inet:127.0.0.1:10031",
                                 "permit_sasl_authenticated", "reject"]
    assert got["eod"] == {"smtpd_end_of_data_restrictions": ["check_policy_service", "inet:127.0.0.1:10031"]}
    assert got["enabled"] is True
    config = policyd.Config(got["config"])
    assert config.per_user == (500, 3600) and config.users == {}
    # the lab's warm-up (from 2025-01-06) has ended: it slows no lab test
    assert policyd.warmup_allowance(config.warmup, date(2026, 11, 22)) == (None, None)


def test_inventory_without_limits_renders_nothing(tmp_path):
    inv = copy_inventory(tmp_path / "inv", settings=lambda d: d.pop("mailops_return_path"))
    path = inv / SETTINGS
    path.write_text(path.read_text().split("mailops_rate_limits:")[0])
    got = _render(inv, tmp_path)
    assert got["main"] == {} and got["services"] == [] and got["eod"] == {}
    assert got["submission"] == ["permit_sasl_authenticated", "reject"]
    assert got["enabled"] is False


# --- the daemon's decisions ------------------------------------------------------------

class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


NOON = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc).timestamp()


def _policy(tmp_path, data: dict, clock: Clock):
    return policyd.Policy(policyd.Config(data), str(tmp_path / "state.sqlite3"), clock=clock)


def _send(conn, user: str, instance: str, recipients: int = 1) -> list[str]:
    actions = [conn.decide({"request": "smtpd_access_policy", "protocol_state": "RCPT", "sasl_username": user,
                            "instance": instance}) for _ in range(recipients)]
    actions.append(conn.decide({"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE",
                                "sasl_username": user, "instance": instance,
                                "recipient_count": str(sum(a == "DUNNO" for a in actions))}))
    return actions


def test_sliding_window_per_user(tmp_path):
    clock = Clock(NOON)
    policy = _policy(tmp_path, {"per_user": {"messages": 3, "window": "10s"},
                                "users": {"Bob@Shop.test": {"messages_per_hour": 1}}}, clock)
    conn = policyd.Connection(policy)
    for i in range(3):
        assert _send(conn, "alice@shop.test", f"a{i}") == ["DUNNO", "DUNNO"]
        clock.now += 2
    # t+6: full; the first message leaves the window at t+10
    action = _send(conn, "Alice@Shop.test", "a3")[0]
    assert action == ("450 4.7.1 sending limit of 3 messages per 10s reached for alice@shop.test; "
                      "try again in 4s"), action
    clock.now += 4.01
    assert _send(conn, "alice@shop.test", "a4") == ["DUNNO", "DUNNO"]
    # bob has his own limit; a message with two recipients counts once
    assert _send(conn, "bob@shop.test", "b0", recipients=2) == ["DUNNO", "DUNNO", "DUNNO"]
    assert _send(conn, "bob@shop.test", "b1")[0].endswith("limit of 1 messages per 1h reached for bob@shop.test; "
                                                          "try again in 60m")
    # no authenticated user: not counted, not refused
    assert conn.decide({"request": "smtpd_access_policy", "protocol_state": "RCPT"}) == "DUNNO"


def test_end_of_message_is_the_authoritative_count(tmp_path):
    clock = Clock(NOON)
    policy = _policy(tmp_path, {"per_user": {"messages": 1, "window": "1h"}}, clock)
    first, second = policyd.Connection(policy), policyd.Connection(policy)
    # two sessions pass RCPT at the same time; only one message may complete
    assert first.decide({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                         "sasl_username": "alice@shop.test", "instance": "1"}) == "DUNNO"
    assert second.decide({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                          "sasl_username": "alice@shop.test", "instance": "2"}) == "DUNNO"
    eom = {"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE", "sasl_username": "alice@shop.test",
           "recipient_count": "1"}
    assert first.decide(dict(eom, instance="1")) == "DUNNO"
    assert second.decide(dict(eom, instance="2")).startswith("450 4.7.1 sending limit of 1 messages per 1h")


def test_warmup_counts_recipients_per_utc_day(tmp_path):
    clock = Clock(NOON)
    policy = _policy(tmp_path, {"warmup": {"start": "2026-03-02", "schedule": [{"day": 1, "volume": 2},
                                                                               {"day": 2, "volume": 3}]}}, clock)
    conn = policyd.Connection(policy)
    # three recipients in one message: two fit, the third is refused at RCPT
    actions = _send(conn, "bob@shop.test", "w0", recipients=3)
    refusal = "450 4.7.1 warm-up day 1 allowance of 2 messages reached; try again tomorrow"
    assert actions == ["DUNNO", "DUNNO", refusal, "DUNNO"], actions
    assert _send(conn, "alice@shop.test", "w1")[0] == refusal
    clock.now += 86400  # day 2: a new day's count
    assert _send(conn, "bob@shop.test", "w2", recipients=3) == ["DUNNO"] * 4
    clock.now += 86400  # day 3: the warm-up is over
    assert _send(conn, "bob@shop.test", "w3", recipients=10) == ["DUNNO"] * 11
    status = policyd.status(policy.config, str(tmp_path / "state.sqlite3"), now=clock.now)
    assert status["warmup"] == {"configured": True, "start": "2026-03-02", "day": None, "allowance": None,
                                "accepted_today": 10, "messages_today": 1, "remaining": None}


def test_warmup_before_the_start_uses_the_first_volume(tmp_path):
    clock = Clock(NOON)
    policy = _policy(tmp_path, {"warmup": {"start": "2026-03-05", "schedule": [{"day": 1, "volume": 1}]}}, clock)
    conn = policyd.Connection(policy)
    assert _send(conn, "bob@shop.test", "x0") == ["DUNNO", "DUNNO"]
    assert _send(conn, "bob@shop.test", "x1")[0] == (
        "450 4.7.1 warm-up allowance of 1 messages reached (the warm-up starts on 2026-03-05); try again tomorrow")


def test_counts_survive_a_restart_and_errors_defer(tmp_path):
    clock = Clock(NOON)
    data = {"per_user": {"messages": 2, "window": "1h"}}
    policy = _policy(tmp_path, data, clock)
    assert _send(policyd.Connection(policy), "alice@shop.test", "r0") == ["DUNNO", "DUNNO"]
    policy.close()
    again = _policy(tmp_path, data, clock)
    conn = policyd.Connection(again)
    assert _send(conn, "alice@shop.test", "r1") == ["DUNNO", "DUNNO"]
    assert _send(conn, "alice@shop.test", "r2")[0].startswith("450 4.7.1")
    again.db.close()  # a broken database: defer, never "DUNNO" (that would mean unlimited)
    assert _send(conn, "carol@shop.test", "r3")[0] == policyd.DEFER_ERROR


# --- the daemon as a program ---------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(sock_file, **attrs) -> str:
    attrs.setdefault("request", "smtpd_access_policy")
    sock_file.write("".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n")
    sock_file.flush()
    reply = []
    while (line := sock_file.readline()) not in (b"\n", b""):
        reply.append(line.decode().rstrip("\n"))
    return "\n".join(reply)


def test_daemon_speaks_the_policy_protocol_and_reports_status(tmp_path):
    port = _free_port()
    config = tmp_path / "policyd.json"
    state = tmp_path / "state.sqlite3"
    config.write_text(json.dumps({"listen": "127.0.0.1", "port": port, "per_user": {"messages": 1, "window": "1h"},
                                  "users": {"bob@shop.test": {"messages": 5, "window": "10m"}}}))
    check = subprocess.run([sys.executable, str(DAEMON), "--check-config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0 and "valid" in check.stdout, check.stderr
    proc = subprocess.Popen([sys.executable, str(DAEMON), "--config", str(config), "--state", str(state)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the daemon did not start"
                time.sleep(0.1)
        with sock, sock.makefile("rwb") as f:
            user = {"sasl_username": "alice@shop.test", "instance": "1"}
            assert _ask(f, protocol_state="RCPT", **user) == "action=DUNNO"
            assert _ask(f, protocol_state="END-OF-MESSAGE", recipient_count="1", **user) == "action=DUNNO"
            assert _ask(f, protocol_state="RCPT", sasl_username="alice@shop.test", instance="2").startswith(
                "action=450 4.7.1 sending limit of 1 messages per 1h reached for alice@shop.test; try again in ")
            assert _ask(f, request="junk") == "action=DUNNO"
        out = subprocess.run([sys.executable, str(DAEMON), "--status", "--config", str(config), "--state", str(state)],
                             capture_output=True, text=True, check=True)
        status = json.loads(out.stdout)
        assert status["users"] == {"alice@shop.test": {"in_window": 1, "limit": 1, "window_seconds": 3600},
                                   "bob@shop.test": {"in_window": 0, "limit": 5, "window_seconds": 600}}
        assert status["warmup"]["accepted_today"] == 1 and status["warmup"]["allowance"] is None
        assert status["per_user"] == {"limit": 1, "window_seconds": 3600}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()


@pytest.mark.parametrize("content,text", [
    ("{", "not valid JSON"),
    ('{"per_user": {"messages_per_hour": 5, "messages": 5}}', "not both"),
    ('{"warmup": {"start": "2026-13-01", "schedule": [{"day": 1, "volume": 2}]}}', "not a date"),
    ('{"warmup": {"start": "2026-01-01", "schedule": [{"day": 2, "volume": 2}, {"day": 2, "volume": 3}]}}',
     "strictly increase"),
    ('{"port": 0}', "port must be"),
    ('{"limits": {}}', "unknown key"),
])
def test_check_config_refuses_bad_configs(tmp_path, content, text):
    config = tmp_path / "bad.json"
    config.write_text(content)
    proc = subprocess.run([sys.executable, str(DAEMON), "--check-config", str(config)], capture_output=True, text=True)
    assert proc.returncode == 1 and text in proc.stderr, proc.stderr
