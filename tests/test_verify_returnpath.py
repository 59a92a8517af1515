"""`mailops verify` group returnpath without the lab: RCPT probes of the report addresses
and of a freshly minted return-path address against a small SMTP server on loopback that
accepts, refuses or checks the token with the fleet's key as a mail host does."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from mailops.inventory import load
from mailops.returnpath import address as tokens
from mailops.verify import returnpath as vr
from tests.helpers import copy_inventory

KEY = bytes.fromhex("cd" * 32)


class SmtpServer(socketserver.ThreadingTCPServer):
    """Just enough SMTP: accepts RCPT for ``accept`` addresses and return paths valid under ``keys``."""
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, accept: set[str], keys: list[bytes], rcpt_code: int = 550):
        super().__init__(("127.0.0.1", 0), Handler)
        self.accept, self.keys, self.rcpt_code = accept, keys, rcpt_code
        self.commands: list[str] = []


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        server = self.server
        self.wfile.write(b"220 mx.loop.test ESMTP\r\n")
        for raw in self.rfile:
            line = raw.decode().strip()
            server.commands.append(line)
            verb = line.split(" ", 1)[0].upper().split(":")[0]
            if verb == "EHLO":
                self.wfile.write(b"250-mx.loop.test\r\n250 8BITMIME\r\n")
            elif verb == "MAIL":
                self.wfile.write(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                rcpt = line.split(":", 1)[1].strip().strip("<>").lower()
                ok = rcpt in server.accept or tokens.validate(server.keys, rcpt)
                reply = b"250 2.1.5 Ok\r\n" if ok else \
                    f"{server.rcpt_code} 5.1.1 <{rcpt}>: Recipient address rejected\r\n".encode()
                self.wfile.write(reply)
            elif verb == "RSET":
                self.wfile.write(b"250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 2.0.0 Bye\r\n")
                return
            else:
                self.wfile.write(b"502 5.5.2 not here\r\n")


@pytest.fixture
def inv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = copy_inventory(tmp_path / "inv", settings=lambda d: d.__setitem__(
        "mailops_return_path", {"key": {"file": "rp.key"}, "operator_email": "ops@inbox.test"}))
    (path / "rp.key").write_text(KEY.hex() + "\n")
    (path / "rp.key").chmod(0o600)
    return load(path)


@pytest.fixture
def smtp():
    servers = []

    def start(accept=("dmarc@shop.test", "tlsrpt@shop.test"), keys=(KEY,), rcpt_code=550):
        server = SmtpServer(set(accept), list(keys), rcpt_code)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def dns(answers=None):
    base = {("shop.test", "MX"): {"10 mx.loop.test."}, ("bounces.shop.test", "MX"): {"10 mx.loop.test."},
            ("bounces.news.test", "MX"): {"10 mx.loop.test."}, ("mx.loop.test", "A"): {"127.0.0.1"},
            ("mx.loop.test", "AAAA"): set()}
    base.update(answers or {})
    return lambda name, rtype: None if base.get((name, rtype), set()) is None else \
        frozenset(base.get((name, rtype), set()))


def by_name(results):
    return {(r.subject, r.name): r for r in results}


def test_every_address_accepted_with_the_null_sender_and_never_data(inv, smtp):
    server = smtp()
    results = vr.check(inv, resolve=dns(), port=server.server_address[1], timeout=5)
    got = by_name(results)
    assert set(got) == {("shop.test", "rcpt.dmarc.rua"), ("shop.test", "rcpt.tls_rpt.rua"),
                        ("bounces.news.test", "rcpt.return-path"), ("bounces.shop.test", "rcpt.return-path")}
    assert all(r.status == "pass" and r.group == "returnpath" for r in results), results
    assert "b-" in got[("bounces.shop.test", "rcpt.return-path")].detail
    verbs = [c.split(" ", 1)[0].split(":")[0].upper() for c in server.commands]
    assert "DATA" not in verbs and verbs.count("RSET") == 4 and verbs.count("QUIT") == 4
    assert all(c.upper() == "MAIL FROM:<>" for c in server.commands if c.upper().startswith("MAIL"))
    # only the domains asked for
    only = vr.check(inv, resolve=dns(), port=server.server_address[1], timeout=5, domains=["news.test"])
    assert [(r.subject, r.name) for r in only] == [("bounces.news.test", "rcpt.return-path")]


def test_a_refused_report_address_and_a_host_with_another_key_fail_with_the_fix(inv, smtp):
    server = smtp(accept=("tlsrpt@shop.test",), keys=(bytes.fromhex("ee" * 32),))
    got = by_name(vr.check(inv, resolve=dns(), port=server.server_address[1], timeout=5))
    rua = got[("shop.test", "rcpt.dmarc.rua")]
    assert rua.status == "fail" and "550 5.1.1" in rua.detail and "mailops provision" in rua.fix
    assert got[("shop.test", "rcpt.tls_rpt.rua")].status == "pass"
    rp = got[("bounces.shop.test", "rcpt.return-path")]
    assert rp.status == "fail" and "/etc/mailops/returnpath.keys" in rp.fix


def test_a_temporary_refusal_is_a_failure_too(inv, smtp):
    server = smtp(accept=(), rcpt_code=451)
    got = by_name(vr.check(inv, resolve=dns(), port=server.server_address[1], timeout=5))
    rua = got[("shop.test", "rcpt.dmarc.rua")]
    assert rua.status == "fail" and "451" in rua.detail


def test_unreachable_mx_or_no_dns_answer_is_inconclusive_no_mx_fails(inv):
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = vr.check(inv, resolve=dns(), port=port, timeout=2)
    assert {r.status for r in results} == {"inconclusive"}
    assert "cannot talk SMTP" in results[0].detail
    silent = by_name(vr.check(inv, resolve=dns({("shop.test", "MX"): None}), port=port, timeout=2))
    assert silent[("shop.test", "rcpt.dmarc.rua")].status == "inconclusive"
    none = by_name(vr.check(inv, resolve=dns({("shop.test", "MX"): set()}), port=port, timeout=2))
    assert none[("shop.test", "rcpt.dmarc.rua")].status == "fail"
    assert "dns sync" in none[("shop.test", "rcpt.dmarc.rua")].fix


def test_an_unreadable_key_is_one_failure_without_the_key(inv, smtp):
    (inv.path / "rp.key").write_text("zz" * 20 + "\n")
    server = smtp()
    results = vr.check(inv, resolve=dns(), port=server.server_address[1], timeout=5)
    got = by_name(results)
    key = got[("mailops_return_path", "rcpt.return-path")]
    assert key.status == "fail" and "is not hex" in key.detail and "zzzz" not in key.detail
    assert got[("shop.test", "rcpt.dmarc.rua")].status == "pass"       # the report addresses are still probed


def test_report_address_outside_the_inventory_gets_a_different_fix(inv, smtp):
    inv.domains["shop.test"].dmarc.rua[:] = ["mailto:reports@elsewhere.test"]
    server = smtp(accept=())
    got = by_name(vr.check(inv, resolve=dns({("elsewhere.test", "MX"): {"10 mx.loop.test."}}),
                           port=server.server_address[1], timeout=5))
    rua = got[("shop.test", "rcpt.dmarc.rua")]
    assert rua.status == "fail" and "point dmarc.rua elsewhere" in rua.fix


def test_runner_runs_the_group_when_asked_even_with_the_return_path_off(tmp_path, monkeypatch):
    from mailops.verify import runner
    monkeypatch.chdir(tmp_path)
    path = copy_inventory(tmp_path / "off", settings=lambda d: (
        d.pop("mailops_return_path"), [d["mailops_domains"]["shop.test"].pop(k) for k in ("dmarc", "tls_rpt")],
        d.__setitem__("mailops_dkim_keystore", str(tmp_path / "keys"))))
    called = []
    monkeypatch.setattr(vr, "check", lambda inv, **kw: called.append((inv.return_path, kw["domains"])) or [])
    assert "returnpath" in runner.GROUPS
    runner.verify(path, only=("returnpath",), domains=["shop.test"])
    assert called == [(None, ["shop.test"])]
