"""The return-path lookup service (mailops.returnpath.socketmap) over a real TCP socket, and the
receive command's forwarding and peer replication (mailops.returnpath.receive), without the lab."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import sys
import threading
from datetime import date, timedelta

import pytest

from mailops.errors import MailopsError
from mailops.returnpath import address
from mailops.returnpath.receive import (EX_OK, EX_TEMPFAIL, Outbox, main, push_pending, read_sync, sync_message)
from mailops.returnpath.settings import load_settings, settings_from
from mailops.returnpath.socketmap import POLICY_DEFER, ProtocolError, Server, netstring, read_netstring
from mailops.returnpath.store import EventStore
from mailops.returnpath.suppression import SuppressionList
from tests.test_returnpath_messages import dsn

KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))

SETTINGS = {
    "fqdn": "mta1.shop.test",
    "sending_domains": {"shop.test": "bounces.shop.test", "news.test": "rp.shared.test"},
    "return_domains": {"bounces.shop.test": ["shop.test"], "rp.shared.test": ["news.test", "other.test"],
                       "bounces.far.test": ["far.test"]},
    "accept": ["dmarc@shop.test", "postmaster@shop.test", "abuse@shop.test"],
    "operator_email": "ops@inbox.test",
    "peers": ["mailops-sync@mta2.shop.test"],
    "soft_bounce": {"threshold": 2, "window": "1d", "expiry": "3d"},
}


@pytest.fixture()
def service(tmp_path):
    settings = settings_from(SETTINGS)
    server = Server(settings, [KEY, OLD_KEY], str(tmp_path / "tokens.sqlite3"), str(tmp_path / "s.sqlite3"),
                    ("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, tmp_path
    server.shutdown()
    server.server_close()


def connect(server) -> socket.socket:
    return socket.create_connection(server.server_address, timeout=10)


def ask(sock: socket.socket, request: str) -> str:
    sock.sendall(netstring(request.encode()))
    reader = sock.makefile("rb")
    data = read_netstring(reader)
    assert data is not None
    return data.decode()


def policy(sock: socket.socket, **attrs) -> str:
    attrs = {"request": "smtpd_access_policy", "protocol_state": "RCPT", **attrs}
    sock.sendall("".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        assert chunk, "the service closed the connection"
        data += chunk
    return data.decode().strip().removeprefix("action=")


def test_netstrings():
    assert netstring(b"OK x") == b"4:OK x,"
    assert read_netstring(io.BytesIO(b"5:hello,")) == b"hello"
    assert read_netstring(io.BytesIO(b"")) is None
    assert read_netstring(io.BytesIO(b"0:,")) == b""
    for bad in (b"5:hell", b"5:hello;", b"x:ab,", b":ab,", b"9999999:a,", b"12", b"200000:" + b"a" * 10):
        with pytest.raises(ProtocolError):
            read_netstring(io.BytesIO(bad))


def test_sender_map_issues_a_recorded_token_in_the_return_path_domain(service):
    server, tmp = service
    with connect(server) as sock:
        first = ask(sock, "sender alice@shop.test")
        second = ask(sock, "sender Alice@Shop.Test")
        shared = ask(sock, "sender news@news.test")
        assert first.startswith("OK b-") and first.endswith("@bounces.shop.test")
        assert second.startswith("OK b-") and second != first                  # one token per message
        assert shared.startswith("OK b-") and shared.endswith("@rp.shared.test")
        for key in ("sender bob@example.org", "sender @shop.test", "sender alice", "sender ",
                    f"sender {first[3:]}", "sender root@mta1.shop.test"):
            assert ask(sock, key) == "NOTFOUND ", key
    path = address.decode([KEY], first[3:])
    assert path.sending_domain == "shop.test"
    table = address.TokenTable(str(tmp / "tokens.sqlite3"))
    assert table.lookup(path.token_id)["sender"] == "alice@shop.test"
    assert address.validate([KEY], shared[3:], sending_domain="news.test")


def test_rcpt_map_accepts_exactly_valid_tokens_and_the_listed_addresses(service):
    server, _ = service
    good = address.encode(KEY, "shop.test").address
    rotated = address.encode(OLD_KEY, "shop.test").address                     # an older key still validates
    shared = address.encode(KEY, "other.test", return_domain="rp.shared.test").address
    elsewhere = address.encode(KEY, "far.test").address                          # another host's sending domain
    old = address.encode(KEY, "shop.test", today=date.today() - timedelta(days=40)).address
    foreign = address.encode(b"x" * 32, "shop.test").address
    wrong_domain = address.encode(KEY, "news.test", return_domain="bounces.shop.test").address
    with connect(server) as sock:
        for rcpt in (good, good.upper(), rotated, shared, elsewhere, "dmarc@shop.test", "POSTMASTER@shop.test",
                     "abuse@shop.test", "mailops-sync@bounces.shop.test"):
            assert ask(sock, f"rcpt {rcpt}") == "OK accept", rcpt
        for rcpt in (old, foreign, wrong_domain, "b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.test",
                     "alice@shop.test", "postmaster@news.test", "info@bounces.shop.test", "@bounces.shop.test",
                     "bounces.shop.test", "x@example.org", "mailops-sync@example.org"):
            assert ask(sock, f"rcpt {rcpt}") == "NOTFOUND ", rcpt


def test_suppressed_map_and_policy_answer_why_and_since_when(service):
    server, tmp = service
    sl = SuppressionList(str(tmp / "s.sqlite3"), origin="mta1.shop.test")
    sl.add("bob@example.org", None, "hard-bounce", "5.1.1 user unknown")
    sl.add("carol@example.org", "shop.test", "complaint", "feedback-type abuse")
    with connect(server) as sock:
        answer = ask(sock, "suppressed bob@example.org")
        assert answer.startswith("OK 550 5.7.1 <bob@example.org>: recipient suppressed since ")
        assert "hard-bounce: 5.1.1 user unknown" in answer
        assert ask(sock, "suppressed carol@example.org") == "NOTFOUND "        # scoped: needs the sender
        assert ask(sock, "suppressed dave@example.org") == "NOTFOUND "
    with connect(server) as sock:
        refused = policy(sock, recipient="carol@example.org", sender="alice@shop.test", sasl_username="alice@shop.test")
        assert refused.startswith("550 5.7.1 recipient suppressed for mail from shop.test since")
        assert policy(sock, recipient="carol@example.org", sender="news@news.test") == "DUNNO"
        assert policy(sock, recipient="bob@example.org", sender="news@news.test").startswith("550 5.7.1")
        assert policy(sock, recipient="dave@example.org", sender="alice@shop.test") == "DUNNO"
        assert policy(sock, recipient="bob@example.org", protocol_state="DATA") == "DUNNO"
    sl.remove("bob@example.org")
    with connect(server) as sock:
        assert policy(sock, recipient="bob@example.org", sender="alice@shop.test") == "DUNNO"


def test_storage_failure_is_a_temporary_answer(tmp_path):
    settings = settings_from(SETTINGS)
    os.mkdir(tmp_path / "ro")
    server = Server(settings, [KEY], str(tmp_path / "ro" / "missing" / "t.sqlite3"),
                    str(tmp_path / "ro" / "missing" / "s.sqlite3"), ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with connect(server) as sock:
            assert ask(sock, "sender alice@shop.test").startswith("TEMP ")
        with connect(server) as sock:
            assert policy(sock, recipient="bob@example.org", sender="alice@shop.test") == POLICY_DEFER
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.0\r\n\r\n", b"99999999999:x,", b"5:abc", b"3:abc;", b"\x00\xff\xfe\n\n",
    b"10:\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6,", b"request=smtpd_access_policy\n" + b"x" * 10000 + b"\n\n",
    b"a=b\n" * 500 + b"\n", b"4:nope,", b"7:unknown,", b"12:rcpt " + b"\x00" * 7 + b",",
])
def test_hostile_input_never_stops_the_service(service, garbage):
    server, _ = service
    with connect(server) as sock:
        sock.sendall(garbage)
        sock.settimeout(1)
        try:
            while sock.recv(65536):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
    with connect(server) as sock:                         # the next client is served as before
        assert ask(sock, "rcpt dmarc@shop.test") == "OK accept"
        assert ask(sock, "sender x@" + "a" * 400) == "NOTFOUND "
        assert ask(sock, "bogus key").startswith("PERM ")


def test_settings_errors_name_the_field(tmp_path):
    for change, field in ((lambda d: d.update(port=0), "port"), (lambda d: d.update(fqdn="no"), "fqdn"),
                          (lambda d: d.update(extra=1), "extra"), (lambda d: d.update(accept=["nobody"]), "accept"),
                          (lambda d: d["soft_bounce"].update(window="soon"), "soft_bounce.window"),
                          (lambda d: d.update(sending_domains={"shop.test": "rp.elsewhere.test"}), "sending_domains")):
        data = json.loads(json.dumps(SETTINGS))
        change(data)
        path = tmp_path / "settings.json"
        path.write_text(json.dumps(data))
        with pytest.raises(MailopsError, match=f"{path}: {field}"):
            load_settings(str(path))
    path.write_text("{not json")
    with pytest.raises(MailopsError, match="not valid JSON"):
        load_settings(str(path))


# --- receive: forwarding and replication ------------------------------------------------------

@pytest.fixture()
def host(tmp_path):
    """A host directory: settings, key file, and a sendmail that queues into a directory (the
    local Postfix's queue stands in here; the lab test uses the real one)."""
    queue = tmp_path / "queue"
    queue.mkdir()
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!{sys.executable}\nimport sys, os, json, uuid\n"
                        f"d = {str(queue)!r}\nn = os.path.join(d, uuid.uuid4().hex)\n"
                        "open(n + '.eml', 'wb').write(sys.stdin.buffer.read())\n"
                        "json.dump(sys.argv[1:], open(n + '.json', 'w'))\n")
    sendmail.chmod(0o755)
    data = dict(SETTINGS, sendmail=str(sendmail))
    (tmp_path / "settings.json").write_text(json.dumps(data))
    key_file = tmp_path / "keys"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    return tmp_path


