"""The DKIM life cycle for an inventory (mailops.dkim.lifecycle): which servers prove a pending
key visible before it is activated, and the domain check every command shares.  No network:
the DNS check is the store's checker, replaced here by what the chosen servers would answer."""

from __future__ import annotations

import pytest

from mailops.dkim import lifecycle
from mailops.dkim.store import KeyStore
from mailops.errors import MailopsError
from mailops.inventory.model import Inventory

SECRET = {"env": "MAILOPS_TEST_UNUSED"}


def inventory(tmp_path) -> Inventory:
    return Inventory.model_validate({
        "path": tmp_path, "dkim_keystore": tmp_path / "keys",
        "hosts": [{"name": "mta1", "fqdn": "mta1.a.example", "ipv4": "198.51.100.41", "ssh_host": "198.51.100.41"}],
        "dns_providers": {
            "bind": {"type": "rfc2136", "server": "198.51.100.53", "port": 5353, "tsig_key_name": "k.",
                     "tsig_secret": SECRET},
            "cf": {"type": "cloudflare", "api_token": SECRET}},
        "domains": {"a.example": {"dns_provider": "bind"}, "b.example": {"dns_provider": "cf"}}})


def test_the_servers_asked_are_the_given_ones_else_the_rfc2136_server_else_the_ns_records(tmp_path):
    inv = inventory(tmp_path)
    assert lifecycle.servers_to_ask(inv, "a.example", ["192.0.2.9"]) == (["192.0.2.9"], 53)
    assert lifecycle.servers_to_ask(inv, "a.example") == (["198.51.100.53"], 5353)
    assert lifecycle.servers_to_ask(inv, "b.example") == (None, 53)  # Cloudflare: the zone's NS


def test_activation_asks_the_chosen_servers_and_needs_every_one_to_show_the_key(tmp_path, monkeypatch):
    inv, asked = inventory(tmp_path), []
    store = KeyStore.for_inventory(inv)
    lifecycle.generate(inv, ["a.example"], store=store)
    pending = lifecycle.rotate(inv, "A.Example.", store=store)[0]

    def published_value(domain, selector, nameservers, *, port):
        asked.append((domain, selector, nameservers, port))
        return {s: answers.get(s) for s in nameservers}
    monkeypatch.setattr("mailops.dkim.dnscheck.published_value", published_value)
    answers = {"198.51.100.53": None}
    with pytest.raises(MailopsError, match="refusing to activate.*198.51.100.53: no record"):
        lifecycle.activate(inv, "a.example", store=store)
    answers = {"198.51.100.53": pending.dns_value}
    result = lifecycle.activate(inv, "a.example", store=store)
    assert asked[-1] == ("a.example", pending.selector, ["198.51.100.53"], 5353)
    assert [k.selector for k in result.activated] == [pending.selector] and len(result.retired) == 1
    assert [k.selector for k in store.signing("a.example")] == [pending.selector]


def test_a_domain_the_inventory_does_not_send_for_is_one_line(tmp_path):
    with pytest.raises(MailopsError, match="c.example is not a sending domain.*a.example, b.example"):
        lifecycle.rotate(inventory(tmp_path), "c.example")
