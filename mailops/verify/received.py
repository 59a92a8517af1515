"""What a received copy of a message says, read without trusting the sender: its header fields,
the receiver's Authentication-Results (its own authserv-id only), the DKIM signatures it
says pass, and organisational domains for DMARC alignment (RFC 7489 3.2, the Public Suffix
List).  Pure functions on the raw bytes; used by the requirements group."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path

from mailops.dns.kinds import dkim as dkim_kind

PSL = Path("/usr/share/publicsuffix/public_suffix_list.dat")   # Debian package publicsuffix


def header_fields(raw: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) of every header field, in order, as received (no decoding)."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0].decode("utf-8", "replace")
    fields: list[tuple[str, str]] = []
    for line in re.split(r"\r?\n", head):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
    return fields


def values(fields: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in fields if n.lower() == name.lower()]


@dataclass(frozen=True)
class AuthResult:
    """One method result of a trusted Authentication-Results header (RFC 8601)."""
    method: str             # dkim, spf, dmarc, ...
    result: str             # pass, fail, none, ...
    props: dict             # "header.d" -> "shop.test", "smtp.mailfrom" -> ...
    text: str               # the result as written, comments removed


def auth_results(fields: list[tuple[str, str]], authserv_id: str) -> list[AuthResult]:
    """Every result of the Authentication-Results headers of ``authserv_id`` only (any other may
    have been written by the sender: RFC 8601 section 5), several per method when there are
    several signatures (send.trusted_auth_results keeps the first of each method)."""
    out: list[AuthResult] = []
    for value in values(fields, "Authentication-Results"):
        text = " ".join(re.sub(r"\([^()]*\)", " ", value).split())   # comments may hold ';'
        parts = [p.strip() for p in text.split(";")]
        words = parts[0].split()
        if not words or words[0].lower() != authserv_id.lower():
            continue
        for part in parts[1:]:
            tokens = part.split()
            if not tokens or "=" not in tokens[0]:
                continue
            method, _, result = tokens[0].partition("=")
            props = {}
            for token in tokens[1:]:
                key, eq, val = token.partition("=")
                if eq:
                    props[key.lower()] = val.strip('"')
            out.append(AuthResult(method.lower(), result.lower(), props, part))
    return out


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature header (RFC 6376 3.5)."""
    d: str
    s: str
    a: str
    h: tuple[str, ...]      # signed header names, lower case
    b: str

    @property
    def algorithm(self) -> str:
        return "ed25519" if self.a.lower().startswith("ed25519") else "rsa"


def signatures(fields: list[tuple[str, str]]) -> list[Signature]:
    out = []
    for value in values(fields, "DKIM-Signature"):
        tags = dkim_kind.parse_tags(value)
        out.append(Signature(tags.get("d", "").lower().rstrip("."), tags.get("s", ""), tags.get("a", ""),
                             tuple(n.strip().lower() for n in tags.get("h", "").split(":") if n.strip()),
                             tags.get("b", "")))
    return out


def _same_signature(sig: Signature, result: AuthResult) -> bool:
    """Whether a receiver's dkim result is about this signature: header.b (a prefix of b=) when
    given, else header.d (or header.i's domain) with header.s / header.a when given."""
    props = result.props
    if props.get("header.b"):
        return sig.b.startswith(props["header.b"])
    domain = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
    if not domain or domain.lower().rstrip(".") != sig.d:
        return False
    return all(props.get(k) in (None, v) for k, v in (("header.s", sig.s), ("header.a", sig.a)))


def passing_signatures(fields, results: list[AuthResult]) -> list[Signature]:
    """The signatures the receiver says pass."""
    passes = [r for r in results if r.method == "dkim" and r.result == "pass"]
    return [s for s in signatures(fields) if any(_same_signature(s, r) for r in passes)]


def from_domain(fields) -> str | None:
    found = values(fields, "From")
    addrs = [a for _, a in getaddresses(found[:1])] if found else []
    if not addrs or "@" not in addrs[0]:
        return None
    return addrs[0].rpartition("@")[2].lower().rstrip(".").strip(">")


# --- organisational domains (RFC 7489 3.2) ------------------------------------------------------

@functools.cache
def _public_suffixes(path: Path = PSL) -> tuple[frozenset, frozenset, frozenset] | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    rules = [line.split()[0].lower() for line in lines if line.strip() and not line.startswith("//")]
    return (frozenset(r for r in rules if not r.startswith(("*.", "!"))),
            frozenset(r[2:] for r in rules if r.startswith("*.")),
            frozenset(r[1:] for r in rules if r.startswith("!")))


def organisational_domain(name: str, path: Path = PSL) -> str:
    """The public suffix plus one label (the Public Suffix List's algorithm); without the list on
    this machine its default rule (``*``: the last two labels)."""
    labels = name.lower().rstrip(".").split(".")
    suffix_len = 1
    psl = _public_suffixes(path)
    if psl is not None:
        rules, wildcards, exceptions = psl
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if candidate in exceptions:
                suffix_len = len(labels) - i - 1
                break
            if candidate in rules or (i + 1 < len(labels) and ".".join(labels[i + 1:]) in wildcards):
                suffix_len = len(labels) - i
                break
    return ".".join(labels[-(suffix_len + 1):]) if len(labels) > suffix_len else ".".join(labels)


def aligned(a: str, b: str, *, strict: bool = False) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if strict else organisational_domain(a) == organisational_domain(b)
