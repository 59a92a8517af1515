"""The record kinds (mailops.dns.kinds) without network: the SPF lookup count dns plan uses
(the verify evaluator, walked leniently), and the read-back comparison of published values."""

from __future__ import annotations

from mailops.dns.kinds import shows, spf
from mailops.dns.kinds.spf import SpfEvaluation

KEY = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxyz"


def test_spf_lookups_follow_includes_within_includes():
    nested = {"a.example": ["v=spf1 include:b.example include:c.example mx -all"], "b.example": ["v=spf1 a -all"],
              "c.example": ["v=spf1 ip4:198.51.100.0/24 -all"]}
    assert spf.count_lookups("v=spf1 include:a.example a -all", lambda n: nested.get(n, [])) == 6
    assert spf.count_lookups("v=spf1 include:a.example a -all") == 2  # no resolver: the record's own terms


def test_an_include_without_an_spf_record_costs_its_lookup_and_the_count_goes_on():
    record = "v=spf1 " + " ".join(f"include:_spf{i}.example.net" for i in range(11)) + " ~all"
    assert spf.count_lookups(record, lambda _n: []) == 11
    # a receiver's evaluation stops at the first of them (permerror): the count is the lenient walk's
    walk = SpfEvaluation(lambda n, t: frozenset({record}) if n == "d.example" and t == "TXT" else frozenset())
    assert walk.run("d.example")[0] == "permerror" and walk.lookups == 1


def test_an_include_loop_counts_past_the_limit():
    assert spf.count_lookups("v=spf1 include:loop.example -all", lambda _n: ["v=spf1 include:loop.example -all"]) \
        > spf.LOOKUP_LIMIT


def test_a_dkim_key_reads_back_whatever_its_spelling_other_records_need_their_value():
    split = KEY[:30] + "  " + KEY[30:].replace("; ", ";")  # whitespace a verifier ignores
    assert shows("mo-1._domainkey.shop.test", "TXT", KEY, {split})
    assert not shows("mo-1._domainkey.shop.test", "TXT", KEY, {KEY[:-3] + "abc"})
    assert not shows("mo-1._domainkey.shop.test", "TXT", KEY, {KEY.replace("k=rsa", "k=ed25519")})
    # the parked domains' revoked wildcard has no key: its exact value is what counts
    assert shows("*._domainkey.parked.test", "TXT", "v=DKIM1; p=", {"v=DKIM1; p="})
    assert not shows("*._domainkey.parked.test", "TXT", "v=DKIM1; p=", {"v=DKIM1; p=abc"})
    assert not shows("_dmarc.shop.test", "TXT", "v=DMARC1; p=reject", {"v=DMARC1;p=reject"})
    assert shows("shop.test", "MX", "10 mta1.shop.test.", {"10 mta1.shop.test.", "20 mx2.shop.test."})
