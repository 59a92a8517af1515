"""Benchmark: provisioning wall time, fresh and no-op, for 1 and 3 hosts, with and
without the speed settings the project uses (mitogen, SSH pipelining, ControlPersist,
smart gathering with a jsonfile fact cache), measured side by side in one run.

Run as root on a machine where the lab is up (`mailops lab up --vps 9`):

    .venv/bin/python bench/provision.py                  # vps7..vps9, 1 then 3 hosts
    .venv/bin/python bench/provision.py --first-vps 4    # vps4..vps6
    .venv/bin/python bench/provision.py --hosts 1        # quicker
    .venv/bin/python bench/provision.py --first-vps 13 --hosts 1 --with-only --noop-repeat 3 --profile
                                                         # the no-op vs `ansible -m setup` check (issue 17)

To measure a fixed tree while others edit the roles, run it from a worktree:

    git worktree add /tmp/bench-wt HEAD
    cd /tmp/bench-wt && PYTHONPATH=/tmp/bench-wt /path/to/.venv/bin/python bench/provision.py

mailops, playbooks/ and roles/ must come from the tree this script is in (checked).

What it does: the lab is not brought up or down; only the VPSes it is given are
reset.  Hosts are mta<N>.pbench.lab.test (N = the VPS number) sending for the bench
domain pbench.lab.test, whose records (A/AAAA, MX, SPF, DKIM, DMARC, MTA-STS,
TLS-RPT) are published by `dns sync` code (RFC 2136) into the shared lab.test zone
under their own mailops_dns_owner "pbench", so shop.test, news.test and other
owners' records are never in the plan (checked before applying).  PTRs are not
managed: the play does not read them, and test_verify_dns writes the PTR of
198.51.100.19 concurrently.  At the end (also after a failure) every record the
bench owns is deleted and lab.test is checked to hold nothing under
pbench.lab.test.  DKIM keys and the submission password live in a temporary
directory.

Runs (every converge goes through mailops.ansible.apply, the code of
`mailops provision apply`):
  for 1 host, then for 3 hosts:
    reset the machines, forget their facts; fresh WITH; no-op WITH; no-op WITHOUT
    reset again, fresh WITHOUT; no-op WITH (idempotence check of that converge)
  The fresh WITHOUT converge of 3 hosts runs only if the time budget allows
  (--budget-minutes, default 35); otherwise the script says it skipped it and why.
Nothing is asserted; failures are printed and marked in the table.

After every no-op converge the same hosts get one bare `ansible -m setup`
(same inventory, ansible.cfg, environment and speed settings: the ansible CLI
from the venv, through ansible_env()), timed the same way, and the table
prints no-op / setup: issue 17's goal is <= 4 x for one host, measured side
by side in one run. --with-only leaves out the runs without the speed
settings (reset, fresh, then --noop-repeat no-op + setup pairs); --profile
prints, per converge, the time per role and the slowest tasks, computed as
Ansible's profile_tasks/profile_roles callbacks do (from one task's start to
the next's, summed per role), from ansible-runner's task-start event
timestamps: the callbacks themselves write to ansible-runner's stdout, which
apply() throws away with its private data directory (and ansible.posix, which
has them, is not installed). --compare-with DIR: after each no-op, one no-op of
the same hosts with DIR's playbooks and roles (MAILOPS_PROJECT_DIR=DIR; e.g. a
worktree of the commit before a role change), so both are measured side by
side on the same machine state. --also-check (one `--check --diff` converge)
and --also-tags TAGS... (one no-op converge with --tags each) check what the
role tests check after a converge: 0 changed, no failure.

Fact cache: the script reports whether the project's fact cache
(~/.cache/mailops/ansible-facts) held the hosts' facts after the 'with' runs.
Through ansible-runner it does not (ansible-runner points the jsonfile cache at
its own artifact directory, which apply() deletes), so facts are gathered in
every converge, with or without the speed settings.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import mailops
from mailops.ansible import ansible_env, apply, fact_cache_dir, forget_facts, project_dir
from mailops.dkim.store import KeyStore
from mailops.dns.providers.base import ZoneChanges
from mailops.dns.records import in_zone
from mailops.dns.sync import apply_plan, forward_provider, make_plan, readback
from mailops.errors import MailopsError
from mailops.inventory import load_inventory
from mailops.lab import core
from mailops.lab.config import LabConfig

BENCH_DOMAIN = "pbench.lab.test"
BENCH_OWNER = "pbench"
ZONE = "lab.test"
PROVIDER = "lab-rfc2136"
ROOT = Path(__file__).resolve().parent.parent

# What "without the speed settings" means: Ansible's defaults (linear strategy,
# no pipelining, implicit gathering, facts kept in memory only), and no
# ControlPersist (Ansible's own default ssh_args would keep masters for 60 s).
SLOW_ENV = {
    "MAILOPS_MITOGEN": "0",
    "ANSIBLE_PIPELINING": "False",
    "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
    "ANSIBLE_GATHERING": "implicit",
    "ANSIBLE_CACHE_PLUGIN": "memory",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check_tree() -> None:
    """mailops, playbooks and roles must be the ones of the tree this script is in."""
    pkg = Path(mailops.__file__).resolve().parent.parent
    proj = project_dir().resolve()
    if pkg != ROOT or proj != ROOT:
        sys.exit(f"bench/provision.py: mailops is imported from {pkg} and runs playbooks from {proj}, not from "
                 f"{ROOT}; run with PYTHONPATH={ROOT} and without MAILOPS_PROJECT_DIR")


def host_name(number: int) -> str:
    return f"mta{number}.{BENCH_DOMAIN}"


# -- inventory ------------------------------------------------------------------
def make_inventory(cfg: LabConfig, numbers: list[int], dest: Path, keystore: Path, password: Path) -> Path:
    """A copy of inventories/lab: the bench domain in lab.test under its own owner, hosts mta<N>."""
    shutil.copytree(ROOT / "inventories" / "lab", dest)
    gv = dest / "group_vars" / "all" / "mailops.yml"
    d = yaml.safe_load(gv.read_text())
    d["mailops_dkim_keystore"] = str(keystore)
    d["mailops_dns_owner"] = BENCH_OWNER
    # the settings shop.test has in the lab inventory (DMARC reject with rua, MTA-STS testing, TLS-RPT)
    d["mailops_domains"] = {BENCH_DOMAIN: {
        "dns_provider": PROVIDER,
        "dmarc": {"policy": "reject", "rua": [f"mailto:dmarc@{BENCH_DOMAIN}"]},
        "mta_sts": {"mode": "testing"},
        "tls_rpt": {"rua": [f"mailto:tlsrpt@{BENCH_DOMAIN}"]},
    }}
    d["mailops_dns_providers"] = {PROVIDER: dict(d["mailops_dns_providers"][PROVIDER], zones=[ZONE])}
    d["mailops_tls"]["acme_email"] = f"postmaster@{BENCH_DOMAIN}"
    d["mailops_submission_users"] = [{"login": f"bench@{BENCH_DOMAIN}", "password": {"file": str(password)}}]
    gv.write_text(yaml.safe_dump(d, sort_keys=False))

    hosts_file = dest / "hosts.yml"
    data = yaml.safe_load(hosts_file.read_text())
    group = data["all"]["children"]["mailhosts"]
    template = dict(next(iter(group["hosts"].values())))
    template.pop("mailops_reverse_dns_provider", None)  # PTRs are left as the lab set them
    group["hosts"] = {}
    for n in numbers:
        vps = cfg.vps(n)
        group["hosts"][host_name(n)] = dict(template, ansible_host=vps.ipv4, mailops_ipv4=vps.ipv4,
                                            mailops_ipv6=vps.ipv6)
    hosts_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def load(inv_dir: Path):
    inv, problems = load_inventory(inv_dir)
    if problems:
        raise MailopsError(f"{inv_dir}: inventory problems: {problems}")
    return inv


# -- DNS --------------------------------------------------------------------------
def publish(inv, store) -> int:
    """dns sync --apply, refusing any change outside the bench domain."""
    plan, providers = make_plan(inv, store)
    rows = [(z.zone, row["name"]) for z in plan.zones for row in z.rows()]
    outside = [r for r in rows if not in_zone(r[1], BENCH_DOMAIN)]
    if outside or plan.ptr_changes or plan.conflicts or plan.refused:
        raise MailopsError(f"DNS plan reaches outside {BENCH_DOMAIN} or conflicts: outside={outside} "
                           f"ptr={[p.to_dict() for p in plan.ptr_changes]} conflicts={plan.conflicts} "
                           f"refused={plan.refused}")
    apply_plan(plan, providers)
    problems = readback(inv, plan, providers)
    if problems:
        raise MailopsError(f"DNS read-back: {problems}")
    return plan.pending


def bench_records(inv) -> tuple[list, list]:
    """(records the bench owner owns in lab.test, any other record under the bench domain)."""
    existing = forward_provider(inv, PROVIDER).list_records(ZONE)
    owned = [e for e in existing if e.owned]
    foreign = [e for e in existing if not e.owned and in_zone(e.record.name, BENCH_DOMAIN)]
    return owned, foreign


def remove_records(inv) -> str:
    provider = forward_provider(inv, PROVIDER)
    owned, foreign = bench_records(inv)
    if owned:
        provider.apply(ZONE, ZoneChanges(deletes=owned))
    left_owned, left_foreign = bench_records(inv)
    parts = [f"deleted {len(owned)} record(s) owned by '{BENCH_OWNER}'"]
    if left_owned or left_foreign:
        parts.append(f"STILL PRESENT: {[(e.record.name, e.record.type) for e in left_owned + left_foreign]}")
    else:
        parts.append(f"nothing left under {BENCH_DOMAIN}")
    if foreign:
        parts.append(f"(unowned records under {BENCH_DOMAIN} were there and left alone: "
                     f"{[(e.record.name, e.record.type) for e in foreign]})")
    return "; ".join(parts)


def registry_present(inv) -> bool:
    """Whether lab.test still has the bench owner's registry RRset (_mailops-owner-pbench)."""
    import dns.message
    import dns.query
    import dns.rdatatype

    name = f"_mailops-owner-{BENCH_OWNER}.{ZONE}."
    resp = dns.query.udp(dns.message.make_query(name, "TXT"), inv.dns_resolvers[0], timeout=3)
    return any(rr.rdtype == dns.rdatatype.TXT for rr in resp.answer)


