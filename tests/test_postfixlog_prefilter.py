"""The log parser's whole-line pre-filter and one-pass reason normalisation change no result.

LogStats(prefilter=False) sends every line through the full per-line path; the default
counts the lines that can only be counted (no text any event looks for, same timestamp
and host as the last timed line) without splitting them.  Both must give the same
statistics, bounce lists and events, line by line (``feed``, the CLI's path) and in
batches (``feed_lines``): on a varied synthetic log (three timestamp formats, several
hosts, a --since/--until window, other programs, noise that contains the filter's
words, broken lines), and on every real-format fixture of tests/test_postfixlog.py,
whose tests run again here with both paths compared after each feed."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.test_postfixlog as base
from mailops.ops import postfixlines
from mailops.ops.postfixlines import normalise_reason
from mailops.ops.postfixlog import LogStats
from tests.test_postfixlog import *  # noqa: F401,F403 - every test there runs again here, both paths compared

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def state(stats: LogStats) -> dict:
    return {"report": stats.report(top=1000, domains=10_000), "hard": stats.hard_bounces(),
            "soft": stats.soft_bounces(), "inflight": stats.inflight, "evicted": stats.evicted,
            "counts": (stats.lines, stats.parsed, stats.skipped, stats.too_long, stats.ndr_sent),
            "window": (stats.first, stats.last)}


class BothPaths(LogStats):
    """LogStats that feeds a prefilter=False twin the same lines and checks both agree."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.twin = LogStats(*args, **{**kwargs, "on_event": None, "prefilter": False})

    def agree(self) -> None:
        assert state(self) == state(self.twin)

    def feed_lines(self, lines):
        lines = list(lines)
        super().feed_lines(lines)
        self.twin.feed_lines(lines)
        self.agree()
        return self

    def feed(self, line: str) -> None:
        super().feed(line)
        self.twin.feed(line)
        self.agree()

    def skip_too_long(self) -> None:
        super().skip_too_long()
        self.twin.skip_too_long()


@pytest.fixture(autouse=True)
def _both_paths(monkeypatch):
    # the imported tests look LogStats up in their own module
    monkeypatch.setattr(base, "LogStats", BothPaths)


# --- a varied synthetic log ---------------------------------------------------------------------

def _stamp(moment: datetime, fmt: str) -> str:
    if fmt == "iso":
        return moment.strftime("%Y-%m-%dT%H:%M:%S+0000")
    if fmt == "rfc3339":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return moment.strftime("%b %e %H:%M:%S")


