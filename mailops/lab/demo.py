"""The end-to-end demo on the lab, as a list of timed steps.

It brings the lab up, proves each part answers (SSH into a VPS, a lab DNS
record, a message into the receiving host), generates DKIM keys, publishes the
records with `dns sync`, provisions a fresh VPS, runs `mailops verify`, shows a
live message's Authentication-Results, and closes the return path once: a
message the receiver bounces later suppresses its recipient.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from mailops.errors import MailopsError
from mailops.lab import core, receiver
from mailops.lab.config import MAILBOX_DOMAIN, LabConfig


@dataclass
class StepResult:
    name: str
    seconds: float
    detail: str
    extra: list[str] = field(default_factory=list)


def _ssh(cfg: LabConfig, name: str, script: str, timeout: float = 60) -> str:
    proc = core.ssh_run(cfg, name, script, timeout=timeout)
    if proc.returncode != 0:
        raise MailopsError(f"ssh {name}: {(proc.stderr.strip() or proc.stdout.strip())[-200:]}")
    return proc.stdout.strip()


def send_test_message(cfg: LabConfig, from_machine: str, sender: str, recipient: str, subject: str,
                      helo: str | None = None) -> None:
    """Hand a message to the receiving host over SMTP from a lab machine, with the
    machine's own python3 (a fresh VPS has nothing else)."""
    rx = cfg.receiver
    script = (
        "import smtplib, email.message, email.utils\n"
        "m = email.message.EmailMessage()\n"
        f"m['From'] = {sender!r}; m['To'] = {recipient!r}; m['Subject'] = {subject!r}\n"
        "m['Date'] = email.utils.formatdate(); m['Message-ID'] = email.utils.make_msgid()\n"
        "m.set_content('sent by mailops from the lab\\n')\n"
        f"s = smtplib.SMTP({rx.fqdn!r}, 25, local_hostname={helo!r}, timeout=30)\n"
        "s.send_message(m); s.quit()\n")
    _ssh(cfg, from_machine, f"python3 - <<'PYEOF'\n{script}PYEOF")


