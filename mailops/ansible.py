"""Running the project's playbooks with ansible-runner, as data.

ansible-runner drives ansible-playbook in a private, throw-away data
directory (0700, removed afterwards) so that no task output, which may hold
secrets despite no_log, is left behind as artifacts.  Events are turned into
small records for the caller (the CLI renders them live with rich).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from mailops.errors import MailopsError


PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The directory holding playbooks/, roles/ and ansible.cfg: MAILOPS_PROJECT_DIR when set, else
    the installed package (a wheel carries them inside mailops/, see setup.py), else the checkout
    this package runs from (an editable install, CI)."""
    env = os.environ.get("MAILOPS_PROJECT_DIR")
    if env:
        root = Path(env)
        if not (root / "playbooks" / "site.yml").exists():
            raise MailopsError(f"{root}: no playbooks/site.yml here; fix or unset MAILOPS_PROJECT_DIR")
        return root
    for root in (PACKAGE_DIR, PACKAGE_DIR.parent):
        if (root / "playbooks" / "site.yml").exists():
            return root
    raise MailopsError(f"{PACKAGE_DIR}: the playbooks are neither in the installed package nor in a checkout "
                       "beside it; reinstall mailops from a wheel, or set MAILOPS_PROJECT_DIR to a mailops checkout")


def package_vars() -> dict[str, str]:
    """Variables the roles need to find this package's own files. roles/returnpath copies the
    return-path code from {{ role_path }}/../../mailops, the package beside roles/ in a checkout;
    in an installed wheel roles/ sits inside the package, so it is named here (as an extra var:
    the code copied is always that of the mailops running the converge)."""
    if (project_dir() / "mailops" / "returnpath").is_dir():
        return {}
    return {"returnpath_source_dir": str(PACKAGE_DIR)}


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


def mitogen_strategy_dir() -> str | None:
    """Mitogen's strategy plugins, when installed and not disabled (MAILOPS_MITOGEN=0).

    Mitogen keeps one Python interpreter per host alive for the whole run
    instead of shipping and starting a module per task: measured here, a no-op
    converge of one host went from ~75 s to ~28 s."""
    if os.environ.get("MAILOPS_MITOGEN", "1") in ("0", "false", "no"):
        return None
    try:
        import ansible_mitogen
    except ImportError:
        return None
    path = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return str(path) if path.is_dir() else None


def mitogen_env() -> dict[str, str]:
    """The environment that makes ansible-playbook use mitogen's strategy ({} without mitogen)."""
    strategies = mitogen_strategy_dir()
    return {"ANSIBLE_STRATEGY_PLUGINS": strategies, "ANSIBLE_STRATEGY": "mitogen_linear"} if strategies else {}


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    if "ANSIBLE_STRATEGY" not in env:
        env.update(mitogen_env())
    env["ANSIBLE_CONFIG"] = str(project_dir() / "ansible.cfg")
    env["ANSIBLE_ROLES_PATH"] = str(project_dir() / "roles")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["PATH"] = _venv_bin() + os.pathsep + env.get("PATH", "")
    return env


# -- converge ----------------------------------------------------------------
@dataclass
class TaskEvent:
    host: str
    task: str
    status: str  # ok | changed | failed | skipped | unreachable | start
    duration: float = 0.0
    message: str = ""
    role: str = ""       # the role the task belongs to ("" for play-level tasks)
    created: str = ""    # the event's timestamp as ansible-runner records it (ISO 8601, UTC)


@dataclass
class HostSummary:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failed_task: str = ""
    failed_message: str = ""


@dataclass
class ApplyResult:
    rc: int
    status: str
    seconds: float
    hosts: dict[str, HostSummary] = field(default_factory=dict)
    changed_tasks: list[tuple[str, str]] = field(default_factory=list)
    check: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and all(h.failed == 0 and h.unreachable == 0 for h in self.hosts.values())

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    def to_dict(self) -> dict:
        return {"rc": self.rc, "status": self.status, "ok": self.ok, "check": self.check, "seconds": self.seconds,
                "changed": self.changed, "hosts": {k: asdict(v) for k, v in self.hosts.items()},
                "changed_tasks": [list(t) for t in self.changed_tasks]}


def _failure_message(res: dict) -> str:
    if res.get("censored"):
        return str(res["censored"])
    for key in ("msg", "stderr", "module_stderr", "stdout"):
        val = res.get(key)
        if val:
            text = " ".join(str(val).split())
            return text[:400]
    return "failed (no message)"


