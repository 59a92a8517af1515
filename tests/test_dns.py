"""DNS publishing: `mailops dns plan | sync` against the lab's real BIND (RFC 2136) and the
Cloudflare API emulator the lab serves (mirrored into the same BIND), plus PTRs.

Every record is checked the way a receiver sees it: resolved through the lab's
authoritative server."""

from __future__ import annotations

import json
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.resolver
import pytest

from mailops.dkim.store import KeyStore
from mailops.dns.desired import desired_state
from mailops.dns.kinds.spf import count_lookups as spf_lookups
from mailops.dns.providers.base import ZoneChanges
from mailops.dns.providers.rfc2136 import REGISTRY_LABEL, Rfc2136Provider
from mailops.dns.records import Record, join_txt
from mailops.dns.sync import DnsReader, Providers, apply_plan, make_plan
from mailops.errors import MailopsError
from mailops.inventory import load_inventory
from mailops.lab import core, dns as labdns
from tests.helpers import copy_inventory, mailops, replace_text

pytestmark = pytest.mark.lab

GW = "198.51.100.1"
CF_API = f"http://{GW}:8787/client/v4"


def resolve(name: str, rtype: str) -> list:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.cache = [GW], None
    try:
        return list(r.resolve(name, rtype))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []


def resolved_values(name: str, rtype: str) -> set[str]:
    out = set()
    for rd in resolve(name, rtype):
        if rtype == "TXT":
            out.add(b"".join(rd.strings).decode())
        elif rtype == "MX":
            out.add(f"{rd.preference} {rd.exchange.to_text()}")
        else:
            out.add(Record.make(name, rtype, rd.to_text()).value)
    return out


def rfc2136(lab_cfg) -> Rfc2136Provider:
    secret = labdns.tsig_secret(core.dns_config(lab_cfg))
    return Rfc2136Provider("lab-rfc2136", server=GW, port=53, key_name="mailops-lab.", algorithm="hmac-sha256",
                           secret=secret)


def cf_client(lab_cfg):
    import cloudflare
    token = (lab_cfg.state_dir / "cloudflare" / "token").read_text().strip()
    return cloudflare.Cloudflare(api_token=token, base_url=CF_API, max_retries=0)


def cf_zone_id(client, zone: str) -> str:
    return next(iter(client.zones.list(name=zone))).id


def wipe(lab_cfg) -> None:
    """shop.test and news.test back to an empty zone, PTRs back to the provider default."""
    dcfg = core.dns_config(lab_cfg)
    names = {e.record.name for e in rfc2136(lab_cfg).list_records("shop.test")} - {"shop.test"}
    labdns.update(dcfg, "shop.test.", delete=[n + "." for n in names] + [f"{REGISTRY_LABEL}.shop.test."]
                  + [("shop.test.", t) for t in ("TXT", "MX", "A", "AAAA")])
    client = cf_client(lab_cfg)
    zid = cf_zone_id(client, "news.test")
    for rec in list(client.dns.records.list(zone_id=zid, per_page=5000)):
        client.dns.records.delete(rec.id, zone_id=zid)
    for addr in ("198.51.100.11", "2001:db8:51::11"):
        zone = labdns.reverse_zone_for(lab_cfg.ipv4_network if "." in addr else lab_cfg.ipv6_network)
        labdns.update(dcfg, zone, replace=[(labdns.ptr_name(addr), "PTR", "vps1.lab.test.", 300)])


@pytest.fixture(scope="module")
def inv_dir(lab, tmp_path_factory) -> Path:
    dest = copy_inventory(tmp_path_factory.mktemp("inv") / "lab")
    mailops("dkim", "generate", "--all", "-i", str(dest))
    return dest


def variant(inv_dir: Path, tmp_path: Path, edit) -> Path:
    """A copy of the inventory with group_vars/all edited by ``edit(dict)``."""
    return copy_inventory(tmp_path / "variant", inv_dir, settings=edit)