def run_demo(cfg: LabConfig | None = None, vps: int = 1, log: Callable[[str], None] = lambda m: None
             ) -> list[StepResult]:
    cfg = cfg or LabConfig()
    results: list[StepResult] = []

    def step(name: str, fn: Callable[[], str | tuple[str, list[str]]]) -> None:
        log(f"step: {name}")
        t = time.monotonic()
        try:
            out = fn()
        except MailopsError as exc:
            raise MailopsError(f"demo step '{name}' failed after {time.monotonic() - t:.0f}s: {exc}") from exc
        except Exception as exc:  # a bug or an environment surprise: still name the step, not a traceback
            raise MailopsError(f"demo step '{name}' failed after {time.monotonic() - t:.0f}s: {exc!r}") from exc
        detail, extra = out if isinstance(out, tuple) else (out, [])
        results.append(StepResult(name, round(time.monotonic() - t, 1), detail, extra))
        log(f"done: {name} ({results[-1].seconds:.1f}s): {detail}")

    def lab_up() -> str:
        r = core.up(cfg, vps=vps, log=log)
        built = [n for n, i in r.images.items() if i.get("built")]
        return (f"{len(r.status['machines'])} machines running"
                + (f"; built images: {', '.join(built)}" if built else "; images from cache"))

    def ssh_vps() -> str:
        return "vps1: " + _ssh(cfg, "vps1", "echo $(hostname) $(systemctl is-system-running) $(python3 -V)")

    def resolve() -> str:
        return "vps1 resolves mx.inbox.test -> " + _ssh(
            cfg, "vps1", "python3 -c \"import socket; print(socket.gethostbyname('mx.inbox.test'))\"")

    def mail() -> str:
        subject = f"mailops demo {uuid.uuid4().hex[:8]}"
        rcpt = f"demo@{MAILBOX_DOMAIN}"
        send_test_message(cfg, "vps1", f"root@{cfg.vps(1).fqdn}", rcpt, subject, helo=cfg.vps(1).fqdn)
        rx_root = core.load_state(cfg)["machines"]["mx"]["root"]
        msg = receiver.wait_for_message(rx_root, recipient=rcpt, subject=subject, timeout=30)
        if msg is None:
            raise MailopsError(f"no message with subject {subject!r} reached {rcpt} within 30s")
        verdicts = ", ".join(f"{m}={msg.auth_result(m)}" for m in ("dkim", "spf", "dmarc"))
        return f"vps1 -> {rcpt} by plain SMTP from python3: {verdicts}"

    def dkim_keys() -> str:
        from mailops.dkim.store import KeyStore
        from mailops.inventory import load

        inv = load(_inventory())
        store = KeyStore.for_inventory(inv)
        made = []
        for domain, settings in inv.domains.items():
            made += [k.selector for k in store.generate(domain, settings.dkim).created]
        active = ", ".join(f"{d}: {k.selector}" for d in inv.domains for k in store.signing(d))
        return ("generated " + ", ".join(made) if made else "keys exist") + f"; signing with {active}"

    def publish() -> str:
        from mailops.dkim.store import KeyStore
        from mailops.dns.sync import sync
        from mailops.inventory import load

        inv = load(_inventory())
        # The lab's sending zones belong to the lab inventory: a record someone wrote there by
        # hand (a test, an experiment) is taken over, as `dns sync --force` would.
        result = sync(inv, KeyStore.for_inventory(inv), force=True)
        taken = f", {len(result['conflicts'])} hand-made record(s) taken over" if result["conflicts"] else ""
        return (f"dns sync: {result['changes']} change(s) in {result['zones']} zone(s) "
                f"(shop.test by RFC 2136, news.test by the Cloudflare API, PTR by RFC 2136){taken}, read back OK")

    def provision() -> str:
        from mailops.inventory import load
        from mailops.provision import HostKey, new_vps

        inv = load(_inventory())
        host = inv.hosts[0]
        # out of band, as from a provider's console: the key in the machine's own root
        pub = (core.machine_root(cfg, "vps1") / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]
        trust = []
        result = new_vps(inv, host.name, expect_fingerprint=HostKey("ssh-ed25519", pub).fingerprint,
                         on_trust=trust.append)
        if not result.ok:
            bad = next(h for h in result.hosts.values() if h.failed or h.unreachable)
            raise MailopsError(f"{bad.host}: task '{bad.failed_task}' failed: {bad.failed_message}")
        return f"{host.name} converged: {result.changed} changed tasks in {result.seconds}s (host key {trust[0].status})"

    def live_send() -> str | tuple[str, list[str]]:
        from mailops import livesend
        from mailops.dkim.store import KeyStore
        from mailops.lab import acme
        from mailops.inventory import load

        inv = load(_inventory())
        host = inv.hosts[0]
        user = inv.submission_users[0]
        rcpt = f"demo@{MAILBOX_DOMAIN}"
        subject = f"mailops demo {uuid.uuid4().hex[:8]}"
        t = time.monotonic()
        livesend.submit(server=str(host.ipv4), server_name=host.fqdn, login=user.login,
                        password=inv.secret(user.password), sender=user.login, recipient=rcpt, subject=subject,
                        cadata="\n".join(acme.issuing_roots(core.acme_config(cfg))))
        msg = receiver.wait_for_message(core.machine_root(cfg, "mx"), recipient=rcpt, subject=subject, timeout=60)
        if msg is None:
            raise MailopsError(f"the message to {rcpt} did not arrive within 60 s")
        verdicts = {m: msg.auth_result(m) for m in ("dkim", "spf", "dmarc")}
        if any(v != "pass" for v in verdicts.values()):
            raise MailopsError("received, but " + ", ".join(f"{m}={v}" for m, v in verdicts.items()))
        domain = user.login.split("@")[1]
        selectors = [k.selector for k in KeyStore.for_inventory(inv).signing(domain)]
        return (f"{user.login} -> {rcpt} via 587 in {time.monotonic() - t:.1f}s: dkim=pass (s={', '.join(selectors)}), "
                "spf=pass, dmarc=pass",
                [f"Authentication-Results: {h}" for h in msg.authentication_results])

    def return_path() -> str:
        from mailops import livesend
        from mailops.inventory import load
        from mailops.lab import acme
        from mailops.ops import returnpath

        inv = load(_inventory())
        host, user = inv.hosts[0], inv.submission_users[0]
        # the lab receiver accepts later-*@ and then bounces it (over quota), as Gmail does
        rcpt = f"later-demo-{uuid.uuid4().hex[:8]}@{MAILBOX_DOMAIN}"
        submit = dict(server=str(host.ipv4), server_name=host.fqdn, login=user.login,
                      password=inv.secret(user.password), sender=user.login, recipient=rcpt,
                      cadata="\n".join(acme.issuing_roots(core.acme_config(cfg))))
        t = time.monotonic()
        livesend.submit(subject="mailops demo: bounces later", **submit)
        runner, entry = returnpath.runner_for(inv), None
        while entry is None and time.monotonic() - t < 60:
            time.sleep(1)
            entries = returnpath.list_suppressions(inv.hosts, runner)["entries"]
            entry = next((e for e in entries if e["target"] == rcpt), None)
        if entry is None:
            raise MailopsError(f"{rcpt} was not suppressed within 60 s of its submission")
        took = time.monotonic() - t
        try:
            livesend.submit(subject="mailops demo: must be refused", **submit)
        except MailopsError as exc:
            refused = str(exc).split("submission failed: ", 1)[-1]
        else:
            raise MailopsError(f"{rcpt} is suppressed, but the next submission to it was accepted")
        return (f"{rcpt}: accepted, bounced later by the receiver, the DSN came back to the return path and "
                f"suppressed it ({entry['cause']}) in {took:.1f}s; the next submission was refused",
                [f"refused: {refused[:300]}"])

    def verify() -> str:
        from mailops.verify.runner import verify as run_verify

        report = run_verify(_inventory())
        if not report.ok:
            bad = next(r for r in report.results if r.status == "fail")
            raise MailopsError(f"{report.count('fail')} check(s) failed, first: {bad.subject} {bad.name}: "
                               f"{bad.detail}; fix: {bad.fix}")
        timing = ", ".join(f"{g} {s:.0f}s" for g, s in report.seconds.items())
        return (f"all {report.count('pass')} checks pass ({report.count('inconclusive')} inconclusive): "
                f"DNS, server, security from outside, live send ({timing})")

    step("lab up", lab_up)
    step("ssh into a fresh VPS", ssh_vps)
    step("resolve through the lab DNS", resolve)
    step("deliver to the receiving host", mail)
    step("generate DKIM keys", dkim_keys)
    step("publish DNS records (dns sync)", publish)
    step("provision new-vps mta1.shop.test", provision)
    step("mailops verify", verify)
    step("live send on 587 with AUTH", live_send)
    step("the return path: a bounce suppresses", return_path)
    return results


def _inventory():
    from mailops.inventory import resolve_inventory_path

    return resolve_inventory_path("lab")