# -- machines -----------------------------------------------------------------------
def cached_facts(host: str) -> list[Path]:
    """The host's files in the project's fact cache (ansible-core 2.19 names them s<schema>_<host>)."""
    d = fact_cache_dir()
    if not d.is_dir():
        return []
    return [p for p in d.iterdir() if p.name == host or re.fullmatch(rf"s\d+_{re.escape(host)}", p.name)]


def forget(host: str) -> None:
    """Drop a host's cached facts: forget_facts() only removes <cache>/<host>, not s1_<host>."""
    forget_facts(host)
    for p in cached_facts(host):
        p.unlink(missing_ok=True)


def close_ssh_master(ip: str) -> None:
    """End a ControlPersist master left for this address (it talked to the machine before the reset)."""
    subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={Path.home()}/.ansible/cp/%C", f"root@{ip}"],
                   capture_output=True, timeout=15)


def reset(cfg: LabConfig, numbers: list[int]) -> float:
    t0 = time.monotonic()
    for n in numbers:
        for attempt in range(60):
            try:
                core.reset(cfg, f"vps{n}")
                break
            except MailopsError as e:
                if "another mailops lab operation" not in str(e) or attempt == 59:
                    raise
                time.sleep(2)
        forget(host_name(n))
        close_ssh_master(cfg.vps(n).ipv4)
    return time.monotonic() - t0


