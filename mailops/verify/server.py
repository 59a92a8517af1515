"""Server checks: the testinfra suite shipped as ``mailops.checks``, one pytest run per host,
results read from its JUnit XML and turned into CheckResults with a fix hint per area."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mailops.verify.reach import SSH_TIMEOUT, ssh_problem
from mailops.verify.result import CheckResult, failed, inconclusive, passed, warned

GROUP = "server"
# checks module -> how to fix a failure there
FIXES = {
    "test_base": "re-converge: mailops provision apply --tags base --limit {host}",
    "test_firewall": "re-converge: mailops provision apply --tags firewall --limit {host}",
    "test_tls": "renew or re-issue the certificate: mailops provision apply --tags tls --limit {host}",
    "test_sasl": "re-converge: mailops provision apply --tags sasl --limit {host}",
    "test_opendkim": "re-converge: mailops provision apply --tags opendkim --limit {host}",
    "test_postfix": "re-converge: mailops provision apply --tags postfix --limit {host}",
}

WARN_ONLY = {"base.no_pending_security_updates"}


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("E "):
            return line[2:].strip()[:200]
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return (lines[0] if lines else "failed")[:200]


def parse_junit(path: Path, host: str) -> list[CheckResult]:
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        # classname is empty when pytest runs from outside the rootdir; the file name is always there
        module = Path(case.get("file", "")).stem or case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "").split("[", 1)[0].removeprefix("test_")
        param = case.get("name", "").partition("[")[2].rstrip("]")
        # parametrised checks keep their parameter, minus the host part
        param = "-".join(p for p in param.split("-") if not p.startswith("ansible:"))
        short = module.removeprefix("test_")
        name = name.removeprefix(short + "_")  # tls.certificate_..., not tls.tls_certificate_...
        check = f"{short}.{name}" + (f"[{param}]" if param else "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            detail = _first_line(failure.get("message", "") or failure.text or "")
            fix = FIXES.get(module, "re-converge: mailops provision apply --limit {host}").format(host=host)
            if check in WARN_ONLY:
                # normal for up to a day between unattended-upgrades runs: worth a warning, not a failure
                results.append(warned(GROUP, host, check, detail, fix))
            else:
                results.append(failed(GROUP, host, check, detail, fix))
        elif skipped is not None:
            continue  # not applicable to this host (e.g. ACME checks on a self-signed host)
        else:
            results.append(passed(GROUP, host, check, "ok"))
    return results


def _check_modules() -> list[str]:
    import pkgutil

    import mailops.checks
    return sorted(m.name for m in pkgutil.iter_modules(mailops.checks.__path__)
                  if m.name.startswith("test_") and m.name != "test_outside")


def check_hosts(inv, hosts: list[str], *, ca_bundle: str | None = None, timeout: float = 600,
                parallel: int = 3, ssh_timeout: float = SSH_TIMEOUT) -> list[CheckResult]:
    """Each reachable host's checks run as ``parallel`` pytest processes over slices of the modules:
    the time goes into one SSH command per assertion, so overlapping them pays.  A host verify
    cannot reach or log in to over SSH is one inconclusive row saying why."""
    inventory = inv.path
    with ThreadPoolExecutor(max(1, min(12, len(hosts)))) as pool:
        problems = dict(zip(hosts, pool.map(lambda name: ssh_problem(inv.host(name), ssh_timeout), hosts)))
    unreachable = [inconclusive(GROUP, h, "ssh", why) for h, why in problems.items() if why]
    hosts = [h for h in hosts if not problems[h]]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    if ca_bundle:
        env["MAILOPS_ACME_ROOTS_FILE"] = ca_bundle
    modules = _check_modules()
    slices = [modules[i::parallel] for i in range(parallel) if modules[i::parallel]]

    def one(job: tuple[str, list[str]]) -> list[CheckResult]:
        host, mods = job
        with tempfile.TemporaryDirectory(prefix="mailops-verify-") as tmp:
            junit = Path(tmp) / "junit.xml"
            argv = [sys.executable, "-m", "pytest", "--pyargs", *[f"mailops.checks.{m}" for m in mods],
                    f"--hosts=ansible://{host}", f"--ansible-inventory={Path(inventory).resolve()}",
                    f"--junitxml={junit}", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1"]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp, timeout=timeout)
            except subprocess.TimeoutExpired:
                return [inconclusive(GROUP, host, "testinfra", f"the server checks did not finish in {timeout:.0f}s")]
            if not junit.exists():
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
                return [inconclusive(GROUP, host, "testinfra", f"the server checks did not run: {tail[0][:200]}")]
            return parse_junit(junit, host)

    jobs = [(h, mods) for h in hosts for mods in slices]
    with ThreadPoolExecutor(max(1, min(12, len(jobs)))) as pool:
        return unreachable + [r for rs in pool.map(one, jobs) for r in rs]
