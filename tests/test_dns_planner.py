"""The `dns plan`/`dns sync` planner without root: ownership, conflicts, the safety
threshold, apex NS/SOA and owner ids, against an in-memory provider behind
mailops.dns.providers.base (the same interface the Cloudflare and RFC 2136 providers
implement).  No network: SPF includes resolve to nothing, hosts have no PTR provider."""

from __future__ import annotations

from datetime import datetime

import pytest

from mailops.dkim.store import KeyStore
from mailops.dns.plan import plan_zone
from mailops.dns.providers.base import Existing, ZoneChanges
from mailops.dns.records import Record, in_zone
from mailops.dns.sync import Providers, apply_plan, make_plan
from mailops.errors import MailopsError
from mailops.inventory.model import Inventory

ZONE = "shop.example"
FQDN, ADDR4, ADDR6 = f"mta1.{ZONE}", "198.51.100.31", "2001:db8:51::31"


class MemoryProvider:
    """One zone in a dict: record -> owner id (None: not mailops', ``owner``: ours, else another inventory's)."""

    kind = "memory"
    rrset_ttl = False
    ownership = "owner id per record"

    def __init__(self, owner: str = "me", zone: str = ZONE, name: str = "p"):
        self.name, self.owner, self.zone = name, owner, zone
        self.records: dict[Record, str | None] = {}
        self.applied: list[ZoneChanges] = []

    def put(self, name: str, rtype: str, value: str, owner: str | None = None, ttl: int = 300) -> Record:
        record = Record.make(name, rtype, value, ttl)
        self.records[record] = owner
        return record

    def zone_for(self, name: str) -> str | None:
        return self.zone if in_zone(name, self.zone) else None

    def list_records(self, zone: str) -> list[Existing]:
        return [Existing(r, owned=owner == self.owner, ref=r,
                         other_owner=owner if owner not in (None, self.owner) else None)
                for r, owner in sorted(self.records.items())]

    def apply(self, zone: str, changes: ZoneChanges) -> None:
        self.applied.append(changes)
        for e in changes.deletes:
            del self.records[e.ref]
        for old, new in changes.updates:
            del self.records[old.ref]
            self.records[new] = self.owner
        for r in changes.creates:
            self.records[r] = self.owner

    def nameservers(self, zone: str) -> list[str]:
        return []

    def values(self, name: str, rtype: str) -> dict[str, str | None]:
        return {r.value: owner for r, owner in self.records.items() if r.name == name and r.type == rtype}


def inventory(tmp_path, owner: str | None = None, **domain) -> Inventory:
    data = {"path": tmp_path, "dkim_keystore": tmp_path / "keys",
            "hosts": [{"name": "mta1", "fqdn": FQDN, "ipv4": ADDR4, "ipv6": ADDR6, "ssh_host": ADDR4}],
            "domains": {ZONE: {"dns_provider": "p", "dmarc": {"policy": "reject"}, **domain}}}
    if owner:
        data["dns_owner"] = owner
    return Inventory.model_validate(data)


