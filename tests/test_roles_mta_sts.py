"""The MTA-STS policy (RFC 8461) served from a mail host, end to end on lab vps2.

A throw-away copy of the lab inventory names vps2 ``mta.<rand>.lab.test``, the
only mail host of one sending domain ``<rand>.lab.test`` with
``mta_sts: {mode: enforce}``, published in the lab zone lab.test by RFC 2136.
After `mailops dkim generate`, `mailops dns sync --apply` (which points
``mta-sts.<rand>.lab.test`` at vps2) and `mailops provision apply` (site.yml:
tls gets the certificate for both names from the lab's ACME CA, mta_sts serves
the policy with nginx, firewall opens 443), the test proves from this
controller, over IPv4 and IPv6, that
``https://mta-sts.<rand>.lab.test/.well-known/mta-sts.txt`` answers 200 with
exactly ``mta_sts_policy("enforce", ["mta.<rand>.lab.test"], 604800)`` as
text/plain under a certificate that verifies against the lab CA's issuing roots
and names both the host and the mta-sts name, that every other path and host
is 404 (never a redirect), that TLS below 1.2 is refused, that a check run on
the fresh VPS works and a second converge and a check run change nothing, that
the tls role re-issues the certificate when its set of names changes (and
reloads nginx, which then serves the new one), and that a host serving no
policy has nginx stopped and disabled without its site (and gets it back).

vps2 is reset first. The inventory copy has its own ``mailops_dns_owner``, so
its records in lab.test are registered in ``_mailops-owner-<id>.lab.test`` and
neither it nor another inventory sharing lab.test touches the other's records;
the names created in lab.test and that registry are removed again at the end
(and any string naming them in the default ``_mailops-owner.lab.test``). PTRs
are not touched (the inventory copy sets no reverse DNS provider).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.zone
import pytest

from mailops.dns.desired import mta_sts_policy
from mailops.lab import core, dns as labdns
from mailops.lab.config import LabConfig
from tests.helpers import ROOT, VENV_BIN, copy_inventory, mailops, playbook_env, venv_env

pytestmark = pytest.mark.lab

VPS = "vps2"
IPV4, IPV6 = "198.51.100.12", "2001:db8:51::12"
ZONE = "lab.test"
REGISTRY = f"_mailops-owner.{ZONE}."
ROOTS = Path("/var/lib/mailops/lab/acme/issuing-roots.pem")
POLICY_PATH = "/.well-known/mta-sts.txt"


def converge(inv: Path, *extra: str) -> dict:
    t = time.monotonic()
    result = json.loads(mailops("provision", "apply", "-i", str(inv), "--json", *extra).stdout)
    result["wall"] = round(time.monotonic() - t, 1)
    assert result["ok"], result
    return result


def playbook(inv: Path, *args: str) -> str:
    """Plain ansible-playbook on site.yml (to pass extra variables, which `provision apply` does not)."""
    env = playbook_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inv), "playbooks/site.yml", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def _zone(dcfg) -> dns.zone.Zone:
    keyring = labdns.tsig_keyring(dcfg)
    query = dns.message.make_query(ZONE + ".", dns.rdatatype.AXFR)
    query.use_tsig(keyring, keyname=next(iter(keyring)), algorithm=labdns.TSIG_ALGORITHM)
    zone = dns.zone.Zone(ZONE + ".", relativize=False)
    dns.query.inbound_xfr(labdns.server_address(dcfg), zone, port=dcfg.port, query=query, timeout=15)
    return zone


def _registry_strings(zone: dns.zone.Zone, registry: str = REGISTRY) -> list[str]:
    rdataset = zone.get_rdataset(registry, "TXT")
    return [b"".join(r.strings).decode() for r in rdataset] if rdataset else []


def _cleanup_dns(dcfg, domain: str, owner: str) -> None:
    """Delete every name at or below ``domain``, the owner's registry and default-registry strings naming them."""
    zone = _zone(dcfg)
    suffix = dns.name.from_text(domain + ".")
    names = sorted({n.to_text() for n in zone.nodes if n.is_subdomain(suffix)})
    own_registry = f"_mailops-owner-{owner}.{ZONE}."
    if _registry_strings(zone, own_registry):
        names.append(own_registry)
    relative = domain.removesuffix("." + ZONE)
    mine = [s for s in _registry_strings(zone)
            if len(s.split()) == 3 and (s.split()[1] == relative or s.split()[1].endswith("." + relative))]
    deletes = names + [labdns.Record(REGISTRY, "TXT", s) for s in mine]
    if deletes:
        labdns.update(dcfg, ZONE + ".", delete=deletes)


class Fetched:
    def __init__(self, status: int, content_type: str | None, body: bytes, location: str | None,
                 cert: dict, version: str | None):
        self.status, self.content_type, self.body, self.location = status, content_type, body, location
        self.cert, self.version = cert, version

    @property
    def sans(self) -> set[str]:
        return {v.lower() for k, v in self.cert.get("subjectAltName", ()) if k == "DNS"}


