"""The return-path address (mailops.returnpath.address): an HMAC token that traces a bounce
to what was sent, and lets the server refuse return paths it never issued."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailops.returnpath import address
from mailops.returnpath.address import AddressError, TokenTable, decode, encode, validate

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
TODAY = date(2026, 12, 3)


def test_round_trip_and_fixed_length():
    token = encode(KEY, "Shop.Test.", today=TODAY, token_id=b"\x01\x02\x03\x04\x05\x06")
    local, domain = token.address.split("@")
    assert domain == "bounces.shop.test"
    assert local.startswith("b-") and len(local) == 28 <= address.MAX_LOCAL_PART
    back = decode(KEY, token.address, today=TODAY)
    assert (back.token_id, back.sending_domain, back.issued) == ("010203040506", "shop.test", TODAY)


def test_random_ids_differ_and_the_length_does_not_depend_on_the_recipient():
    tokens = {encode(KEY, "shop.test", today=TODAY).address for _ in range(50)}
    assert len(tokens) == 50
    assert {len(t) for t in tokens} == {len("b-") + 26 + len("@bounces.shop.test")}


def test_receivers_that_change_case_or_add_brackets_do_not_break_it():
    token = encode(KEY, "shop.test", today=TODAY)
    assert validate(KEY, f"<{token.address.upper()}>", today=TODAY)
    assert validate(KEY, f"  {token.address}  ", today=TODAY)


def test_a_custom_or_shared_return_path_domain():
    token = encode(KEY, "news.test", return_domain="rp.mailops.example", today=TODAY)
    assert token.address.endswith("@rp.mailops.example")
    with pytest.raises(AddressError, match="not issued for rp.mailops.example"):
        decode(KEY, token.address, today=TODAY)           # the default guess of the domain is wrong here
    assert decode(KEY, token.address, sending_domain="news.test", today=TODAY).sending_domain == "news.test"


def test_forgeries_are_refused():
    token = encode(KEY, "shop.test", today=TODAY)
    local = token.address.split("@")[0]
    assert not validate(OTHER_KEY, token.address, today=TODAY)                     # another fleet's key
    assert not validate(KEY, f"{local}@bounces.news.test", today=TODAY)            # moved to another domain
    for position in (2, 10, len(local) - 1):                                       # one letter changed
        letter = "a" if local[position] != "a" else "b"
        changed = local[:position] + letter + local[position + 1:]
        assert not validate(KEY, f"{changed}@bounces.shop.test", today=TODAY), position
    with pytest.raises(AddressError, match="wrong MAC"):
        decode(KEY, "b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.test", today=TODAY)


def test_age_limit_and_clock_skew():
    old = encode(KEY, "shop.test", today=TODAY - timedelta(days=31))
    with pytest.raises(AddressError, match="31 days ago"):
        decode(KEY, old.address, today=TODAY)
    assert validate(KEY, old.address, today=TODAY, max_age_days=60)
    assert validate(KEY, encode(KEY, "shop.test", today=TODAY + timedelta(days=1)).address, today=TODAY)
    with pytest.raises(AddressError, match="future"):
        decode(KEY, encode(KEY, "shop.test", today=TODAY + timedelta(days=5)).address, today=TODAY)


def test_key_rotation_accepts_old_and_new_signs_with_the_first():
    old = encode(OTHER_KEY, "shop.test", today=TODAY)
    new = encode([KEY, OTHER_KEY], "shop.test", today=TODAY)
    assert validate([KEY, OTHER_KEY], old.address, today=TODAY)
    assert validate(KEY, new.address, today=TODAY)


def test_short_or_missing_keys_are_refused():
    with pytest.raises(AddressError, match="at least 16 bytes"):
        encode(b"short", "shop.test")
    with pytest.raises(AddressError, match="no return-path key"):
        encode([], "shop.test")


@pytest.mark.parametrize("hostile", [
    "", "@", "b-@", "no-at-sign", "b-aaaa@bounces.shop.test",
    "b-" + "a" * 26 + "@",                                      # no domain
    "b-" + "1" * 26 + "@bounces.shop.test",                     # 1 is not base32
    "b-" + "a" * 300 + "@bounces.shop.test",                     # over 64 octets
    "alice+bob=example.org@bounces.shop.test",                   # VERP form: not ours
    "b-" + "a" * 25 + "é@bounces.shop.test",
    "b-" + "a" * 26 + "\x00@bounces.shop.test",
    '"b-aaaaaaaaaaaaaaaaaaaaaaaaaa"@bounces.shop.test',
    "b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.shop.test\r\nRCPT TO:<x@y>",
    "b-aaaaaaaaaaaaaaaaaaaaaaaaaa@bounces..",
])
def test_hostile_addresses_are_refused_with_address_error(hostile):
    with pytest.raises(AddressError):
        decode(KEY, hostile, today=TODAY)
    assert validate(KEY, hostile, today=TODAY) is False


def test_non_text_is_refused():
    for value in (None, 42, b"b-x@y"):
        assert validate(KEY, value) is False                  # type: ignore[arg-type]
        assert address.is_return_path(value) is False          # type: ignore[arg-type]


def test_is_return_path_is_about_the_form_only():
    assert address.is_return_path(encode(OTHER_KEY, "shop.test").address)
    assert not address.is_return_path("postmaster@shop.test")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_decode_raises_only_address_error(text):
    try:
        decode(KEY, text, today=TODAY)
    except AddressError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.emails())
def test_recipients_with_plus_equals_and_any_length_need_no_encoding(recipient):
    # the recipient lives in the table, never in the address: the local part stays 28 octets
    token = encode(KEY, "shop.test", today=TODAY)
    table = TokenTable()
    table.issued(token, recipients=[recipient])
    assert len(token.address.split("@")[0]) == 28
    assert table.lookup(decode(KEY, token.address, today=TODAY).token_id)["recipients"] == [recipient.strip().lower()]


def test_token_table_is_completed_from_the_delivery_log_and_expires(tmp_path):
    path = str(tmp_path / "tokens.sqlite3")
    token = encode(KEY, "shop.test", today=TODAY)
    table = TokenTable(path)
    table.issued(token, sender="alice@shop.test", now=1000.0)
    assert table.delivered(token.token_id, "Bob@Example.org", queue_id="4QWxYz1abc")
    assert table.delivered(token.token_id, "bob@example.org")          # twice: stored once
    assert not table.delivered("ffffffffffff", "x@example.org")          # unknown token: nothing stored
    table.close()
    table = TokenTable(path)                                             # survives a restart
    assert table.lookup(token.token_id) == {"sending_domain": "shop.test", "sender": "alice@shop.test",
                                            "issued": 1000.0, "queue_id": "4QWxYz1abc", "message_id": None,
                                            "recipients": ["bob@example.org"]}
    assert table.expire(older_than_days=1, now=1000.0 + 2 * 86400) == 1
    assert table.lookup(token.token_id) is None
    assert table.db.execute("SELECT count(*) FROM return_token_recipients").fetchone() == (0,)