# -- converge -------------------------------------------------------------------------
@dataclass
class Run:
    hosts: int
    kind: str      # fresh | no-op
    speed: bool    # with the speed settings
    seconds: float = 0.0
    changed: int = 0
    ok: bool = False
    failures: list[str] = field(default_factory=list)
    changed_tasks: list[str] = field(default_factory=list)
    load: str = ""
    facts_cached: int = 0  # hosts with a fact file in the project's cache after the run
    tasks: int = 0         # task starts (including Gathering Facts when facts were gathered)
    statuses: dict[str, int] = field(default_factory=dict)  # per-host task results: ok/changed/skipped/...
    starts: list[tuple[float, str, str]] = field(default_factory=list)  # (time, role, task)
    end: float = 0.0
    setup_seconds: float | None = None  # one `ansible -m setup` of the same hosts, right after
    other: str = ""        # playbooks/roles of --compare-with (MAILOPS_PROJECT_DIR) instead of this tree's
    variant: str = ""      # "--check --diff" or "--tags X" for the --also-check / --also-tags runs
    setup_ok: bool = False

    def per_role(self) -> dict[str, float]:
        """Seconds from each task's start to the next one's (the last one's to the end), per role."""
        out: dict[str, float] = {}
        for i, (t, role, _task) in enumerate(self.starts):
            nxt = self.starts[i + 1][0] if i + 1 < len(self.starts) else self.end
            key = role or "(play)"
            out[key] = out.get(key, 0.0) + max(0.0, nxt - t)
        return out

    def per_task(self) -> list[tuple[float, str]]:
        rows = []
        for i, (t, role, task) in enumerate(self.starts):
            nxt = self.starts[i + 1][0] if i + 1 < len(self.starts) else self.end
            rows.append((max(0.0, nxt - t), f"{role + ' : ' if role else ''}{task}"))
        return sorted(rows, reverse=True)

    @property
    def label(self) -> str:
        text = f"{self.hosts} host(s) {self.kind:<5} {'with' if self.speed else 'without'} speed settings"
        return text + (" [other]" if self.other else "") + (f" {self.variant}" if self.variant else "")


