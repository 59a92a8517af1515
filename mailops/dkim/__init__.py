"""DKIM keys on the controller: the key store (``store``) and the DNS visibility check (``dnscheck``).

Typical use::

    store = KeyStore.for_inventory(inv)            # or KeyStore(path, grace_days=7)
    store.generate("shop.test", inv.domains["shop.test"].dkim)   # first key(s), active
    store.rotate("shop.test", settings)            # new pending key(s)
    store.activate("shop.test", nameservers=["198.51.100.1"])    # once DNS shows them
    store.retire("shop.test", "mo-20261122")
    store.purge()                                  # retired keys past the grace period
    store.published("shop.test"); store.signing("shop.test")

What an inventory adds (its domains and settings, which servers prove a key
visible) is in ``lifecycle``; which keys sign is ``signing.signing_keys`` (the
opendkim role uses the same rule); the DKIM record itself is
``mailops.dns.kinds.dkim``.

Library only: no click, nothing printed; errors are one-line ``MailopsError``.
"""

from mailops.dkim.dnscheck import LookupFailed, matches, published_value, record_name
from mailops.dkim.store import (
    ALGORITHMS,
    STATES,
    ActivationResult,
    DkimKey,
    GenerateResult,
    KeyStore,
    format_time,
    parse_time,
)

__all__ = [
    "ALGORITHMS", "STATES", "ActivationResult", "DkimKey", "GenerateResult", "KeyStore", "LookupFailed",
    "format_time", "matches", "parse_time", "published_value", "record_name",
]