def https_get(address: str, name: str, path: str = POLICY_PATH, host_header: str | None = None) -> Fetched:
    """GET over TLS to address:443 with SNI ``name``, verifying the chain against the lab CA's roots."""
    ctx = ssl.create_default_context(cafile=str(ROOTS))
    with socket.create_connection((address, 443), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header or name}\r\nUser-Agent: mailops-test\r\n"
                        "Connection: close\r\n\r\n".encode())
            resp = http.client.HTTPResponse(tls)
            resp.begin()
            body = resp.read()
            return Fetched(resp.status, resp.getheader("Content-Type"), body, resp.getheader("Location"),
                           tls.getpeercert(), tls.version())


def served_serial(address: str, name: str) -> int:
    return int(https_get(address, name).cert["serialNumber"], 16)


def ssh(cfg: LabConfig, script: str) -> subprocess.CompletedProcess:
    return core.ssh_run(cfg, VPS, script)


@pytest.fixture(scope="module")
def served(lab, tmp_path_factory):
    cfg = LabConfig()
    running = {m["name"] for m in core.status(cfg)["machines"] if m["state"] == "running"}
    if VPS not in running:
        core.up(cfg, vps=2)
    core.reset(cfg, VPS)

    rand = uuid.uuid4().hex[:8]
    domain = f"mts{rand}.{ZONE}"
    fqdn = f"mta.{domain}"
    work = tmp_path_factory.mktemp("mta-sts")

    def hosts(d):
        mailhosts = d["all"]["children"]["mailhosts"]
        template = next(iter(mailhosts["hosts"].values()))
        mailhosts["hosts"] = {fqdn: {
            "ansible_host": IPV4, "ansible_user": template.get("ansible_user", "root"),
            "ansible_ssh_private_key_file": template["ansible_ssh_private_key_file"],
            "mailops_ipv4": IPV4, "mailops_ipv6": IPV6}}  # no reverse DNS provider: vps2's PTRs stay as they are

    def settings(d):
        provider = dict(d["mailops_dns_providers"]["lab-rfc2136"], zones=[ZONE])
        d.update({
            "mailops_dns_owner": f"mts{rand}",  # its own registry in lab.test: others' records stay out of reach
            "mailops_dkim_keystore": str(work / "keys"),
            "mailops_domains": {domain: {"dns_provider": "lab-rfc2136", "mta_sts": {"mode": "enforce"}}},
            "mailops_dns_providers": {"lab-rfc2136": provider},
            "mailops_submission_users": [{"login": f"tester@{domain}",
                                          "password": {"file": str(work / "tester.password")}}],
        })

    (work / "tester.password").write_text(uuid.uuid4().hex + "\n")
    inv = copy_inventory(work / "inventory", hosts=hosts, settings=settings)

    dcfg = core.dns_config(cfg)
    ctx = {"cfg": cfg, "inv": work / "inventory", "work": work, "domain": domain, "fqdn": fqdn,
           "name": f"mta-sts.{domain}", "timings": {}}
    try:
        mailops("inventory", "check", str(inv))
        mailops("dkim", "generate", "--all", "-i", str(inv))
        # Owned records of others in lab.test would be deleted by this sync: refuse instead.
        plan = json.loads(mailops("dns", "plan", "--json", "-i", str(inv)).stdout)
        rows = [row for zone in plan["zones"] for row in zone["changes"]]
        foreign = [row for row in rows if row["action"] != "create" or not
                   (row["name"] == domain or row["name"].endswith("." + domain))]
        assert rows and not foreign, f"dns sync of the test inventory would touch other records: {foreign}"
        mailops("dns", "sync", "--apply", "-i", str(inv))

        # check mode on the pristine VPS must not fail
        t = time.monotonic()
        fresh_check = converge(inv, "--check")
        ctx["timings"]["check run on the fresh VPS"] = round(time.monotonic() - t, 1)
        ctx["fresh_check"] = fresh_check

        first = converge(inv)
        ctx["timings"]["fresh converge"] = first["wall"]
        second = converge(inv)
        ctx["timings"]["no-op converge"] = second["wall"]
        ctx["first"], ctx["second"] = first, second
        yield ctx
    finally:
        print("\n" + "\n".join(f"  {k}: {v} s" for k, v in ctx["timings"].items()))
        _cleanup_dns(dcfg, domain, f"mts{rand}")


def test_first_converge_changes_and_second_changes_nothing(served):
    assert served["first"]["changed"] > 10, served["first"]
    assert served["second"]["changed"] == 0, served["second"]["changed_tasks"]


def test_check_run_on_converged_host_changes_nothing(served):
    result = converge(served["inv"], "--check", "--diff")
    assert result["changed"] == 0, result["changed_tasks"]


@pytest.mark.parametrize("address", [IPV4, IPV6], ids=["ipv4", "ipv6"])
def test_policy_served_over_https(served, address):
    got = https_get(address, served["name"])
    want = mta_sts_policy("enforce", [served["fqdn"]], 604800)
    assert got.status == 200, (got.status, got.body[:200])
    assert got.body == want.encode(), f"policy differs: {got.body!r} != {want!r}"
    assert got.content_type and got.content_type.split(";")[0].strip() == "text/plain", got.content_type
    assert got.version in ("TLSv1.2", "TLSv1.3"), got.version


