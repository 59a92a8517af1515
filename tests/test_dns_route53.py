"""The ``route53`` DNS provider (boto3) through the real ``dns plan``/``dns sync`` library path,
against moto's Route 53 in server mode on loopback (the same HTTP API boto3 talks to AWS).

The inventory names the provider in mailops_dns_providers with access keys in 0600 files and
moto's address as endpoint_url, so the provider is built by the factory ``dns sync`` uses.
The hosted zone starts with someone else's records: a site-verification TXT at the apex (the
RRset SPF joins) and an A record for www.  Ownership is the TXT registry at
_mailops-owner.<zone>, changed in the same change batch as the records."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request

import boto3
import pytest

from mailops.dkim.store import KeyStore
from mailops.dns.providers.rfc2136 import registry_entry
from mailops.dns.records import Record, join_txt
from mailops.dns.sync import apply_plan
from mailops.errors import MailopsError
from mailops.inventory.loader import load_inventory
from mailops.inventory.model import Inventory
from tests.helpers import VENV_BIN, copy_inventory, mailops, plan, rows, sync

KEY_ID, SECRET = "AKIAMAILOPSTEST0001", "mailops-route53-secret-0815/abcdefghijklmno"
ZONE = "shop.example"
FQDN, ADDR4, ADDR6 = f"mta1.{ZONE}", "198.51.100.31", "2001:db8:51::31"
SITE = '"google-site-verification=abc123"'
REGISTRY = f"_mailops-owner.{ZONE}"


def _moto(**env: str) -> tuple[subprocess.Popen, str]:
    """moto's server on a free loopback port; returns (process, endpoint URL) once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {url}") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def moto_server():
    proc, url = _moto()
    yield url
    _stop(proc)


