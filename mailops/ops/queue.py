"""The Postfix queue of a mail host: a summary, and flush/hold/release/delete
of the messages chosen by recipient domain or sender.

Reading uses ``postqueue -j`` (one JSON object per message). Actions are
planned from one reading and applied to exactly the planned queue IDs
(``postsuper -d/-h/-H -`` read IDs from stdin); what Postfix reports back is
parsed, so the result lists what was really removed, held or released, also
when a message left the queue between plan and apply.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mailops.errors import MailopsError
from mailops.ops.remote import MailHost, Remote

QUEUES = ("active", "incoming", "deferred", "hold", "maildrop")
ACTIONS = ("flush", "hold", "release", "delete")

# Which queues an action can apply to: flushing a held message does nothing,
# releasing one that is not held neither.
_ACTION_QUEUES = {
    "flush": ("deferred",),
    "hold": ("active", "incoming", "deferred", "maildrop"),
    "release": ("hold",),
    "delete": QUEUES,
}
_POSTSUPER_FLAG = {"delete": "-d", "hold": "-h", "release": "-H"}
# postsuper: 4ABC123: removed | placed on hold | released from hold
_POSTSUPER_DONE = re.compile(r"^postsuper: ([0-9A-Za-z]+): (removed|placed on hold|released from hold)\s*$")
_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{5,}$")


@dataclass
class Recipient:
    address: str
    delay_reason: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower() if "@" in self.address else ""


@dataclass
class QueuedMessage:
    queue_id: str
    queue: str
    arrival: float  # epoch seconds
    size: int
    sender: str
    recipients: list[Recipient] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"queue_id": self.queue_id, "queue": self.queue,
                "arrival": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.arrival)),
                "size": self.size, "sender": self.sender,
                "recipients": [{"address": r.address, "delay_reason": r.delay_reason} for r in self.recipients]}


def parse_postqueue_json(text: str) -> list[QueuedMessage]:
    messages = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            messages.append(QueuedMessage(
                queue_id=obj["queue_id"], queue=obj["queue_name"], arrival=float(obj["arrival_time"]),
                size=int(obj.get("message_size", 0)), sender=obj.get("sender", ""),
                recipients=[Recipient(r.get("address", ""), r.get("delay_reason", ""))
                            for r in obj.get("recipients", [])]))
        except (ValueError, KeyError, TypeError) as exc:
            raise MailopsError(f"postqueue -j line {n} is not a queue entry ({exc}): {line[:80]}") from None
    return messages


def read_queue(remote) -> list[QueuedMessage]:
    return parse_postqueue_json(remote.run("postqueue -j"))


def _reason_key(reason: str) -> str:
    """Group deferral reasons: the same reply for different recipients or hosts is one reason."""
    text = re.sub(r"<[^>]*@[^>]*>", "<addr>", reason)
    text = re.sub(r"\[[0-9a-fA-F:.]+\]", "[ip]", text)
    return re.sub(r"\s+", " ", text).strip()


def summarize(messages: list[QueuedMessage], now: float | None = None, top: int = 10) -> dict:
    """Counts by queue and recipient domain, the oldest message, the top deferral reasons."""
    now = time.time() if now is None else now
    by_queue = Counter({q: 0 for q in ("active", "deferred", "hold")})
    by_domain: dict[str, Counter] = {}
    reasons: Counter = Counter()
    for m in messages:
        by_queue[m.queue] += 1
        for r in m.recipients:
            by_domain.setdefault(r.domain, Counter())[m.queue] += 1
            if r.delay_reason:
                reasons[_reason_key(r.delay_reason)] += 1
    oldest = min(messages, key=lambda m: m.arrival, default=None)
    return {
        "messages": len(messages),
        "recipients": sum(len(m.recipients) for m in messages),
        "by_queue": dict(by_queue),
        "by_domain": {d: dict(c) for d, c in sorted(by_domain.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))},
        "oldest": None if oldest is None else {"queue_id": oldest.queue_id, "queue": oldest.queue,
                                                "age_seconds": max(0, int(now - oldest.arrival))},
        "top_deferral_reasons": [{"reason": r, "count": n} for r, n in reasons.most_common(top)],
    }


def summaries(hosts: list[MailHost], *, with_messages: bool = False) -> dict[str, dict]:
    """summarize() of each host's queue, by host name; with_messages adds every message as "queue"."""
    out = {}
    for host in hosts:
        with Remote(host) as remote:
            messages = read_queue(remote)
        summary = summarize(messages)
        if with_messages:
            summary["queue"] = [m.to_dict() for m in messages]
        out[host.name] = summary
    return out


@dataclass
class Selection:
    """Which messages an action is for: by recipient domain and/or sender."""
    domain: str | None = None
    sender: str | None = None  # an address, or @domain for every sender of a domain

    def __post_init__(self) -> None:
        if self.domain:
            self.domain = self.domain.lower().lstrip("@").rstrip(".")
        if self.sender is not None:
            self.sender = self.sender.lower()

    @property
    def everything(self) -> bool:
        return not self.domain and self.sender is None

    def matches(self, m: QueuedMessage) -> bool:
        if self.domain and not any(r.domain == self.domain for r in m.recipients):
            return False
        if self.sender is not None:
            sender = m.sender.lower()
            if self.sender.startswith("@"):
                return sender.endswith(self.sender)
            return sender == self.sender
        return True

    def describe(self) -> str:
        parts = []
        if self.domain:
            parts.append(f"to @{self.domain}")
        if self.sender is not None:
            parts.append(f"from {self.sender or '<> (bounces)'}")
        return " and ".join(parts) or "every message"