@pytest.fixture
def keystore(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.generate(ZONE)
    return store


def plan(inv, provider, keystore=None, **kw):
    return make_plan(inv, keystore, providers=Providers(inv, {"p": provider}), resolve_txt=lambda _n: [], **kw)


def sync(inv, provider, keystore=None, **kw):
    result, providers = plan(inv, provider, keystore, **kw)
    apply_plan(result, providers)
    return result


def actions(result) -> list[tuple[str, str, str]]:
    return sorted((row["action"], row["name"], row["type"]) for z in result.zones for row in z.rows())


def test_empty_zone_gets_every_record_then_a_second_plan_is_a_no_op(tmp_path, keystore):
    inv, provider = inventory(tmp_path), MemoryProvider()
    first = sync(inv, provider, keystore)
    key = keystore.keys(ZONE)[0]
    assert actions(first) == sorted([
        ("create", FQDN, "A"), ("create", FQDN, "AAAA"), ("create", ZONE, "MX"), ("create", ZONE, "TXT"),
        ("create", key.record_name, "TXT"), ("create", f"_dmarc.{ZONE}", "TXT")])
    assert provider.values(ZONE, "MX") == {f"10 {FQDN}.": "me"}
    assert provider.values(ZONE, "TXT") == {f"v=spf1 ip4:{ADDR4} ip6:{ADDR6} ~all": "me"}
    assert provider.values(key.record_name, "TXT") == {key.dns_value: "me"}
    # address records are created first: an MX must never point at a missing name
    assert [r.type for r in provider.applied[0].creates][:2] == ["A", "AAAA"]
    again, _ = plan(inv, provider, keystore)
    assert again.pending == 0 and again.conflicts == [] and again.refused == []


def test_a_changed_inventory_updates_only_the_owned_record_in_place(tmp_path):
    provider = MemoryProvider()
    sync(inventory(tmp_path), provider)
    changed = inventory(tmp_path, dmarc={"policy": "quarantine", "rua": [f"mailto:d@{ZONE}"]})
    result, _ = plan(changed, provider)
    assert [(r["action"], r["name"], r["old"], r["new"]) for z in result.zones for r in z.rows()] == [
        ("update", f"_dmarc.{ZONE}", "v=DMARC1; p=reject", f"v=DMARC1; p=quarantine; rua=mailto:d@{ZONE}")]
    sync(changed, provider)
    assert provider.values(f"_dmarc.{ZONE}", "TXT") == {f"v=DMARC1; p=quarantine; rua=mailto:d@{ZONE}": "me"}
    assert plan(changed, provider)[0].pending == 0


def test_foreign_records_are_untouched_and_an_identical_one_is_adopted(tmp_path):
    provider = MemoryProvider()
    provider.put(ZONE, "TXT", "google-site-verification=abc")  # shares the apex with SPF
    provider.put(f"www.{ZONE}", "A", "198.51.100.80")
    provider.put(f"_dmarc.{ZONE}", "TXT", "v=DMARC1; p=reject")  # exactly what mailops wants
    result = sync(inventory(tmp_path), provider)
    assert ("adopt", f"_dmarc.{ZONE}", "TXT") in actions(result)
    assert provider.values(f"_dmarc.{ZONE}", "TXT") == {"v=DMARC1; p=reject": "me"}  # value unchanged, now ours
    assert provider.values(ZONE, "TXT")["google-site-verification=abc"] is None
    assert provider.values(f"www.{ZONE}", "A") == {"198.51.100.80": None}
    assert not any(r["name"] == f"www.{ZONE}" for z in result.zones for r in z.rows())


def test_a_conflicting_record_is_left_alone_unless_forced(tmp_path):
    provider = MemoryProvider()
    theirs = "v=spf1 include:_spf.elsewhere.example -all"
    provider.put(ZONE, "TXT", theirs)
    inv = inventory(tmp_path)
    result = sync(inv, provider)
    assert len(result.conflicts) == 1 and "--force" in result.conflicts[0] and theirs in result.conflicts[0]
    assert not any(r["type"] == "TXT" and r["name"] == ZONE for z in result.zones for r in z.rows())
    assert provider.values(ZONE, "TXT") == {theirs: None}
    forced = sync(inv, provider, force=True)
    assert forced.conflicts == [] and ("update", ZONE, "TXT") in actions(forced)
    assert provider.values(ZONE, "TXT") == {f"v=spf1 ip4:{ADDR4} ip6:{ADDR6} ~all": "me"}


def test_owned_records_no_longer_wanted_are_deleted(tmp_path, keystore):
    provider = MemoryProvider()
    inv = inventory(tmp_path)
    sync(inv, provider, keystore)
    key = keystore.keys(ZONE)[0]
    keystore.retire(ZONE, key.selector)
    keystore.purge(now=datetime(2100, 1, 1))  # past every grace period
    result = sync(inv, provider, keystore)
    assert actions(result) == [("delete", key.record_name, "TXT")]
    assert provider.values(key.record_name, "TXT") == {}


def test_threshold_refuses_a_plan_that_rewrites_most_of_a_zone(tmp_path):
    provider = MemoryProvider()
    for i in range(12):  # records mailops once published for hosts that are gone
        provider.put(f"old{i}.{ZONE}", "A", f"198.51.100.{100 + i}", owner="me")
    inv = inventory(tmp_path)
    result, providers = plan(inv, provider)
    zone = result.zones[0]
    assert zone.refused and "12 of 12 existing records" in zone.refused and "30%" in zone.refused
    with pytest.raises(MailopsError, match="refusing to apply"):
        apply_plan(result, providers)
    assert len(provider.records) == 12  # nothing half-applied
    assert plan(inv, provider, threshold=1.0)[0].refused == []  # a looser threshold lets it through
    forced = sync(inv, provider, force=True)
    assert forced.refused == [] and not any(r.name.startswith("old") for r in provider.records)


def test_small_zones_are_below_the_threshold_rule(tmp_path):
    provider = MemoryProvider()
    for i in range(9):  # fewer than MIN_EXISTING records: deleting them all is allowed
        provider.put(f"old{i}.{ZONE}", "A", f"198.51.100.{100 + i}", owner="me")
    assert plan(inventory(tmp_path), provider)[0].refused == []


def test_a_plan_touching_the_apex_ns_or_soa_is_refused(tmp_path):
    provider = MemoryProvider()
    provider.put(ZONE, "NS", f"ns1.{ZONE}.", owner="me")  # an owned apex NS nothing wants any more
    result, _ = plan(inventory(tmp_path), provider)
    assert result.refused and "apex NS/SOA" in result.refused[0]
    assert plan(inventory(tmp_path), provider, force=True)[0].refused == []
    # plan_zone itself, for an SOA
    soa = Existing(Record.make(ZONE, "SOA", f"ns1.{ZONE}. h.{ZONE}. 1 2 3 4 5"), owned=True)
    assert "apex NS/SOA" in plan_zone(provider, ZONE, [], [soa]).refused


def test_records_of_another_inventory_are_never_adopted_changed_or_deleted(tmp_path):
    provider = MemoryProvider(owner="shop")
    spf = f"v=spf1 ip4:{ADDR4} ip6:{ADDR6} ~all"
    provider.put(ZONE, "TXT", spf, owner="news")  # the same record, published by the other inventory
    provider.put(f"_dmarc.{ZONE}", "TXT", "v=DMARC1; p=none", owner="news")  # theirs, a different value
    provider.put(f"list.{ZONE}", "A", "198.51.100.90", owner="news")  # theirs, not wanted here
    inv = inventory(tmp_path, owner="shop")
    result = sync(inv, provider)
    rows = {(r["name"], r["type"]): r["action"] for z in result.zones for r in z.rows()}
    assert (ZONE, "TXT") not in rows and (f"list.{ZONE}", "A") not in rows
    assert any(f"_dmarc.{ZONE}" in c for c in result.conflicts)
    assert provider.values(ZONE, "TXT") == {spf: "news"}
    assert provider.values(f"_dmarc.{ZONE}", "TXT") == {"v=DMARC1; p=none": "news"}
    assert provider.values(f"list.{ZONE}", "A") == {"198.51.100.90": "news"}
    assert provider.values(ZONE, "MX") == {f"10 {FQDN}.": "shop"}
    assert plan(inv, provider)[0].pending == 0
