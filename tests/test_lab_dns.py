"""Tests for mailops.lab.dns: a real BIND 9 named on loopback (127.0.0.1 / ::1, random high port).

named only binds addresses that are configured on an interface, so an address like
127.77.0.1 (routable to lo, but not configured on it) would never be served; the tests use
127.0.0.1 and ::1 on a free high port instead.  All traffic stays on loopback.

Tests that run named carry the ``lab`` mark (root; run them under the lab lock); skipped
without named or root, unless CI=true (then a missing prerequisite fails).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr
import dns.zone
import pytest

from mailops.errors import MailopsError
from mailops.lab import dns as labdns
from mailops.lab import dns_server
from mailops.lab.dns import DNSServerConfig, Record

V4 = "127.0.0.1"
V6 = "::1"
ZONE = "lab.test."
NET4 = "198.51.100.0/24"
NET6 = "2001:db8:51::/64"
DKIM = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 8  # > 255 bytes


# --------------------------------------------------------------------------- helpers


def _require_named() -> None:
    missing = []
    if not (shutil.which("named") or os.access("/usr/sbin/named", os.X_OK)):
        missing.append("BIND named is not installed")
    if not (shutil.which("named-checkconf") or os.access("/usr/sbin/named-checkconf", os.X_OK)):
        missing.append("named-checkconf is not installed")
    if os.geteuid() != 0:
        missing.append("not running as root")
    if missing:
        msg = "lab DNS tests need BIND and root: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _free_port() -> int:
    """A port free for UDP and TCP on both 127.0.0.1 and ::1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((V4, 0))
            port = s.getsockname()[1]
        try:
            socks = []
            for fam, addr in ((socket.AF_INET, V4), (socket.AF_INET6, V6)):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    t = socket.socket(fam, kind)
                    socks.append(t)
                    t.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free port on loopback")


def _config(state_dir: Path, port: int) -> DNSServerConfig:
    return DNSServerConfig(
        state_dir=state_dir,
        listen_v4=[V4],
        listen_v6=[V6],
        port=port,
        zones={
            ZONE: [
                Record("mx1", "A", "198.51.100.10"),
                Record("mx1", "AAAA", "2001:db8:51::10"),
                Record("@", "MX", "10 mx1"),
                Record("@", "TXT", "v=spf1 ip4:198.51.100.0/24 -all", 60),
                Record("sel1._domainkey", "TXT", DKIM),
            ],
            labdns.reverse_zone_for(NET4): [Record(labdns.ptr_name("198.51.100.10"), "PTR", "mx1.lab.test.")],
            labdns.reverse_zone_for(NET6): [Record(labdns.ptr_name("2001:db8:51::10"), "PTR", "mx1.lab.test.")],
        },
    )


@dataclass
class Server:
    cfg: DNSServerConfig
    pid: int

    def query(self, name: str, rtype: str, *, rd: bool = True, addr: str = V4, tcp: bool = False):
        q = dns.message.make_query(name, rtype)
        if not rd:
            q.flags &= ~dns.flags.RD
        fn = dns.query.tcp if tcp else dns.query.udp
        return fn(q, addr, port=self.cfg.port, timeout=3)

    def values(self, name: str, rtype: str) -> set[str]:
        r = self.query(name, rtype)
        rrset = r.get_rrset(r.answer, dns.name.from_text(name), 1, dns.rdatatype.from_text(rtype))
        return {rd.to_text() for rd in rrset} if rrset else set()


