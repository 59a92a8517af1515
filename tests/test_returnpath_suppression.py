"""The suppression list (mailops.returnpath.suppression): what blocks a recipient, soft
bounces with a threshold and expiry, import/export, and merging between hosts."""

from __future__ import annotations

import io
import itertools
import json
from datetime import datetime, timedelta, timezone

import pytest

from mailops.errors import MailopsError
from mailops.returnpath import classify
from mailops.returnpath.suppression import (COMPLAINT, GLOBAL, HARD_BOUNCE, MANUAL, SOFT_BOUNCE, Entry,
                                            SuppressionList, reply)
from tests.test_returnpath_messages import RETURN_PATH, arf, dsn

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


def fresh(**kwargs) -> SuppressionList:
    return SuppressionList(origin=kwargs.pop("origin", "mta1"), clock=lambda: T0, **kwargs)


def test_add_lookup_remove():
    sl = fresh()
    entry = sl.add("Bob@Example.ORG", GLOBAL, HARD_BOUNCE, "5.1.1 user unknown")
    assert (entry.target, entry.scope, entry.cause, entry.since) == \
        ("bob@example.org", "*", "hard-bounce", "2026-12-03T12:00:00.000000Z")
    assert sl.lookup("BOB@example.org", "shop.test") == entry
    assert sl.lookup("other@example.org", "shop.test") is None
    assert sl.remove("bob@example.org") is True
    assert sl.lookup("bob@example.org", "shop.test") is None
    assert sl.remove("bob@example.org") is False                        # nothing in force any more
    assert list(sl.entries()) == []
    (tombstone,) = sl.entries(include_inactive=True)
    assert tombstone.removed is True


def test_scope_and_domain_entries_and_their_order():
    sl = fresh()
    sl.add("example.org", "news.test", MANUAL, "whole domain for news")
    sl.add("bob@example.org", "shop.test", COMPLAINT, "feedback-type abuse")
    assert sl.lookup("bob@example.org", "shop.test").cause == COMPLAINT        # address before domain
    assert sl.lookup("bob@example.org", "news.test").target == "example.org"
    assert sl.lookup("carol@EXAMPLE.org", "news.test").target == "example.org"
    assert sl.lookup("bob@example.org", "other.test") is None                  # scoped: not for other senders
    assert sl.lookup("bob@example.org") is None                                 # no sending domain: global only
    sl.add("@example.com")
    assert sl.lookup("x@example.com", "shop.test").scope == GLOBAL


def test_expiry_and_since_kept_while_in_force():
    sl = fresh()
    first = sl.add("a@example.org", expires=T0 + timedelta(days=1), now=T0)
    again = sl.add("a@example.org", cause=HARD_BOUNCE, now=T0 + timedelta(hours=1))
    assert again.since == first.since and again.expires is None and again.cause == HARD_BOUNCE
    sl.add("b@example.org", expires=T0 + timedelta(days=1), now=T0)
    assert sl.lookup("b@example.org", now=T0 + timedelta(hours=23)) is not None
    assert sl.lookup("b@example.org", now=T0 + timedelta(days=1, seconds=1)) is None


def test_soft_bounces_suppress_after_the_threshold_within_the_window_and_expire():
    sl = fresh(soft_threshold=3, soft_window=timedelta(days=7), soft_expiry=timedelta(days=30))
    assert sl.record_soft_bounce("full@example.org", now=T0) is None
    assert sl.record_soft_bounce("full@example.org", now=T0 + timedelta(days=8)) is None   # the first left the window
    assert sl.record_soft_bounce("full@example.org", now=T0 + timedelta(days=9)) is None
    entry = sl.record_soft_bounce("full@example.org", detail="4.2.2 mailbox full", now=T0 + timedelta(days=10))
    assert entry is not None and entry.cause == SOFT_BOUNCE
    assert entry.detail == "3 soft bounces in 7 days; last: 4.2.2 mailbox full"
    assert entry.expires == "2027-01-12T12:00:00.000000Z"
    assert sl.lookup("full@example.org", now=T0 + timedelta(days=39)) is not None
    assert sl.lookup("full@example.org", now=T0 + timedelta(days=41)) is None


def test_a_soft_bounce_never_weakens_a_hard_bounce():
    sl = fresh(soft_threshold=1)
    sl.add("bob@example.org", GLOBAL, HARD_BOUNCE, "5.1.1")
    entry = sl.record_soft_bounce("bob@example.org", now=T0)
    assert entry.cause == HARD_BOUNCE and entry.expires is None


