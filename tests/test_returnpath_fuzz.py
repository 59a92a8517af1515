"""classify never raises: random bytes, and valid reports cut, spliced and corrupted, all
give an event of a known kind that the store records and counts."""

from __future__ import annotations

import gzip
import hashlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.returnpath import classify
from mailops.returnpath.events import KINDS, UNPARSED
from mailops.returnpath.store import EventStore
from tests.test_returnpath_messages import RETURN_PATH, arf, dsn, returned_headers, returned_whole, text_bounce
from tests.test_returnpath_reports import dmarc_xml, report_mail, tls_json, zipped

SEEDS = [
    dsn(returned=returned_whole()),
    dsn("Final-Recipient: rfc822; a@example.org\nAction: delayed\nStatus: 4.4.7", returned=returned_headers()),
    arf(),
    arf(returned="headers"),
    report_mail(gzip.compress(dmarc_xml()), "application/gzip", "r.xml.gz"),
    report_mail(zipped(("r.xml", dmarc_xml())), "application/zip", "r.zip"),
    report_mail(dmarc_xml(), "application/xml", "r.xml"),
    report_mail(gzip.compress(json.dumps(tls_json()).encode()), "application/tlsrpt+gzip", "r.json.gz"),
    text_bounce("<bob@example.org>: 550 5.1.1 no such user\n"),
]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(raw: bytes, recipient: str = RETURN_PATH, sender: str = "") -> None:
    event = classify(raw, recipient, sender)
    assert event.kind in KINDS
    assert event.digest == hashlib.sha256(raw).hexdigest()
    if event.kind == UNPARSED:
        assert event.reason
    # the catch-all in classify is a last resort: the parsers themselves must handle bad input
    assert not event.reason.startswith("internal error"), event.reason
    store = EventStore()
    assert store.record(event, raw) is True
    assert sum(store.counts().values()) == 1
    assert store.record(event, raw) is False


def test_every_seed_is_classified_as_what_it_is():
    kinds = [classify(raw, RETURN_PATH, "").kind for raw in SEEDS]
    assert kinds == ["bounce", "bounce", "complaint", "complaint", "dmarc", "dmarc", "dmarc", "tlsrpt", "bounce"]


@FUZZ
@given(st.binary(max_size=3000), st.text(max_size=80), st.text(max_size=80))
def test_random_bytes_and_envelopes(raw, recipient, sender):
    check(raw, recipient, sender)


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_cut_spliced_and_corrupted_reports(seed, data):
    raw = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["cut", "insert", "flip", "delete", "duplicate"]))
        if action == "cut":
            del raw[position:]
        elif action == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=40))
        elif action == "flip" and position < len(raw):
            raw[position] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del raw[position:position + data.draw(st.integers(1, 200))]
        elif action == "duplicate":
            raw[position:position] = raw[max(0, position - 300):position]
    check(bytes(raw))


_HEADER_VALUE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@FUZZ
@given(st.sampled_from(["delivery-status", "feedback-report", "", "x"]),
       st.lists(st.tuples(st.sampled_from(["Content-Type", "Content-Transfer-Encoding", "Final-Recipient", "Action",
                                           "Status", "Feedback-Type", "Subject", "From", "X", "Received"]),
                          _HEADER_VALUE), max_size=8),
       st.text(max_size=400))
def test_report_shaped_messages_with_random_fields(report_type, fields, body):
    head = "".join(f"{name}: {value}\n" for name, value in fields)
    raw = (f"From: MAILER-DAEMON@x\nSubject: Undelivered Mail Returned to Sender\n"
           f"Content-Type: multipart/report; report-type={report_type}; boundary=b\n\n--b\n{head}\n{body}\n"
           f"--b\nContent-Type: message/delivery-status\n\n{head}\n\n{body}\n--b--\n").encode("utf-8", "surrogatepass")
    check(raw)
