"""AWS Route 53 through boto3.

Zones: the account's public hosted zones (``list_hosted_zones``), optionally only
those named under ``zones:``.  Records: ``list_resource_record_sets``; one RRset
has one TTL (``rrset_ttl``).  Alias and routing-policy (``SetIdentifier``) record
sets are listed as someone else's records and never changed by mailops.

Ownership: a TXT registry, the one the RFC 2136 provider keeps (same label, same
entries, :func:`mailops.dns.providers.rfc2136.registry_entry`): ``_mailops-owner.<zone>``
(``_mailops-owner-<id>`` with ``mailops_dns_owner``) holds one string per record
mailops owns.  Route 53 records carry no comment or label of their own, and a
record's own data cannot say who wrote it (an SPF or DMARC record reads the same
whoever published it), so the registry is the only marker that survives a
hand edit honestly: a record someone edits no longer matches its entry and so is
no longer mailops'.

Atomicity: one ``ChangeResourceRecordSets`` call per zone carries every record
change *and* the registry change; Route 53 applies a change batch all or
nothing, so records and registry never disagree and the zone is fully old or
fully new.  Every changed RRset is written as DELETE of its exact listed state
plus CREATE of the new one (not UPSERT): Route 53 rejects the whole batch if any
of those RRsets changed since mailops listed them, so a concurrent edit is
never overwritten.  Only a change set beyond one batch's limits (1000 values,
32000 characters) is split, into batches that each carry their own registry
update.  After the batch, the change is awaited until Route 53 reports it
``INSYNC`` on its servers, then ``dns sync`` reads it back.
botocore retries throttling and 5xx (standard mode, ``max_attempts``).
"""

from __future__ import annotations

import re
import threading
import time

import boto3
import botocore.config
import botocore.exceptions

from mailops.dns import apilimit
from mailops.dns.providers.base import Existing, ZoneChanges
from mailops.dns.providers.rfc2136 import REGISTRY_LABEL, REGISTRY_TTL, registry_entry, registry_label
from mailops.dns.records import Record, in_zone, join_txt, normalize_name, quote_txt
from mailops.errors import MailopsError

__all__ = ["Route53Provider"]

MAX_VALUES = 1000  # ResourceRecord elements per change batch
MAX_CHARS = 32000  # characters of values per change batch
_AUTH = {"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException", "ExpiredToken",
         "InvalidAccessKeyId", "AuthFailure", "IncompleteSignature", "MissingAuthenticationToken"}
_DENIED = {"AccessDenied", "AccessDeniedException"}


def _decode(name: str) -> str:
    """Route 53 spells some characters of names as octal escapes (``\\052`` for ``*``)."""
    return normalize_name(re.sub(r"\\(\d{3})", lambda m: chr(int(m[1], 8)), name))


