"""Which DKIM keys sign: one rule (mailops.dkim.signing) behind KeyStore.signing and the
opendkim role's SigningTable filter."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from mailops.dkim.signing import signing_keys
from mailops.dkim.store import KeyStore

PLUGIN = Path(__file__).resolve().parent.parent / "roles" / "opendkim" / "filter_plugins" / "opendkim_keys.py"
T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def _plugin():
    spec = importlib.util.spec_from_file_location("opendkim_keys", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()["opendkim_signing_keys"]


def key(selector, algorithm="rsa", state="active", activated="2026-11-22T10:00:00Z", created="2026-11-20T10:00:00Z",
        domain="shop.test"):
    return {"domain": domain, "selector": selector, "algorithm": algorithm, "state": state, "created": created,
            "activated": activated if state != "pending" else None}


def test_newest_active_key_per_domain_and_algorithm_signs_rsa_first():
    keys = [key("ed-old", "ed25519", activated="2026-11-01T00:00:00Z"),
            key("rsa-old", activated="2026-11-01T00:00:00Z"),
            key("rsa-new", activated="2026-11-21T00:00:00Z"),
            key("ed-new", "ed25519", activated="2026-11-21T00:00:00Z"),
            key("rsa-pending", state="pending", created="2026-11-22T00:00:00Z"),
            key("rsa-retired", state="retired", activated="2026-11-22T00:00:00Z"),
            key("a-news", domain="news.test")]
    got = [(k["domain"], k["selector"]) for k in signing_keys(keys)]
    assert got == [("news.test", "a-news"), ("shop.test", "rsa-new"), ("shop.test", "ed-new")]
    # the same activation time: the later created key, then the larger selector
    tie = [key("b", created="2026-11-20T00:00:00Z"), key("a", created="2026-11-21T00:00:00Z")]
    assert [k["selector"] for k in signing_keys(tie)] == ["a"]
    assert signing_keys([]) == signing_keys(None) == []


def test_key_store_and_opendkim_filter_agree(tmp_path):
    store = KeyStore(tmp_path / "keys")
    first = store.generate("shop.test", {"algorithms": ["rsa", "ed25519"]}, now=T0).created
    # a hand-edited manifest: a second active RSA key, activated later
    manifest = json.loads(store.manifest_path.read_text())
    extra = replace(first[0], selector="mo-extra", activated="2026-11-23T00:00:00Z", private_key="shop.test/x.key")
    manifest["keys"].append(extra.to_dict())
    store.manifest_path.write_text(json.dumps(manifest))
    from_store = [(k.domain, k.selector) for k in store.signing("shop.test")]
    from_role = [(k["domain"], k["selector"]) for k in _plugin()(json.loads(store.manifest_path.read_text())["keys"])]
    assert from_store == from_role == [("shop.test", "mo-extra"), ("shop.test", first[1].selector)]
    assert not store.is_signing(first[0]) and store.is_signing(extra)