def args_for(path, recipient, sender=""):
    return ["--config", str(path / "settings.json"), "--events", str(path / "events.sqlite3"),
            "--suppressions", str(path / "s.sqlite3"), "--tokens", str(path / "tokens.sqlite3"),
            "--key-file", str(path / "keys"), "--recipient", recipient, "--sender", sender]


def queued(path):
    out = []
    for meta in sorted((path / "queue").glob("*.json")):
        out.append((json.loads(meta.read_text()), meta.with_suffix(".eml").read_bytes()))
    return out


def test_postmaster_mail_is_stored_and_forwarded_with_the_reason(host):
    raw = b"From: someone@example.org\nTo: postmaster@shop.test\nSubject: your server\n\nhello\n"
    assert main(args_for(host, "postmaster@shop.test", "someone@example.org"), stdin=io.BytesIO(raw)) == EX_OK
    [(argv, message)] = queued(host)
    assert argv == ["-i", "-f", "", "--", "ops@inbox.test"]
    assert b"X-Mailops-Forwarded: mail for postmaster@: an operator reads it" in message
    assert b"Content-Type: message/rfc822" in message and b"Subject: your server" in message
    assert EventStore(str(host / "events.sqlite3")).counts()["forward"] == 1


def test_a_bounce_suppresses_and_is_pushed_to_the_peers_once(host):
    assert main(args_for(host, address.encode(KEY, "shop.test").address), stdin=io.BytesIO(dsn())) == EX_OK
    [(argv, message)] = queued(host)
    assert argv == ["-i", "-f", "mailops-sync@mta1.shop.test", "--", "mailops-sync@mta2.shop.test"]
    [entry] = read_sync(message, [OLD_KEY, KEY])
    assert (entry.target, entry.cause, entry.origin) == ("bob@example.org", "hard-bounce", "mta1.shop.test")
    assert main(["--push", "--config", str(host / "settings.json"), "--key-file", str(host / "keys"),
                 "--suppressions", str(host / "s.sqlite3")]) == EX_OK
    assert len(queued(host)) == 1                                   # nothing new: nothing sent again


