"""Server checks: the testinfra suite shipped as ``mailops.checks``, run by pytest processes that
each take a share of the hosts (each host's commands over one persistent SSH connection, see
mailops.checks.connection), results read from their JUnit XML and turned into CheckResults with
a fix hint per area."""

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


def _split_host(param: str, hosts: list[str]) -> tuple[str | None, str]:
    """The host a test id's parameter names (``ansible://HOST``) and the rest of the parameter."""
    parts = param.split("-")
    for h in sorted(hosts, key=len, reverse=True):  # mta1.x before mta1 when both exist
        token = f"ansible://{h}".split("-")
        for i in range(len(parts) - len(token) + 1):
            if parts[i:i + len(token)] == token:
                return h, "-".join(parts[:i] + parts[i + len(token):])
    return None, "-".join(p for p in parts if not p.startswith("ansible:"))


def parse_junit(path: Path, host: str | list[str]) -> list[CheckResult]:
    """Rows from the checks' JUnit XML; with several hosts in one run, each row goes to the host
    its test id names."""
    hosts = [host] if isinstance(host, str) else list(host)
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        # classname is empty when pytest runs from outside the rootdir; the file name is always there
        module = Path(case.get("file", "")).stem or case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "").split("[", 1)[0].removeprefix("test_")
        param = case.get("name", "").partition("[")[2].rstrip("]")
        # parametrised checks keep their parameter, minus the host part
        subject, param = _split_host(param, hosts)
        subject = subject or hosts[0]
        short = module.removeprefix("test_")
        name = name.removeprefix(short + "_")  # tls.certificate_..., not tls.tls_certificate_...
        check = f"{short}.{name}" + (f"[{param}]" if param else "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            detail = _first_line(failure.get("message", "") or failure.text or "")
            fix = FIXES.get(module, "re-converge: mailops provision apply --limit {host}").format(host=subject)
            if check in WARN_ONLY:
                # normal for up to a day between unattended-upgrades runs: worth a warning, not a failure
                results.append(warned(GROUP, subject, check, detail, fix))
            else:
                results.append(failed(GROUP, subject, check, detail, fix))
        elif skipped is not None:
            continue  # not applicable to this host (e.g. ACME checks on a self-signed host)
        else:
            results.append(passed(GROUP, subject, check, "ok"))
    return results


def _check_modules() -> list[str]:
    import pkgutil

    import mailops.checks
    return sorted(m.name for m in pkgutil.iter_modules(mailops.checks.__path__)
                  if m.name.startswith("test_") and m.name != "test_outside")


def check_hosts(inv, hosts: list[str], *, ca_bundle: str | None = None, timeout: float = 600,
                parallel: int | None = None, ssh_timeout: float = SSH_TIMEOUT) -> list[CheckResult]:
    """The checks of all reachable hosts, in ``parallel`` pytest processes (by default one per
    host, at most 2 per core) that each take a share of the hosts.  Each host's commands go over
    one persistent SSH connection (mailops.checks.connection), so a host takes about as long as
    its commands take on the host.  A host verify cannot reach or log in to over SSH is one
    inconclusive row saying why."""
    inventory = inv.path
    with ThreadPoolExecutor(max(1, min(12, len(hosts)))) as pool:
        problems = dict(zip(hosts, pool.map(lambda name: ssh_problem(inv.host(name), ssh_timeout), hosts)))
    unreachable = [inconclusive(GROUP, h, "ssh", why) for h, why in problems.items() if why]
    hosts = [h for h in hosts if not problems[h]]
    if not hosts:
        return unreachable
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    # only testinfra's plugin: other installed plugins (hypothesis: 0.4 s) cost every process startup
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if ca_bundle:
        env["MAILOPS_ACME_ROOTS_FILE"] = ca_bundle
    modules = [f"mailops.checks.{m}" for m in _check_modules()]
    parallel = parallel or min(len(hosts), 2 * (os.cpu_count() or 1))
    shares = [hosts[i::parallel] for i in range(parallel) if hosts[i::parallel]]

    def one(share: list[str]) -> list[CheckResult]:
        with tempfile.TemporaryDirectory(prefix="mailops-verify-") as tmp:
            junit = Path(tmp) / "junit.xml"
            argv = [sys.executable, "-m", "pytest", "-p", "testinfra.plugin", "--pyargs", *modules,
                    "--hosts=" + ",".join(f"ansible://{h}" for h in share),
                    f"--ansible-inventory={Path(inventory).resolve()}",
                    f"--junitxml={junit}", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1"]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp, timeout=timeout)
            except subprocess.TimeoutExpired:
                return [inconclusive(GROUP, h, "testinfra", f"the server checks did not finish in {timeout:.0f}s")
                        for h in share]
            if not junit.exists():
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
                return [inconclusive(GROUP, h, "testinfra", f"the server checks did not run: {tail[0][:200]}")
                        for h in share]
            return parse_junit(junit, share)

    with ThreadPoolExecutor(len(shares)) as pool:
        return unreachable + [r for rs in pool.map(one, shares) for r in rs]
