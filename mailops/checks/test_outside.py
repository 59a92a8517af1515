"""The checks `mailops verify` makes from outside the server, as plain pytest:

    pytest --pyargs mailops.checks --hosts=ansible://all --ansible-inventory=inventories/NAME

One test per sending domain (DNS records, live send) and per mail host
(reverse DNS/EHLO/DNSBL, security probes)."""

from __future__ import annotations

import pytest

from mailops.checks.conftest import assert_no_failures

pytestmark = pytest.mark.outside


@pytest.fixture(scope="module")
def keystore(mailops_inventory):
    from mailops.dkim.store import KeyStore
    return KeyStore.for_inventory(mailops_inventory)


def test_domain_dns(mailops_inventory, keystore, mailops_domain):
    from mailops.verify import dnschecks
    inv = mailops_inventory
    assert_no_failures(dnschecks.check_domains(inv, keystore, domains=[mailops_domain], ca_bundle=inv.verify.ca_bundle))


def test_host_dns(mailops_inventory, mailops_host):
    from mailops.verify import dnschecks
    assert_no_failures(dnschecks.check_hosts(mailops_inventory, hosts=[mailops_host]))


def test_host_security_from_outside(mailops_inventory, mailops_host):
    from mailops.verify import security
    inv = mailops_inventory
    h = inv.host(mailops_host)
    users = [(u.login, inv.secret(u.password)) for u in inv.submission_users if u.password is not None]
    addrs = [str(h.ipv4)] + ([str(h.ipv6)] if h.ipv6 else [])
    sending = [d for d in inv.domains if h in inv.hosts_for(d)]
    assert_no_failures(security.probe_host(h.fqdn, addrs, sending_domains=sending, users=users,
                                           ca_bundle=inv.verify.ca_bundle))


def test_live_send(mailops_inventory, keystore, mailops_domain):
    from mailops.verify import send
    assert_no_failures(send.check_domains(mailops_inventory, keystore, [mailops_domain]))