def test_a_failed_push_defers_and_the_redelivery_pushes(host):
    sendmail = host / "sendmail"
    good = sendmail.read_text()
    sendmail.write_text("#!/bin/sh\necho 'postdrop: queue is full' >&2\nexit 75\n")
    rcpt = address.encode(KEY, "shop.test").address
    assert main(args_for(host, rcpt), stdin=io.BytesIO(dsn())) == EX_TEMPFAIL
    assert SuppressionList(str(host / "s.sqlite3")).lookup("bob@example.org") is not None   # stored first
    sendmail.write_text(good)
    assert main(args_for(host, rcpt), stdin=io.BytesIO(dsn())) == EX_OK                  # Postfix retries
    assert len(queued(host)) == 1


def test_a_peer_merges_a_signed_message_and_refuses_a_forged_one(host, tmp_path_factory):
    source = SuppressionList(origin="mta2.shop.test")
    source.add("eve@example.org", None, "complaint", "x")
    source.add("gone@example.org")
    source.remove("gone@example.org")
    entries = source.changes_since("")                              # the tombstone replicates too
    settings = settings_from(dict(SETTINGS, fqdn="mta2.shop.test", peers=["mailops-sync@mta1.shop.test"]))
    message = sync_message(entries, settings, [KEY], settings.peers)
    sync_args = args_for(host, "mailops-sync@bounces.shop.test", "mailops-sync@mta2.shop.test")
    assert main(sync_args, stdin=io.BytesIO(message)) == EX_OK
    here = SuppressionList(str(host / "s.sqlite3"))
    assert here.lookup("eve@example.org").origin == "mta2.shop.test"
    assert [e.removed for e in here.entries(include_inactive=True) if e.target == "gone@example.org"] == [True]
    assert queued(host) == []                                       # a peer's change is not sent back
    forged = message.replace(b"eve@example.org", b"ann@example.org")
    assert main(sync_args, stdin=io.BytesIO(forged)) == EX_OK
    assert here.lookup("ann@example.org") is None
    assert EventStore(str(host / "events.sqlite3")).counts()["unparsed"] == 1
    other_key = sync_message(entries, settings, [b"z" * 32], settings.peers)
    with pytest.raises(MailopsError, match="wrong HMAC"):
        read_sync(other_key, [KEY])