def varied_log(n: int, seed: int, formats=("iso", "iso", "rfc3339", "syslog"),
               hosts=("mta1", "mta1", "mta2", "mta-b.example")) -> list[str]:
    rng = random.Random(seed)
    moment = datetime(2026, 11, 22, 15, 58, 0, tzinfo=UTC)
    out: list[str] = []
    queued: list[str] = []
    while len(out) < n:
        if rng.random() < 0.15:
            moment += timedelta(seconds=rng.choice((1, 1, 1, 30, 600)))
        fmt, host = rng.choice(formats), rng.choice(hosts)
        stamp = _stamp(moment, fmt)
        qid = f"{rng.getrandbits(40):010X}"
        rcpt = f"user{rng.randrange(40)}@{rng.choice(('inbox.test', 'gmail.test', 'corp.test'))}"
        ip = f"198.51.100.{rng.randrange(2, 250)}"
        roll = rng.random()
        if roll < 0.12:
            queued.append(qid)
            body = ("postfix/qmgr[900]", f"{qid}: from=<news@shop.test>, size=4211, nrcpt=1 (queue active)")
        elif roll < 0.2 and queued:
            q = queued.pop(rng.randrange(len(queued)))
            status, dsn, why = rng.choice((
                ("sent", "2.0.0", f"250 2.0.0 Ok: queued as {qid}"),
                ("deferred", "4.2.1", f"host mx[{ip}] said: 450 4.2.1 <{rcpt}>: try later at 16:50:01"),
                ("bounced", "5.1.1", f"host mx[{ip}] said: 550 5.1.1 <{rcpt}>: User unknown ref {qid}"),
                ("bounced", "5.7.1", "host mx[2001:db8:51::9]:25 said: 554 5.7.1 spam 2026:11:22")))
            body = (rng.choice(("postfix/smtp[3120]", "postfix-out/smtp[7]", "postfix/lmtp[8]")),
                    f"{q}: to=<{rcpt}>, relay=mx.x.test[{ip}]:25, delay=1, delays=0/0/0/1, dsn={dsn}, "
                    f"status={status} ({why})")
            if status != "deferred":
                queued.append(q)  # its removed line may follow
        elif roll < 0.25 and queued:
            body = ("postfix/qmgr[900]", f"{queued.pop(0)}: removed")
        elif roll < 0.27 and queued:
            body = ("postfix/qmgr[900]", f"{queued.pop(0)}: from=<news@shop.test>, status=expired, returned to sender")
        elif roll < 0.32:
            body = ("postfix/smtpd[2000]", f"NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 <{rcpt}>: Relay "
                                          f"access denied; from=<x@bulk.test> to=<{rcpt}> proto=ESMTP helo=<[{ip}]>")
        elif roll < 0.34:
            body = ("postfix/bounce[1800]", f"{qid}: sender non-delivery notification: {qid[::-1]}")
        elif roll < 0.38:
            # noise that holds the filter's words: the full path must see these
            body = (rng.choice(("postfix/smtpd[2000]", "opendkim[600]", "postfix/cleanup[1700]")),
                    rng.choice((f"connect from status=.example[{ip}]", f"{qid}: message-id=<reject: @x>",
                                "warning: /qmgr[ looks odd", "non-delivery of nothing")))
        elif roll < 0.42:
            out.append(rng.choice(("\n", "-- Boot 1234 --\n", "garbage\n", f"{stamp}\n", f"{stamp} {host}\n",
                                   f"{stamp} {host} postfix/smtpd[1]:\n", f"{stamp} {host} postfixadmin[1]: x\n",
                                   f"{stamp} {host} postfix x\n", f"{stamp} {host}  postfix/smtp[1]: x\n",
                                   f"{stamp[:-1]}X {host} postfix/smtpd[1]: connect from a[{ip}]\n")))
            continue
        else:
            body = rng.choice((("postfix/smtpd[2000]", f"connect from unknown[{ip}]"),
                               ("postfix/submission/smtpd[1500]", f"{qid}: client=app[{ip}], sasl_method=PLAIN"),
                               ("postfix/smtp[3120]", f"Trusted TLS connection established to mx[{ip}]:25"),
                               ("postfix/cleanup[1700]", f"{qid}: message-id=<{qid}@shop.test>"),
                               ("opendkim[600]", f"{qid}: DKIM-SIGNATURE field added (s=mo, d=shop.test)"),
                               ("postfix/anvil[5]", "statistics: max connection rate 1/60s")))
        end = rng.choice(("\n", "\n", "\r\n", ""))
        out.append(f"{stamp} {host} {body[0]}: {body[1]}{end}")
    return out


@pytest.mark.parametrize("window", [{}, {"since": datetime(2026, 11, 22, 18, 0, tzinfo=UTC),
                                         "until": datetime(2026, 11, 23, 6, 0, tzinfo=UTC)}])
@pytest.mark.parametrize("seed, formats, hosts", [
    (1, ("iso", "iso", "rfc3339", "syslog"), ("mta1", "mta1", "mta2", "mta-b.example")),  # mixed line by line
    (2, ("iso",), ("mta1",)), (3, ("syslog",), ("mta1", "mta2")), (4, ("rfc3339",), ("mta1",))])
def test_the_prefilter_changes_nothing_on_a_varied_log(seed, formats, hosts, window):
    lines = varied_log(6000, seed, formats, hosts)
    events: dict[bool, list] = {True: [], False: []}
    results = {}
    for prefilter in (True, False):
        stats = LogStats(now=NOW, year=2026, prefilter=prefilter, on_event=events[prefilter].append, **window)
        stats.feed_lines(lines[:2500])  # in batches, as bench/stats.py feeds a file
        for line in lines[2500:4000]:    # and line by line, as the CLI's reader does
            stats.feed(line)
        stats.feed_lines(iter(lines[4000:]))
        results[prefilter] = state(stats)
    assert results[True] == results[False]
    assert events[True] == events[False]
    report = results[True]["report"]
    # the log is varied enough to mean something: every kind of event and of skipped line is there
    assert all(report["totals"][s] > 0 for s in ("sent", "deferred", "bounced", "expired", "rejected"))
    assert report["ndr_sent"] > 0 and report["skipped"] > 100 and report["postfix_lines"] > 1000
    assert results[True]["hard"] and results[True]["soft"]
    if window:
        assert report["skipped"] > 1000 and report["first"] >= "2026-11-22T18:00:00Z"


