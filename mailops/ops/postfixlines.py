"""What one Postfix log message says: the events (a delivery, a reject), how a DSN and a
reason are grouped, and the parsers of the line formats (see log_adhoc.c, smtpd.c
log_whatsup, cleanup_milter.c, cleanup_message.c).

Every parser runs in time linear in the line: a hostile or broken line of any length
must not stall the reader (no pattern here can backtrack over the same text twice)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

MAX_REASON_CHARS = 300


@dataclass(slots=True)
class Delivery:
    """One ``status=`` line of a delivery agent (smtp, lmtp, local, virtual, pipe, error...)."""
    time: datetime
    queue_id: str
    recipient: str
    domain: str
    sender: str | None      # None: the qmgr from= line was not seen; "" is the null sender <>
    relay: str
    dsn: str
    status: str             # sent, deferred, bounced or expired
    reason: str             # the text inside the final parentheses


@dataclass(slots=True)
class Reject:
    """A refusal by smtpd/postscreen (``reject:``), a milter (``milter-reject:``) or
    cleanup's header/body checks.  4xx refusals are rejects too; code tells them apart."""
    time: datetime
    queue_id: str | None    # None for NOQUEUE
    stage: str              # CONNECT, HELO, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE, HEADER, BODY...
    code: str               # SMTP reply code ("554"); "" when Postfix logged only the DSN (milters)
    dsn: str
    recipient: str | None
    domain: str | None
    sender: str | None
    client: str             # "name[address]", as logged
    reason: str             # reply text after the code and DSN


def classify_dsn(dsn: str) -> str:
    """What a permanent failure says about the address (RFC 3463), for suppression lists."""
    if dsn in ("5.1.1", "5.1.0", "5.1.10", "5.1.3"):
        return "bad-mailbox"
    if dsn == "5.1.2":
        return "bad-domain"
    if dsn == "5.2.1":
        return "mailbox-disabled"
    if dsn == "5.2.2":
        return "mailbox-full"
    if dsn.startswith("5.7."):
        return "policy"      # blocked or judged spam: not a problem with the address
    if dsn.startswith("5.4."):
        return "routing"
    if dsn.startswith("5.3."):
        return "system"
    return "other"


def domain_of(address: str) -> str:
    at = address.rfind("@")
    return address[at + 1:].lower() if at >= 0 else ""


# ---------------------------------------------------------------------------
# Reason normalisation: the same failure for different recipients, hosts and
# queue files must land in one group.
# ---------------------------------------------------------------------------

_ADDRESS_CHAR = r"[^\s<>@(),;:\"\[\]]"
# the look-behind starts a match only where a run of address characters starts: without
# it a long run with no "@" is rescanned from each of its characters (quadratic)
_ADDRESS_RE = re.compile(rf"<?(?<!{_ADDRESS_CHAR}){_ADDRESS_CHAR}+@{_ADDRESS_CHAR}+>?")
_IPV6_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:.])")
_IPV4_RE = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")
# queue ids (hex, or Postfix long ids) and other tokens from remote logs, e.g. Gmail's
# "d9443c01a7336-2a4ff9d6a5bsi12345"; a digit is required so plain words survive
_ID_RE = re.compile(r"\b(?:(?=[A-Fa-f]*\d)[0-9A-Fa-f]{8,}|(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{10,})\b")
_LONG_NUMBER_RE = re.compile(r"\d{4,}")


# IPv6, IPv4, ids and long numbers in one pass, each alternative as its own pattern above;
# the alternatives are in the order the separate passes ran, and none can start inside a token
# an earlier alternative takes (each is bounded by characters the others cannot start after),
# so one pass gives what five did.  Addresses get their own pass first: the tokens after an
# address see its "<addr>" replacement, as they always did.
# The first three cannot start right after a word character (their look-behinds, and the id's \b
# before a word character, say so), so that test comes first, once for the three: inside a word only
# the long number is tried, and that is most of the positions of a reason.
_AFTER_IPV6 = (("ip4", _IPV4_RE), ("id", _ID_RE), ("n", _LONG_NUMBER_RE))
_ONE_PASS_RE = re.compile(r"(?<!\w)(?:" + "|".join(f"(?P<{name}>{rx.pattern})" for name, rx in (
    ("ip6", _IPV6_RE), ("ip4", _IPV4_RE), ("id", _ID_RE))) + f")|(?P<n>{_LONG_NUMBER_RE.pattern})")
