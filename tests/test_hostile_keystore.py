"""A damaged DKIM key store (issue 14 item 9): one MailopsError line naming the file, the field and
the fix, never a UnicodeDecodeError, RecursionError or OverflowError; a store directory others can
read is refused with the chmod that fixes it."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailops.dkim.store import KeyStore
from mailops.errors import MailopsError

GOOD = {"domain": "shop.test", "selector": "mo-20261122", "algorithm": "ed25519", "bits": None,
        "state": "retired", "created": "2026-11-22T10:46:00Z", "activated": "2026-11-22T10:46:00Z",
        "retired": "2026-11-23T10:46:00Z", "private_key": "shop.test/mo-20261122.key",
        "dns_value": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}


def _store(tmp_path, content: bytes) -> KeyStore:
    path = tmp_path / "dkim"
    path.mkdir(mode=0o700, exist_ok=True)
    (path / "keys.json").write_bytes(content)
    return KeyStore(path)


def _manifest(**changes) -> bytes:
    return json.dumps({"version": 1, "keys": [{**GOOD, **changes}]}).encode()


def test_the_good_manifest_reads(tmp_path):
    store = _store(tmp_path, _manifest())
    assert [k.selector for k in store.keys("shop.test")] == ["mo-20261122"]


def test_manifest_that_is_not_utf8_names_the_file(tmp_path):
    data = b'{"version": 1, "keys": ["\xff\xfe"]}'
    store = _store(tmp_path, data)
    with pytest.raises(MailopsError, match=rf"keys\.json: not UTF-8 \(byte {data.index(0xff)}\); restore it from a backup"):
        store.keys()


def test_deeply_nested_manifest_is_refused(tmp_path):
    store = _store(tmp_path, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(MailopsError, match=r"keys\.json: not a key manifest \(JSON nested too deeply\)"):
        store.keys()


def test_retirement_in_year_9999_names_entry_field_and_fix(tmp_path):
    store = _store(tmp_path, _manifest(retired="9999-12-31T00:00:00Z"))
    with pytest.raises(MailopsError, match=r"keys\.json: shop\.test key mo-20261122: retired 9999-12-31T00:00:00Z "
                                           r"plus the grace period is past the year 9999; fix the entry's retired"):
        store.published("shop.test")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_time_outside_the_calendar_in_utc_is_a_bad_field(tmp_path, when):
    store = _store(tmp_path, _manifest(created=when))
    with pytest.raises(MailopsError, match=r"keys\.json: keys\[0\]\.created: .* is not an ISO 8601 time"):
        store.keys()


def test_manifest_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    path = tmp_path / "dkim"
    path.mkdir(mode=0o700)
    os.mkfifo(path / "keys.json")
    with pytest.raises(MailopsError, match=r"keys\.json is not a regular file \(a FIFO\)"):
        KeyStore(path).keys()


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o711])
def test_store_directory_others_can_enter_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / "dkim"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(MailopsError, match=rf"{path} is readable by group or others \(mode 0{mode:o}\), but it "
                                           rf"holds DKIM private keys; run chmod 700 {path}"):
        KeyStore(path).generate("shop.test", {"algorithms": ["ed25519"]})
    assert os.listdir(path) == []  # nothing written
    assert path.stat().st_mode & 0o777 == mode  # and not changed behind the user's back


def test_store_directory_0700_is_used(tmp_path):
    path = tmp_path / "dkim"
    path.mkdir(mode=0o700)
    assert KeyStore(path).generate("shop.test", {"algorithms": ["ed25519"]}).created


def _read_everything(store: KeyStore) -> None:
    for key in store.keys():
        store.published(key.domain)
        store.signing(key.domain)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_mailops_error(tmp_path, data):
    try:
        _read_everything(_store(tmp_path, data))
    except MailopsError:
        pass


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=30)
_times = st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+05:00", "2026-11-22", "x", ""]) | st.datetimes(
).map(lambda d: d.isoformat())
# entries close to a real one, so the search gets past the first checks
_entries = st.fixed_dictionaries({}, optional={**{name: _json for name in GOOD},
                                               **{name: _times for name in ("created", "activated", "retired")}}).map(
    lambda changes: {**GOOD, **changes})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_json, st.lists(_entries, max_size=4).map(lambda keys: {"version": 1, "keys": keys})))
def test_random_json_raises_only_mailops_error(tmp_path, data):
    try:
        _read_everything(_store(tmp_path, json.dumps(data).encode()))
    except MailopsError:
        pass