def test_certificate_names_host_and_policy_host(served):
    got = https_get(IPV4, served["name"])
    assert {served["fqdn"], served["name"]} <= got.sans, got.sans


@pytest.mark.parametrize("path", ["/", "/.well-known/", "/.well-known", "/.well-known/mta-sts.txt.bak",
                                  "/mta-sts.txt", f"/{'x' * 8}", "/.well-known/security.txt"])
def test_every_other_path_is_404(served, path):
    got = https_get(IPV4, served["name"], path)
    assert got.status == 404 and got.location is None, (path, got.status, got.location)


def test_unknown_host_gets_404(served):
    got = https_get(IPV4, served["name"], host_header=f"mta-sts.other-{served['domain']}")
    assert got.status == 404, got.status


def test_tls_below_1_2_is_refused(served):
    ctx = ssl.create_default_context(cafile=str(ROOTS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1: the server must refuse it
    with socket.create_connection((IPV4, 443), timeout=20) as raw:
        with pytest.raises(ssl.SSLError, match="(?i)protocol.version"):
            ctx.wrap_socket(raw, server_hostname=served["name"]).close()


def test_nginx_configuration_valid_and_default_site_gone(served):
    proc = ssh(served["cfg"], "nginx -t 2>&1; test ! -e /etc/nginx/sites-enabled/default && echo no-default-site"
                              "; ss -Hltn 'sport = :80' | wc -l")
    assert proc.returncode == 0 and "test is successful" in proc.stdout, proc.stdout + proc.stderr
    assert "no-default-site" in proc.stdout, proc.stdout
    # port 80 stays free for certbot's standalone http-01 renewals
    assert proc.stdout.strip().splitlines()[-1] == "0", proc.stdout


def test_firewall_opens_443(served):
    proc = ssh(served["cfg"], "nft list chain inet mailops_filter input")
    assert proc.returncode == 0 and "443" in proc.stdout, proc.stdout


def test_shipped_base_firewall_and_tls_checks_pass(served):
    """mailops.checks expects 443 open on a host serving a policy, and the certificate to verify
    (and the base role's guarantees: the roles base and firewall have no lab test of their own,
    this fresh converge, its second run and check run are theirs)."""
    env = venv_env(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), MAILOPS_ACME_ROOTS_FILE=str(ROOTS))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                           "mailops.checks.test_base", "mailops.checks.test_firewall", "mailops.checks.test_tls",
                           f"--hosts=ansible://{served['fqdn']}", f"--ansible-inventory={served['inv']}"],
                          cwd="/", env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_names_change_reissues_the_certificate_and_reloads_nginx(served):
    """Drop the mta-sts name (tls only, plain ansible-playbook), then converge back."""
    t = time.monotonic()
    before = served_serial(IPV4, served["name"])
    out = playbook(served["inv"], "--tags", "tls", "-e", json.dumps({"tls_extra_names": []}))
    reason = re.search(r"Obtain the certificate from the ACME server \(names (.*), not (.*)\)", out)
    assert reason, out[-4000:]
    assert set(reason.group(1).split(", ")) == {served["fqdn"], served["name"]}
    assert reason.group(2) == served["fqdn"]
    # nginx was reloaded (tls handler) and serves the new certificate, which lacks the mta-sts name
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(IPV4, served["name"])

    again = converge(served["inv"], "--tags", "tls,mta_sts")
    assert any("Obtain the certificate" in task for _, task in again["changed_tasks"]), again["changed_tasks"]
    got = https_get(IPV4, served["name"])
    assert got.status == 200 and {served["fqdn"], served["name"]} <= got.sans, (got.status, got.sans)
    assert int(got.cert["serialNumber"], 16) != before
    assert converge(served["inv"], "--tags", "tls,mta_sts")["changed"] == 0
    print(f"\n  re-issue for changed names and back: {time.monotonic() - t:.1f} s")


def test_no_policy_means_no_nginx_and_back(served):
    """A host that serves no policy: site and files gone, nginx stopped and disabled; then served again."""
    playbook(served["inv"], "--tags", "mta_sts", "-e", json.dumps({"mta_sts_policies": []}))
    proc = ssh(served["cfg"], "systemctl is-enabled nginx.service; systemctl is-active nginx.service;"
                              " ls /etc/nginx/conf.d; test -e /var/www/mta-sts && echo webroot-present; true")
    assert proc.stdout.split()[:2] == ["disabled", "inactive"], proc.stdout
    assert "mailops-mta-sts.conf" not in proc.stdout and "webroot-present" not in proc.stdout, proc.stdout
    with pytest.raises(OSError):
        https_get(IPV4, served["name"])

    back = converge(served["inv"], "--tags", "mta_sts")
    assert back["changed"] > 0, back
    got = https_get(IPV6, served["name"])
    assert got.status == 200 and got.body == mta_sts_policy("enforce", [served["fqdn"]], 604800).encode()
    assert converge(served["inv"], "--tags", "mta_sts")["changed"] == 0