def apply(inventory: Path, *, playbook: str = "playbooks/site.yml", check: bool = False, diff: bool = False,
          limit: str | None = None, tags: str | None = None, extravars: dict | None = None,
          on_event: Callable[[TaskEvent], None] | None = None) -> ApplyResult:
    """Converge hosts of an inventory; returns per-host stats (no secret ever stored)."""
    import ansible_runner

    on_event = on_event or (lambda e: None)
    inventory = Path(inventory).resolve()
    if not inventory.exists():
        raise MailopsError(f"{inventory}: inventory not found")
    cmdline = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    if tags:
        cmdline += ["--tags", tags]
    result = ApplyResult(rc=-1, status="", seconds=0.0, check=check)
    current_task = {"name": ""}

    def handle(event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {}) or {}
        host = data.get("host") or data.get("remote_addr") or ""
        if kind == "playbook_on_task_start":
            current_task["name"] = data.get("task", "")
            on_event(TaskEvent("", current_task["name"], "start", role=data.get("role", "") or "",
                               created=event.get("created", "") or ""))
        elif kind.startswith("runner_on_") and host:
            summary = result.hosts.setdefault(host, HostSummary(host))
            res = data.get("res") or {}
            task = data.get("task", current_task["name"])
            duration = float(data.get("duration") or 0.0)
            if kind == "runner_on_ok":
                status = "changed" if res.get("changed") else "ok"
                if status == "changed":
                    result.changed_tasks.append((host, task))
            elif kind == "runner_on_failed":
                status = "ok" if data.get("ignore_errors") else "failed"
                if status == "failed":
                    summary.failed_task, summary.failed_message = task, _failure_message(res)
            elif kind == "runner_on_unreachable":
                status = "unreachable"
                summary.failed_task, summary.failed_message = task, _failure_message(res)
            elif kind == "runner_on_skipped":
                status = "skipped"
            else:
                return False
            on_event(TaskEvent(host, task, status, duration,
                               summary.failed_message if status in ("failed", "unreachable") else "",
                               role=data.get("role", "") or "", created=event.get("created", "") or ""))
        elif kind == "playbook_on_stats":
            for key, attr in (("ok", "ok"), ("changed", "changed"), ("failures", "failed"),
                              ("dark", "unreachable"), ("skipped", "skipped")):
                for host, count in (data.get(key) or {}).items():
                    setattr(result.hosts.setdefault(host, HostSummary(host)), attr, count)
        # Returning False keeps events (and any task output) out of the artifact directory.
        return False

    # ansible-runner finds ansible-playbook on PATH: make it the one beside us.
    os.environ["PATH"] = ansible_env()["PATH"]
    private = Path(tempfile.mkdtemp(prefix="mailops-runner-"))
    os.chmod(private, 0o700)
    t0 = time.monotonic()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private), project_dir=str(project_dir()), playbook=str(project_dir() / playbook),
            inventory=str(inventory), cmdline=" ".join(cmdline) or None, limit=limit,
            extravars={**package_vars(), **(extravars or {})},
            envvars={k: v for k, v in ansible_env().items() if k.startswith("ANSIBLE_")},
            quiet=True, event_handler=handle, suppress_env_files=True,
            # ansible-runner points the fact cache into its artifact directory, which is removed
            # after the run; an absolute path keeps ansible.cfg's cache between runs
            fact_cache=str(fact_cache_dir()),
        )
        result.rc, result.status = runner.rc, runner.status
        if runner.rc != 0 and not any(h.failed or h.unreachable for h in result.hosts.values()):
            # ansible-playbook failed before any task (syntax error, bad inventory, ...)
            tail = _last_stdout_line(runner)
            result.hosts.setdefault("(playbook)", HostSummary("(playbook)", failed=1, failed_task="(start)",
                                                              failed_message=tail))
    finally:
        shutil.rmtree(private, ignore_errors=True)
    result.seconds = round(time.monotonic() - t0, 1)
    return result


def _last_stdout_line(runner) -> str:
    try:
        lines = [l.strip() for l in runner.stdout.read().splitlines() if l.strip()]
    except Exception:
        return f"ansible-playbook exited with {runner.rc}"
    for line in reversed(lines):
        if "ERROR" in line or "error" in line:
            return line[:400]
    return (lines[-1] if lines else f"ansible-playbook exited with {runner.rc}")[:400]


def fact_cache_dir() -> Path:
    return Path(os.path.expanduser("~/.cache/mailops/ansible-facts"))


def _fact_files(host: str) -> list[Path]:
    """The host's files in the fact cache: ansible-core 2.19 names them s1_<host> (a schema
    prefix), older versions <host>."""
    cache = fact_cache_dir()
    if not cache.is_dir():
        return []
    return [path for path in cache.iterdir()
            if path.name == host or re.fullmatch(r"s\d+_" + re.escape(host), path.name)]


def forget_facts(host: str) -> None:
    """Drop cached facts of a host (a fresh or re-installed server must be looked at anew)."""
    for path in _fact_files(host):
        path.unlink(missing_ok=True)


def cached_host_keys(host: str) -> set[tuple[str, str]]:
    """The SSH host keys (type, base64) the host had when its facts were cached; empty if none are."""
    keys = set()
    for path in _fact_files(host):
        try:
            facts = json.loads(path.read_text())
            if isinstance(facts, dict) and isinstance(facts.get("__payload__"), str):
                facts = json.loads(facts["__payload__"])  # ansible-core 2.19's s1 format wraps the facts
        except (OSError, ValueError):
            continue
        if not isinstance(facts, dict):
            continue
        for kind in ("ed25519", "ecdsa", "rsa", "dsa"):
            key, keytype = facts.get(f"ansible_ssh_host_key_{kind}_public"), facts.get(
                f"ansible_ssh_host_key_{kind}_public_keytype")
            if isinstance(key, str) and isinstance(keytype, str):
                keys.add((keytype, key))
    return keys