def test_apply_a_classified_bounce_and_complaint():
    sl = fresh(soft_threshold=2)
    soft = "Final-Recipient: rfc822; full@example.org\nAction: delayed\nStatus: 4.2.2"
    spam = "Final-Recipient: rfc822; spam@example.org\nAction: failed\nStatus: 5.7.1"
    hard = "Final-Recipient: rfc822; bob@example.org\nAction: failed\nStatus: 5.1.1"
    made = sl.apply(classify(dsn(hard, soft, spam), RETURN_PATH, ""))
    assert [(e.target, e.cause) for e in made] == [("bob@example.org", HARD_BOUNCE)]   # 5.7.1 is about us, not them
    assert sl.lookup("spam@example.org") is None
    assert sl.apply(classify(dsn(soft), RETURN_PATH, "")) [0].cause == SOFT_BOUNCE     # second soft bounce
    (complaint,) = sl.apply(classify(arf(), "abuse@shop.test", ""))
    assert (complaint.target, complaint.scope, complaint.cause) == ("bob@example.org", "shop.test", COMPLAINT)
    assert sl.lookup("bob@example.org", "shop.test").cause == COMPLAINT


def test_reply_says_why_and_since_when():
    sl = fresh()
    entry = sl.add("bob@example.org", "shop.test", COMPLAINT, "feedback-type abuse\r\nINJECT")
    text = reply(entry, "bob@example.org")
    assert text == ("550 5.7.1 <bob@example.org>: recipient suppressed for mail from shop.test since 2026-12-03 "
                    "(complaint: feedback-type abuse INJECT)")
    assert "\r" not in text and "\n" not in text


@pytest.mark.parametrize("target", ["", "not an address", "a@b", "a b@example.org", "x@-bad-.org", "@", 42])
def test_bad_targets_are_refused_with_one_line(target):
    with pytest.raises(MailopsError, match="^suppression target: "):
        fresh().add(target)


def test_bad_cause_and_scope_are_refused():
    with pytest.raises(MailopsError, match="cause 'spam'"):
        fresh().add("a@example.org", cause="spam")
    with pytest.raises(MailopsError, match="scope"):
        fresh().add("a@example.org", scope="not a domain")


# -- persistence, import/export -------------------------------------------------------------

def test_entries_survive_a_restart(tmp_path):
    path = str(tmp_path / "suppressions.sqlite3")
    sl = SuppressionList(path, origin="mta1")
    sl.add("bob@example.org", cause=HARD_BOUNCE)
    sl.close()
    assert SuppressionList(path, origin="mta1").lookup("bob@example.org").cause == HARD_BOUNCE


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_import_round_trip(tmp_path, fmt):
    sl = fresh()
    sl.add("bob@example.org", GLOBAL, HARD_BOUNCE, 'quote " and, comma')
    sl.add("example.com", "shop.test", MANUAL, expires=T0 + timedelta(days=3))
    sl.add("gone@example.org")
    sl.remove("gone@example.org")
    out = io.StringIO()
    assert sl.export(out, fmt) == 2                                  # tombstones are not exported by default
    path = tmp_path / f"s.{fmt}"
    path.write_text(out.getvalue())
    other = fresh(origin="mta2")
    assert other.import_file(str(path)) == 2
    assert [e.as_dict() for e in other.entries()] == [e.as_dict() for e in sl.entries()]
    if fmt == "json":
        assert [json.loads(line.rstrip(","))["target"] for line in out.getvalue().splitlines()[1:-1]] == \
            ["bob@example.org", "example.com"]                      # one entry per line


