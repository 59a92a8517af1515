"""The return-path domain's records (mailops.dns.kinds.return_path) without the lab: what
desired_state computes, how the planner publishes it into an in-memory zone (the provider
interface the real providers implement), a shared return-path domain getting one set, and
verify's MX/SPF checks of it against an in-memory DNS view."""

from __future__ import annotations

import pytest

from mailops.dns.desired import desired_state
from mailops.dns.kinds import return_path, spf
from mailops.dns.records import Record
from mailops.errors import MailopsError
from mailops.inventory.model import Inventory
from tests.test_dns_planner import MemoryProvider, actions, plan, sync

ZONE = "shop.example"
A1, A2, A6 = "198.51.100.31", "198.51.100.32", "2001:db8:51::31"


def inventory(tmp_path, rp: bool = True, **domains) -> Inventory:
    data = {"path": tmp_path, "dkim_keystore": tmp_path / "keys",
            "hosts": [{"name": "mta1", "fqdn": f"mta1.{ZONE}", "ipv4": A1, "ipv6": A6, "ssh_host": A1},
                      {"name": "mta2", "fqdn": f"mta2.{ZONE}", "ipv4": A2, "ssh_host": A2}],
            "domains": domains or {ZONE: {"dns_provider": "p", "spf": {"include": ["_spf.partner.example"]}}}}
    if rp:
        data["return_path"] = {"key": {"file": "k"}, "operator_email": f"ops@{ZONE}"}
    inv = Inventory.model_validate(data)
    # the loader fills in each domain's hosts
    return inv.model_copy(update={"domains": {d: s.model_copy(update={"hosts": s.hosts or ["mta1", "mta2"]})
                                              for d, s in inv.domains.items()}})


def forward(state) -> list[Record]:
    return sorted(r for records in state.forward.values() for r in records)


def test_records_mx_and_spf_with_the_domains_addresses_and_dash_all(tmp_path):
    inv = inventory(tmp_path)
    rp = f"bounces.{ZONE}"
    assert return_path.domains(inv) == {rp: [ZONE]}
    want_spf = f"v=spf1 ip4:{A1} ip4:{A2} ip6:{A6} include:_spf.partner.example -all"
    assert return_path.records(inv, rp, 300) == [
        Record.make(rp, "MX", f"10 mta1.{ZONE}.", 300), Record.make(rp, "MX", f"10 mta2.{ZONE}.", 300),
        Record.make(rp, "TXT", want_spf, 300)]
    # the same addresses the domain's own record authorises (one place: kinds/spf)
    assert spf.value(inv, ZONE) == want_spf.replace("-all", "~all")
    at_rp = [r for r in forward(desired_state(inv, resolve_txt=lambda _n: [])) if r.name == rp]
    assert [(r.type, r.value) for r in at_rp] == [("MX", f"10 mta1.{ZONE}."), ("MX", f"10 mta2.{ZONE}."),
                                                 ("TXT", want_spf)]
    assert not [r for r in at_rp if r.type in ("A", "AAAA")]


def test_off_publishes_nothing_extra(tmp_path):
    names = {r.name for r in forward(desired_state(inventory(tmp_path, rp=False), resolve_txt=lambda _n: []))}
    assert not any(n.startswith("bounces.") for n in names)
    assert return_path.domains(inventory(tmp_path, rp=False)) == {}


def test_shared_return_path_domain_gets_one_set_of_records(tmp_path):
    inv = inventory(tmp_path, **{
        ZONE: {"dns_provider": "p", "hosts": ["mta1"], "return_path": f"rp.{ZONE}"},
        f"news.{ZONE}": {"dns_provider": "p", "hosts": ["mta2"], "return_path": f"rp.{ZONE}",
                         "spf": {"ip4": ["192.0.2.0/28"]}}})
    rp = f"rp.{ZONE}"
    assert return_path.domains(inv) == {rp: [f"news.{ZONE}", ZONE]}
    at_rp = [r for r in forward(desired_state(inv, resolve_txt=lambda _n: [])) if r.name == rp]
    assert sorted((r.type, r.value) for r in at_rp) == [
        ("MX", f"10 mta1.{ZONE}."), ("MX", f"10 mta2.{ZONE}."),
        ("TXT", f"v=spf1 ip4:{A2} ip4:192.0.2.0/28 ip4:{A1} ip6:{A6} -all")]


