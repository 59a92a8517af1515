"""Run the four groups of checks concurrently and collect one report."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mailops.errors import MailopsError
from mailops.verify.result import CheckResult, inconclusive

GROUPS = ("dns", "server", "security", "send", "returnpath", "requirements")


@dataclass
class VerifyReport:
    results: list[CheckResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count("fail") == 0

    def to_dict(self) -> dict:
        return {"ok": self.ok, "counts": {s: self.count(s) for s in ("pass", "warn", "fail", "inconclusive")},
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "results": [r.to_dict() for r in self.results]}

    def write_junit(self, path: Path) -> None:
        suites = ET.Element("testsuites", name="mailops verify")
        for group in GROUPS:
            rows = [r for r in self.results if r.group == group]
            if not rows:
                continue
            suite = ET.SubElement(suites, "testsuite", name=group, tests=str(len(rows)),
                                  failures=str(sum(r.status == "fail" for r in rows)),
                                  skipped=str(sum(r.status == "inconclusive" for r in rows)),
                                  time=f"{self.seconds.get(group, 0):.2f}")
            for r in rows:
                case = ET.SubElement(suite, "testcase", classname=f"{group}.{r.subject}", name=r.name)
                if r.status == "fail":
                    ET.SubElement(case, "failure", message=r.detail).text = f"{r.detail}\nfix: {r.fix}"
                elif r.status == "inconclusive":
                    ET.SubElement(case, "skipped", message=f"inconclusive: {r.detail}")
                elif r.status == "warn":
                    ET.SubElement(case, "system-out").text = f"warning: {r.detail}\nfix: {r.fix}"
        ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def verify(inventory: Path, *, only: tuple[str, ...] = GROUPS, domains: list[str] | None = None,
           hosts: list[str] | None = None, sample: bytes | None = None, on_group: Callable[[str, float], None] = lambda g, s: None) -> VerifyReport:
    from mailops.dkim.store import KeyStore
    from mailops.inventory import load

    unknown = [g for g in only if g not in GROUPS]
    if unknown:
        raise MailopsError(f"--only: unknown group {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    inv = load(inventory)
    from mailops.verify import requirements
    if sample is not None:
        requirements.load_sample(sample)  # a file that is no message: one line before anything is sent
    for d in domains or []:
        if d not in inv.domains:
            raise MailopsError(f"--domain {d}: not a sending domain of {inventory}; "
                               f"domains: {', '.join(sorted(inv.domains))}")
    for h in hosts or []:
        if h not in [x.name for x in inv.hosts]:
            raise MailopsError(f"--host {h}: not a mail host of {inventory}; hosts: "
                               f"{', '.join(x.name for x in inv.hosts)}")
    domains = list(domains or sorted(inv.domains))
    hosts = list(hosts or ([h.name for d in domains for h in inv.hosts_for(d)] if domains else [h.name for h in inv.hosts]))
    hosts = list(dict.fromkeys(hosts))
    keystore = KeyStore.for_inventory(inv)
    ca = inv.verify.ca_bundle

    def run_dns() -> list[CheckResult]:
        from mailops.verify import dnschecks
        return (dnschecks.check_domains(inv, keystore, domains=domains, ca_bundle=ca)
                + dnschecks.check_hosts(inv, hosts=hosts))

    def run_server() -> list[CheckResult]:
        from mailops.verify import server
        return server.check_hosts(inv, hosts, ca_bundle=ca)

    def run_security() -> list[CheckResult]:
        from mailops.verify import security
        users = [(u.login, inv.secret(u.password)) for u in inv.submission_users if u.password is not None]

        def probe(name: str) -> list[CheckResult]:
            h = inv.host(name)
            addrs = [str(h.ipv4)] + ([str(h.ipv6)] if h.ipv6 else [])
            sending = [d for d in inv.domains if h in inv.hosts_for(d)]
            return security.probe_host(h.fqdn, addrs, sending_domains=sending, users=users, ca_bundle=ca)
        with ThreadPoolExecutor(min(8, max(1, len(hosts)))) as pool:  # hosts are independent
            return [r for rows in pool.map(probe, hosts) for r in rows]

    def run_send() -> list[CheckResult]:
        from mailops.verify import send
        return send.check_domains(inv, keystore, domains)

    def run_returnpath() -> list[CheckResult]:
        # Without mailops_return_path the group runs only when asked for (--only returnpath): its
        # report-address probes then only say what the inventory check refuses anyway.
        if inv.return_path is None and tuple(only) == GROUPS:
            return []
        from mailops.dns.sync import DnsReader
        from mailops.verify import returnpath
        from mailops.verify.dnsview import QUERY_TIMEOUT, DnsView
        view = DnsView(DnsReader(inv.dns_resolvers, timeout=QUERY_TIMEOUT))
        return returnpath.check(inv, resolve=view.resolve, domains=domains)

    def run_requirements() -> list[CheckResult]:
        # In a full run only the domains a bulk user sends for: the rules are the bulk senders'.
        # Asked for (--only requirements), every domain, each without a bulk user naming the fix.
        wanted = domains if tuple(only) != GROUPS else [d for d in domains if requirements.bulk_user(inv, d)]
        return requirements.check(inv, keystore, wanted, sample=sample) if wanted else []

    runners = {"dns": run_dns, "server": run_server, "security": run_security, "send": run_send,
               "returnpath": run_returnpath, "requirements": run_requirements}
    report = VerifyReport()

    def timed(group: str) -> tuple[str, list[CheckResult], float]:
        t = time.monotonic()
        try:
            results = runners[group]()
        except MailopsError as exc:
            results = [inconclusive(group, "-", "run", str(exc))]
        seconds = time.monotonic() - t
        on_group(group, seconds)
        return group, results, seconds

    with ThreadPoolExecutor(len(GROUPS)) as pool:
        for group, results, seconds in pool.map(timed, [g for g in GROUPS if g in only]):
            report.results += results
            report.seconds[group] = seconds
    return report
