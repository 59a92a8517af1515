"""`mailops verify`, DNS group (mailops.verify.dnschecks).

Unit tests answer DNS from dictionaries (a fake DnsReader) and serve SMTP/HTTPS on
loopback.  Lab tests publish a throw-away sending domain v<random>.lab.test and a
host mta.v<random>.lab.test (198.51.100.19 / 2001:db8:51::19, where no machine
answers) with the `mailops dns sync` code (its ownership registry kept inside the
domain: lab.test is shared), break one thing at a time, restore it with a forced sync,
and remove every record they made.  shop.test, news.test and vps1 are never touched: others use them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import http.server
import secrets
import socketserver
import ssl
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dns.message
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mailops.dkim.store import KeyStore
from mailops.dns.kinds import mta_sts
from mailops.dns.kinds.mta_sts import mta_sts_id, mta_sts_policy
from mailops.dns.providers import rfc2136
from mailops.dns.records import in_zone
from mailops.dns.sync import apply_plan, make_plan, readback
from mailops.inventory import load_inventory
from mailops.inventory.model import Inventory
from mailops.lab import core, dns as labdns
from mailops.verify import dnschecks
from mailops.dns.kinds.mta_sts import PolicyFetchError, fetch_mta_sts_policy, parse_mta_sts_policy
from mailops.dns.kinds.spf import SpfError, SpfEvaluation, parse_spf
from mailops.verify.dnsbl import decode_dnsbl, dnsbl_query_name
from mailops.verify.dnschecks import check_domains, check_hosts
from tests.helpers import copy_inventory, mailops


GW = "198.51.100.1"
LAB_ADDR4, LAB_ADDR6 = "198.51.100.19", "2001:db8:51::19"


# --- unit: SPF ------------------------------------------------------------------------

def fake_lookup(table: dict) -> dnschecks.Lookup:
    """(name, type) -> values; a missing key is NXDOMAIN, the value None a timeout."""
    def lookup(name, rtype):
        found = table.get((name.rstrip("."), rtype), set())
        return None if found is None else frozenset(found)
    return lookup


def test_spf_evaluates_ip4_ip6_a_mx_include_and_redirect():
    table = {
        ("d.example", "TXT"): {"v=spf1 ip4:192.0.2.0/28 a:web.d.example/30 mx include:_spf.d.example ~all",
                               "google-site-verification=x"},
        ("web.d.example", "A"): {"192.0.2.100"},
        ("d.example", "MX"): {"10 mx.d.example."},
        ("mx.d.example", "AAAA"): {"2001:db8:1::25"},
        ("_spf.d.example", "TXT"): {"v=spf1 redirect=_v6.d.example"},
        ("_v6.d.example", "TXT"): {"v=spf1 ip6:2001:db8:2::/48 -all"},
    }
    lookup = fake_lookup(table)
    for ip, want in (("192.0.2.5", "pass"), ("192.0.2.102", "pass"), ("2001:db8:1::25", "pass"),
                     ("2001:db8:2::9", "pass"), ("2001:db8:3::1", "softfail"), ("192.0.2.200", "softfail")):
        assert SpfEvaluation(lookup, ip).run("d.example")[0] == want, ip
    walk = SpfEvaluation(lookup)
    walk.run("d.example")
    assert (walk.lookups, walk.voids) == (4, 0)  # a, mx, include, redirect


def test_spf_lookup_count_follows_includes_and_fails_above_ten():
    chain = {("d.example", "TXT"): {"v=spf1 include:i0.d.example -all"}}
    for i in range(11):
        nxt = f" include:i{i + 1}.d.example" if i < 10 else ""
        chain[(f"i{i}.d.example", "TXT")] = {f"v=spf1 ip4:192.0.2.{i}{nxt} -all"}
    walk = SpfEvaluation(fake_lookup(chain))
    walk.run("d.example")
    assert walk.lookups == 11
    # a receiver stops at the 11th lookup: permerror even for an address listed at the end
    assert SpfEvaluation(fake_lookup(chain), "192.0.2.10").run("d.example") == ("permerror", "more than 10 DNS lookups")
    assert SpfEvaluation(fake_lookup(chain), "192.0.2.8").run("d.example")[0] == "pass"


def test_spf_void_lookups_above_two_are_permerror():
    table = {("d.example", "TXT"): {"v=spf1 a:gone1.d.example mx:gone2.d.example exists:gone3.d.example "
                                    "ip4:192.0.2.1 -all"}}
    walk = SpfEvaluation(fake_lookup(table))
    walk.run("d.example")
    assert walk.voids == 3
    assert SpfEvaluation(fake_lookup(table), "192.0.2.1").run("d.example") == ("permerror", "more than 2 void lookups")
    table[("gone3.d.example", "A")] = {"127.0.0.2"}
    assert SpfEvaluation(fake_lookup(table), "192.0.2.1").run("d.example")[0] == "pass"


def test_spf_macros_temperror_and_record_errors():
    table = {("d.example", "TXT"): {"v=spf1 exists:%{ir}._ip.%{d} -all"},
             ("5.2.0.192._ip.d.example", "A"): {"127.0.0.2"}}
    assert SpfEvaluation(fake_lookup(table), "192.0.2.5").run("d.example")[0] == "pass"
    assert SpfEvaluation(fake_lookup(table), "192.0.2.6").run("d.example")[0] == "fail"
    table[("d.example", "TXT")] = {"v=spf1 include:slow.d.example -all"}
    table[("slow.d.example", "TXT")] = None
    assert SpfEvaluation(fake_lookup(table), "192.0.2.5").run("d.example")[0] == "temperror"
    table[("d.example", "TXT")] = {"v=spf1 -all", "v=spf1 ip4:192.0.2.5 -all"}
    assert SpfEvaluation(fake_lookup(table), "192.0.2.5").run("d.example")[0] == "permerror"
    for bad in ("v=spf1 ip4:192.0.2.300 -all", "v=spf1 ip6:192.0.2.1 -all", "v=spf1 a/33 -all",
                "v=spf1 foo:bar -all", "v=spf1 redirect=a.example redirect=b.example", "v=spf1 include -all",
                "v=spf1 ip4:192.0.2.1/24//64 -all", "v=spf1 include:nodot -all"):
        with pytest.raises(SpfError):
            parse_spf(bad)
    assert parse_spf("v=spf1 -all ip4:192.0.2.1").notes == ["terms after 'all' are never evaluated; put all last"]
    assert parse_spf("v=spf1 ip6:2001:db8::/32 a//64 mx:m.example/24 -all").notes == []


# --- unit: DNSBL ----------------------------------------------------------------------

def test_dnsbl_codes_are_decoded():
    assert decode_dnsbl("zen.spamhaus.org", "127.0.0.2") == ("fail",
                                                              "SBL (Spamhaus Block List: spam source) (127.0.0.2)")
    assert decode_dnsbl("zen.spamhaus.org", "127.0.0.4")[1].startswith("XBL")
    assert decode_dnsbl("zen.spamhaus.org", "127.0.0.9")[1].startswith("DROP")
    assert decode_dnsbl("zen.spamhaus.org", "127.0.0.11")[1].startswith("PBL")
    assert decode_dnsbl("dbl.spamhaus.org", "127.0.1.4") == ("fail", "phishing domain (127.0.1.4)")
    assert decode_dnsbl("dbl.spamhaus.org", "127.0.0.2")[0] == "inconclusive"
    for code, meaning in (("127.255.255.252", "typo"), ("127.255.255.254", "public or shared resolver"),
                          ("127.255.255.255", "excessive")):
        status, text = decode_dnsbl("zen.spamhaus.org", code)
        assert status == "inconclusive" and meaning in text
    assert decode_dnsbl("bl.spamcop.net", "127.0.0.2") == ("fail", "listed (127.0.0.2)")
    assert decode_dnsbl("bl.spamcop.net", "127.0.0.1")[0] == "inconclusive"
    assert decode_dnsbl("bl.spamcop.net", "198.51.100.7")[0] == "inconclusive"  # NXDOMAIN rewriting
    assert dnsbl_query_name("192.0.2.99", "zen.spamhaus.org") == "99.2.0.192.zen.spamhaus.org"
    assert dnsbl_query_name("2001:db8::1", "x.test").startswith("1.0.0.0.") and \
        dnsbl_query_name("2001:db8::1", "x.test").endswith(".8.b.d.0.1.0.0.2.x.test")


# --- unit: every check against a fake DnsReader ----------------------------------------

# Lab-range addresses: if a fake ever leaked, traffic would still stay in the lab.
DOMAIN, FQDN, ADDR4, ADDR6 = "d.example", "mta.d.example", "198.51.100.25", "2001:db8:51::25"
REV4 = dnsbl_query_name(ADDR4, "in-addr.arpa")
REV6 = dnsbl_query_name(ADDR6, "ip6.arpa")


class FakeReader:
    """DnsReader stand-in: the 'auth' server answers ``auth``, the resolver ``resolver`` (default: the
    same); a missing key is NXDOMAIN, None is no answer.  Nothing goes on the network."""
    timeout = 0.1

    def __init__(self, auth: dict, resolver: dict | None = None, missing: set | None = frozenset()):
        self.auth, self.res, self.missing = auth, auth if resolver is None else resolver, missing
        self.resolver = SimpleNamespace(nameservers=["resolver"])

    def authoritative(self, zone):
        return ["auth"]

    def values(self, server, name, rtype):
        found = (self.res if server == "resolver" else self.auth).get((name, rtype), self.missing)
        return None if found is None else set(found)


def unit_inventory(tmp_path, **domain) -> Inventory:
    return Inventory.model_validate({
        "path": tmp_path, "dkim_keystore": tmp_path / "keys", "dns_resolvers": [GW],
        "hosts": [{"name": "mta1", "fqdn": FQDN, "ipv4": ADDR4, "ipv6": ADDR6, "ssh_host": ADDR4}],
        "domains": {DOMAIN: {"dns_provider": "p", "dmarc": {"policy": "reject", "rua": [f"mailto:dmarc@{DOMAIN}"]},
                             "tls_rpt": {"rua": [f"mailto:tls@{DOMAIN}"]}, **domain}},
        "dnsbl": {"ip_zones": ["bl.example"], "domain_zones": ["dbl.spamhaus.org"]}})


@pytest.fixture(scope="module")
def unit_store(tmp_path_factory):
    store = KeyStore(tmp_path_factory.mktemp("keys"))
    store.generate(DOMAIN)
    return store


def good_records(store) -> dict:
    key = store.keys(DOMAIN)[0]
    return {(DOMAIN, "SOA"): {"ns.d.example. h.d.example. 1 2 3 4 5"},
            ("in-addr.arpa", "SOA"): {"x"}, ("ip6.arpa", "SOA"): {"x"},
            (DOMAIN, "MX"): {f"10 {FQDN}."}, (FQDN, "A"): {ADDR4}, (FQDN, "AAAA"): {ADDR6},
            (DOMAIN, "TXT"): {f"v=spf1 ip4:{ADDR4} ip6:{ADDR6} -all"},
            (key.record_name, "TXT"): {key.dns_value},
            (f"_dmarc.{DOMAIN}", "TXT"): {f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}"},
            (f"_smtp._tls.{DOMAIN}", "TXT"): {f"v=TLSRPTv1; rua=mailto:tls@{DOMAIN}"},
            (REV4, "PTR"): {FQDN + "."}, (REV6, "PTR"): {FQDN + "."}}


@pytest.fixture(autouse=True)
def smtp_only_to_loopback_and_lab(monkeypatch):
    """The EHLO check connects for real: keep it on loopback and the lab whatever the test data says."""
    real = dnschecks.smtp_names

    def guarded(address, **kw):
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip in ipaddress.ip_network("198.51.100.0/24")):
            raise AssertionError(f"SMTP to {address} is outside loopback and the lab")
        if ip == ipaddress.ip_address(ADDR4):
            raise OSError("no SMTP server in unit tests")
        return real(address, **kw)
    monkeypatch.setattr(dnschecks, "smtp_names", guarded)


def run_unit(tmp_path, store, records, resolver=None, reader=None, **domain):
    inv = unit_inventory(tmp_path, **domain)
    reader = reader or FakeReader(records, resolver)
    results = check_domains(inv, store, reader=reader) + check_hosts(inv, reader=reader, smtp_timeout=0.01)
    return {r.name: r for r in results if r.name != "ehlo-name"}  # no SMTP server here


def test_all_checks_pass_on_good_records(tmp_path, unit_store):
    got = run_unit(tmp_path, unit_store, good_records(unit_store))
    assert {n: r.status for n, r in got.items() if r.status != "pass"} == {}
    assert len(got) == 16


def _other_key(bits=2048) -> str:
    der = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


SELECTOR = object()  # placeholder for the key's record name in the table below
BREAKAGES = [
    ("mx", (DOMAIN, "MX"), {"10 other.d.example."}),
    ("mx", (DOMAIN, "MX"), {"0 ."}),
    ("spf.record", (DOMAIN, "TXT"), {"v=spf1 -all", f"v=spf1 ip4:{ADDR4} -all"}),
    ("spf.record", (DOMAIN, "TXT"), {f"v=spf1 ip4:{ADDR4} ip6:{ADDR6} -all mx"}),
    ("spf.lookups", (DOMAIN, "TXT"), {f"v=spf1 ip4:{ADDR4} ip6:{ADDR6} " + " ".join(["mx"] * 11) + " -all"}),
    ("spf.void-lookups", (DOMAIN, "TXT"), {f"v=spf1 a:x.d.example a:y.d.example a:z.d.example ip4:{ADDR4} -all"}),
    ("spf.authorises-ipv4", (DOMAIN, "TXT"), {f"v=spf1 ip6:{ADDR6} -all"}),
    ("spf.authorises-ipv6", (DOMAIN, "TXT"), {f"v=spf1 ip4:{ADDR4} ~all"}),
    ("dkim", SELECTOR, set()),
    ("dkim", SELECTOR, {f"v=DKIM1; k=rsa; p={_other_key()}"}),
    ("dkim", SELECTOR, {"v=DKIM1; k=rsa; p="}),
    ("dmarc.record", (f"_dmarc.{DOMAIN}", "TXT"), {f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}; rau=x"}),
    ("dmarc.policy", (f"_dmarc.{DOMAIN}", "TXT"), {f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"}),
    ("dmarc.rua", (f"_dmarc.{DOMAIN}", "TXT"), {"v=DMARC1; p=reject"}),
    ("tls-rpt", (f"_smtp._tls.{DOMAIN}", "TXT"), {"v=TLSRPTv1; rua=mailto:other@d.example"}),
    ("fcrdns.ipv4", (REV4, "PTR"), set()),
    ("fcrdns.ipv6", (REV6, "PTR"), {"vps-25.hoster.example."}),
    ("fcrdns.ipv6", (FQDN, "AAAA"), {"2001:db8::26"}),
    ("dnsbl.ipv4.bl.example", (dnsbl_query_name(ADDR4, "bl.example"), "A"), {"127.0.0.2"}),
    ("dnsbl.dbl.spamhaus.org", (f"{DOMAIN}.dbl.spamhaus.org", "A"), {"127.0.1.2"}),
]


@pytest.mark.parametrize("check,key,value", BREAKAGES)
def test_each_check_fails_with_a_fix_when_its_record_is_wrong(tmp_path, unit_store, check, key, value):
    records = good_records(unit_store)
    selector = unit_store.keys(DOMAIN)[0]
    key = (selector.record_name, "TXT") if key is SELECTOR else key
    records[key] = value
    got = run_unit(tmp_path, unit_store, records)
    name = f"dkim.{selector.selector}" if check == "dkim" else check
    assert got[name].status == "fail", got[name]
    assert got[name].fix


def test_weak_dkim_key_and_test_flag_fail(tmp_path, unit_store):
    selector = unit_store.keys(DOMAIN)[0]
    records = good_records(unit_store)
    records[(selector.record_name, "TXT")] = {selector.dns_value + "; t=y"}
    assert "t=y" in run_unit(tmp_path, unit_store, records)[f"dkim.{selector.selector}"].detail
    weak = _other_key(1024)
    weak_key = dataclasses.replace(selector, dns_value=f"v=DKIM1; k=rsa; p={weak}")
    store = SimpleNamespace(keys=lambda: [weak_key])
    records[(selector.record_name, "TXT")] = {f"v=DKIM1; k=rsa; p={weak}"}
    result = run_unit(tmp_path, store, records)[f"dkim.{selector.selector}"]
    assert result.status == "fail" and "1024-bit" in result.detail


def test_propagation_warns_silence_is_inconclusive_and_wrong_authority_fails(tmp_path, unit_store):
    good = good_records(unit_store)
    stale = {**good, (DOMAIN, "TXT"): {f"v=spf1 ip4:{ADDR4} -all"}}
    got = run_unit(tmp_path, unit_store, good, resolver=stale)
    assert got["spf.authorises-ipv6"].status == "warn" and "propagation" in got["spf.authorises-ipv6"].fix
    assert got["mx"].status == "pass"
    # the authority is wrong, the resolver right: fail (what is published decides)
    assert run_unit(tmp_path, unit_store, stale, resolver=good)["spf.authorises-ipv6"].status == "fail"
    got = run_unit(tmp_path, unit_store, {}, reader=FakeReader({}, missing=None))
    assert {r.status for r in got.values()} == {"inconclusive"}
    # the resolver answers, an authoritative server does not: never pass
    auth_silent = {**good, (DOMAIN, "MX"): None}
    assert run_unit(tmp_path, unit_store, auth_silent, resolver=good)["mx"].status == "inconclusive"


def test_a_dead_resolver_costs_one_timeout_not_one_per_query(tmp_path):
    class Dead(FakeReader):
        def values(self, server, name, rtype):
            time.sleep(self.timeout)  # every try times out
            return None
    domains = {f"d{i}.example": {"dns_provider": "p"} for i in range(100)}
    inv = Inventory.model_validate({**unit_inventory(tmp_path).model_dump(), "domains": domains})
    store = SimpleNamespace(keys=lambda: [])
    started = time.monotonic()
    results = check_domains(inv, store, reader=Dead({}))
    assert time.monotonic() - started < 3  # without the memo: ~100 domains x 5 checks x 0.6 s / 32 workers
    assert {r.status for r in results if not r.name == "dkim"} == {"inconclusive"}


def test_mta_sts_record_and_unreachable_policy(tmp_path, unit_store):
    records = good_records(unit_store)
    policy = mta_sts_policy("testing", [FQDN], 604800)
    records[(f"_mta-sts.{DOMAIN}", "TXT")] = {f"v=STSv1; id={mta_sts_id(policy)}"}
    got = run_unit(tmp_path, unit_store, records, mta_sts={"mode": "testing"})
    assert got["mta-sts.record"].status == "pass"
    assert got["mta-sts.policy"].status == "fail" and "has no address" in got["mta-sts.policy"].detail
    records[(f"_mta-sts.{DOMAIN}", "TXT")] = {"v=STSv1; id=old1"}
    assert run_unit(tmp_path, unit_store, records, mta_sts={"mode": "testing"})["mta-sts.record"].status == "warn"
    del records[(f"_mta-sts.{DOMAIN}", "TXT")]
    assert run_unit(tmp_path, unit_store, records, mta_sts={"mode": "testing"})["mta-sts.record"].status == "fail"


# --- unit: HTTPS policy fetch and SMTP names on loopback ------------------------------------

def _ca_and_cert(tmp_path: Path, name: str):
    def key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = key(), key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verify test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem) + leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "ca.pem", tmp_path / "leaf.pem"


@pytest.fixture
def policy_server(tmp_path):
    """HTTPS on 127.0.0.1 for mta-sts.d.example: serves ``state.body`` or redirects when ``state.redirect``."""
    ca, leaf = _ca_and_cert(tmp_path, f"mta-sts.{DOMAIN}")
    state = SimpleNamespace(body=mta_sts_policy("enforce", [FQDN], 86400), redirect=False, host=None)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.host = self.headers["Host"]
            if state.redirect or self.path != mta_sts.MTA_STS_PATH:
                self.send_response(301)
                self.send_header("Location", "https://elsewhere.example/")
                self.end_headers()
                return
            body = state.body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield SimpleNamespace(port=server.server_address[1], ca=str(ca), state=state)
    server.shutdown()
    server.server_close()


def test_mta_sts_policy_fetch_verifies_certificate_and_refuses_redirects(policy_server):
    host = f"mta-sts.{DOMAIN}"
    fetch = lambda **kw: fetch_mta_sts_policy(host, "127.0.0.1", port=policy_server.port, timeout=5, **kw)  # noqa: E731
    policy, problems = parse_mta_sts_policy(fetch(ca_bundle=policy_server.ca))
    assert problems == [] and policy["mode"] == "enforce" and policy["mx"] == [FQDN] and policy["max_age"] == "86400"
    assert policy_server.state.host == host  # name-based virtual hosting sees the policy host, not the address
    with pytest.raises(PolicyFetchError, match="certificate not trusted"):
        fetch()  # system CAs only
    policy_server.state.redirect = True
    with pytest.raises(PolicyFetchError, match="redirect"):
        fetch(ca_bundle=policy_server.ca)
    assert parse_mta_sts_policy("version: STSv1\nmode: enforce\nmx: a.example\n")[1] == ["max_age missing or invalid"]
    assert mta_sts.mx_pattern_matches("*.d.example", FQDN)
    assert not mta_sts.mx_pattern_matches("*.example", FQDN)


@pytest.fixture
def smtp_server():
    """A one-line SMTP server on 127.0.0.1 that announces ``state.name``."""
    state = SimpleNamespace(name="mta.d.example")

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(f"220 {state.name} ESMTP\r\n".encode())
            for line in self.rfile:
                if line.upper().startswith(b"EHLO"):
                    self.wfile.write(f"250-{state.name}\r\n250 PIPELINING\r\n".encode())
                elif line.upper().startswith(b"QUIT"):
                    self.wfile.write(b"221 bye\r\n")
                    return

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield SimpleNamespace(port=server.server_address[1], state=state)
    server.shutdown()
    server.server_close()


def test_ehlo_name_must_equal_the_ptr_name(smtp_server):
    host = SimpleNamespace(name="mta1", fqdn=FQDN, ipv4="127.0.0.1")
    view = dnschecks.DnsView(FakeReader({("1.0.0.127.in-addr.arpa", "PTR"): {FQDN + "."}}))
    assert dnschecks._ehlo(view, host, 5, port=smtp_server.port)[0].status == "pass"
    smtp_server.state.name = "localhost.localdomain"
    result = dnschecks._ehlo(view, host, 5, port=smtp_server.port)[0]
    assert result.status == "fail" and "myhostname" in result.fix
    closed = dnschecks._ehlo(view, host, 1, port=1)[0]
    assert closed.status == "inconclusive"


# --- lab ---------------------------------------------------------------------------------

def lab_resolve(name: str, rtype: str) -> list:
    resp = dns.query.udp(dns.message.make_query(name, rtype), GW, timeout=3)
    return [rd for rrset in resp.answer if rrset.rdtype == dns.rdatatype.from_text(rtype) for rd in rrset]


@pytest.fixture(scope="module")
def site(lab, lab_cfg, tmp_path_factory):
    """A published throw-away sending domain in lab.test with its own host, key store and PTRs."""
    label = "v" + secrets.token_hex(4)
    domain, fqdn = f"{label}.lab.test", f"mta.{label}.lab.test"
    base = tmp_path_factory.mktemp("verify-dns")
    inv_dir = base / "lab"

    def settings(d):
        d["mailops_dkim_keystore"] = str(base / "dkim")
        d["mailops_domains"] = {domain: {"dns_provider": "lab-rfc2136",
                                         "dmarc": {"policy": "reject", "rua": [f"mailto:dmarc@{domain}"]},
                                         "tls_rpt": {"rua": [f"mailto:tlsrpt@{domain}"]}}}
        d["mailops_dns_providers"]["lab-rfc2136"]["zones"] = ["lab.test"]
        # lab.test is shared with other tests: our own owner id keeps our records ours alone
        d["mailops_dns_owner"] = label
        d.pop("mailops_submission_users", None)  # their addresses are in shop.test/news.test

    def hosts(d):
        d["all"]["children"]["mailhosts"]["hosts"] = {fqdn: {
            "ansible_host": LAB_ADDR4, "mailops_ipv4": LAB_ADDR4, "mailops_ipv6": LAB_ADDR6,
            "mailops_reverse_dns_provider": "lab-reverse"}}
    copy_inventory(inv_dir, settings=settings, hosts=hosts)
    dcfg = core.dns_config(lab_cfg)
    s = SimpleNamespace(label=label, domain=domain, fqdn=fqdn, inv_dir=inv_dir, dcfg=dcfg, base=base, cfg=lab_cfg)
    try:
        mailops("dkim", "generate", "--all", "-i", str(inv_dir))
        s.inv, problems = load_inventory(str(inv_dir))
        assert not problems, problems
        s.keystore = KeyStore.for_inventory(s.inv)
        sync(s)
        s.selector = s.keystore.keys(domain)[0].selector
        yield s
    finally:
        remove_site(s)


def sync(s, *, force: bool = False) -> None:
    """What `mailops dns sync --apply [--force]` does (plan, apply, read back), in-process.  The
    inventory's own mailops_dns_owner keeps other tests' records in lab.test out of the plan."""
    plan, providers = make_plan(s.inv, s.keystore, force=force)
    rows = [row["name"] for z in plan.zones for row in z.rows()]
    assert all(in_zone(n, s.domain) for n in rows), f"the plan reaches outside {s.domain}: {rows}"
    assert not plan.conflicts or force, plan.conflicts
    apply_plan(plan, providers)
    assert readback(s.inv, plan, providers) == []


def remove_site(s) -> None:
    """Delete every name under the domain, our registry strings, our PTRs and DNSBL entries."""
    dcfg, zone = s.dcfg, "lab.test."
    names = [f"{s.domain}.", f"{s.fqdn}.", f"_dmarc.{s.domain}.", f"_smtp._tls.{s.domain}.",
             f"_mta-sts.{s.domain}.", f"mta-sts.{s.domain}.", f"{rfc2136.registry_label(s.label)}.lab.test."]
    names += [f"{k.selector}._domainkey.{s.domain}." for k in KeyStore(s.base / "dkim").keys(s.domain)]
    # Nothing of ours should be in the shared registry; remove strings naming our names all the same.
    shared = f"{rfc2136.REGISTRY_LABEL}.lab.test."
    ours = [b"".join(rd.strings).decode() for rd in lab_resolve(shared, "TXT")]
    ours = [e for e in ours if len(e.split()) == 3 and in_zone(e.split()[1] + ".lab.test", s.domain)]
    labdns.update(dcfg, zone, delete=names + [labdns.Record(shared, "TXT", e) for e in ours])
    for addr, net in ((LAB_ADDR4, s.cfg.ipv4_network), (LAB_ADDR6, s.cfg.ipv6_network)):
        labdns.update(dcfg, labdns.reverse_zone_for(net), delete=[labdns.ptr_name(addr)])
    labdns.clear_dnsbl_listing(dcfg, LAB_ADDR4)
    labdns.update(dcfg, "dnsbl.test.", delete=[f"{s.domain}.dnsbl.test."])


def by_name(results) -> dict:
    return {r.name: r for r in results}


def verify(s, **kw):
    inv = kw.pop("inv", s.inv)
    return (check_domains(inv, s.keystore, domains=[s.domain], **kw),
            check_hosts(inv, hosts=[s.fqdn], smtp_timeout=3))


@pytest.mark.lab  # publishes into the lab BIND
def test_published_site_passes_every_dns_check(site):
    started = time.monotonic()
    domain_results = check_domains(site.inv, site.keystore, domains=[site.domain])
    elapsed = time.monotonic() - started
    host_results = check_hosts(site.inv, hosts=[site.fqdn], smtp_timeout=3)
    statuses = {(r.subject, r.name): r.status for r in domain_results + host_results}
    assert "fail" not in statuses.values(), [r for r in domain_results + host_results if r.status == "fail"]
    assert statuses.pop((site.fqdn, "ehlo-name")) == "inconclusive"  # no machine answers at .19
    assert set(statuses.values()) == {"pass"}, statuses
    assert {n for _, n in statuses} == {
        "mx", "spf.record", "spf.lookups", "spf.void-lookups", "spf.authorises-ipv4", "spf.authorises-ipv6",
        # the lab inventory's return path: bounces.<domain> published and checked like the domain
        "return-path.mx", "return-path.spf.record", "return-path.spf.lookups", "return-path.spf.void-lookups",
        "return-path.spf.authorises-ipv4", "return-path.spf.authorises-ipv6",
        f"dkim.{site.selector}", "dmarc.record", "dmarc.policy", "dmarc.rua", "tls-rpt", "dnsbl.dnsbl.test",
        "fcrdns.ipv4", "fcrdns.ipv6", "dnsbl.ipv4.dnsbl.test", "dnsbl.ipv6.dnsbl.test"}
    print(f"\ncheck_domains for one domain took {elapsed:.3f}s")
    assert elapsed < 5


@pytest.mark.lab  # publishes into the lab BIND
def test_dkim_record_with_another_key_fails(site):
    other = _other_key()
    try:
        labdns.update(site.dcfg, "lab.test.", replace=[labdns.Record(
            f"{site.selector}._domainkey.{site.domain}.", "TXT", f"v=DKIM1; k=rsa; p={other}", 300)])
        result = by_name(check_domains(site.inv, site.keystore, domains=[site.domain]))[f"dkim.{site.selector}"]
        assert result.status == "fail" and "different key" in result.detail
        assert "mailops dns sync --apply" in result.fix
    finally:
        sync(site, force=True)
    restored = by_name(check_domains(site.inv, site.keystore, domains=[site.domain]))
    assert restored[f"dkim.{site.selector}"].status == "pass"


@pytest.mark.lab  # publishes into the lab BIND
def test_spf_without_the_ipv6_address_fails_ipv6_only(site):
    try:
        labdns.update(site.dcfg, "lab.test.", replace=[labdns.Record(
            f"{site.domain}.", "TXT", f"v=spf1 ip4:{LAB_ADDR4} ~all", 300)])
        got = by_name(check_domains(site.inv, site.keystore, domains=[site.domain]))
        assert got["spf.authorises-ipv6"].status == "fail"
        assert f"ip6:{LAB_ADDR6}" in got["spf.authorises-ipv6"].fix
        assert "softfail" in got["spf.authorises-ipv6"].detail
        assert got["spf.authorises-ipv4"].status == "pass"
    finally:
        sync(site, force=True)


@pytest.mark.lab  # publishes into the lab BIND
def test_missing_ptr_fails_fcrdns(site):
    zone = labdns.reverse_zone_for(site.cfg.ipv4_network)
    try:
        labdns.update(site.dcfg, zone, delete=[labdns.ptr_name(LAB_ADDR4)])
        got = by_name(check_hosts(site.inv, hosts=[site.fqdn], smtp_timeout=3))
        assert got["fcrdns.ipv4"].status == "fail" and "no PTR" in got["fcrdns.ipv4"].detail
        assert "mailops dns sync --apply" in got["fcrdns.ipv4"].fix
        assert got["fcrdns.ipv6"].status == "pass"
    finally:
        sync(site, force=True)
    assert by_name(check_hosts(site.inv, hosts=[site.fqdn], smtp_timeout=3))["fcrdns.ipv4"].status == "pass"


@pytest.mark.lab  # publishes into the lab BIND
def test_dnsbl_listings_fail_and_error_codes_are_inconclusive(site):
    try:
        labdns.set_dnsbl_listing(site.dcfg, LAB_ADDR4, "127.0.0.2", reason="listed by the verify test")
        labdns.update(site.dcfg, "dnsbl.test.",
                      replace=[labdns.Record(f"{site.domain}.dnsbl.test.", "A", "127.0.0.2", 60)])
        hosts = by_name(check_hosts(site.inv, hosts=[site.fqdn], smtp_timeout=3))
        listed = hosts["dnsbl.ipv4.dnsbl.test"]
        assert listed.status == "fail" and "listed by the verify test" in listed.detail and listed.fix
        assert hosts["dnsbl.ipv6.dnsbl.test"].status == "pass"
        domain = by_name(check_domains(site.inv, site.keystore, domains=[site.domain]))["dnsbl.dnsbl.test"]
        assert domain.status == "fail" and domain.fix
        labdns.set_dnsbl_listing(site.dcfg, LAB_ADDR4, "127.255.255.254")
        error = by_name(check_hosts(site.inv, hosts=[site.fqdn], smtp_timeout=3))["dnsbl.ipv4.dnsbl.test"]
        assert error.status == "inconclusive" and "public or shared resolver" in error.detail
    finally:
        labdns.clear_dnsbl_listing(site.dcfg, LAB_ADDR4)
        labdns.update(site.dcfg, "dnsbl.test.", delete=[f"{site.domain}.dnsbl.test."])


@pytest.mark.lab  # publishes into the lab BIND
def test_unreachable_resolver_is_inconclusive_not_fail_and_bounded(site, tmp_path):
    dead = copy_inventory(tmp_path / "dead", site.inv_dir,
                          settings=lambda d: d.update(mailops_dns_resolvers=["198.51.100.250"]))  # nothing answers there
    inv, problems = load_inventory(str(dead))
    assert not problems
    started = time.monotonic()
    results = check_domains(inv, site.keystore, domains=[site.domain]) + check_hosts(inv, hosts=[site.fqdn],
                                                                                     smtp_timeout=3)
    elapsed = time.monotonic() - started
    assert {r.status for r in results} == {"inconclusive"}, [r for r in results if r.status != "inconclusive"]
    assert len(results) == 23           # 17, and the return-path domain's MX and five SPF checks
    assert elapsed < 30, elapsed