_NOT_IPV6_RE = re.compile("|".join(f"(?P<{name}>{rx.pattern})" for name, rx in _AFTER_IPV6))
_REPLACEMENT = {"ip4": "<ip>", "id": "<id>", "n": "<n>"}


def _one_pass(match: re.Match) -> str:
    kind = match.lastgroup
    if kind != "ip6":
        return _REPLACEMENT[kind]
    token = match.group(0)
    if "::" in token or token.count(":") >= 5:
        return "<ip>"
    # "16:50:01" is a time, not an address: its numbers are still normalised, as by the later passes
    return _NOT_IPV6_RE.sub(_not_ipv6, token)


def _not_ipv6(match: re.Match) -> str:
    return _REPLACEMENT[match.lastgroup]


# No pattern above matches across a space, and each treats a space as it treats the start or the
# end of the text (none of their characters, no word character), so a reason is normalised word
# by word, and the words of a log repeat ("said:", "450", "4.2.1", the same hosts and recipients):
# normalised words by word, at most _CACHED of them (then it starts again: bounded memory).
# "[" and "]" are such separators too (no pattern takes them, neither is a word character), so a
# word holding them is normalised piece by piece through the same cache and is not cached whole:
# there are as many "mx.example.net[192.0.2.7]:25:" words as hosts times their addresses, which
# cleared the cache again and again, but only as many pieces as hosts plus addresses.
_CACHED = 4_096
_CACHED_WORD_CHARS = 100
_normalised: dict[str, str] = {}
_BRACKETS_RE = re.compile(r"([\[\]])")


def _normalise_word(word: str) -> str:
    if "@" in word:
        word = _ADDRESS_RE.sub("<addr>", word)
    return _ONE_PASS_RE.sub(_one_pass, word)


def _cached_word(word: str) -> str:
    done = _normalised.get(word)
    if done is None:
        done = _normalise_word(word)
        if len(word) <= _CACHED_WORD_CHARS:
            if len(_normalised) >= _CACHED:
                _normalised.clear()
            _normalised[word] = done
    return done


def normalise_reason(reason: str) -> str:
    """Replace addresses, IPs, ids and long numbers so that reasons group."""
    cache = _normalised
    out = []
    for word in reason.split(" "):
        done = cache.get(word)
        if done is None:
            done = ("".join(map(_cached_word, _BRACKETS_RE.split(word))) if "[" in word or "]" in word
                    else _cached_word(word))
        out.append(done)
    return " ".join(out)[:MAX_REASON_CHARS]


# ---------------------------------------------------------------------------
# Line formats
# ---------------------------------------------------------------------------

_DELIVERY_HEAD_RE = re.compile(r"([0-9A-Za-z]+): to=<")
# the recipient ends at the first ">, " that relay= (or orig_to=) follows
_RECIPIENT_END_RE = re.compile(r">, (?=relay=|orig_to=<)")
_DSN_STATUS_RE = re.compile(r"dsn=(\d\.\d{1,3}\.\d{1,3}), status=([a-z]+)")
QMGR_EXPIRED_RE = re.compile(r"(?P<qid>[0-9A-Za-z]+): from=<(?P<sender>.*?)>, status=expired")
# the client's [address] holds no "[", "]" or space, so each "[" is scanned once
_REJECT_RE = re.compile(
    r"(?P<qid>[0-9A-Za-z]+): (?:milter-)?reject: (?P<stage>[A-Z][A-Z-]*) from "
    r"(?P<client>\S*?\[[^\[\]\s]*\](?::\d+)?|\S+): (?P<rest>.*)$")
# the addresses of a trailer hold no "<" or ">", so a run of unclosed "from=<" is scanned once
_ADDRESSES = r"(?:from|to|helo)=<[^<>]*>"
# cleanup header_checks/body_checks: "reject: header Subject: x from host[ip]; from=<> to=<> ...: 5.7.1 text"
_CONTENT_REJECT_RE = re.compile(
    r"(?P<qid>[0-9A-Za-z]+): reject: (?P<stage>[a-z][a-z-]*) .*? from (?P<client>\S+);"
    rf"(?P<trailer>(?: {_ADDRESSES}| proto=\S+)*)(?:: (?P<rest>.*))?$")