class Route53Provider:
    kind = "route53"
    rrset_ttl = True
    ownership = f"TXT registry at {REGISTRY_LABEL}.<zone>"
    insync_timeout = 120.0  # seconds to wait for a change to reach all of Route 53's servers
    insync_poll = 2.0

    def __init__(self, name: str, *, keys: tuple[str, str] | None = None, region: str = "us-east-1",
                 endpoint_url: str | None = None, zones: list[str] | None = None, owner: str | None = None,
                 max_attempts: int = 5):
        self.name = name
        self.registry_label = registry_label(owner)
        self.zones = [normalize_name(z) for z in zones] if zones else None
        self._secrets = [k for k in keys or () if k]  # scrubbed from messages
        # keys=None: boto3's standard chain (environment, shared files, instance role)
        session = boto3.session.Session(aws_access_key_id=keys[0] if keys else None,
                                        aws_secret_access_key=keys[1] if keys else None, region_name=region)
        config = botocore.config.Config(retries={"mode": "standard", "max_attempts": max_attempts},
                                        connect_timeout=10, read_timeout=30)
        self.client = session.client("route53", endpoint_url=endpoint_url or None, config=config)
        self.requests = 0
        self._lock, self._count_lock = threading.Lock(), threading.Lock()
        account = keys[0] if keys else "default credential chain"
        self.limiter = apilimit.shared(("route53", endpoint_url or "", account), apilimit.ROUTE53_LIMITS)

        def count(**_kwargs) -> None:
            self.limiter.acquire()  # every attempt counts against the account's limit
            with self._count_lock:
                self.requests += 1
        self.client.meta.events.register("before-send.route53", count)  # every attempt, retries included
        self._zone_ids: dict[str, list[str]] | None = None
        self._snapshot: dict[str, dict[tuple[str, str], list[dict]]] = {}  # raw record sets, per zone
        self._registry: dict[str, dict | None] = {}

    # --- zones ---------------------------------------------------------------

    def _zones(self) -> dict[str, list[str]]:
        with self._lock:
            if self._zone_ids is None:
                found: dict[str, list[str]] = {}
                for page in self._call("listing hosted zones", lambda: list(
                        self.client.get_paginator("list_hosted_zones").paginate())):
                    for z in page.get("HostedZones", []):
                        name = _decode(z["Name"])
                        if z.get("Config", {}).get("PrivateZone") or (self.zones and name not in self.zones):
                            continue
                        found.setdefault(name, []).append(z["Id"].rsplit("/", 1)[-1])
                self._zone_ids = found
            return self._zone_ids

    def zone_for(self, name: str) -> str | None:
        matches = [z for z in self._zones() if in_zone(name, z)]
        return max(matches, key=len) if matches else None

    def _zone_id(self, zone: str) -> str:
        ids = self._zones().get(normalize_name(zone))
        if not ids:
            raise self._fail(f"no public hosted zone {zone} is visible to these credentials; create it in "
                             "Route 53 or list it under zones:")
        if len(ids) > 1:
            raise self._fail(f"{len(ids)} public hosted zones are named {zone} ({', '.join(ids)}); delete the "
                             "one that is not delegated, so the records go where resolvers look")
        return ids[0]

    def nameservers(self, zone: str) -> list[str]:
        return []  # Route 53's servers are names; read-back asks them through the resolvers

    # --- reading ---------------------------------------------------------------

    def list_records(self, zone: str) -> list[Existing]:
        zone = normalize_name(zone)
        zone_id = self._zone_id(zone)
        pages = self._call(f"listing the records of {zone}", lambda: list(
            self.client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)))
        sets: dict[tuple[str, str], list[dict]] = {}
        owned: set[str] = set()
        others: dict[str, str] = {}
        registry = None
        for page in pages:
            for rrset in page.get("ResourceRecordSets", []):
                name, rtype = _decode(rrset["Name"]), rrset["Type"]
                first = name.split(".", 1)[0]
                if rtype == "TXT" and first.startswith(REGISTRY_LABEL) and name == f"{first}.{zone}":
                    entries = {join_txt(r["Value"]) for r in rrset.get("ResourceRecords", [])}
                    if first == self.registry_label:
                        owned, registry = entries, rrset
                    else:
                        others.update(dict.fromkeys(entries, first))
                    continue
                sets.setdefault((name, rtype), []).append(rrset)
        self._snapshot[zone], self._registry[zone] = sets, registry
        out: list[Existing] = []
        for (name, rtype), rrsets in sorted(sets.items()):
            for rrset in rrsets:
                ttl = int(rrset.get("TTL", 0))
                if "AliasTarget" in rrset:  # someone else's, never ours: shown so a name in use conflicts
                    target = rrset["AliasTarget"].get("DNSName", "")
                    out.append(Existing(Record(name, rtype, f"alias to {target}", ttl), False, None))
                    continue
                for value in (r["Value"] for r in rrset.get("ResourceRecords", [])):
                    try:
                        record = Record.make(name, rtype, value, ttl)
                    except ValueError:
                        record = Record(name, rtype, value.strip(), ttl)
                    mine = "SetIdentifier" not in rrset and registry_entry(zone, record) in owned
                    out.append(Existing(record, mine, (name, rtype),
                                        None if mine else others.get(registry_entry(zone, record))))
        return out

    # --- writing ---------------------------------------------------------------

    @staticmethod
    def _wire(rec: Record) -> str:
        return quote_txt(rec.value) if rec.type == "TXT" else rec.value

    def _rrset_changes(self, zone: str, changes: ZoneChanges) -> list[tuple[list[dict], set[str], set[str]]]:
        """Per touched RRset: (its DELETE/CREATE changes, registry entries to drop, entries to add)."""
        snapshot = self._snapshot.get(zone)
        if snapshot is None:
            raise self._fail(f"{zone} was not listed before applying changes to it (a bug in the caller)")
        work: dict[tuple[str, str], dict] = {}

        def rrset(rec: Record) -> dict:
            key = (rec.name, rec.type)
            if key not in work:
                listed = snapshot.get(key, [])
                if any("AliasTarget" in r or "SetIdentifier" in r for r in listed):
                    raise self._fail(f"{rec.name} {rec.type} is an alias or routing-policy record set; mailops "
                                     "does not change those: remove it in Route 53 or leave the name to it")
                before = listed[0] if listed else None
                work[key] = {"before": before, "ttl": int(before["TTL"]) if before else rec.ttl,
                             "values": [r["Value"] for r in before["ResourceRecords"]] if before else [],
                             "drop": set(), "add": set()}
            return work[key]

        def remove(old: Existing) -> None:
            w, rec = rrset(old.record), old.record
            for value in w["values"]:
                try:
                    same = Record.make(rec.name, rec.type, value).value == rec.value
                except ValueError:
                    same = value.strip() == rec.value
                if same:
                    w["values"].remove(value)
                    break
            if old.owned:
                w["drop"].add(registry_entry(zone, rec))

        def add(rec: Record) -> None:
            w = rrset(rec)
            w["values"].append(self._wire(rec))
            w["ttl"] = rec.ttl  # the plan gave it the TTL of the records it joins
            w["add"].add(registry_entry(zone, rec))

        for old in changes.deletes:
            remove(old)
        for old, new in changes.updates:
            remove(old)
            add(new)
        for new in changes.creates:
            add(new)
        out = []
        for (name, rtype), w in sorted(work.items()):
            batch: list[dict] = []
            before = w["before"]
            after = {"Name": name + ".", "Type": rtype, "TTL": w["ttl"],
                     "ResourceRecords": [{"Value": v} for v in w["values"]]}
            if before is not None and (int(before["TTL"]) != w["ttl"] or
                                       before["ResourceRecords"] != after["ResourceRecords"]):
                batch.append({"Action": "DELETE", "ResourceRecordSet": before})
            if w["values"] and (not batch and before is None or batch):
                batch.append({"Action": "CREATE", "ResourceRecordSet": after})
            out.append((batch, w["drop"], w["add"]))
        return out

    def apply(self, zone: str, changes: ZoneChanges) -> None:
        zone = normalize_name(zone)
        zone_id = self._zone_id(zone)
        groups = self._rrset_changes(zone, changes)
        registry = self._registry.get(zone)
        entries = {join_txt(r["Value"]) for r in registry["ResourceRecords"]} if registry else set()
        batches, current, size = [], [], (0, 0)
        for group in groups:
            cost = _cost(group[0])
            if current and (size[0] + cost[0] > MAX_VALUES - 200 or size[1] + cost[1] > MAX_CHARS - 8000):
                batches.append(current)  # room left for the registry's DELETE and CREATE
                current, size = [], (0, 0)
            current.append(group)
            size = (size[0] + cost[0], size[1] + cost[1])
        if current:
            batches.append(current)
        for i, batch in enumerate(batches):
            new_entries = (entries - set().union(*(g[1] for g in batch))) | set().union(*(g[2] for g in batch))
            record_changes = [c for g in batch for c in g[0]]
            deletes = [c for c in record_changes if c["Action"] == "DELETE"]
            creates = [c for c in record_changes if c["Action"] == "CREATE"]
            if new_entries != entries:
                if registry is not None:
                    deletes.append({"Action": "DELETE", "ResourceRecordSet": registry})
                registry = {"Name": f"{self.registry_label}.{zone}.", "Type": "TXT", "TTL": REGISTRY_TTL,
                            "ResourceRecords": [{"Value": quote_txt(e)} for e in sorted(new_entries)]} \
                    if new_entries else None
                if registry is not None:
                    creates.append({"Action": "CREATE", "ResourceRecordSet": registry})
            if not deletes and not creates:
                continue
            part = f" (batch {i + 1} of {len(batches)})" if len(batches) > 1 else ""
            doing = f"applying the changes to {zone}{part}"
            answer = self._call(doing, lambda: self.client.change_resource_record_sets(
                HostedZoneId=zone_id, ChangeBatch={"Comment": "mailops dns sync", "Changes": deletes + creates}))
            entries = new_entries
            self._registry[zone] = registry
            self._await_insync(answer.get("ChangeInfo", {}), zone)

    def _await_insync(self, info: dict, zone: str) -> None:
        deadline = time.monotonic() + self.insync_timeout
        while info.get("Status") == "PENDING" and time.monotonic() < deadline:
            time.sleep(self.insync_poll)
            info = self._call(f"waiting for the change to {zone}", lambda: self.client.get_change(
                Id=info["Id"]))["ChangeInfo"]

    # --- calls and errors ------------------------------------------------------

    def _call(self, doing: str, run):
        try:
            return run()
        except botocore.exceptions.NoCredentialsError:
            raise self._fail(f"no AWS credentials while {doing}; set access_key_id and secret_access_key of "
                             f"mailops_dns_providers.{self.name}, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                             "or a profile for the standard credential chain") from None
        except botocore.exceptions.ClientError as exc:
            raise self._client_error(doing, exc) from None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as exc:
            raise self._fail(f"cannot reach Route 53 while {doing} ({type(exc).__name__}); check endpoint_url "
                             "and the network") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(f"{doing} failed ({type(exc).__name__}: {exc})") from None

    def _client_error(self, doing: str, exc: botocore.exceptions.ClientError) -> MailopsError:
        response = exc.response or {}
        error = response.get("Error") or {}
        if not error.get("Code"):  # some endpoints answer an ErrorResponse with an Errors list
            error = (response.get("Errors") or {}).get("Error") or error
        code, message = error.get("Code") or "", error.get("Message") or ""
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        what = f"HTTP {status} {code}".strip() + (f": {message}" if message else "")
        setting = f"mailops_dns_providers.{self.name}"
        if code in _AUTH or (status == 403 and not code):
            return self._fail(f"AWS refused the credentials ({what}) while {doing}; put a valid access key in "
                              f"access_key_id/secret_access_key of {setting} (or the credential chain)")
        if code in _DENIED or status == 403:
            return self._fail(f"the credentials may not do this ({what}) while {doing}; allow "
                              "route53:ListHostedZones, ListResourceRecordSets, ChangeResourceRecordSets and "
                              "GetChange")
        if code == "InvalidChangeBatch" or code == "InvalidInput":
            return self._fail(f"Route 53 rejected the change batch ({what}) while {doing}; nothing in it was "
                              "applied: run mailops dns plan again")
        if code in ("Throttling", "PriorRequestNotComplete") or (status or 0) >= 500:
            return self._fail(f"Route 53 kept failing after retries ({what}) while {doing}; nothing in that "
                              "batch was applied: run again later")
        return self._fail(f"Route 53 refused {doing} ({what})")

    def _fail(self, text: str) -> MailopsError:
        message = " ".join(f"route53 provider '{self.name}': {text}".split())
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return MailopsError(message)


def _cost(changes: list[dict]) -> tuple[int, int]:
    """(values, characters) a list of changes counts against a batch's limits."""
    values = [r["Value"] for c in changes for r in c["ResourceRecordSet"].get("ResourceRecords", [])]
    return len(values), sum(len(v) for v in values)
