"""Compare desired records with what a provider holds and decide what to change.

Ownership rules (the same on every provider):
- mailops changes and deletes only records it owns;
- a wanted record that someone else published with the same value is adopted
  (ownership marked, value untouched);
- a wanted record whose place is taken by someone else's different value
  (another SPF record, another key at the selector, another MX) is a
  conflict: reported and left alone unless ``force``;
- owned records no longer wanted are deleted.
Safety: a plan that would update or delete more than ``threshold`` of a
zone's existing records (zones of at least ``MIN_EXISTING`` records), or
touch the apex NS/SOA, is refused unless ``force`` (as octoDNS does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailops.dns.providers.base import Existing, ZoneChanges
from mailops.dns.records import Record, normalize_name

DEFAULT_THRESHOLD = 0.30
MIN_EXISTING = 10
# Address records first: an MX or an SPF a/mx term must never point at a missing name.
_TYPE_ORDER = {"A": 0, "AAAA": 0, "CNAME": 1, "MX": 2, "TXT": 3}


@dataclass
class Conflict:
    zone: str
    wanted: Record
    found: list[Record]

    def __str__(self) -> str:
        found = "; ".join(str(r) for r in self.found)
        return (f"{self.wanted.name} {self.wanted.type}: wanted {self.wanted.value!r} but an unmanaged "
                f"record is in the way ({found}); remove it, or run with --force to take it over")


@dataclass
class ZonePlan:
    provider: str
    zone: str
    changes: ZoneChanges
    existing_count: int
    conflicts: list[Conflict] = field(default_factory=list)
    refused: str | None = None

    @property
    def destructive(self) -> int:
        """Updates and deletes of existing DNS data (adopting changes no data)."""
        return len(self.changes.deletes) + sum(1 for o, n in self.changes.updates if o.record != n)

    def rows(self) -> list[dict]:
        out = []
        for r in self.changes.creates:
            out.append({"action": "create", "name": r.name, "type": r.type, "new": r.value, "ttl": r.ttl})
        for o, n in self.changes.updates:
            action = "adopt" if (not o.owned and o.record == n) else "update"
            out.append({"action": action, "name": n.name, "type": n.type, "old": o.record.value,
                        "new": n.value, "old_ttl": o.record.ttl, "ttl": n.ttl})
        for o in self.changes.deletes:
            out.append({"action": "delete", "name": o.record.name, "type": o.record.type,
                        "old": o.record.value, "ttl": o.record.ttl})
        return out

    def to_dict(self) -> dict:
        return {"provider": self.provider, "zone": self.zone, "existing_records": self.existing_count,
                "changes": self.rows(), "conflicts": [str(c) for c in self.conflicts],
                "refused": self.refused}


def _txt_kind(value: str) -> str | None:
    head = value.split(";", 1)[0].split(" ", 1)[0].strip().lower()
    return head if head.startswith("v=") else None


def _competes(existing: Record, wanted: Record, apex: bool) -> bool:
    """Whether ``existing`` occupies the place ``wanted`` needs."""
    if existing.name != wanted.name:
        return False
    if existing.type == "CNAME" or wanted.type == "CNAME":
        return True
    if existing.type != wanted.type:
        return False
    if wanted.type != "TXT":
        return True
    kind = _txt_kind(existing.value)
    if kind is None:
        # Free-form TXT (site verification, ...) shares the apex with SPF; anywhere else a
        # mailops name (selector, _dmarc) holds exactly one TXT.
        return not apex
    return kind == _txt_kind(wanted.value)


def sort_records(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (_TYPE_ORDER.get(r.type, 4), r.name, r.type, r.value))


def plan_zone(provider, zone: str, desired: list[Record], existing: list[Existing], *,
              force: bool = False, threshold: float = DEFAULT_THRESHOLD) -> ZonePlan:
    zone = normalize_name(zone)
    changes = ZoneChanges()
    conflicts: list[Conflict] = []
    claimed: set[int] = set()  # indexes into existing that a wanted slot accounted for

    slots: dict[tuple, list[Record]] = {}
    for rec in desired:
        slot = (rec.name, rec.type, _txt_kind(rec.value) if rec.type == "TXT" else None)
        if rec not in slots.setdefault(slot, []):
            slots[slot].append(rec)

    for slot, wanted in sorted(slots.items(), key=lambda kv: (_TYPE_ORDER.get(kv[0][1], 4), kv[0][0])):
        apex = slot[0] == zone
        in_place = [i for i, e in enumerate(existing)
                    if i not in claimed and any(_competes(e.record, w, apex) for w in wanted)]
        values = {w.value for w in wanted}
        foreign = [existing[i] for i in in_place if not existing[i].owned
                   and (existing[i].record.type != slot[1] or existing[i].record.value not in values)]
        if foreign and not force:
            conflicts.append(Conflict(zone, wanted[0], [e.record for e in foreign]))
            claimed.update(in_place)
            continue
        claimed.update(in_place)
        present = [existing[i] for i in in_place]
        if provider.rrset_ttl:
            # One TTL per RRset: share the TTL of the unmanaged records that stay rather than rewrite
            # theirs (also of those that do not compete, such as a site verification TXT beside SPF at
            # the apex; not of those --force replaces).
            shared = [e.record.ttl for e in existing if not e.owned and e.record.type == slot[1]
                      and e.record.name == slot[0] and e not in foreign]
            if shared:
                wanted = [Record(w.name, w.type, w.value, shared[0]) for w in wanted]
        todo = list(wanted)
        leftover: list[Existing] = []
        for e in present:
            match = next((w for w in todo if w.value == e.record.value and w.type == e.record.type), None)
            if match is None:
                leftover.append(e)
                continue
            todo.remove(match)
            if e.other_owner:
                continue  # the same record, published by another mailops inventory: leave it theirs
            if e.record.ttl != match.ttl or not e.owned:
                changes.updates.append((e, match))
        # Pair what is left into in-place updates (old -> new) so a name is never briefly empty.
        for e in list(leftover):
            if todo:
                changes.updates.append((e, todo.pop(0)))
                leftover.remove(e)
        changes.creates += todo
        changes.deletes += leftover

    # Owned records nothing wants any more (a purged DKIM selector, a removed domain).
    for i, e in enumerate(existing):
        if i not in claimed and e.owned:
            changes.deletes.append(e)

    changes.creates = sort_records(changes.creates)
    plan = ZonePlan(provider.name, zone, changes, len(existing), conflicts)
    touched = [n for _, n in changes.updates] + [e.record for e in changes.deletes] + changes.creates
    if any(r.name == zone and r.type in ("NS", "SOA") for r in touched) and not force:
        plan.refused = f"{zone}: the plan touches the apex NS/SOA records; run with --force if that is intended"
    elif (not force and len(existing) >= MIN_EXISTING and plan.destructive / len(existing) > threshold):
        plan.refused = (f"{zone}: the plan updates or deletes {plan.destructive} of {len(existing)} existing records "
                        f"({plan.destructive / len(existing):.0%}, more than the {threshold:.0%} safety threshold); "
                        "review the plan and run with --force to apply it")
    return plan