def test_the_prefilter_takes_most_lines_of_a_busy_log():
    """It is there to be used: count the lines that reach the full path."""
    lines = varied_log(6000, 5, ("iso",), ("mta1",))
    stats = LogStats(now=NOW, year=2026)
    full = stats._feed
    seen = []
    stats._feed = lambda line: (seen.append(line), full(line))
    stats.feed_lines(lines)
    assert stats.lines == 6000 and len(seen) < 0.7 * 6000


# --- reason normalisation in one pass ------------------------------------------------------------

def five_passes(reason: str) -> str:
    """The normalisation as it was before it became one pass: the oracle."""
    def ipv6(match):
        token = match.group(0)
        return "<ip>" if "::" in token or token.count(":") >= 5 else token
    text = reason
    if "@" in text:
        text = postfixlines._ADDRESS_RE.sub("<addr>", text)
    if ":" in text:
        text = postfixlines._IPV6_RE.sub(ipv6, text)
    for rx, token in ((postfixlines._IPV4_RE, "<ip>"), (postfixlines._ID_RE, "<id>"),
                      (postfixlines._LONG_NUMBER_RE, "<n>")):
        text = rx.sub(token, text)
    return text[:postfixlines.MAX_REASON_CHARS]


@pytest.mark.parametrize("reason, expected", [
    ("queued as 4F9D195432C at 16:50:01 on 2026:11:22 size 123456",
     "queued as <id> at 16:50:01 on <n>:11:22 size <n>"),           # a time-like token's numbers still go
    ("<a@b.test>1.2.3.4 and a@b.test::1", "<addr><ip> and <addr><ip>"),  # after an address, as before
    ("mx[2001:db8:51::2]:25 d9443c01a7336-2a4ff9d6a5bsi12345", "mx[<ip>]:25 <id>-<id>"),
])
def test_one_pass_normalisation_gives_what_five_passes_gave(reason, expected):
    assert normalise_reason(reason) == five_passes(reason) == expected


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789abcdefABCDEFxyz_:.@<>[]() ;,\"-") + [
    "::", "user@x.test", "198.51.100.2", "2001:db8::1", "12345", "16:50:01", "4F9D195432C", "é"]), max_size=30)
       .map("".join))
def test_one_pass_normalisation_equals_five_passes_on_any_text(reason):
    assert normalise_reason(reason) == five_passes(reason)


def test_a_bracketed_word_is_normalised_by_its_pieces():
    # 20 hosts x 100 addresses are 2,000 distinct words but 120 distinct pieces: the cache keeps the pieces
    postfixlines._normalised.clear()
    for i in range(2000):
        reason = f"connect to mx.corp{i % 20}.test[198.51.100.{i // 20}]:25: Connection timed out"
        assert normalise_reason(reason) == five_passes(reason)
    assert len(postfixlines._normalised) < 150


def test_normalisation_is_still_linear_on_hostile_reasons():
    # one pass must not bring back the rescans the patterns avoid (each is linear on its own)
    import time
    for hostile in ("a" * 20000, "1:" * 10000, "1." * 10000, "@" * 20000, "<" * 20000, "ab1" * 7000,
                    "[" * 20000, "a[1]" * 5000):          # bracketed words go piece by piece
        started = time.perf_counter()
        normalise_reason(hostile)
        assert time.perf_counter() - started < 1.0, hostile[:10]
    assert re.fullmatch(r"[<>a-z]*", normalise_reason("ab1" * 7000))


# --- whole blocks of lines (mailops stats --file reads a local log a block at a time) --------------

def _lines_of(text: str) -> list[str]:
    """A decoded run of lines cut at "\\n" only, each keeping its newline."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _one_by_one(data: bytes, **kwargs) -> LogStats:
    """The oracle: bounded_lines' lines through the full per-line path."""
    import io

    from mailops.ops.logs import bounded_lines
    stats = LogStats(prefilter=False, **kwargs)
    for line in bounded_lines(io.BytesIO(data), lambda n: None):
        if line is None:
            stats.skip_too_long()
        else:
            stats.feed(line)
    return stats


@pytest.mark.parametrize("window", [{}, {"since": datetime(2026, 11, 22, 18, 0, tzinfo=UTC),
                                         "until": datetime(2026, 11, 23, 6, 0, tzinfo=UTC)}])
@pytest.mark.parametrize("seed, formats, hosts", [
    (11, ("iso", "iso", "rfc3339", "syslog"), ("mta1", "mta1", "mta2", "mta-b.example")),
    (12, ("syslog",), ("mta1",)), (13, ("iso",), ("mta1", "mta2"))])