@pytest.fixture(scope="module")
def synced(lab, lab_cfg, inv_dir):
    """Empty zones holding a few records someone else made, then one `dns sync --apply`."""
    wipe(lab_cfg)
    dcfg = core.dns_config(lab_cfg)
    labdns.update(dcfg, "shop.test.", add=[("@", "TXT", "google-site-verification=abc123", 300),
                                           ("www", "A", "198.51.100.50", 300)])
    client = cf_client(lab_cfg)
    zid = cf_zone_id(client, "news.test")
    client.dns.records.create(zone_id=zid, name="news.test", type="TXT", content="keybase-site-verification=k1",
                              ttl=300)
    client.dns.records.create(zone_id=zid, name="www.news.test", type="A", content="198.51.100.51", ttl=300)
    first = json.loads(mailops("dns", "sync", "--apply", "--json", "-i", str(inv_dir)).stdout)
    yield first
    # leave the lab as `lab up` made it (empty sending zones, the provider's default PTRs)
    wipe(lab_cfg)


def test_first_sync_applies_and_reads_back(synced):
    assert synced["applied"] is True
    assert synced["readback"] == []
    zones = {z["zone"]: z for z in synced["plan"]["zones"]}
    assert set(zones) == {"shop.test", "news.test"}
    assert {c["action"] for z in zones.values() for c in z["changes"]} == {"create"}
    assert {p["address"] for p in synced["plan"]["ptr"]} == {"198.51.100.11", "2001:db8:51::11"}
    # one zone listing, one record list and one batch for the Cloudflare zone
    assert synced["requests"]["lab-cloudflare"] <= 4, synced["requests"]


def test_every_record_resolves_through_the_lab_dns(synced, inv_dir):
    inv, problems = load_inventory(inv_dir)
    assert not problems
    desired = desired_state(inv, KeyStore.for_inventory(inv))
    records = [r for recs in desired.forward.values() for r in recs]
    kinds = {(r.name, r.type) for r in records}
    for expected in [("mta1.shop.test", "A"), ("mta1.shop.test", "AAAA"), ("shop.test", "MX"), ("news.test", "MX"),
                     ("shop.test", "TXT"), ("_dmarc.news.test", "TXT"), ("_mta-sts.shop.test", "TXT"),
                     ("_smtp._tls.shop.test", "TXT")]:
        assert expected in kinds
    for r in records:
        assert r.value in resolved_values(r.name, r.type), f"{r} not served by the lab DNS"
    spf = [v for v in resolved_values("news.test", "TXT") if v.startswith("v=spf1")]
    assert spf == ["v=spf1 ip4:198.51.100.11 ip6:2001:db8:51::11 ~all"]


def test_dkim_keys_are_split_into_255_byte_strings_and_join_back(synced, inv_dir):
    inv, _ = load_inventory(inv_dir)
    store = KeyStore.for_inventory(inv)
    for domain in ("shop.test", "news.test"):
        keys = store.published(domain)
        assert keys
        for key in keys:
            answer = resolve(f"{key.selector}._domainkey.{domain}", "TXT")
            assert len(answer) == 1
            strings = answer[0].strings
            assert len(strings) >= 2 and all(len(s) <= 255 for s in strings)
            assert b"".join(strings).decode() == key.dns_value
            assert key.algorithm != "rsa" or len(key.dns_value) > 390  # a 2048-bit key, not truncated


def test_second_sync_plans_nothing(synced, inv_dir):
    proc = mailops("dns", "sync", "--check", "--json", "-i", str(inv_dir))
    result = json.loads(proc.stdout)
    assert result["plan"]["pending"] == 0 and result["plan"]["conflicts"] == []
    assert result["readback"] == []


def test_unmanaged_records_survive(synced, lab_cfg):
    assert "google-site-verification=abc123" in resolved_values("shop.test", "TXT")
    assert resolved_values("www.shop.test", "A") == {"198.51.100.50"}
    assert "keybase-site-verification=k1" in resolved_values("news.test", "TXT")
    assert resolved_values("www.news.test", "A") == {"198.51.100.51"}
    owned = {(e.record.name, e.record.value) for e in rfc2136(lab_cfg).list_records("shop.test") if e.owned}
    assert ("www.shop.test", "198.51.100.50") not in owned
    assert ("shop.test", "google-site-verification=abc123") not in owned


def test_ptr_and_forward_confirmed_reverse_dns(synced, inv_dir):
    # the receivers' check, as `mailops verify` makes it: PTR -> mta1.shop.test -> the same address
    from mailops.verify.dnschecks import check_hosts
    inv, _ = load_inventory(inv_dir)
    results = check_hosts(inv, hosts=["mta1.shop.test"], smtp_timeout=0.5)
    fcrdns = {r.name: r for r in results if r.name.startswith("fcrdns")}
    for name, addr in (("fcrdns.ipv4", "198.51.100.11"), ("fcrdns.ipv6", "2001:db8:51::11")):
        assert fcrdns[name].status == "pass" and f"{addr} -> mta1.shop.test -> {addr}" in fcrdns[name].detail


