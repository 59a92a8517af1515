"""The ``hetzner`` DNS provider (Cloud API zones, official ``hcloud`` library) through the real
``dns plan``/``dns sync`` library path, against the Hetzner Cloud API emulator on loopback.

The inventory names the provider in mailops_dns_providers, so the provider is built by the
same factory ``dns sync`` uses, with its token read from a 0600 file.  The zone starts with
someone else's records: a site-verification TXT at the apex (the RRset SPF joins) and an
A record for www.  Each test proves one guarantee of mailops.dns.providers.hetzner: create,
no-op, update, conflict, foreign records untouched, a failure mid-way rolled back, a
concurrent edit not overwritten, a wrong token as one line."""

from __future__ import annotations

import pytest

from mailops.dkim.store import KeyStore
from mailops.dns.providers.cloudflare import OWNER_COMMENT
from mailops.dns.sync import apply_plan
from mailops.errors import MailopsError
from mailops.inventory.model import Inventory
from mailops.lab.hcloudemu import HcloudEmulator, serve, shutdown
from tests.helpers import copy_inventory, mailops, plan, rows, sync

TOKEN = "hz-zones-token-4711-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN"
ZONE = "shop.example"
FQDN, ADDR4, ADDR6 = f"mta1.{ZONE}", "198.51.100.31", "2001:db8:51::31"
SITE = '"google-site-verification=abc123"'


@pytest.fixture
def api():
    emulator = HcloudEmulator(action_polls=1)  # each write's action is polled once, as on Hetzner
    emulator.add_token(TOKEN)
    emulator.add_zone(ZONE)
    emulator.put_rrset(ZONE, "@", "TXT", [SITE], ttl=600)
    emulator.put_rrset(ZONE, "www", "A", ["203.0.113.5"], comment="the shop's web server")
    server, url = serve(emulator)
    yield emulator, url
    shutdown(server)


@pytest.fixture
def keystore(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.generate(ZONE)
    return store


def inventory(tmp_path, url: str, token: str = TOKEN, **domain) -> Inventory:
    token_file = tmp_path / "hetzner.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return Inventory.model_validate({
        "path": tmp_path, "dkim_keystore": tmp_path / "keys",
        "hosts": [{"name": "mta1", "fqdn": FQDN, "ipv4": ADDR4, "ipv6": ADDR6, "ssh_host": ADDR4}],
        "domains": {ZONE: {"dns_provider": "hz", "dmarc": {"policy": "reject"}, **domain}},
        "dns_providers": {"hz": {"type": "hetzner", "api_token": {"file": str(token_file)}, "api_base_url": url}}})


def mine(emulator) -> dict[tuple[str, str], list[str]]:
    """The records mailops owns in the emulator, by RRset."""
    out: dict[tuple[str, str], list[str]] = {}
    for key, rrset in emulator.rrsets(ZONE).items():
        values = [r["value"] for r in rrset["records"] if r["comment"] == OWNER_COMMENT]
        if values:
            out[key] = sorted(values)
    return out


def writes(emulator) -> list[tuple[str, str, int]]:
    return [r for r in emulator.request_log() if r[0] in ("POST", "DELETE", "PUT")]


def test_create_then_a_second_sync_changes_nothing_and_foreign_records_stay(api, tmp_path, keystore):
    emulator, url = api
    inv = inventory(tmp_path, url)
    first, providers = sync(inv, keystore)
    assert ("create", FQDN, "A") in rows(first) and ("create", ZONE, "MX") in rows(first)
    owned = mine(emulator)
    assert owned[("mta1", "A")] == [ADDR4] and owned[("mta1", "AAAA")] == [ADDR6]
    assert owned[("@", "MX")] == [f"10 {FQDN}."]
    assert owned[("_dmarc", "TXT")] == ['"v=DMARC1; p=reject"']
    selector = keystore.keys(ZONE)[0].selector
    assert owned[(f"{selector}._domainkey", "TXT")][0].startswith('"v=DKIM1; k=rsa; p=')
    assert all(len(part) <= 257 for part in owned[(f"{selector}._domainkey", "TXT")][0].split('" "'))
    # SPF joined the apex TXT RRset; the site verification stays, with its TTL and no owner.
    apex = emulator.rrsets(ZONE)[("@", "TXT")]
    assert apex["ttl"] == 600 and {"value": SITE, "comment": None} in apex["records"]
    assert emulator.rrsets(ZONE)[("www", "A")]["records"] == [
        {"value": "203.0.113.5", "comment": "the shop's web server"}]
    assert providers.requests()["hz"] == emulator.request_count()

    before, count = emulator.rrsets(ZONE), emulator.request_count()
    second, providers = sync(inv, keystore)
    assert second.pending == 0 and rows(second) == []
    assert emulator.rrsets(ZONE) == before
    # one zone listing and one RRset listing, nothing written
    assert emulator.request_log()[count:] == [("GET", "/v1/zones", 200), ("GET", "/v1/zones/42/rrsets", 200)]
    assert providers.requests() == {"hz": 2}


