"""DKIM keys on the controller: the key store (``store``) and the DNS visibility check (``dnscheck``).

Typical use::

    store = KeyStore.for_inventory(inv)            # or KeyStore(path, grace_days=7)
    store.generate("shop.test", inv.domains["shop.test"].dkim)   # first key(s), active
    store.rotate("shop.test", settings)            # new pending key(s)
    store.activate("shop.test", nameservers=["198.51.100.1"])    # once DNS shows them
    store.retire("shop.test", "mo-20261122")
    store.purge()                                  # retired keys past the grace period
    store.published("shop.test"); store.signing("shop.test")

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
