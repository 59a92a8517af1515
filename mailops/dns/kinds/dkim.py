"""DKIM key records (RFC 6376 3.6): ``<selector>._domainkey.<domain>`` TXT.

The value is made once, when the key store creates a key (:func:`value_for`),
and kept in ``keys.json``; :func:`records` publishes the keys the store says DNS
must carry.  :func:`matches` is the one comparison of a published record with a
key (activation, ``dns sync`` read-back); :func:`problems` adds what ``verify``
reports about a record that does not match.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mailops.dns.records import Record

MIN_RSA_BITS = 2048
LABEL = "_domainkey"


def record_name(domain: str, selector: str) -> str:
    """``<selector>._domainkey.<domain>`` (no trailing dot)."""
    return f"{selector}.{LABEL}.{domain.rstrip('.')}"


def is_record_name(name: str) -> bool:
    return f".{LABEL}." in f".{name.lower()}"


def value_for(public_key) -> str:
    """The TXT value publishing an RSA or Ed25519 public key."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode("ascii")


def records(keystore, domain: str, now, ttl: int) -> list[Record]:
    """The domain's key records: every key the store says DNS must carry (pending, active, in grace)."""
    return [Record.make(record_name(domain, k.selector), "TXT", k.dns_value, ttl)
            for k in keystore.published(domain, now)]


def parse_tags(value: str) -> dict[str, str]:
    """DKIM tag=value list (RFC 6376 3.2) with all whitespace removed from values."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        if "=" not in part:
            continue
        name, _, val = part.partition("=")
        tags[name.strip().lower()] = "".join(val.split())
    return tags


def matches(expected: str, found) -> bool:
    """True if ``found`` publishes the same key (k= and p=) as ``expected``, ignoring whitespace."""
    if not isinstance(found, str):
        return False
    want, got = parse_tags(expected), parse_tags(found)
    if not got.get("p"):
        return False  # empty p= means revoked (RFC 6376 3.6.1)
    return (want.get("p") == got.get("p")
            and want.get("k", "rsa").lower() == got.get("k", "rsa").lower())


def describe(expected: str, found) -> str:
    """Short words for what a server answered (a text, None, or a lookup failure), relative to the key."""
    if found is None:
        return "no record"
    if not isinstance(found, str):
        return f"no answer ({found})"
    if matches(expected, found):
        return "the expected key"
    tags = parse_tags(found)
    if "p" in tags and not tags["p"]:
        return "a revoked key (empty p=)"
    if not tags.get("p"):
        return "a record without p= (not a DKIM key)"
    p = tags["p"]
    short = p if len(p) <= 16 else f"{p[:6]}...{p[-6:]}"
    return f"a different key (k={tags.get('k', 'rsa')}, p={short})"


def problems(expected: str, found: str) -> list[str]:
    """How ``found`` differs from the key ``expected`` for a verifier (empty: it publishes that key)."""
    tags, want = parse_tags(found), parse_tags(expected)
    out = []
    if tags.get("v", "DKIM1") != "DKIM1":
        out.append(f"v={tags['v']} (want DKIM1)")
    if not tags.get("p"):
        out.append("no public key (empty p= means revoked)" if "p" in tags else "no p= tag")
    elif tags["p"] != want.get("p"):
        out.append(f"publishes a different key than the key store (p=...{tags['p'][-12:]})")
    if tags.get("k", "rsa").lower() != want.get("k", "rsa").lower():
        out.append(f"k={tags.get('k', 'rsa')} but the key is {want.get('k', 'rsa')}")
    return out


def rsa_bits(p: str) -> int | None:
    """The size of the RSA key in a p= value, None when it is no RSA SubjectPublicKeyInfo."""
    try:
        public = load_der_public_key(base64.b64decode(p, validate=True))
    except (ValueError, binascii.Error, TypeError):
        return None
    return public.key_size if isinstance(public, rsa.RSAPublicKey) else None


def is_testing(value: str) -> bool:
    """t=y: the domain is testing DKIM, receivers ignore failures (RFC 6376 3.6.1)."""
    return "y" in parse_tags(value).get("t", "").split(":")