def _our_nameds(state_dir: Path) -> list[int]:
    """PIDs whose cmdline runs named with state_dir's named.conf (scan of /proc)."""
    conf = str(state_dir / "named.conf").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmd and conf in cmd.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _raw_tcp(msg: dns.message.Message, addr: str, port: int) -> dns.message.Message:
    """Send msg over TCP and parse the reply WITHOUT TSIG validation (to see NOTAUTH/BADSIG replies)."""
    wire = msg.to_wire()
    with socket.create_connection((addr, port), timeout=5) as s:
        s.sendall(len(wire).to_bytes(2, "big") + wire)

        def recv(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = s.recv(n - len(buf))
                assert chunk, "connection closed"
                buf += chunk
            return buf

        length = int.from_bytes(recv(2), "big")
        return dns.message.from_wire(recv(length), keyring=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_named()
    cfg = _config(tmp_path_factory.mktemp("labdns"), _free_port())
    labdns.write_config(cfg)
    srv = Server(cfg, labdns.start(cfg))
    yield srv
    labdns.stop(srv.pid, state_dir=cfg.state_dir)
    assert _our_nameds(cfg.state_dir) == []


# --------------------------------------------------------------------------- pure functions


def test_reverse_zone_for_and_ptr_name():
    assert labdns.reverse_zone_for("198.51.100.0/24") == "100.51.198.in-addr.arpa."
    assert labdns.reverse_zone_for("198.51.100.1/24") == "100.51.198.in-addr.arpa."
    assert labdns.reverse_zone_for("10.0.0.0/8") == "10.in-addr.arpa."
    assert labdns.reverse_zone_for("2001:db8:51::/64") == "0.0.0.0.1.5.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    assert labdns.reverse_zone_for("2001:db8::/32") == "8.b.d.0.1.0.0.2.ip6.arpa."
    assert labdns.ptr_name("198.51.100.10") == "10.100.51.198.in-addr.arpa."
    assert labdns.ptr_name("2001:db8:51::10") == (
        "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.5.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    )
    assert labdns.ptr_name("2001:db8:51::10").endswith(labdns.reverse_zone_for(NET6))
    assert labdns.dnsbl_name("192.0.2.99", "dnsbl.test.") == "99.2.0.192.dnsbl.test."
    assert labdns.dnsbl_name("2001:db8::1", "dnsbl.test").startswith("1.0.0.0.")
    for bad in ("198.51.100.0/25", "2001:db8::/66", "0.0.0.0/0", "nonsense"):
        with pytest.raises(MailopsError):
            labdns.reverse_zone_for(bad)
    with pytest.raises(MailopsError):
        labdns.ptr_name("300.1.2.3")


def test_write_config_rejects_bad_record_with_one_line(tmp_path):
    if not (shutil.which("named-checkconf") or os.access("/usr/bin/named-checkconf", os.X_OK)):
        pytest.skip("named-checkconf missing")
    cfg = DNSServerConfig(tmp_path, [V4], [], port=5353, zones={ZONE: [Record("www", "A", "not-an-ip")]})
    with pytest.raises(MailopsError) as ei:
        labdns.write_config(cfg)
    assert "not-an-ip" in str(ei.value) and "\n" not in str(ei.value)
    cfg.zones = {ZONE: [Record("www.example.com.", "A", "192.0.2.1")]}
    with pytest.raises(MailopsError, match="outside zone"):
        labdns.write_config(cfg)


def test_startup_problem_parses_named_918_log():
    # Real BIND 9.18 output when another socket holds the port: no "address in use" at all.
    lines = dns_server._log_lines(
        "22-Nov-2026 10:29:05.635 listening on IPv4 interface lo, 127.0.0.1#15353\n"
        "22-Nov-2026 10:29:05.635 creating IPv4 interface lo failed; interface ignored\n"
        "22-Nov-2026 10:29:05.659 running\n"
    )
    problem = dns_server._startup_problem(lines, None, exited=False)
    assert "127.0.0.1#15353" in problem and "address in use" in problem
    fatal = dns_server._log_lines(
        "22-Nov-2026 10:29:05.631 loading configuration from '/x/named.conf'\n"
        "22-Nov-2026 10:29:05.631 /x/named.conf:3: unknown option 'bogus'\n"
        "22-Nov-2026 10:29:05.631 loading configuration: failure\n"
        "22-Nov-2026 10:29:05.631 exiting (due to fatal error)\n"
    )
    assert dns_server._startup_problem(fatal, None, exited=True) == "/x/named.conf:3: unknown option 'bogus'"


def test_write_config_rewrites_only_zones_without_dynamic_changes(tmp_path):
    if not (shutil.which("named-checkconf") or os.access("/usr/bin/named-checkconf", os.X_OK)):
        pytest.skip("named-checkconf missing")
    cfg = DNSServerConfig(tmp_path, [V4], [], port=5353, zones={ZONE: [], "other.test.": []}, dnsbl_zone=None)
    labdns.write_config(cfg)
    lab, other = tmp_path / "db.lab.test", tmp_path / "db.other.test"
    serial = lab.read_text().split("SOA")[1].split()[2]
    # config change, no dynamic changes: the zone file follows the config, with a higher serial
    cfg.zones[ZONE] = [Record("www", "A", "192.0.2.80")]
    labdns.write_config(cfg)
    assert "www.lab.test." in lab.read_text()
    assert int(lab.read_text().split("SOA")[1].split()[2]) > int(serial)
    # a zone file named rewrote (dumped dynamic updates) is kept ...
    other.write_text(other.read_text() + "dyn.other.test. 60 IN A 192.0.2.81\n")
    cfg.zones["other.test."] = [Record("new", "A", "192.0.2.82")]
    labdns.write_config(cfg)
    assert "dyn.other.test." in other.read_text() and "new.other.test." not in other.read_text()
    # ... unless reset_zones=True
    labdns.write_config(cfg, reset_zones=True)
    assert "dyn.other.test." not in other.read_text() and "new.other.test." in other.read_text()
    assert stat.S_IMODE((tmp_path / "tsig.secret").stat().st_mode) == 0o600


# --------------------------------------------------------------------------- server


@pytest.mark.lab
def test_named_conf_is_authoritative_only(server):
    conf = (server.cfg.state_dir / "named.conf").read_text()
    assert "recursion no;" in conf and "forwarders" not in conf and "/etc/bind" not in conf


@pytest.mark.lab
@pytest.mark.parametrize("rd", [True, False])
@pytest.mark.parametrize("addr", [V4, V6])
def test_forward_zone_answers_authoritatively(server, rd, addr):
    expected = {
        ("mx1.lab.test.", "A"): {"198.51.100.10"},
        ("mx1.lab.test.", "AAAA"): {"2001:db8:51::10"},
        ("lab.test.", "MX"): {"10 mx1.lab.test."},
        ("lab.test.", "TXT"): {'"v=spf1 ip4:198.51.100.0/24 -all"'},
        ("ns1.lab.test.", "A"): {V4},
        ("ns1.lab.test.", "AAAA"): {V6},
    }
    for (name, rtype), want in expected.items():
        r = server.query(name, rtype, rd=rd, addr=addr)
        assert r.rcode() == dns.rcode.NOERROR, (name, rtype)
        assert r.flags & dns.flags.AA, (name, rtype)
        assert not r.flags & dns.flags.RA
        got = {rd_.to_text() for rrset in r.answer for rd_ in rrset}
        assert got == want, (name, rtype)


@pytest.mark.lab
def test_long_txt_is_split_and_served_over_tcp(server):
    r = server.query("sel1._domainkey.lab.test.", "TXT", tcp=True)
    assert r.flags & dns.flags.AA
    (rdata,) = r.answer[0]
    assert b"".join(rdata.strings).decode() == DKIM
    assert all(len(s) <= 255 for s in rdata.strings)


@pytest.mark.lab
def test_nxdomain_in_zone_and_refused_outside(server):
    r = server.query("nope.lab.test.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    for name in ("example.com.", "www.isc.org.", "."):
        r = server.query(name, "A")  # RD=1: a resolver would recurse; we must not
        assert r.rcode() == dns.rcode.REFUSED, name
        assert not r.answer and not r.flags & dns.flags.RA


@pytest.mark.lab
def test_reverse_zones_ptr(server):
    assert server.values(labdns.ptr_name("198.51.100.10"), "PTR") == {"mx1.lab.test."}
    assert server.values(labdns.ptr_name("2001:db8:51::10"), "PTR") == {"mx1.lab.test."}
    for zone in (labdns.reverse_zone_for(NET4), labdns.reverse_zone_for(NET6)):
        r = server.query(zone, "SOA")
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA


@pytest.mark.lab
def test_tsig_update_add_replace_delete(server):
    cfg = server.cfg
    labdns.update(cfg, ZONE, add=[Record("dyn", "A", "192.0.2.1", 60), ("dyn", "A", "192.0.2.2", 60)])
    assert server.values("dyn.lab.test.", "A") == {"192.0.2.1", "192.0.2.2"}
    labdns.update(cfg, ZONE, replace=[Record("dyn", "A", "192.0.2.3", 60)])
    assert server.values("dyn.lab.test.", "A") == {"192.0.2.3"}
    labdns.update(cfg, ZONE, add=[Record("dyn", "TXT", "hello")])
    labdns.update(cfg, ZONE, delete=[Record("dyn", "A", "")])
    assert server.values("dyn.lab.test.", "A") == set()
    assert server.values("dyn.lab.test.", "TXT") == {'"hello"'}
    labdns.update(cfg, ZONE, delete=["dyn"])
    assert server.query("dyn.lab.test.", "TXT").rcode() == dns.rcode.NXDOMAIN
    # reverse zone update
    labdns.update(cfg, labdns.reverse_zone_for(NET4), add=[Record(labdns.ptr_name("198.51.100.20"), "PTR", "www.lab.test.")])
    assert server.values(labdns.ptr_name("198.51.100.20"), "PTR") == {"www.lab.test."}
    # an update for a zone the server does not serve fails with a one-line MailopsError
    with pytest.raises(MailopsError) as ei:
        labdns.update(cfg, "not-a-zone.test.", add=[Record("x", "A", "192.0.2.9")])
    assert "\n" not in str(ei.value)


@pytest.mark.lab
def test_unsigned_and_wrong_key_updates_are_refused(server):
    cfg = server.cfg
    serial_before = server.values(ZONE, "SOA")
    attempts = []
    m = dns.update.UpdateMessage(ZONE)
    m.add("evil", 60, "A", "192.0.2.66")
    attempts.append(("unsigned", m))
    for keyname, secret in (
        (cfg.tsig_key_name, "d3JvbmctLXNlY3JldC0td3JvbmctLXNlY3JldC0tLTA="),  # right name, wrong secret
        ("intruder.", labdns.tsig_secret(cfg)),  # unknown key name
    ):
        key = dns.tsig.Key(keyname, secret, labdns.TSIG_ALGORITHM)
        m = dns.update.UpdateMessage(ZONE, keyring={key.name: key}, keyname=key.name)
        m.add("evil", 60, "A", "192.0.2.66")
        attempts.append((keyname, m))
    for label, msg in attempts:
        r = _raw_tcp(msg, V4, cfg.port)
        assert r.rcode() in (dns.rcode.REFUSED, dns.rcode.NOTAUTH), label
    assert server.query("evil.lab.test.", "A").rcode() == dns.rcode.NXDOMAIN
    assert server.values(ZONE, "SOA") == serial_before
    # and the library reports a bad key as a one-line MailopsError
    bad = DNSServerConfig(cfg.state_dir, cfg.listen_v4, cfg.listen_v6, cfg.port, tsig_key_name="intruder.")
    with pytest.raises(MailopsError) as ei:
        labdns.update(bad, ZONE, add=[Record("evil", "A", "192.0.2.66")])
    assert "\n" not in str(ei.value)
    assert server.query("evil.lab.test.", "A").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.lab
def test_tsig_axfr(server):
    cfg = server.cfg
    labdns.update(cfg, ZONE, add=[Record("axfr-dyn", "A", "192.0.2.44")])
    keyring = labdns.tsig_keyring(cfg)
    (keyname,) = keyring
    xfr = dns.query.xfr(V4, ZONE, port=cfg.port, keyring=keyring, keyname=keyname, keyalgorithm=labdns.TSIG_ALGORITHM, relativize=False)
    zone = dns.zone.from_xfr(xfr, relativize=False)
    assert zone.get_rdataset("axfr-dyn.lab.test.", "A").to_text().endswith("192.0.2.44")
    assert zone.get_rdataset("mx1.lab.test.", "A") is not None
    soa = zone.get_rdataset("lab.test.", "SOA")[0]
    assert soa.minimum <= 60
    with pytest.raises(dns.xfr.TransferError) as ei:
        dns.zone.from_xfr(dns.query.xfr(V4, ZONE, port=cfg.port, lifetime=5))
    assert ei.value.rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)


@pytest.mark.lab
def test_dnsbl(server):
    cfg = server.cfg
    assert server.values("2.0.0.127.dnsbl.test.", "A") == {"127.0.0.2"}
    assert server.values("2.0.0.127.dnsbl.test.", "TXT")
    assert server.query("1.0.0.127.dnsbl.test.", "A").rcode() == dns.rcode.NXDOMAIN
    v6test = labdns.dnsbl_name("::ffff:7f00:2", "dnsbl.test.")
    assert server.values(v6test, "A") == {"127.0.0.2"}
    for addr in ("192.0.2.99", "2001:db8:51::99"):
        name = labdns.dnsbl_name(addr, "dnsbl.test.")
        assert server.query(name, "A").rcode() == dns.rcode.NXDOMAIN
        assert labdns.set_dnsbl_listing(cfg, addr, "127.0.0.4", reason=f"spam from {addr}") == name
        assert server.values(name, "A") == {"127.0.0.4"}
        assert server.values(name, "TXT") == {f'"spam from {addr}"'}
        labdns.set_dnsbl_listing(cfg, addr)  # replace, default code and reason
        assert server.values(name, "A") == {"127.0.0.2"}
        assert len(server.values(name, "TXT")) == 1
        labdns.clear_dnsbl_listing(cfg, addr)
        assert server.query(name, "A").rcode() == dns.rcode.NXDOMAIN
    assert "99.2.0.192.dnsbl.test." == labdns.dnsbl_name("192.0.2.99", "dnsbl.test.")
    with pytest.raises(MailopsError):
        labdns.set_dnsbl_listing(cfg, "192.0.2.1", code="10.0.0.1")


@pytest.mark.lab
def test_start_on_busy_port_fails_cleanly(server, tmp_path):
    # Another state dir on the port our running server holds: named would silently share it
    # (SO_REUSEPORT), so start() must refuse before spawning anything.
    other = _config(tmp_path / "other", server.cfg.port)
    other.zones = {"other.test.": []}
    other.dnsbl_zone = None
    labdns.write_config(other)
    with pytest.raises(MailopsError) as ei:
        labdns.start(other, timeout=5)
    msg = str(ei.value)
    assert "in use" in msg and str(server.cfg.port) in msg and "\n" not in msg
    assert _our_nameds(other.state_dir) == []
    # A port held by some other (non-DNS) socket.
    port = _free_port()
    other.port = port
    labdns.write_config(other)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as blocker:
        blocker.bind((V6, port))
        with pytest.raises(MailopsError, match="in use") as ei:
            labdns.start(other, timeout=5)
        assert "\n" not in str(ei.value)
    assert _our_nameds(other.state_dir) == []
    # the original server is unaffected
    assert server.values("mx1.lab.test.", "A") == {"198.51.100.10"}


@pytest.mark.lab
def test_start_twice_and_stop_refuses_foreign_pid(server):
    with pytest.raises(MailopsError, match="already running"):
        labdns.start(server.cfg)
    assert labdns.running_pid(server.cfg) == server.pid
    with pytest.raises(MailopsError, match="refusing"):
        labdns.stop(os.getpid())
    with pytest.raises(MailopsError, match="refusing"):
        labdns.stop(server.pid, state_dir=server.cfg.state_dir / "elsewhere")
    labdns.stop(2**22 + 12345)  # no such process: no error


@pytest.mark.lab
def test_write_config_is_idempotent_and_keeps_dynamic_changes(server):
    cfg = server.cfg
    d = cfg.state_dir
    secret = (d / "tsig.secret").read_text()
    key = (d / "tsig.key").read_text()
    for name in ("tsig.key", "tsig.secret"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert secret.strip() in key and f'key "{cfg.tsig_key_name}"' in key
    labdns.update(cfg, ZONE, add=[Record("keepme", "A", "192.0.2.77")])
    zone_file = (d / "db.lab.test").read_text()

    labdns.write_config(cfg)  # while running
    assert (d / "tsig.secret").read_text() == secret and (d / "tsig.key").read_text() == key
    for name in ("tsig.key", "tsig.secret"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert (d / "db.lab.test").read_text() == zone_file and (d / "db.lab.test.jnl").exists()
    with pytest.raises(MailopsError, match="stop it"):
        labdns.write_config(cfg, reset_zones=True)

    # restart: the dynamic record survives; stop leaves no named of ours behind
    labdns.stop(server.pid, state_dir=d)
    assert _our_nameds(d) == [] and labdns.running_pid(cfg) is None
    labdns.stop(server.pid)  # already gone: no error
    labdns.write_config(cfg)
    server.pid = labdns.start(cfg)
    assert server.values("keepme.lab.test.", "A") == {"192.0.2.77"}
    import base64

    (k,) = labdns.tsig_keyring(cfg).values()
    assert base64.b64encode(k.secret).decode() == secret.strip()

    # reset_zones=True (server stopped) goes back to the configured records
    labdns.stop(server.pid, state_dir=d)
    labdns.write_config(cfg, reset_zones=True)
    assert not (d / "db.lab.test.jnl").exists()
    assert (d / "tsig.secret").read_text() == secret
    server.pid = labdns.start(cfg)
    assert server.query("keepme.lab.test.", "A").rcode() == dns.rcode.NXDOMAIN
    assert server.values("mx1.lab.test.", "A") == {"198.51.100.10"}