def test_import_of_a_simple_hand_written_csv(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("target,scope,cause,detail\nA@Example.org,,manual,asked to stop\n\n@example.net,shop.test,,\n")
    sl = fresh()
    assert sl.import_file(str(path)) == 2
    assert sl.lookup("a@example.org").detail == "asked to stop"
    assert sl.lookup("z@example.net", "shop.test").cause == MANUAL
    assert {e.origin for e in sl.entries()} == {"mta1"}


@pytest.mark.parametrize("fmt, text, where", [
    ("csv", "target,cause\nok@example.org,manual\nbad,manual\n", ":3: target: 'bad' is not an address"),
    ("csv", "target,cause\nok@example.org,spam\n", ":2: cause: 'spam' is not one of"),
    ("csv", "target,expires\nok@example.org,tomorrow\n", ":2: expires: 'tomorrow' is not a UTC time"),
    ("csv", "target,removed\nok@example.org,maybe\n", ":2: removed: 'maybe' is not true or false"),
    ("csv", "target,colour\nok@example.org,red\n", ":2: colour: unknown field"),
    ("csv", "address\nok@example.org\n", ":1: target: the CSV header must name the columns"),
    ("csv", "target\nok@example.org,extra\n", ":2: (row): more values than columns"),
    ("json", '[\n{"target": "ok@example.org"},\n{"target": "x@example.org", "scope": 5}\n]',
     ":3: scope: '5' is not a sending domain"),
    ("json", '[\n{"target": "ok@example.org"},\n"just text"\n]', ":3: (row): must be an object"),
    ("json", '{"target": "ok@example.org"}', ":1: (file): expected a JSON array"),
    ("json", '[\n{"target": "ok@example.org"}\n', ":3: (file): the JSON array is not closed"),
    ("json", '[\n{"target": "ok@example.org",\n', ":2: (file): not JSON"),
    ("json", '[{"target": "ok@example.org"}] trailing', ":1: (file): text after the JSON array"),
])
def test_a_bad_row_names_file_line_and_field_and_nothing_is_imported(tmp_path, fmt, text, where):
    path = tmp_path / f"in.{fmt}"
    path.write_text(text)
    sl = fresh()
    with pytest.raises(MailopsError) as error:
        sl.import_file(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}{where}"), message
    assert "\n" not in message
    assert list(sl.entries(include_inactive=True)) == []                 # all or nothing


def test_several_bad_rows_are_counted_in_the_one_line(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("target\nbad1\nok@example.org\nbad2\nbad3\n")
    with pytest.raises(MailopsError, match=r":2: target: .* \(and 2 more bad rows\); nothing was imported$"):
        fresh().import_file(str(path))


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(MailopsError, match="cannot read the suppression file"):
        fresh().import_file(str(tmp_path / "missing.json"))
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"target,detail\na@example.org,caf\xe9\n")
    with pytest.raises(MailopsError, match="not UTF-8"):
        fresh().import_file(str(path))


# -- replication --------------------------------------------------------------------------

def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_merge_newest_change_wins_and_removals_propagate():
    a, b = fresh(origin="mta1"), fresh(origin="mta2")
    a.add("bob@example.org", cause=HARD_BOUNCE, now=_at(0))
    assert b.merge(a.changes_since()) == 1
    assert b.lookup("bob@example.org").cause == HARD_BOUNCE
    b.remove("bob@example.org", now=_at(5))                              # an operator lifts it on mta2
    assert a.merge(b.changes_since()) == 1
    assert a.lookup("bob@example.org") is None                            # the tombstone travelled
    assert a.merge(b.changes_since()) == 0                                # merging again changes nothing
    # mta1's clock is behind (minute 3 < the removal's minute 5): a change made after seeing the
    # removal is still stamped after it, so it is not lost
    a.add("bob@example.org", cause=COMPLAINT, now=_at(3))
    assert b.merge(a.changes_since()) == 1 and b.lookup("bob@example.org").cause == COMPLAINT


def test_changes_since_gives_only_what_is_new():
    a = fresh()
    first = a.add("a@example.org", now=_at(0))
    a.add("b@example.org", now=_at(1))
    assert [e.target for e in a.changes_since(first.updated)] == ["b@example.org"]
    assert a.changes_since(a.changes_since()[-1].updated) == []


def test_merge_gives_the_same_list_in_any_order():
    base = [Entry("x@example.org", "*", MANUAL, "2026-12-03T12:00:00.000000Z", "one", None,
                  "2026-12-03T12:00:00.000000Z", False, "mta1"),
            Entry("x@example.org", "*", HARD_BOUNCE, "2026-12-03T12:00:00.000000Z", "two", None,
                  "2026-12-03T12:01:00.000000Z", False, "mta2"),
            Entry("x@example.org", "*", HARD_BOUNCE, "2026-12-03T12:00:00.000000Z", "two", None,
                  "2026-12-03T12:02:00.000000Z", True, "mta3"),
            Entry("x@example.org", "*", COMPLAINT, "2026-12-03T12:00:00.000000Z", "tie", None,
                  "2026-12-03T12:02:00.000000Z", False, "mta1"),               # same stamp: origin decides
            Entry("y@example.org", "shop.test", COMPLAINT, "2026-12-03T12:00:00.000000Z", "", None,
                  "2026-12-03T11:00:00.000000Z", False, "mta2")]
    results = set()
    for order in itertools.permutations(base):
        sl = fresh()
        for entry in order:
            sl.merge([entry])
        results.add(tuple(tuple(e.as_dict().items()) for e in sl.entries(include_inactive=True)))
    assert len(results) == 1
    (result,) = results
    winner = dict(result[0])
    assert (winner["origin"], winner["removed"]) == ("mta3", True)      # newest stamp, then the larger origin


def test_tombstones_are_purged_only_when_old():
    sl = fresh()
    sl.add("a@example.org", now=_at(0))
    sl.remove("a@example.org", now=_at(1))
    assert sl.purge_tombstones(90, now=_at(2)) == 0
    assert sl.purge_tombstones(90, now=T0 + timedelta(days=91)) == 1
    assert list(sl.entries(include_inactive=True)) == []