def test_outbox_catches_a_change_committed_late(tmp_path):
    settings = settings_from(SETTINGS)
    sl = settings.suppression_list(str(tmp_path / "s.sqlite3"))
    outbox = Outbox(str(tmp_path / "outbox.sqlite3"))
    settings.sendmail = "/bin/true"
    sl.add("a@example.org")
    assert push_pending(settings, sl, [KEY], outbox) == 1
    from datetime import datetime, timezone
    sl.add("late@example.org", now=datetime.now(timezone.utc) - timedelta(minutes=2))   # stamped before the mark
    assert push_pending(settings, sl, [KEY], outbox) == 1
    assert push_pending(settings, sl, [KEY], outbox) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "outbox.sqlite3").st_mode) & 0o002 == 0


# --- the role's filters: what it writes into these settings ---------------------------------

def _role_filters():
    import importlib.util

    from tests.helpers import ROOT
    spec = importlib.util.spec_from_file_location(
        "returnpath_filters", ROOT / "roles" / "returnpath" / "filter_plugins" / "returnpath.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_role_layout_feeds_valid_settings():
    filters = _role_filters()
    domains = {"shop.test": {"dmarc": {"rua": ["mailto:dmarc@shop.test", "mailto:x@elsewhere.org"],
                                       "ruf": "mailto:ruf@shop.test!10m"},
                             "tls_rpt": {"rua": ["mailto:tlsrpt@shop.test", "https://r.example/x"]}},
               "news.test": {"hosts": ["mta2.shop.test"], "return_path": "rp.shared.test"},
               "other.test": {"return_path": "rp.shared.test"}}
    layout = filters.returnpath_layout(domains, "mta1.shop.test")
    assert layout["sending_domains"] == {"shop.test": "bounces.shop.test", "other.test": "rp.shared.test"}
    assert layout["return_domains"] == {"bounces.shop.test": ["shop.test"], "rp.shared.test": ["news.test", "other.test"]}
    assert layout["accept"] == ["abuse@other.test", "abuse@shop.test", "dmarc@shop.test", "postmaster@other.test",
                                "postmaster@shop.test", "ruf@shop.test", "tlsrpt@shop.test"]
    assert layout["relay_domains"] == ["bounces.shop.test", "other.test", "rp.shared.test", "shop.test"]
    settings = settings_from({"fqdn": "mta1.shop.test", "operator_email": "ops@inbox.test",
                              **{k: layout[k] for k in ("sending_domains", "return_domains", "accept")}})
    assert settings.return_domains["rp.shared.test"] == ["news.test", "other.test"]


def test_role_key_filter_names_the_reference_never_the_key(tmp_path, monkeypatch):
    filters = _role_filters()
    path = tmp_path / "rp.key"
    path.write_text("# fleet key\n" + KEY.hex().upper() + "\n" + OLD_KEY.hex() + "\n")
    assert filters.returnpath_key_problems({"file": "rp.key"}, str(tmp_path)) == []
    assert filters.returnpath_key({"file": "rp.key"}, str(tmp_path)) == KEY.hex() + "\n" + OLD_KEY.hex() + "\n"
    path.write_text("00" * 8 + "\n")
    assert filters.returnpath_key_problems({"file": str(path)}) == [
        "mailops_return_path.key: key 1 has 8 bytes; use at least 16 (openssl rand -hex 32)"]
    monkeypatch.delenv("MAILOPS_RP_KEY_UNSET", raising=False)
    [problem] = filters.returnpath_key_problems({"env": "MAILOPS_RP_KEY_UNSET"})
    assert problem.startswith("mailops_return_path.key {env: MAILOPS_RP_KEY_UNSET}: environment variable")
    path.write_text("not hex at all " + KEY.hex() + "\n")
    [problem] = filters.returnpath_key_problems({"file": str(path)})
    assert "not hex" in problem and KEY.hex() not in problem


def test_housekeeping_forgets_old_tokens_and_tombstones(tmp_path):
    import time as _time
    from datetime import datetime, timezone

    from mailops.returnpath.socketmap import housekeeping
    settings = settings_from(SETTINGS)
    table = address.TokenTable(str(tmp_path / "t.sqlite3"))
    table.issued(address.encode(KEY, "shop.test"), now=_time.time() - 40 * 86400)
    table.issued(address.encode(KEY, "shop.test"))
    table.close()
    sl = settings.suppression_list(str(tmp_path / "s.sqlite3"))
    old = datetime.now(timezone.utc) - timedelta(days=100)
    sl.add("a@example.org", now=old)
    sl.remove("a@example.org", now=old)
    sl.add("b@example.org")
    sl.close()
    assert housekeeping(settings, str(tmp_path / "t.sqlite3"), str(tmp_path / "s.sqlite3")) == (1, 1)
    assert housekeeping(settings, str(tmp_path / "t.sqlite3"), str(tmp_path / "s.sqlite3")) == (0, 0)