# the "; from=<..> to=<..> proto=.. helo=<..>" that ends smtpd's and postscreen's (comma separated) lines
_TRAILER_RE = re.compile(rf";((?:,? {_ADDRESSES}|,? proto=[^\s,]+)*)$")
_REPLY_RE = re.compile(r"(?:(?P<code>[245]\d\d)[ -])?(?:(?P<dsn>[245]\.\d{1,3}\.\d{1,3})\s*)?(?P<text>.*)$", re.S)
_FROM_RE = re.compile(r"from=<([^>]*)>")
_TO_RE = re.compile(r"to=<([^>]*)>")


# The usual line in one match: a recipient without ">", no orig_to=, and delay= and delays= between
# relay= and dsn=.  Neither value holds a comma, so no "dsn=D, status=S" can start before this
# one: parse_delivery's searches would find the same fields.  [^,]* and [a-z]+ are each followed by
# a character they do not take, so the match is linear in the line.
_USUAL_DELIVERY_RE = re.compile(r"([0-9A-Za-z]+): to=<([^<>]*)>, relay=([^,]*), delay=[^,]*, delays=[^,]*, "
                                r"dsn=(\d\.\d{1,3}\.\d{1,3}), status=([a-z]+)(?: \((.*)\)|, (.*))?\Z", re.S)


def parse_delivery(msg: str) -> tuple[str, str, str, str, str, str] | None:
    """(queue id, recipient, relay, dsn, status, reason) of
    ``QID: to=<rcpt>, [orig_to=<..>, ]relay=R, ..., dsn=D, status=S (reason)``, or None.

    Found with plain searches rather than one pattern: a lazy recipient followed by a
    lazy ``.*?dsn=`` backtracks over the whole line once per ``>, `` in it."""
    usual = _USUAL_DELIVERY_RE.match(msg)
    if usual is not None:
        queue_id, recipient, relay, dsn, status, in_parens, after_comma = usual.groups()
        return (queue_id, recipient, relay, dsn, status,
                in_parens if in_parens is not None else after_comma if after_comma is not None else "")
    return _parse_delivery_searches(msg)


def _parse_delivery_searches(msg: str) -> tuple[str, str, str, str, str, str] | None:
    """parse_delivery for any line, by plain searches."""
    head = _DELIVERY_HEAD_RE.match(msg)
    if head is None:
        return None
    end = _RECIPIENT_END_RE.search(msg, head.end())
    if end is None:
        return None
    relay_at = end.end()
    if msg.startswith("orig_to=<", relay_at):
        orig_end = msg.find(">, relay=", relay_at)
        if orig_end < 0:
            return None
        relay_at = orig_end + 3
    if not msg.startswith("relay=", relay_at):
        return None
    relay_at += 6
    relay_end = msg.find(",", relay_at)
    if relay_end < 0 or msg[relay_end + 1:relay_end + 2] != " ":
        return None
    rest_at = relay_end + 2
    for status in _DSN_STATUS_RE.finditer(msg, rest_at):
        after = status.end()
        if after == len(msg):
            reason = ""
        elif msg.startswith(", ", after):
            reason = msg[after + 2:]
        elif msg.startswith(" (", after) and msg.endswith(")"):
            reason = msg[after + 2:-1]
        else:
            continue
        return (head.group(1), msg[head.end():end.start()], msg[relay_at:relay_end], status.group(1),
                status.group(2), reason)
    return None


def parse_reject(msg: str) -> tuple[str, str, str, str, str, str, str | None, str | None] | None:
    """(queue id or NOQUEUE, stage, client, code, dsn, text, sender, recipient) of an smtpd,
    postscreen, milter or cleanup header/body reject, or None."""
    match = _REJECT_RE.match(msg)
    if match is not None:
        stage, rest = match["stage"], match["rest"]
        trailer = _TRAILER_RE.search(rest)
        reply, trailer_text = (rest[:trailer.start()], trailer.group(1)) if trailer else (rest, "")
    else:
        match = _CONTENT_REJECT_RE.match(msg)
        if match is None:
            return None
        stage, reply, trailer_text = match["stage"].upper(), match["rest"] or "", match["trailer"]
    parts = _REPLY_RE.match(reply.strip())
    sender, recipient = _FROM_RE.search(trailer_text), _TO_RE.search(trailer_text)
    return (match["qid"], stage, match["client"], parts["code"] or "", parts["dsn"] or "", parts["text"],
            sender.group(1) if sender else None, recipient.group(1) if recipient else None)