def test_raw_and_quoted_txt_forms_compare_equal(synced, lab_cfg, inv_dir):
    """A Cloudflare TXT stored raw (unquoted) is the same logical value as the quoted form."""
    client = cf_client(lab_cfg)
    zid = cf_zone_id(client, "news.test")
    rec = next(r for r in client.dns.records.list(zone_id=zid, name={"exact": "_dmarc.news.test"}, type="TXT"))
    assert rec.content.startswith('"')
    client.dns.records.edit(rec.id, zone_id=zid, name=rec.name, type="TXT", ttl=300, content=join_txt(rec.content))
    result = json.loads(mailops("dns", "plan", "--json", "-i", str(inv_dir)).stdout)
    assert result["pending"] == 0, result


def test_conflicting_record_is_reported_not_overwritten_unless_forced(synced, lab_cfg, inv_dir):
    dcfg = core.dns_config(lab_cfg)
    # someone edits mailops' DMARC record by hand: it is theirs now
    labdns.update(dcfg, "shop.test.", replace=[("_dmarc", "TXT", "v=DMARC1; p=none", 300)])
    plan = json.loads(mailops("dns", "plan", "--json", "-i", str(inv_dir)).stdout)
    assert any("_dmarc.shop.test TXT" in c and "--force" in c for c in plan["conflicts"]), plan
    mailops("dns", "sync", "--apply", "-i", str(inv_dir))
    assert resolved_values("_dmarc.shop.test", "TXT") == {"v=DMARC1; p=none"}
    mailops("dns", "sync", "--apply", "--force", "-i", str(inv_dir))
    assert resolved_values("_dmarc.shop.test", "TXT") == {"v=DMARC1; p=reject; rua=mailto:dmarc@shop.test"}
    assert json.loads(mailops("dns", "plan", "--json", "-i", str(inv_dir)).stdout)["pending"] == 0


def test_threshold_breach_refuses_the_whole_plan_without_force(synced, inv_dir, tmp_path):
    moved = copy_inventory(tmp_path / "moved", inv_dir)
    replace_text(moved / "hosts.yml", "198.51.100.11", "198.51.100.61")
    replace_text(moved / "hosts.yml", "51::11", "51::61")
    proc = mailops("dns", "sync", "--apply", "-i", str(moved), check=False)
    assert proc.returncode == 1
    assert "safety threshold" in proc.stderr and "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # nothing applied anywhere, not even in the zone under the threshold
    assert resolved_values("mta1.shop.test", "A") == {"198.51.100.11"}
    assert resolved_values("news.test", "TXT") >= {"v=spf1 ip4:198.51.100.11 ip6:2001:db8:51::11 ~all"}
    assert json.loads(mailops("dns", "plan", "--json", "-i", str(inv_dir)).stdout)["pending"] == 0