def _event_time(created: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def time_setup(inv_dir: Path, names: list[str], speed: bool) -> tuple[float, bool]:
    """One bare `ansible <hosts> -m setup` with the project's ansible.cfg and environment (wall s, ok)."""
    env = ansible_env()
    if not speed:
        env.update(SLOW_ENV)
        env.pop("ANSIBLE_STRATEGY", None)
        env.pop("ANSIBLE_STRATEGY_PLUGINS", None)
    cmd = [str(Path(sys.executable).parent / "ansible"), ":".join(names), "-i", str(inv_dir),
           "-m", "ansible.builtin.setup"]
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, cwd=str(project_dir()), stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=600)
    return time.monotonic() - t, p.returncode == 0


def converge(inv_dir: Path, names: list[str], kind: str, speed: bool, setup: bool = False,
             other: str = "", check: bool = False, tags: str | None = None) -> Run:
    env = dict({} if speed else SLOW_ENV, **({"MAILOPS_PROJECT_DIR": other} if other else {}))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    run = Run(len(names), kind, speed, other=other,
              variant=" ".join((["--check --diff"] if check else []) + ([f"--tags {tags}"] if tags else [])))
    log(f"converge: {run.label} ...")
    def on_event(e) -> None:
        if e.status == "start":
            at = _event_time(e.created) or time.time()
            run.starts.append((at, e.role, e.task))
        else:
            run.statuses[e.status] = run.statuses.get(e.status, 0) + 1

    try:
        t = time.monotonic()
        r = apply(inv_dir, on_event=on_event, check=check, diff=check, tags=tags)
        run.seconds = time.monotonic() - t
        run.end = time.time()
        run.tasks = len(run.starts)
        run.changed, run.ok = r.changed, r.ok
        run.failures = [f"{h.host}: {h.failed_task}: {h.failed_message}" for h in r.hosts.values()
                        if h.failed or h.unreachable]
        run.changed_tasks = [f"{host}: {task}" for host, task in r.changed_tasks]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    run.load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    run.facts_cached = sum(1 for h in names if cached_facts(h))
    log(f"  {run.seconds:.1f} s, {run.tasks} tasks, changed {run.changed}, ok {run.ok}, load {run.load}")
    if setup:
        # env: the speed settings of the converge, restored above; time_setup applies them itself
        run.setup_seconds, run.setup_ok = time_setup(inv_dir, names, speed)
        log(f"  ansible -m setup of the same host(s): {run.setup_seconds:.1f} s "
            f"({'ok' if run.setup_ok else 'FAILED'}); no-op / setup = {run.seconds / run.setup_seconds:.2f}")
    for f in run.failures:
        log(f"  ! FAILED {f}")
    if kind == "no-op" and run.changed:
        for t in run.changed_tasks:
            log(f"  ! changed in a no-op run: {t}")
    return run