def test_update_rewrites_only_the_changed_rrsets(api, tmp_path, keystore):
    emulator, url = api
    sync(inventory(tmp_path, url), keystore)
    before, count = emulator.rrsets(ZONE), emulator.request_count()
    stricter = inventory(tmp_path, url, dmarc={"policy": "quarantine"}, spf={"all": "-all"})
    result, _ = sync(stricter, keystore)
    assert rows(result) == [("update", f"_dmarc.{ZONE}", "TXT"), ("update", ZONE, "TXT")]
    after = emulator.rrsets(ZONE)
    assert mine(emulator)[("_dmarc", "TXT")] == ['"v=DMARC1; p=quarantine"']
    spf = [r["value"] for r in after[("@", "TXT")]["records"] if r["comment"] == OWNER_COMMENT]
    assert spf == [f'"v=spf1 ip4:{ADDR4} ip6:{ADDR6} -all"']
    assert {"value": SITE, "comment": None} in after[("@", "TXT")]["records"]
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {("@", "TXT"), ("_dmarc", "TXT")}
    # the re-check before writing, then one set_records (+ its action poll) per RRset
    assert sorted(p for m, p, _ in writes(emulator)[-2:]) == [
        "/v1/zones/42/rrsets/@/TXT/actions/set_records", "/v1/zones/42/rrsets/_dmarc/TXT/actions/set_records"]
    assert len(emulator.request_log()) - count == 2 + 1 + 2 * 2


def test_a_foreign_record_in_the_way_is_a_conflict_unless_forced(api, tmp_path, keystore):
    emulator, url = api
    emulator.put_rrset(ZONE, "_dmarc", "TXT", ['"v=DMARC1; p=none"'], comment="set by the agency")
    inv = inventory(tmp_path, url)
    result, _ = sync(inv, keystore)
    assert [str(c) for c in result.conflicts] and "_dmarc.shop.example TXT" in result.conflicts[0]
    assert ("create", f"_dmarc.{ZONE}", "TXT") not in rows(result)
    assert emulator.rrsets(ZONE)[("_dmarc", "TXT")]["records"] == [
        {"value": '"v=DMARC1; p=none"', "comment": "set by the agency"}]
    assert ("mta1", "A") in mine(emulator)  # the rest of the plan was applied
    forced, _ = sync(inv, keystore, force=True)
    assert rows(forced) == [("update", f"_dmarc.{ZONE}", "TXT")]
    assert emulator.rrsets(ZONE)[("_dmarc", "TXT")]["records"] == [
        {"value": '"v=DMARC1; p=reject"', "comment": OWNER_COMMENT}]
    assert plan(inv, keystore)[0].pending == 0