@pytest.fixture
def aws(moto_server):
    """A fresh account (moto reset) with the hosted zone and someone else's records."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")).read()
    client = boto3.client("route53", endpoint_url=moto_server, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    zone_id = client.create_hosted_zone(Name=ZONE, CallerReference="t")["HostedZone"]["Id"]
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        _create(ZONE, "TXT", [SITE], 600), _create(f"www.{ZONE}", "A", ["203.0.113.5"])]})
    return client, zone_id, moto_server


def _create(name: str, rtype: str, values: list[str], ttl: int = 300) -> dict:
    return {"Action": "CREATE", "ResourceRecordSet": {"Name": name + ".", "Type": rtype, "TTL": ttl,
                                                      "ResourceRecords": [{"Value": v} for v in values]}}


@pytest.fixture
def keystore(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.generate(ZONE)
    return store


def _secret_file(tmp_path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def inventory(tmp_path, url: str, **domain) -> Inventory:
    return Inventory.model_validate({
        "path": tmp_path, "dkim_keystore": tmp_path / "keys",
        "hosts": [{"name": "mta1", "fqdn": FQDN, "ipv4": ADDR4, "ipv6": ADDR6, "ssh_host": ADDR4}],
        "domains": {ZONE: {"dns_provider": "r53", "dmarc": {"policy": "reject"}, **domain}},
        "dns_providers": {"r53": {
            "type": "route53", "access_key_id": {"file": _secret_file(tmp_path, "key-id", KEY_ID)},
            "secret_access_key": {"file": _secret_file(tmp_path, "secret", SECRET)}, "endpoint_url": url}}})


def zone(client, zone_id) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """The hosted zone as Route 53 answers it: (name, type) -> (TTL, sorted values)."""
    sets = client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return {(s["Name"].rstrip("."), s["Type"]): (s.get("TTL"), sorted(r["Value"] for r in s["ResourceRecords"]))
            for s in sets}


def registry(client, zone_id) -> set[str]:
    return {join_txt(v) for v in zone(client, zone_id).get((REGISTRY, "TXT"), (0, []))[1]}


def test_create_then_a_second_sync_changes_nothing_and_foreign_records_stay(aws, tmp_path, keystore):
    client, zone_id, url = aws
    inv = inventory(tmp_path, url)
    first, providers = sync(inv, keystore)
    assert ("create", FQDN, "A") in rows(first) and ("create", ZONE, "MX") in rows(first)
    now = zone(client, zone_id)
    assert now[(FQDN, "A")] == (300, [ADDR4]) and now[(FQDN, "AAAA")][1] == [ADDR6]
    assert now[(ZONE, "MX")][1] == [f"10 {FQDN}."]
    assert now[(f"_dmarc.{ZONE}", "TXT")][1] == ['"v=DMARC1; p=reject"']
    selector = keystore.keys(ZONE)[0].selector
    dkim = now[(f"{selector}._domainkey.{ZONE}", "TXT")][1][0]
    assert dkim.startswith('"v=DKIM1; k=rsa; p=') and all(len(p) <= 257 for p in dkim.split('" "'))
    # SPF joined the apex TXT RRset at its TTL; the site verification stays, and is not registered
    ttl, apex = now[(ZONE, "TXT")]
    assert ttl == 600 and SITE in apex and any(v.startswith('"v=spf1') for v in apex)
    assert now[(f"www.{ZONE}", "A")] == (300, ["203.0.113.5"])
    owned = registry(client, zone_id)
    assert registry_entry(ZONE, Record.make(FQDN, "A", ADDR4, 300)) in owned
    assert registry_entry(ZONE, Record.make(ZONE, "TXT", SITE)) not in owned
    assert registry_entry(ZONE, Record.make(f"www.{ZONE}", "A", "203.0.113.5")) not in owned
    # listing zones, listing records, one change batch (INSYNC at once on moto)
    assert providers.requests() == {"r53": 3}

    before = zone(client, zone_id)
    second, providers = sync(inv, keystore)
    assert second.pending == 0 and rows(second) == []
    assert zone(client, zone_id) == before
    assert providers.requests() == {"r53": 2}  # nothing written


def test_update_is_one_change_batch_and_the_registry_follows(aws, tmp_path, keystore):
    client, zone_id, url = aws
    sync(inventory(tmp_path, url), keystore)
    before = zone(client, zone_id)
    stricter = inventory(tmp_path, url, dmarc={"policy": "quarantine"}, spf={"all": "-all"})
    result, providers = sync(stricter, keystore)
    assert rows(result) == [("update", f"_dmarc.{ZONE}", "TXT"), ("update", ZONE, "TXT")]
    assert providers.requests() == {"r53": 3}  # zones, records, one batch
    after = zone(client, zone_id)
    assert after[(f"_dmarc.{ZONE}", "TXT")][1] == ['"v=DMARC1; p=quarantine"']
    assert SITE in after[(ZONE, "TXT")][1]
    assert f'"v=spf1 ip4:{ADDR4} ip6:{ADDR6} -all"' in after[(ZONE, "TXT")][1]
    assert {k for k in after if after[k] != before.get(k)} == {
        (ZONE, "TXT"), (f"_dmarc.{ZONE}", "TXT"), (REGISTRY, "TXT")}
    owned = registry(client, zone_id)
    assert registry_entry(ZONE, Record.make(f"_dmarc.{ZONE}", "TXT", "v=DMARC1; p=quarantine")) in owned
    assert registry_entry(ZONE, Record.make(f"_dmarc.{ZONE}", "TXT", "v=DMARC1; p=reject")) not in owned
    assert plan(stricter, keystore)[0].pending == 0


def test_a_foreign_record_in_the_way_is_a_conflict_unless_forced(aws, tmp_path, keystore):
    client, zone_id, url = aws
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        _create(f"_dmarc.{ZONE}", "TXT", ['"v=DMARC1; p=none"'], 3600)]})
    inv = inventory(tmp_path, url)
    result, _ = sync(inv, keystore)
    assert result.conflicts and "_dmarc.shop.example TXT" in result.conflicts[0]
    assert zone(client, zone_id)[(f"_dmarc.{ZONE}", "TXT")] == (3600, ['"v=DMARC1; p=none"'])
    assert zone(client, zone_id)[(FQDN, "A")][1] == [ADDR4]  # the rest of the plan was applied
    forced, _ = sync(inv, keystore, force=True)
    assert rows(forced) == [("update", f"_dmarc.{ZONE}", "TXT")]
    assert zone(client, zone_id)[(f"_dmarc.{ZONE}", "TXT")] == (300, ['"v=DMARC1; p=reject"'])
    assert plan(inv, keystore)[0].pending == 0


def test_a_batch_rejected_for_one_change_leaves_the_zone_unchanged(aws, tmp_path, keystore):
    client, zone_id, url = aws
    sync(inventory(tmp_path, url), keystore)
    changed = inventory(tmp_path, url, dmarc={"policy": "quarantine"}, spf={"all": "-all"},
                        tls_rpt={"rua": ["mailto:tlsrpt@shop.example"]})
    result, providers = plan(changed, keystore)
    assert rows(result) == [("create", f"_smtp._tls.{ZONE}", "TXT"), ("update", f"_dmarc.{ZONE}", "TXT"),
                            ("update", ZONE, "TXT")]
    # Between plan and apply someone publishes the same TLS-RPT record: the batch's CREATE of it
    # fails, and with it the two updates and the registry change that come in the same batch.
    tls = next(r for z in result.zones for r in z.changes.creates)
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        _create(tls.name, "TXT", [f'"{tls.value}"'], tls.ttl)]})
    before = zone(client, zone_id)
    with pytest.raises(MailopsError) as failed:
        apply_plan(result, providers)
    message = str(failed.value)
    assert "\n" not in message and SECRET not in message
    assert "route53 provider 'r53': Route 53 rejected the change batch" in message, message
    assert "nothing in it was applied" in message
    assert zone(client, zone_id) == before
    # planned again, the record is there (someone else's, same value: adopted) and the rest lands
    result, providers = plan(changed, keystore)
    assert rows(result) == [("adopt", f"_smtp._tls.{ZONE}", "TXT"), ("update", f"_dmarc.{ZONE}", "TXT"),
                            ("update", ZONE, "TXT")]
    apply_plan(result, providers)
    assert plan(changed, keystore)[0].pending == 0


def test_deleting_a_domain_removes_only_its_records_and_their_registry_entries(aws, tmp_path, keystore):
    client, zone_id, url = aws
    with_tls = inventory(tmp_path, url, tls_rpt={"rua": ["mailto:tlsrpt@shop.example"]})
    sync(with_tls, keystore)
    assert (f"_smtp._tls.{ZONE}", "TXT") in zone(client, zone_id)
    result, _ = sync(inventory(tmp_path, url), keystore)
    assert rows(result) == [("delete", f"_smtp._tls.{ZONE}", "TXT")]
    assert (f"_smtp._tls.{ZONE}", "TXT") not in zone(client, zone_id)
    assert not any(e.startswith("TXT _smtp._tls ") for e in registry(client, zone_id))
    assert zone(client, zone_id)[(f"www.{ZONE}", "A")] == (300, ["203.0.113.5"])


def test_wrong_keys_are_one_line_from_the_cli(tmp_path):
    proc, url = _moto(INITIAL_NO_AUTH_ACTION_COUNT="0")  # moto checks every request's key
    try:
        def settings(s: dict) -> None:
            s["mailops_dkim_keystore"] = str(tmp_path / "dkim")
            s["mailops_dns_providers"] = {"r53": {
                "type": "route53", "access_key_id": {"file": _secret_file(tmp_path, "key-id", KEY_ID)},
                "secret_access_key": {"file": _secret_file(tmp_path, "secret", SECRET)}, "endpoint_url": url}}
            for domain in s["mailops_domains"].values():
                domain["dns_provider"] = "r53"
            s.pop("mailops_reverse_dns_providers", None)

        def hosts(h: dict) -> None:
            for host in h["all"]["children"]["mailhosts"]["hosts"].values():
                host.pop("mailops_reverse_dns_provider", None)

        inv = copy_inventory(tmp_path / "inv", settings=settings, hosts=hosts)
        run = mailops("dns", "plan", "-i", str(inv), check=False, timeout=60)
    finally:
        _stop(proc)
    err = run.stderr.strip()
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
    assert len(err.splitlines()) == 1, err
    assert "route53 provider 'r53': AWS refused the credentials (HTTP 403 InvalidClientTokenId" in err, err
    assert SECRET not in run.stdout + run.stderr


def test_missing_credentials_are_one_line(tmp_path, monkeypatch, keystore):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    inv = Inventory.model_validate({
        "path": tmp_path, "dkim_keystore": tmp_path / "keys",
        "hosts": [{"name": "mta1", "fqdn": FQDN, "ipv4": ADDR4, "ipv6": ADDR6, "ssh_host": ADDR4}],
        "domains": {ZONE: {"dns_provider": "r53"}},
        "dns_providers": {"r53": {"type": "route53", "endpoint_url": "http://127.0.0.1:9"}}})
    with pytest.raises(MailopsError, match=r"^route53 provider 'r53': no AWS credentials while listing hosted "
                                           r"zones; set access_key_id and secret_access_key"):
        plan(inv, keystore)


def test_inventory_check_resolves_the_key_references_and_wants_both(tmp_path):
    def settings(s: dict) -> None:
        s["mailops_dns_providers"]["r53"] = {"type": "route53", "access_key_id": {"env": "MAILOPS_UNSET_KEY_ID"},
                                             "secret_access_key": {"file": str(tmp_path / "missing")}}
        s["mailops_dns_providers"]["hz"] = {"type": "hetzner", "api_token": {"file": str(tmp_path / "gone")},
                                            "api_base_url": "http://127.0.0.1:9/v1"}
    _, problems = load_inventory(copy_inventory(tmp_path / "inv", settings=settings),
                                 secrets=("mailops_dns_providers",))
    text = "\n".join(str(p) for p in problems)
    assert "r53.access_key_id" in text and "MAILOPS_UNSET_KEY_ID" in text, text
    assert "r53.secret_access_key" in text and "hz.api_token" in text, text

    def half(s: dict) -> None:
        s["mailops_dns_providers"]["half"] = {"type": "route53", "access_key_id": {"env": "X"}}
    _, problems = load_inventory(copy_inventory(tmp_path / "inv2", settings=half))
    assert any("half" in str(p) and "set both access_key_id and secret_access_key" in str(p) for p in problems)


def test_a_change_set_beyond_one_batch_is_split_and_each_batch_carries_its_registry(aws, tmp_path, keystore,
                                                                                     monkeypatch):
    from mailops.dns.providers import route53
    client, zone_id, url = aws
    monkeypatch.setattr(route53, "MAX_VALUES", 203)  # 3 values per batch (200 kept for the registry)
    inv = inventory(tmp_path, url)
    first, providers = sync(inv, keystore)
    creates = len(rows(first))
    assert creates >= 6
    # zones, records, then one batch per 3 record values (the SPF joining the apex TXT counts 2)
    assert providers.requests()["r53"] >= 2 + creates // 3
    owned = registry(client, zone_id)
    assert {e.split()[0] for e in owned} >= {"A", "AAAA", "MX", "TXT"}
    assert len(owned) == creates
    assert plan(inv, keystore)[0].pending == 0
