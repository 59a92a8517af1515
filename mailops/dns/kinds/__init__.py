"""One module per DNS record kind mailops publishes.

Each kind module holds the record's name, its value from the inventory (and,
for DKIM, the key store), how to parse a published value and compare it with
the wanted one.  ``dns.desired`` computes the records from these modules,
``dns.sync`` reads them back with :func:`shows`, DKIM activation and
``verify`` compare published values with the same functions.

To add a kind: copy ``tls_rpt.py`` (the smallest), give it ``name``,
``value``/``records`` and ``parse``, call ``records`` from
``dns.desired.desired_state`` and add a check to ``verify.dnschecks``.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailops.dns.kinds import dkim


def shows(name: str, rtype: str, wanted: str, published: Iterable[str]) -> bool:
    """Whether the published values carry the wanted record (read-back after a sync).

    A DKIM key record counts as published when a verifier would find the key in it
    (the comparison activation uses); every other kind needs its canonical value."""
    published = set(published)
    if wanted in published:
        return True
    return rtype == "TXT" and dkim.is_record_name(name) and any(dkim.matches(wanted, v) for v in published)