# -- main ---------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, nargs="*", default=[1, 3], help="host counts, in order (default: 1 3)")
    ap.add_argument("--first-vps", type=int, default=7, help="first lab VPS to use (default 7: vps7..)")
    ap.add_argument("--budget-minutes", type=float, default=35.0,
                    help="skip the fresh converge without speed settings of the largest host count "
                         "when it would not fit (default 35)")
    ap.add_argument("--with-only", action="store_true",
                    help="only the runs with the speed settings: reset, fresh, then --noop-repeat no-op "
                         "converges, each followed by one `ansible -m setup` of the same hosts")
    ap.add_argument("--noop-repeat", type=int, default=1,
                    help="no-op converges (each with its setup run) after the fresh one (default 1)")
    ap.add_argument("--compare-with", metavar="DIR", default="",
                    help="another checkout (e.g. a worktree of the commit before a role change): after each "
                         "no-op converge with this tree's roles, one no-op converge of the same host with DIR's "
                         "playbooks/roles (MAILOPS_PROJECT_DIR=DIR), also followed by one `ansible -m setup`; "
                         "marked [other]. Both trees must converge hosts to the same state (the other tree's "
                         "no-op must change 0)")
    ap.add_argument("--also-check", action="store_true",
                    help="after the no-ops, one `--check --diff` converge (must change 0, as the role tests expect)")
    ap.add_argument("--also-tags", nargs="*", default=[], metavar="TAGS",
                    help="after the no-ops, one no-op converge with --tags TAGS for each (e.g. sasl opendkim postfix)")
    ap.add_argument("--profile", action="store_true",
                    help="print per-role times and the slowest tasks of each converge (profile_roles/"
                         "profile_tasks arithmetic on ansible-runner's task-start events)")
    args = ap.parse_args()
    check_tree()
    if args.compare_with and not (Path(args.compare_with) / "playbooks" / "site.yml").is_file():
        sys.exit(f"--compare-with {args.compare_with}: no playbooks/site.yml there")
    cfg = LabConfig()
    started = time.monotonic()
    budget = args.budget_minutes * 60
    wanted = list(range(args.first_vps, args.first_vps + max(args.hosts)))
    running = {m["name"] for m in core.status(cfg)["machines"] if m["state"] in ("running", "degraded")}
    missing = [f"vps{n}" for n in wanted if f"vps{n}" not in running]
    if missing:
        sys.exit(f"lab machines not running: {', '.join(missing)} (mailops lab up --vps {wanted[-1]})")

    print(f"mailops provisioning benchmark  {datetime.date.today()}  {platform.node()}  "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"tree {ROOT} (mailops from {Path(mailops.__file__).parent}, playbooks/roles from {project_dir()})")
    print(f"machines {', '.join(f'vps{n}' for n in wanted)}; hosts "
          f"{', '.join(host_name(n) for n in wanted)}; domain {BENCH_DOMAIN} in {ZONE}, owner {BENCH_OWNER}")
    print(flush=True)

    runs: list[Run] = []
    skipped: list[str] = []
    resets: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mailops-bench-") as tmp:
        base = Path(tmp)
        keystore = base / "dkim"
        password = base / "bench.password"
        fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(18) + "\n")
        first_inv = load(make_inventory(cfg, wanted[:1], base / "inv-clean", keystore, password))
        before_owned, before_foreign = bench_records(first_inv)
        if before_owned or before_foreign:
            log(f"lab.test held records of an earlier bench run: "
                f"{[(e.record.name, e.record.type) for e in before_owned + before_foreign]}")
            log(f"  {remove_records(first_inv)}")
        try:
            for n in args.hosts:
                numbers = wanted[:n]
                names = [host_name(i) for i in numbers]
                inv_dir = make_inventory(cfg, numbers, base / f"inv{n}", keystore, password)
                inv = load(inv_dir)
                store = KeyStore.for_inventory(inv)
                for domain, settings in inv.domains.items():
                    store.generate(domain, settings.dkim)
                changes = publish(inv, store)
                log(f"{n} host(s): DNS for {BENCH_DOMAIN} published ({changes} change(s))")

                resets.append(reset(cfg, numbers))
                fresh = converge(inv_dir, names, "fresh", True)
                runs.append(fresh)
                for _ in range(max(1, args.noop_repeat)):
                    runs.append(converge(inv_dir, names, "no-op", True, setup=True))
                    if args.compare_with:
                        runs.append(converge(inv_dir, names, "no-op", True, setup=True,
                                             other=str(Path(args.compare_with).resolve())))
                if args.also_check:
                    runs.append(converge(inv_dir, names, "no-op", True, check=True))
                for tags in args.also_tags:
                    runs.append(converge(inv_dir, names, "no-op", True, tags=tags))
                if args.with_only:
                    continue
                runs.append(converge(inv_dir, names, "no-op", False, setup=True))

                if n == max(args.hosts) and n > 1:
                    one_w = next((r for r in runs if r.hosts == 1 and r.kind == "fresh" and r.speed), None)
                    one_o = next((r for r in runs if r.hosts == 1 and r.kind == "fresh" and not r.speed), None)
                    if one_w and one_o and one_w.ok and one_o.ok:
                        estimate = fresh.seconds * one_o.seconds / one_w.seconds
                        basis = (f"{fresh.seconds:.0f} s x the 1-host fresh ratio "
                                 f"{one_o.seconds / one_w.seconds:.2f}")
                    else:
                        estimate = 3 * fresh.seconds
                        basis = f"3 x {fresh.seconds:.0f} s (no 1-host ratio measured)"
                    noop_w = runs[-2].seconds
                    elapsed = time.monotonic() - started
                    need = estimate + noop_w + (sum(resets) / len(resets)) + 30
                    if elapsed + need > budget:
                        skipped.append(
                            f"fresh converge of {n} hosts without speed settings: {elapsed / 60:.1f} min spent, "
                            f"estimated {need / 60:.1f} min more (fresh ~{basis}, then a no-op check) would "
                            f"exceed the {args.budget_minutes:.0f}-min budget")
                        log(f"skipped: {skipped[-1]}")
                        continue
                resets.append(reset(cfg, numbers))
                runs.append(converge(inv_dir, names, "fresh", False))
                runs.append(converge(inv_dir, names, "no-op", True, setup=True))
        finally:
            log(f"DNS clean-up: {remove_records(first_inv)}; owner registry "
                f"{'STILL PRESENT' if registry_present(first_inv) else 'gone'}")

    total = time.monotonic() - started
    print()
    report(runs, skipped, resets, total)
    if args.profile:
        profile(runs)
    return 0 if all(r.ok for r in runs) else 1