def test_planner_publishes_them_and_a_second_plan_is_a_no_op(tmp_path):
    inv, provider = inventory(tmp_path), MemoryProvider(zone=ZONE)
    first = sync(inv, provider)
    rp = f"bounces.{ZONE}"
    assert ("create", rp, "MX") in actions(first) and ("create", rp, "TXT") in actions(first)
    assert set(provider.values(rp, "MX")) == {f"10 mta1.{ZONE}.", f"10 mta2.{ZONE}."}
    again, _ = plan(inv, provider)
    assert again.pending == 0
    # turning the return path off deletes what mailops published there, nothing else
    off, _ = plan(inventory(tmp_path, rp=False), provider)
    assert sorted(a for a in actions(off) if a[0] != "keep") == [("delete", rp, "MX"), ("delete", rp, "MX"),
                                                                 ("delete", rp, "TXT")]


def test_spf_lookup_limit_names_the_return_path_domain(tmp_path):
    includes = [f"_spf{i}.partner.example" for i in range(11)]
    inv = inventory(tmp_path, **{ZONE: {"dns_provider": "p", "spf": {"include": includes}}})
    with pytest.raises(MailopsError, match="lookups"):
        desired_state(inv, resolve_txt=lambda _n: [])


# --- verify: the return-path domain's MX and SPF, checked like the domain's ------------------

class FakeView:
    """DnsView's two questions answered from a dict (observe: authoritative; resolve: resolvers)."""

    def __init__(self, answers: dict[tuple[str, str], set[str]]):
        self.answers = answers

    def observe(self, name, rtype):
        from mailops.verify.dnsview import Observed
        values = self.answers.get((name, rtype), frozenset())
        return Observed(frozenset(values))

    def resolve(self, name, rtype):
        return frozenset(self.answers.get((name, rtype), frozenset()))


def test_verify_checks_return_path_mx_and_spf(tmp_path):
    from mailops.verify import dnschecks

    inv = inventory(tmp_path, **{ZONE: {"dns_provider": "p"}})
    rp = f"bounces.{ZONE}"
    good = {(rp, "MX"): {f"10 mta1.{ZONE}.", f"10 mta2.{ZONE}."},
            (rp, "TXT"): {return_path.spf_value(inv, rp)},
            (f"mta1.{ZONE}", "A"): {A1}, (f"mta2.{ZONE}", "A"): {A2}, (f"mta1.{ZONE}", "AAAA"): {A6}}
    results = dnschecks._return_path(inv, FakeView(good), rp)
    assert {r.name: r.status for r in results} == {
        "return-path.mx": "pass", "return-path.spf.record": "pass", "return-path.spf.lookups": "pass",
        "return-path.spf.void-lookups": "pass", "return-path.spf.authorises-ipv4": "pass",
        "return-path.spf.authorises-ipv6": "pass"}
    assert all(r.subject == rp and r.group == "dns" for r in results)
    bad = dict(good)
    del bad[(rp, "MX")]
    bad[(rp, "TXT")] = {f"v=spf1 ip4:{A1} -all"}
    results = {r.name: r for r in dnschecks._return_path(inv, FakeView(bad), rp)}
    assert results["return-path.mx"].status == "fail" and "sync" in results["return-path.mx"].fix
    assert results["return-path.spf.authorises-ipv4"].status == "fail"
    assert A2 in results["return-path.spf.authorises-ipv4"].fix