def test_blocks_of_lines_give_what_lines_one_by_one_give(seed, formats, hosts, window):
    # lines cut anywhere between them, the last with or without its newline, as LogStats.feed_block takes them
    text = "".join(varied_log(5000, seed, formats, hosts))
    rng = random.Random(seed)
    events: dict[str, list] = {"blocks": [], "lines": []}
    by_blocks = LogStats(now=NOW, year=2026, on_event=events["blocks"].append, **window)
    at = 0
    while at < len(text):
        cut = text.find("\n", min(len(text), at + rng.choice((1, 80, 700, 5000, 40_000)))) + 1 or len(text)
        by_blocks.feed_block(text[at:cut])
        at = cut
    by_lines = LogStats(now=NOW, year=2026, prefilter=False, on_event=events["lines"].append, **window)
    for line in _lines_of(text):
        by_lines.feed(line)
    assert state(by_blocks) == state(by_lines)
    assert events["blocks"] == events["lines"] and len(events["lines"]) > 100


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 333, 4096])
def test_a_local_log_read_in_blocks_gives_what_its_lines_give(tmp_path, monkeypatch, block_bytes):
    # lines split across reads, lines over the length cap (at, just over, far over; the last one too),
    # CRLF, bytes that are not UTF-8 (also a sequence cut by a newline), no newline at the end
    import gzip

    from mailops.ops import logs
    monkeypatch.setattr(logs, "MAX_LINE_BYTES", 300)
    monkeypatch.setattr(logs, "BLOCK_BYTES", block_bytes)
    rng = random.Random(block_bytes)
    pieces = [line.encode() for line in varied_log(1500, 21, ("iso", "syslog"), ("mta1",))]
    for _ in range(60):
        at = rng.randrange(len(pieces))
        pieces.insert(at, rng.choice((
            b"x" * 299 + b"\n", b"x" * 300 + b"\n", b"y" * 301 + b"\n", b"z" * 2000 + b"\n",
            TS_LINE.encode()[:-1] + b"\xff\xfe \xe2\x82\n", b"\xe2\x82\n", TS_LINE.encode().replace(b"\n", b"\r\n"))))
    for tail in (b"", TS_LINE.encode()[:-1], b"w" * 299, b"w" * 300, b"w" * 301, b"w" * 5000):
        data = b"".join(pieces) + tail
        path = tmp_path / "mail.log"
        path.write_bytes(data)
        expected = state(_one_by_one(data, now=NOW))
        assert state(logs.collect_local(path, now=NOW)) == expected
        gz = tmp_path / "mail.log.gz"
        gz.write_bytes(gzip.compress(data))
        assert state(logs.collect_local(gz, now=NOW)) == expected


TS_LINE = ("2026-11-22T16:50:01+0000 mta1 postfix/smtp[3120]: 6C1B2C3D4E: to=<nobody@gmail.test>, relay=mx[1.2.3.4]:25, "
           "delay=0.5, delays=0.1/0/0.2/0.2, dsn=5.1.1, status=bounced (550 5.1.1 User unknown)\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\n", b"\r\n", b"\xff", b"\xe2\x82", b"\xe2\x82\xac", b"b" * 40,
                                 b"c" * 97, b"d" * 120]), max_size=60).map(b"".join),
       st.integers(min_value=1, max_value=150))
def test_the_block_reader_cuts_lines_as_the_line_reader_does(data, block_bytes):
    import io

    from mailops.ops import logs
    read: list[int] = []
    got: list[str | None] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs, "MAX_LINE_BYTES", 100)
        expected = list(logs.bounded_lines(io.BytesIO(data), lambda n: None))
        for block in logs.line_blocks(io.BytesIO(data), read.append, block_bytes):
            got.extend([None] if block is None else _lines_of(block))
    assert got == expected and sum(read) == len(data)


# --- the usual delivery line in one match ------------------------------------------------------------

_USUAL = ("4F9D195432C: to=<user@inbox.test>, relay=mx.inbox.test[198.51.100.2]:25, delay=0.52, "
          "delays=0.1/0/0.2/0.22, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 7BC2D1E0F3)")


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(_USUAL)), st.sampled_from([
    "", ">", "<", ",", ", ", " (", ")", "dsn=5.1.1, status=bounced", ", status=deferred", "dsn=", "orig_to=<a@b>, ",
    ">, relay=", "delay=1, ", "delays=", "\n", "x", "5.7.1", ", dsn=4.4.1, status=deferred (no)", "))"])),
    max_size=4),
       st.integers(min_value=0, max_value=len(_USUAL)))