def report(runs: list[Run], skipped: list[str], resets: list[float], total: float) -> None:
    print(f"mailops provisioning benchmark  {datetime.date.today()}  {platform.node()}  "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print("every converge of the run, in order (wall s; 'changed' = tasks reported changed; load = "
          "1/5/15-min load average after the run):")
    for r in runs:
        flag = "" if r.ok else "  FAILED"
        setup = ""
        if r.setup_seconds is not None:
            setup = (f"  setup {r.setup_seconds:5.1f} s{'' if r.setup_ok else '!'}  "
                     f"no-op/setup {r.seconds / r.setup_seconds:5.2f}")
        print(f"  {r.label:<52} {r.seconds:7.1f} s  tasks {r.tasks:4d}  changed {r.changed:4d}  "
              f"load {r.load}{flag}{setup}")
    print()
    paired = [r for r in runs if r.kind == "no-op" and r.speed and r.setup_seconds and r.ok and r.setup_ok]

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    for other in sorted({r.other for r in paired}):
        which = f"roles of {other}" if other else "this tree's roles"
        for n in sorted({r.hosts for r in paired if r.other == other}):
            sel = [r for r in paired if r.hosts == n and r.other == other]
            rs = [r.seconds / r.setup_seconds for r in sel]
            med = median(rs)
            print(f"no-op re-converge / one `ansible -m setup` of the same host(s), {n} host(s), with the speed "
                  f"settings, {which}: {', '.join(f'{x:.2f}' for x in rs)} (median {med:.2f}; no-op median "
                  f"{median([r.seconds for r in sel]):.1f} s, setup median {median([r.setup_seconds for r in sel]):.1f} s"
                  f"{'; goal <= 4: ' + ('met' if med <= 4 else 'NOT met') if n == 1 else ''})")
    if paired:
        print()

    def pick(n, kind, speed, nth=0):
        found = [r for r in runs if (r.hosts, r.kind, r.speed) == (n, kind, speed)]
        return found[nth] if len(found) > nth else None

    def cell(r, width=7):
        if r is None:
            return f"{'-':>{width}}"
        text = f"{r.seconds:.1f}" + ("!" if not r.ok else "")
        return f"{text:>{width}}"

    def chg(r):
        return f"{r.changed if r else '-':>4}"

    def ratio(slow, fast):
        if slow is None or fast is None or not (slow.ok and fast.ok) or fast.seconds <= 0:
            return f"{'-':>6}"
        return f"{slow.seconds / fast.seconds:6.2f}"

    print(f"{'':>5}  {'fresh provision (s)':^30}  {'no-op re-converge (s)':^30}")
    print(f"{'hosts':>5}  {'with':>7} {'chg':>4} {'w/o':>7} {'ratio':>6}   "
          f"{'with':>7} {'chg':>4} {'w/o':>7} {'chg':>4} {'ratio':>6}")
    for n in sorted({r.hosts for r in runs}):
        fw, fo = pick(n, "fresh", True), pick(n, "fresh", False)
        nw, no = pick(n, "no-op", True), pick(n, "no-op", False)
        print(f"{n:>5}  {cell(fw)} {chg(fw)} {cell(fo)} {ratio(fo, fw)}   "
              f"{cell(nw)} {chg(nw)} {cell(no)} {chg(no)} {ratio(no, nw)}")
    print("ratio = without / with (how many times longer without the speed settings); '!' = failed run")
    checks = [r for r in runs if r.kind == "no-op"]
    zero = all(r.changed == 0 for r in checks)
    print(f"no-op runs changed: {', '.join(str(r.changed) for r in checks)} "
          f"({'all 0' if zero else 'NOT all 0: see the changed tasks above'})")
    print("with = ansible.cfg as is: mitogen strategy + SSH pipelining + ControlPersist (120 s) + smart gathering "
          "with a jsonfile fact cache; without = linear strategy, no pipelining, ControlMaster=no, implicit "
          "gathering, memory fact cache (MAILOPS_MITOGEN=0 and ANSIBLE_* variables)")
    print(f"second no-op 'with' runs follow the fresh 'without' converges (idempotence of that converge); "
          f"machine resets took {', '.join(f'{s:.0f}' for s in resets)} s (not in the figures); "
          f"whole run {total / 60:.1f} min")
    with_runs = [r for r in runs if r.speed]
    kept = sum(r.facts_cached for r in with_runs)
    print(f"fact cache: after the 'with' converges {fact_cache_dir()} held facts for {kept} of "
          f"{sum(r.hosts for r in with_runs)} host(s)")
    if with_runs and not kept:
        print("  so facts were gathered anew in every converge: ansible-runner sets ANSIBLE_CACHE_PLUGIN=jsonfile "
              "and ANSIBLE_CACHE_PLUGIN_CONNECTION to <private_data_dir>/artifacts/<ident>/fact_cache, and "
              "mailops.ansible.apply() deletes that directory after each run; what 'with' vs 'without' "
              "measured is mitogen + pipelining + ControlPersist")
    for s in skipped:
        print(f"skipped: {s}")
    failed = [r for r in runs if not r.ok]
    for r in failed:
        print(f"FAILED: {r.label}:")
        for f in r.failures or ["(no failing task reported)"]:
            print(f"    {f}")


def profile(runs: list[Run]) -> None:
    print()
    print("per-role time of each converge (s, task start to next task start, summed per role; "
          "'(play)' = fact gathering, pre_tasks and the end of the play):")
    roles: list[str] = []
    for r in runs:
        for k in r.per_role():
            if k not in roles:
                roles.append(k)
    header = "".join(f"{k[:10]:>11}" for k in roles)
    print(f"  {'converge':<52}{header}")
    for r in runs:
        pr = r.per_role()
        print(f"  {r.label:<52}" + "".join(f"{pr.get(k, 0.0):11.1f}" for k in roles))
    shown = set()
    for r in runs:
        if r.kind != "no-op" or not r.speed or r.other in shown:
            continue
        shown.add(r.other)
        results = ", ".join(f"{v} {k}" for k, v in sorted(r.statuses.items()))
        print(f"slowest tasks, {r.label} ({r.tasks} task starts; per-host results {results}; {r.seconds:.1f} s):")
        for sec, name in r.per_task()[:30]:
            print(f"  {sec:6.2f}  {name}")


if __name__ == "__main__":
    sys.exit(main())