def test_check_exits_2_when_changes_are_pending(synced, inv_dir, tmp_path):
    stricter = variant(inv_dir, tmp_path, lambda d: d["mailops_domains"]["news.test"]["dmarc"].update(policy="reject"))
    proc = mailops("dns", "plan", "--check", "-i", str(stricter), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "_dmarc.news.test" in proc.stdout and "p=quarantine -> v=DMARC1; p=reject" in proc.stdout
    proc = mailops("dns", "sync", "-i", str(stricter), check=False)  # no --apply, no terminal: nothing applied
    assert proc.returncode == 0 and "nothing applied" in proc.stdout
    assert resolved_values("_dmarc.news.test", "TXT") == {"v=DMARC1; p=quarantine"}


def test_rfc2136_update_is_all_or_nothing(synced, lab_cfg):
    """BIND refuses the whole UPDATE if one record in it is bad: the zone stays fully old."""
    provider = rfc2136(lab_cfg)
    before = provider.list_records("shop.test")
    bad = ZoneChanges(creates=[Record.make("half.shop.test", "A", "198.51.100.70"),
                               Record.make("half.shop.test", "MX", "10 nowhere.shop.test.")])
    with pytest.raises(MailopsError, match="nothing in that message was applied"):
        provider.apply("shop.test", bad)
    assert provider.list_records("shop.test") == before
    assert resolve("half.shop.test", "A") == []


def test_spf_over_ten_lookups_is_refused(synced, inv_dir, tmp_path, lab_cfg):
    many = [f"_spf{i}.example.net" for i in range(11)]
    heavy = variant(inv_dir, tmp_path, lambda d: d["mailops_domains"]["shop.test"].setdefault("spf", {})
                    .update(include=many))
    proc = mailops("dns", "plan", "-i", str(heavy), check=False)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert "mailops_domains['shop.test'].spf" in line and "11 DNS lookups" in line and "Traceback" not in line
    # nested includes are resolved (through mailops_dns_resolvers, the lab BIND) and counted
    dcfg = core.dns_config(lab_cfg)
    ten = "v=spf1 a mx ptr " + " ".join(f"a:h{i}.lab.test" for i in range(7)) + " -all"
    labdns.update(dcfg, "lab.test.", replace=[("_spf-heavy", "TXT", ten, 60), ("_spf-light", "TXT", "v=spf1 a -all", 60)])
    try:
        tmp_heavy, tmp_light = tmp_path / "h", tmp_path / "l"
        tmp_heavy.mkdir(), tmp_light.mkdir()
        nested = variant(inv_dir, tmp_heavy, lambda d: d["mailops_domains"]["shop.test"].setdefault("spf", {})
                         .update(include=["_spf-heavy.lab.test"]))
        proc = mailops("dns", "plan", "-i", str(nested), check=False)
        assert proc.returncode == 1 and "11 DNS lookups" in proc.stderr, proc.stderr
        light = variant(inv_dir, tmp_light, lambda d: d["mailops_domains"]["shop.test"].setdefault("spf", {})
                        .update(include=["_spf-light.lab.test"]))
        proc = mailops("dns", "plan", "--json", "-i", str(light))
        shop = next(z for z in json.loads(proc.stdout)["zones"] if z["zone"] == "shop.test")
        # (the return-path domain's SPF, bounces.shop.test, takes the include too)
        assert [c["new"] for c in shop["changes"] if c["name"] == "shop.test"] == [
            "v=spf1 ip4:198.51.100.11 ip6:2001:db8:51::11 include:_spf-light.lab.test ~all"]
    finally:
        labdns.update(dcfg, "lab.test.", delete=[("_spf-heavy", "TXT"), ("_spf-light", "TXT")])
    # the counting rule itself, including includes within includes
    nested = {"a.example": ["v=spf1 include:b.example include:c.example mx -all"], "b.example": ["v=spf1 a -all"],
              "c.example": ["v=spf1 ip4:198.51.100.0/24 -all"]}
    assert spf_lookups("v=spf1 include:a.example a -all", lambda n: nested.get(n, [])) == 6


def test_ptr_through_hetzner_emulator_is_forward_confirmed(synced, inv_dir, tmp_path, monkeypatch):
    """PTRs set by `dns sync` through the official hcloud library (Hetzner emulator on loopback)."""
    from mailops.dns.providers.hcloud import HcloudReverseProvider
    from mailops.lab import hcloudemu

    emulator = hcloudemu.HcloudEmulator()
    emulator.add_token("hc-test-token")
    emulator.add_server("mta1", "198.51.100.11", "2001:db8:51::/64")
    server, base_url = hcloudemu.serve(emulator)
    try:
        def to_hetzner(d):
            d["mailops_reverse_dns_providers"]["hetzner"] = {
                "type": "hcloud", "api_token": {"env": "MAILOPS_TEST_HCLOUD_TOKEN"}, "api_base_url": base_url}
        inv_path = variant(inv_dir, tmp_path, to_hetzner)
        hosts = inv_path / "hosts.yml"
        hosts.write_text(hosts.read_text().replace("mailops_reverse_dns_provider: lab-reverse",
                                                   "mailops_reverse_dns_provider: hetzner"))
        monkeypatch.setenv("MAILOPS_TEST_HCLOUD_TOKEN", "hc-test-token")
        inv, problems = load_inventory(inv_path)
        assert not problems, problems
        plan, providers = make_plan(inv, KeyStore.for_inventory(inv))
        assert plan.pending == len(plan.ptr_changes) == 2  # the forward zones are already in sync
        assert {c.old for c in plan.ptr_changes} == {"static.11.100.51.198.clients.your-server.de", None}
        apply_plan(plan, providers)
        fresh = HcloudReverseProvider("check", "hc-test-token", base_url)
        reader = DnsReader(inv.dns_resolvers)
        for addr in ("198.51.100.11", "2001:db8:51::11"):
            assert emulator.ptr(addr) == fresh.get_ptr(addr) == "mta1.shop.test"
            # forward-confirmed: the PTR name resolves (lab DNS) back to the same address
            rtype = "AAAA" if ":" in addr else "A"
            assert addr in {r.address for r in reader.resolver.resolve(fresh.get_ptr(addr), rtype)}
        assert make_plan(inv, KeyStore.for_inventory(inv))[0].pending == 0
    finally:
        hcloudemu.shutdown(server)


# --- Cloudflare faults, in-process (the official SDK over httpx's WSGI transport) -------------

@pytest.fixture
def cf_memory():
    """A fresh in-process emulator holding an empty news.test, and a provider factory for it."""
    import httpx
    from mailops.dns.providers.cloudflare import CloudflareProvider
    from mailops.lab.cfemu import CloudflareEmulator

    emulator = CloudflareEmulator()
    emulator.add_token("good-token")
    emulator.add_zone("news.test")

    def provider(token: str = "good-token") -> CloudflareProvider:
        return CloudflareProvider("lab-cloudflare", token, "http://cf.emulator/client/v4",
                                  transport=httpx.WSGITransport(app=emulator.wsgi_app))
    return emulator, provider


def _news_only(inv, provider):
    """Plan with news.test on the in-process emulator (shop.test and PTRs are already in sync)."""
    return make_plan(inv, KeyStore.for_inventory(inv), providers=Providers(inv, {"lab-cloudflare": provider}))


def test_cloudflare_429_and_5xx_are_retried_to_success(synced, inv_dir, cf_memory):
    emulator, provider = cf_memory
    inv, _ = load_inventory(inv_dir)
    emulator.inject_fault(503, count=1, path_contains="dns_records")
    emulator.inject_fault(429, count=2, retry_after=1, path_contains="batch")
    plan, providers = _news_only(inv, provider())
    assert [z.zone for z in plan.zones if z.rows()] == ["news.test"]
    apply_plan(plan, providers)
    statuses = [r["status"] for r in emulator.request_log if "batch" in r["path"]]
    assert statuses == [429, 429, 200], emulator.request_log
    assert any(r["status"] == 503 for r in emulator.request_log)
    assert _news_only(inv, provider())[0].pending == 0


def test_cloudflare_failed_batch_leaves_the_zone_fully_old(synced, inv_dir, cf_memory, tmp_path):
    emulator, provider = cf_memory
    inv, _ = load_inventory(inv_dir)
    plan, providers = _news_only(inv, provider())
    apply_plan(plan, providers)
    before = emulator.records("news.test")

    def stricter(d):
        d["mailops_domains"]["news.test"]["dmarc"]["policy"] = "reject"
        d["mailops_domains"]["news.test"]["spf"] = {"all": "-all"}
    changed, _ = load_inventory(variant(inv_dir, tmp_path, stricter))
    plan, providers = _news_only(changed, provider())
    assert sorted(c["action"] for z in plan.zones for c in z.rows()) == ["update", "update"]
    emulator.fail_batch_after(1, status=400)
    with pytest.raises(MailopsError, match="applying the changes to news.test failed"):
        apply_plan(plan, providers)
    assert emulator.records("news.test") == before
    apply_plan(plan, providers)  # and once the API works again, the whole change lands
    values = {r["content"] for r in emulator.records("news.test") if r["type"] == "TXT"}
    assert '"v=DMARC1; p=reject"' in values and '"v=spf1 ip4:198.51.100.11 ip6:2001:db8:51::11 -all"' in values


def test_cloudflare_bad_token_and_missing_zone_are_one_line_errors(synced, inv_dir, cf_memory):
    emulator, provider = cf_memory
    inv, _ = load_inventory(inv_dir)
    with pytest.raises(MailopsError) as bad:
        _news_only(inv, provider("not-the-token-XYZ"))
    assert "token was refused" in str(bad.value) and "XYZ" not in str(bad.value) and "\n" not in str(bad.value)
    emulator.add_token("ro-token", write=False)  # may list, may not write
    plan, providers = _news_only(inv, provider("ro-token"))
    with pytest.raises(MailopsError, match="lacks permission"):
        apply_plan(plan, providers)
    bare = cf_memory[0].__class__()
    bare.add_token("good-token")
    import httpx
    from mailops.dns.providers.cloudflare import CloudflareProvider
    lonely = CloudflareProvider("lab-cloudflare", "good-token", "http://cf.emulator/client/v4",
                                transport=httpx.WSGITransport(app=bare.wsgi_app))
    with pytest.raises(MailopsError, match="has no zone holding news.test"):
        _news_only(inv, lonely)


def test_parked_domain_gets_the_anti_spoofing_set(synced, inv_dir, tmp_path, lab_cfg):
    def park(d):
        d["mailops_parked_domains"] = {"parked.lab.test": {"dns_provider": "lab-rfc2136"}}
        d["mailops_dns_providers"]["lab-rfc2136"]["zones"] = ["shop.test", "lab.test"]
    parked = variant(inv_dir, tmp_path, park)
    try:
        result = json.loads(mailops("dns", "sync", "--apply", "--json", "-i", str(parked)).stdout)
        assert result["readback"] == []
        assert [z["zone"] for z in result["plan"]["zones"] if z["changes"]] == ["lab.test"]
        assert resolved_values("parked.lab.test", "TXT") == {"v=spf1 -all"}
        assert resolved_values("_dmarc.parked.lab.test", "TXT") == {"v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s"}
        assert resolved_values("parked.lab.test", "MX") == {"0 ."}
        assert resolved_values("anything._domainkey.parked.lab.test", "TXT") == {"v=DKIM1; p="}
        # the lab's own records in lab.test are untouched
        assert resolved_values("gw.lab.test", "A") == {GW}
    finally:
        labdns.update(core.dns_config(lab_cfg), "lab.test.", delete=[
            "parked.lab.test.", "_dmarc.parked.lab.test.", "*._domainkey.parked.lab.test.",
            f"{REGISTRY_LABEL}.lab.test."])


def test_two_inventories_share_a_zone_without_touching_each_other(synced, inv_dir, tmp_path, lab_cfg):
    """mailops_dns_owner: a second inventory owns its own records in the same zones."""
    def second(d):
        d["mailops_dns_owner"] = "second"
        d["mailops_submission_users"] = []
        d["mailops_dkim_keystore"] = str(tmp_path / "dkim-second")
        d["mailops_domains"] = {"b.shop.test": {"dns_provider": "lab-rfc2136"},
                                "b.news.test": {"dns_provider": "lab-cloudflare"}}
    other = variant(inv_dir, tmp_path, second)
    mailops("dkim", "generate", "--all", "-i", str(other))
    try:
        result = json.loads(mailops("dns", "sync", "--apply", "--json", "-i", str(other)).stdout)
        assert result["readback"] == []
        created = {(c["name"], c["type"]) for z in result["plan"]["zones"] for c in z["changes"]}
        # the host's A/AAAA are the first inventory's and identical: neither adopted nor duplicated
        assert ("mta1.shop.test", "A") not in created and ("b.shop.test", "MX") in created
        assert ("b.news.test", "TXT") in created
        # the first inventory neither deletes nor claims the second's records, and vice versa
        assert json.loads(mailops("dns", "plan", "--json", "-i", str(inv_dir)).stdout)["pending"] == 0
        assert json.loads(mailops("dns", "plan", "--json", "-i", str(other)).stdout)["pending"] == 0
        assert resolved_values("_dmarc.b.news.test", "TXT") == {"v=DMARC1; p=none"}
    finally:
        names = [n for n in {e.record.name for e in rfc2136(lab_cfg).list_records("shop.test")}
                 if n == "b.shop.test" or n.endswith(".b.shop.test")]
        labdns.update(core.dns_config(lab_cfg), "shop.test.",
                      delete=[n + "." for n in names] + ["_mailops-owner-second.shop.test."])
        client = cf_client(lab_cfg)
        zid = cf_zone_id(client, "news.test")
        for rec in list(client.dns.records.list(zone_id=zid, comment={"exact": "managed-by=mailops/second"})):
            client.dns.records.delete(rec.id, zone_id=zid)
    assert json.loads(mailops("dns", "plan", "--json", "-i", str(inv_dir)).stdout)["pending"] == 0
    assert resolve("b.shop.test", "MX") == [] and resolve("_dmarc.b.news.test", "TXT") == []