def test_a_write_failing_mid_way_is_rolled_back_and_the_zone_is_as_before(api, tmp_path, keystore):
    emulator, url = api
    sync(inventory(tmp_path, url), keystore)
    changed = inventory(tmp_path, url, dmarc={"policy": "quarantine"}, spf={"all": "-all"},
                        tls_rpt={"rua": ["mailto:tlsrpt@shop.example"]})
    result, providers = plan(changed, keystore)
    assert len(rows(result)) == 3  # three RRsets: apex TXT, _dmarc TXT, _smtp._tls TXT
    before = emulator.rrsets(ZONE)
    # the second RRset write is refused (another action holds the RRset)
    emulator.inject_fault(423, method="POST", path_contains="/rrsets/", skip=1)
    with pytest.raises(MailopsError) as failed:
        apply_plan(result, providers)
    message = str(failed.value)
    assert "\n" not in message and TOKEN not in message
    assert "423 locked" in message and "rolled back the 1 RRset(s) already written" in message, message
    assert emulator.rrsets(ZONE) == before
    statuses = [s for m, p, s in writes(emulator)]
    assert statuses[-3:] == [201, 423, 201]  # written, refused, put back
    # once the API works again the same plan lands whole
    result, providers = plan(changed, keystore)
    apply_plan(result, providers)
    assert plan(changed, keystore)[0].pending == 0


def test_a_failed_rollback_names_what_is_left_changed(api, tmp_path, keystore):
    emulator, url = api
    sync(inventory(tmp_path, url), keystore)
    result, providers = plan(inventory(tmp_path, url, dmarc={"policy": "quarantine"}, spf={"all": "-all"}),
                             keystore)
    emulator.inject_fault(400, count=5, method="POST", path_contains="/rrsets/", skip=1)
    with pytest.raises(MailopsError) as failed:
        apply_plan(result, providers)
    message = str(failed.value)
    assert "rolling back the 1 RRset(s) already written failed for @ TXT" in message, message
    assert "partly changed, run mailops dns plan" in message


def test_an_rrset_edited_after_the_plan_is_not_overwritten(api, tmp_path, keystore):
    emulator, url = api
    sync(inventory(tmp_path, url), keystore)
    result, providers = plan(inventory(tmp_path, url, spf={"all": "-all"}), keystore)
    # someone adds a record to the apex TXT RRset in the console between plan and apply
    apex = emulator.rrsets(ZONE)[("@", "TXT")]
    emulator.put_rrset(ZONE, "@", "TXT", [r["value"] for r in apex["records"]] + ['"ms=12345"'], ttl=600)
    before, posts = emulator.rrsets(ZONE), len(writes(emulator))
    with pytest.raises(MailopsError, match=r"changed since they were read \(@ TXT\); nothing was changed"):
        apply_plan(result, providers)
    assert emulator.rrsets(ZONE) == before and len(writes(emulator)) == posts


def test_a_protected_rrset_refuses_the_zone_before_any_write(api, tmp_path, keystore):
    emulator, url = api
    emulator.put_rrset(ZONE, "_dmarc", "TXT", ['"v=DMARC1; p=reject"'], comment=OWNER_COMMENT, ttl=300,
                       protected=True)
    result, providers = plan(inventory(tmp_path, url, dmarc={"policy": "quarantine"}), keystore)
    with pytest.raises(MailopsError, match="_dmarc TXT of shop.example is protected.*nothing was changed"):
        apply_plan(result, providers)
    assert writes(emulator) == []


def test_a_wrong_token_is_one_line_from_the_cli(api, tmp_path):
    emulator, url = api
    emulator.add_zone("shop.test")
    emulator.add_zone("news.test")
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token-0815\n")
    token_file.chmod(0o600)

    def settings(s: dict) -> None:
        s["mailops_dkim_keystore"] = str(tmp_path / "dkim")
        s["mailops_dns_providers"] = {"hz": {"type": "hetzner", "api_token": {"file": str(token_file)},
                                             "api_base_url": url}}
        for domain in s["mailops_domains"].values():
            domain["dns_provider"] = "hz"
        s.pop("mailops_reverse_dns_providers", None)

    def hosts(h: dict) -> None:
        for host in h["all"]["children"]["mailhosts"]["hosts"].values():
            host.pop("mailops_reverse_dns_provider", None)

    inv = copy_inventory(tmp_path / "inv", settings=settings, hosts=hosts)
    proc = mailops("dns", "plan", "-i", str(inv), check=False, timeout=60)
    err = proc.stderr.strip()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert len(err.splitlines()) == 1, err
    assert "hetzner provider 'hz': the API token was refused (401 unauthorized)" in err, err
    assert "not-the-token" not in proc.stdout + proc.stderr
    assert writes(emulator) == []