@dataclass
class Plan:
    action: str
    selection: Selection
    messages: list[QueuedMessage]
    # messages that also go to recipients outside the selected domain: the action
    # applies to the whole message, so the plan says so
    shared: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [m.queue_id for m in self.messages]

    def to_dict(self) -> dict:
        return {"action": self.action, "selection": self.selection.describe(), "count": len(self.messages),
                "messages": [m.to_dict() for m in self.messages], "also_other_recipients": self.shared}


def plan(messages: list[QueuedMessage], action: str, selection: Selection) -> Plan:
    if action not in ACTIONS:
        raise MailopsError(f"unknown queue action {action!r}; choose from {', '.join(ACTIONS)}")
    if action == "delete" and selection.everything:
        raise MailopsError("queue delete needs --domain or --sender (deleting the whole queue is `postsuper -d ALL`, "
                           "on purpose not one mailops flag away)")
    chosen = [m for m in messages if m.queue in _ACTION_QUEUES[action] and selection.matches(m)]
    shared = [m.queue_id for m in chosen
              if selection.domain and any(r.domain != selection.domain for r in m.recipients)]
    return Plan(action, selection, chosen, shared)


@dataclass
class ActionResult:
    action: str
    done: list[str]          # queue IDs Postfix reports as acted on
    missing: list[str]       # planned IDs that had left the queue (delivered, expired) meanwhile

    def to_dict(self) -> dict:
        return {"action": self.action, "done": self.done, "count": len(self.done), "missing": self.missing}


def apply(remote, p: Plan) -> ActionResult:
    """Apply a plan to exactly its queue IDs."""
    ids = p.ids
    if not ids:
        return ActionResult(p.action, [], [])
    bad = [i for i in ids if not _QUEUE_ID.match(i)]
    if bad:
        raise MailopsError(f"refusing a queue ID that is not one: {bad[0]!r}")
    if p.action == "flush":
        # postqueue -i: deliver this deferred message now; -i takes one ID per call
        script = "; ".join(f"postqueue -i {i} && echo flushed {i}" for i in ids)
        _code, out, _err = remote.run_with_stderr(script)
        done = [line.split()[1] for line in out.splitlines() if line.startswith("flushed ")]
        return ActionResult("flush", done, [i for i in ids if i not in done])
    code, out, err = remote.run_with_stderr(f"postsuper {_POSTSUPER_FLAG[p.action]} -", stdin="\n".join(ids) + "\n")
    done = []
    for line in (err + "\n" + out).splitlines():
        match = _POSTSUPER_DONE.match(line.strip())
        if match and match.group(1) in ids:
            done.append(match.group(1))
    if code != 0 and not done:
        last = (err.strip() or out.strip()).splitlines()
        raise MailopsError(f"{remote.host.name}: postsuper {_POSTSUPER_FLAG[p.action]} failed (exit {code}): "
                           f"{last[-1] if last else 'no output'}")
    return ActionResult(p.action, done, [i for i in ids if i not in done])


def flush_all(remote) -> None:
    """Attempt delivery of every deferred message now (postqueue -f)."""
    remote.run("postqueue -f")


@dataclass
class HostStep:
    """Where an action on one host stands, for a caller that shows progress.

    stage: "flushed-all" (flush of every deferred message, no plan), "planned", "applied"
    or "declined" (confirm said no; nothing done)."""
    host: str
    stage: str
    plan: Plan | None = None
    result: ActionResult | None = None

    def to_dict(self) -> dict:
        if self.stage == "flushed-all":
            return {"action": "flush", "all": True}
        return {"plan": self.plan.to_dict(), "result": self.result.to_dict() if self.result else None}


def act(hosts: list[MailHost], action: str, selection: Selection, *,
        confirm: Callable[[str, Plan], bool] | None = None,
        progress: Callable[[HostStep], None] | None = None) -> dict[str, dict]:
    """On each host in turn: plan the action from one reading of its queue, ask
    ``confirm(host, plan)`` when given and the plan is not empty, apply exactly the planned
    queue IDs.  A flush of every deferred message (no selection) needs no plan.  Returns
    each host's plan and result as plain data; ``progress`` sees every step as it happens."""
    def report(step: HostStep) -> HostStep:
        if progress is not None:
            progress(step)
        return step

    out: dict[str, dict] = {}
    for host in hosts:
        with Remote(host) as remote:
            if action == "flush" and selection.everything:
                flush_all(remote)
                out[host.name] = report(HostStep(host.name, "flushed-all")).to_dict()
                continue
            p = plan(read_queue(remote), action, selection)
            report(HostStep(host.name, "planned", p))
            if p.messages and confirm is not None and not confirm(host.name, p):
                out[host.name] = report(HostStep(host.name, "declined", p)).to_dict()
                continue
            out[host.name] = report(HostStep(host.name, "applied", p, apply(remote, p))).to_dict()
    return out