def test_the_usual_delivery_form_parses_as_the_searches_do(edits, cut):
    msg = _USUAL
    for at, text in edits:
        msg = msg[:at] + text + msg[at:]
    for variant in (msg, msg[:cut], msg.replace(" (250", ", 250").rstrip(")"), msg.rstrip(")").split(" (")[0]):
        assert postfixlines.parse_delivery(variant) == postfixlines._parse_delivery_searches(variant)


# --- the block loop's own paths: usual deliveries and qmgr lines in place, cached program kinds --------

@pytest.mark.parametrize("seed", [21, 22])
def test_blocks_give_what_lines_give_when_the_bounded_maps_overflow(seed, monkeypatch):
    # an in-flight map of 3 queue files (evictions on the block loop's qmgr path, and by deferrals),
    # and a program cache of 2 names (cleared all the time)
    from mailops.ops import postfixlog
    monkeypatch.setattr(postfixlog, "_MAX_PROGRAMS", 2)
    text = "".join(varied_log(4000, seed, ("syslog", "iso"), ("mta1", "mta2")))
    by_blocks = LogStats(now=NOW, year=2026, max_inflight=3)
    at = 0
    while at < len(text):
        cut = text.find("\n", at + 30_000) + 1 or len(text)
        by_blocks.feed_block(text[at:cut])
        at = cut
    by_lines = LogStats(now=NOW, year=2026, max_inflight=3, prefilter=False)
    for line in _lines_of(text):
        by_lines.feed(line)
    assert state(by_blocks) == state(by_lines)
    assert by_lines.evicted > 100


_PROGRAMS = ["postfix/smtp[3120]:", "postfix/qmgr[900]:", "postfix-out/qmgr[9]:", "postfix/bounce[1800]:",
             "postfix/qmgr[/bounce[1]:", "postfix/bounce[/qmgr[1]:", "opendkim[600]:", "postfixadmin[1]:",
             "postfix/smtpd[2000]:", "postfix", "postfix/qmgr[900]"]
_MESSAGES = [
    _USUAL,
    "4F9D195432C: to=<user@inbox.test>, relay=mx[198.51.100.2]:25, delay=1, delays=0/0/0/1, dsn=4.2.1, "
    "status=deferred (try later)",
    "4F9D195432C: to=<user@inbox.test>, relay=none, delay=9, delays=9/0/0/0, dsn=5.0.0, status=bounced, gone",
    "4F9D195432C: from=<news@shop.test>, size=4211, nrcpt=1 (queue active)",
    "4F9D195432C: removed", ": removed", "removed", "4F9D195432C: from=<>, size=1, nrcpt=1 (queue active)",
    "4F9D195432C: from=<news@shop.test>, status=expired, returned to sender",
    "NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 554 5.7.1 <a@b.test>: Relay access denied; "
    "from=<x@bulk.test> to=<a@b.test> proto=ESMTP helo=<x>",
    "4F9D195432C: sender non-delivery notification: C234591D9F4", "connect from status=.x[1.2.3.4]", "",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Nov 22 16:50:01 mta1 ", "Nov 22 16:50:02 mta1 ",
                                           "2026-11-22T16:50:01+0000 mta1 "]),
                          st.sampled_from(_PROGRAMS), st.sampled_from(_MESSAGES),
                          st.sampled_from(["", " ", "\r", "x"]), st.sampled_from(["\n", "\r\n"])),
                min_size=1, max_size=30),
       st.sampled_from([{}, {"since": datetime(2026, 11, 22, 16, 50, 2, tzinfo=UTC)}]))
def test_the_block_loop_gives_what_the_full_path_gives_on_any_mix(rows, window):
    text = "".join(f"{prefix}{program} {msg}{tail}{end}" if program != "postfix" else f"{prefix}{program}{end}"
                   for prefix, program, msg, tail, end in rows)
    events: dict[str, list] = {"blocks": [], "lines": []}
    by_blocks = LogStats(now=NOW, year=2026, on_event=events["blocks"].append, **window)
    by_blocks.feed_block(text)
    by_lines = LogStats(now=NOW, year=2026, prefilter=False, on_event=events["lines"].append, **window)
    for line in _lines_of(text):
        by_lines.feed(line)
    assert state(by_blocks) == state(by_lines)
    assert events["blocks"] == events["lines"]


@settings(max_examples=2000, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)))
def test_the_iso_time_is_what_strftime_gives(moment):
    from mailops.ops.postfixlog import _iso
    assert _iso(moment) == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
