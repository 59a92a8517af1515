"""Hetzner DNS zones in the Cloud API (``/zones``) through the official ``hcloud`` library.

Hetzner closed its legacy DNS API in 2026; zones now live in the Cloud API, behind
the same project token as servers and PTRs.  A zone holds RRsets (name relative to
the zone, type, one TTL, records of ``value`` and ``comment``).

Ownership: as on Cloudflare, every record mailops owns carries the comment
``managed-by=mailops`` (``managed-by=mailops/<id>`` with ``mailops_dns_owner``);
records of a shared RRset (the apex TXT holding SPF and someone's site
verification) keep their own comments, so ownership is per record, not per RRset.

Atomicity: the Cloud API has no multi-RRset transaction (each RRset write is its
own request and action; ``import_zonefile`` replaces the whole zone, rewriting
records mailops does not own and dropping RRset labels and protection, so it is
not used).  What ``apply`` guarantees instead, per zone:

1. everything is prepared and checked before the first write: every payload is
   built (TXT split into quoted <= 255-byte strings, absolute targets), and a
   protected RRset among those to change refuses the whole zone;
2. just before writing, the zone's RRsets are listed again and each one to be
   changed must still be exactly as planned (otherwise nothing is written: run
   again), so a concurrent console edit is not overwritten;
3. each RRset is written whole (create, ``set_records``, ``change_ttl`` or delete),
   one at a time, address records first, deletions last;
4. if a write fails (after the library's and these retries), the RRsets already
   written are put back as they were, in reverse order, and read back: the error
   says either "rolled back, the zone is as before" or exactly which RRsets
   could not be restored.
The window in which a reader can see part of a zone's change is the few
requests it takes; a crash of mailops itself inside that window leaves it
half-applied, which the next ``dns plan`` shows and ``dns sync`` completes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from hcloud.actions import ActionFailedException
from hcloud.zones import ZoneRecord, ZoneRRSet

from mailops.dns.plan import _TYPE_ORDER
from mailops.dns.providers.base import Existing, ZoneChanges
from mailops.dns.providers.cloudflare import OWNER_COMMENT, owner_comment
from mailops.dns.providers.hcloud import HcloudClient
from mailops.dns.records import Record, in_zone, normalize_name, quote_txt, relative_name
from mailops.errors import MailopsError

__all__ = ["HetznerProvider"]

# The types mailops publishes (and Hetzner's RRsets can hold).
_WRITABLE = {"A", "AAAA", "CNAME", "MX", "TXT", "CAA", "NS", "PTR", "SRV", "TLSA"}

# One RRset as mailops reads and writes it: (TTL or None for the zone's, ((value, comment), ...)).
RRset = tuple[int | None, tuple[tuple[str, str | None], ...]]


class HetznerProvider(HcloudClient):
    kind = "hetzner"
    label, section, changes = "hetzner provider", "mailops_dns_providers", "DNS"
    rrset_ttl = True  # one TTL per RRset, as in DNS itself
    ownership = f"record comment {OWNER_COMMENT!r}"

    def __init__(self, name: str, token: str, api_base_url: str | None = None, *, owner: str | None = None):
        self._connect(name, token, api_base_url)
        self.comment = owner_comment(owner)
        self.requests = 0
        # zones are listed and applied from several threads
        self._lock, self._count_lock = threading.Lock(), threading.Lock()

        def count(response, *args, **kwargs):
            with self._count_lock:
                self.requests += 1
        self._client._client._session.hooks["response"].append(count)  # the library has no hook of its own
        self._zones: dict[str, Any] | None = None
        self._snapshot: dict[str, dict[tuple[str, str], RRset]] = {}  # as listed, per zone
        self._protected: dict[str, set[tuple[str, str]]] = {}

    # --- reading -------------------------------------------------------------

    def _zone_objects(self) -> dict[str, Any]:
        with self._lock:
            if self._zones is None:
                zones = self._call(lambda: self._client.zones.get_all(mode="primary"), "listing zones")
                self._zones = {normalize_name(z.name): z for z in zones}
            return self._zones

    def zone_for(self, name: str) -> str | None:
        matches = [z for z in self._zone_objects() if in_zone(name, z)]
        return max(matches, key=len) if matches else None

    def _zone(self, zone: str):
        try:
            return self._zone_objects()[normalize_name(zone)]
        except KeyError:
            raise self._fail(f"no primary zone {zone} in the project of the API token; create the zone in the "
                             "Hetzner Console (DNS) or use the token of its project") from None

    def nameservers(self, zone: str) -> list[str]:
        return []  # the assigned nameservers are names; read-back asks them through the resolvers

    def _read(self, zone: str) -> tuple[dict[tuple[str, str], RRset], set[tuple[str, str]]]:
        obj = self._zone(zone)
        rrsets = self._call(lambda: self._client.zones.get_rrset_all(obj), f"listing the RRsets of {zone}")
        sets: dict[tuple[str, str], RRset] = {}
        protected: set[tuple[str, str]] = set()
        for rr in rrsets:
            key = (rr.name, rr.type)
            sets[key] = (rr.ttl, tuple((r.value, r.comment) for r in rr.records or []))
            if (rr.protection or {}).get("change"):
                protected.add(key)
        return sets, protected

    def list_records(self, zone: str) -> list[Existing]:
        sets, protected = self._read(zone)
        self._snapshot[zone], self._protected[zone] = sets, protected
        default_ttl = self._zone(zone).ttl or 3600
        out: list[Existing] = []
        for (rel, rtype), (ttl, records) in sorted(sets.items()):
            fqdn = zone if rel == "@" else f"{rel}.{zone}"
            for value, comment in records:
                comment = comment or ""
                try:
                    record = Record.make(fqdn, rtype, value, ttl or default_ttl)
                except ValueError:  # a value mailops cannot parse is someone else's: keep it verbatim
                    record = Record(normalize_name(fqdn), rtype, value.strip(), int(ttl or default_ttl))
                other = comment if comment.startswith(OWNER_COMMENT) and comment != self.comment else None
                out.append(Existing(record, comment == self.comment, (rel, rtype), other))
        return out

    # --- writing -------------------------------------------------------------

    @staticmethod
    def _wire(rec: Record) -> str:
        if rec.type == "TXT":
            return quote_txt(rec.value)
        return rec.value  # canonical values are what Hetzner takes: absolute targets, "10 mx.example."

    def _target(self, zone: str, changes: ZoneChanges) -> dict[tuple[str, str], RRset]:
        """The RRsets the changes touch, as they must be afterwards (absent: deleted)."""
        snapshot = self._snapshot.get(zone)
        if snapshot is None:
            raise self._fail(f"{zone} was not listed before applying changes to it (a bug in the caller)")
        work: dict[tuple[str, str], tuple[int | None, list[tuple[str, str | None]]]] = {}

        def rrset(rec: Record) -> tuple[int | None, list[tuple[str, str | None]]]:
            key = (relative_name(rec.name, zone), rec.type)
            if key not in work:
                ttl, records = snapshot.get(key, (None, ()))
                work[key] = (ttl, list(records))
            return work[key]

        def remove(rec: Record) -> None:
            ttl, records = rrset(rec)
            for i, (value, _comment) in enumerate(records):
                try:
                    same = Record.make(rec.name, rec.type, value).value == rec.value
                except ValueError:
                    same = value.strip() == rec.value
                if same:
                    del records[i]
                    return
            raise self._fail(f"{rec.name} {rec.type} {rec.value!r} is no longer in {zone}; run mailops dns plan")

        def add(rec: Record) -> None:
            key = (relative_name(rec.name, zone), rec.type)
            ttl, records = rrset(rec)
            default = self._zone(zone).ttl or 3600
            work[key] = (ttl if (ttl or default) == rec.ttl else rec.ttl, records)
            records.append((self._wire(rec), self.comment))

        for old in changes.deletes:
            remove(old.record)
        for old, new in changes.updates:
            remove(old.record)
            add(new)
        for new in changes.creates:
            add(new)
        return {key: (ttl, tuple(records)) for key, (ttl, records) in work.items() if records} | \
            {key: None for key, (_ttl, records) in work.items() if not records}

    def apply(self, zone: str, changes: ZoneChanges) -> None:
        obj = self._zone(zone)
        before = self._snapshot[zone]
        target = self._target(zone, changes)
        # 1. checked before any write
        for key, after in target.items():
            if key[1] not in _WRITABLE:
                raise self._fail(f"{key[0]} {key[1]} in {zone}: mailops does not write {key[1]} RRsets")
            if key in self._protected.get(zone, set()):
                raise self._fail(f"the RRset {key[0]} {key[1]} of {zone} is protected against changes; lift "
                                 "the protection in the Hetzner Console or remove the record from the plan; "
                                 "nothing was changed")
        order = sorted(target, key=lambda k: (target[k] is None, _TYPE_ORDER.get(k[1], 4), k))
        steps = [(key, before.get(key), target[key]) for key in order if before.get(key) != target[key]]
        if not steps:
            return
        # 2. nothing changed since the plan read the zone
        now, _ = self._read(zone)
        moved = [k for k, _, _ in steps if now.get(k) != before.get(k)]
        if moved:
            raise self._fail(f"{len(moved)} RRset(s) of {zone} changed since they were read "
                             f"({moved[0][0]} {moved[0][1]}{', ...' if len(moved) > 1 else ''}); nothing was "
                             "changed: run mailops dns plan again")
        # 3. one RRset at a time; 4. put back what was written if one fails
        done: list[tuple[tuple[str, str], RRset | None, RRset | None]] = []
        for key, old, new in steps:
            try:
                self._write(obj, key, old, new, f"writing {key[0]} {key[1]} in {zone}", retry=True)
            except MailopsError as exc:
                raise self._rollback(obj, zone, done, before, str(exc)) from None
            done.append((key, old, new))
        self._snapshot[zone] = {k: v for k, v in ({**before, **target}).items() if v is not None}

    def _write(self, obj, key: tuple[str, str], old: RRset | None, new: RRset | None, doing: str,
               retry: bool) -> None:
        name, rtype = key
        handle = ZoneRRSet(name=name, type=rtype, zone=obj)
        call: Callable[[], Any]
        if new is None:
            call = lambda: self._client.zones.delete_rrset(handle).action  # noqa: E731
            self._call(lambda: self._finish(call()), doing, retry)
            return
        records = [ZoneRecord(value=v, comment=c) for v, c in new[1]]
        if old is None:
            call = lambda: self._client.zones.create_rrset(  # noqa: E731
                obj, name=name, type=rtype, ttl=new[0], records=records).action
            self._call(lambda: self._finish(call()), doing, retry)
            return
        if old[1] != new[1]:
            self._call(lambda: self._finish(self._client.zones.set_rrset_records(handle, records)), doing, retry)
        if old[0] != new[0]:
            self._call(lambda: self._finish(self._client.zones.change_rrset_ttl(handle, new[0])), doing, retry)

    @staticmethod
    def _finish(action) -> None:
        if action.status == "running":
            action.wait_until_finished()
        elif action.status == "error":
            raise ActionFailedException(action=action)

    def _rollback(self, obj, zone: str, done: list, before: dict, cause: str) -> MailopsError:
        failed: list[str] = []
        for key, old, new in reversed(done):
            try:
                self._write(obj, key, new, old, f"restoring {key[0]} {key[1]} in {zone}", retry=True)
            except MailopsError:
                failed.append(f"{key[0]} {key[1]}")
        if done and not failed:
            try:
                now, _ = self._read(zone)
                failed = [f"{k[0]} {k[1]}" for k, _, _ in done if now.get(k) != before.get(k)]
            except MailopsError:
                failed = ["(could not read the zone back)"]
        cause = cause.removeprefix(f"hetzner provider '{self.name}': ")
        if failed:
            return self._fail(f"{cause}; rolling back the {len(done)} RRset(s) already written failed for "
                              f"{', '.join(failed)}: {zone} is partly changed, run mailops dns plan to see it")
        return self._fail(f"{cause}; rolled back the {len(done)} RRset(s) already written, {zone} is as before")
