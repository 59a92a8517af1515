"""mailops outside this checkout (issue 16, "install anywhere").

- The wheel carries the roles, playbooks and example inventory; installed into a fresh venv in a
  temporary directory (no checkout anywhere near it), its `mailops` writes a starter inventory,
  checks it, and converges a lab VPS (vps10) in --check mode from an inventory of its own.
- The collection mailops.mailserver is built by `ansible-galaxy collection build`, installed into
  a temporary collections path, and a play runs its postfix role by that name on vps10.
- Without -i the inventory is $MAILOPS_INVENTORY, ./inventory/ or the only ./inventories/NAME/,
  else a one-line error: never the lab's.

The fresh venv's dependencies come from a wheelhouse kept between runs
(~/.cache/mailops/test-wheelhouse, filled from PyPI the first time), so a later run needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from mailops.errors import MailopsError
from mailops.inventory.paths import INVENTORY_ENV, default_inventory
from tests.helpers import HOSTS, LAB_INVENTORY, ROOT, VENV_BIN, copy_inventory

WHEELHOUSE = Path(os.path.expanduser("~/.cache/mailops/test-wheelhouse"))
VPS = 10
VPS_HOST = f"mta{VPS}.shop.test"


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def clean_env(path_first: Path, **extra: str) -> dict[str, str]:
    """This environment without anything that would point mailops back at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in (INVENTORY_ENV, "MAILOPS_PROJECT_DIR", "PYTHONPATH", "VIRTUAL_ENV", "ANSIBLE_CONFIG",
                        "ANSIBLE_ROLES_PATH", "ANSIBLE_COLLECTIONS_PATH")}
    env["PATH"] = f"{path_first}{os.pathsep}/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    return {**env, **extra}


def tracked(*dirs: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *dirs], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if "__pycache__" not in p and (ROOT / p).is_file()]


# -- the wheel ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    ok(run([VENV_BIN / "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT], cwd=out,
           env=clean_env(VENV_BIN), timeout=300))
    (whl,) = out.glob("mailops-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv (Debian's python, no site packages) with the wheel installed; returns its bin/."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    ok(run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], cwd=venv.parent,
           env=clean_env(VENV_BIN)))
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    env = clean_env(venv / "bin")
    offline = run([*pip, "--no-index", "--find-links", WHEELHOUSE, wheel], cwd=venv.parent, env=env, timeout=900)
    if offline.returncode != 0:  # first run, or a new dependency: fetch what is missing from PyPI once
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        for stale in WHEELHOUSE.glob("mailops-*.whl"):  # pip download would read the old one's dependencies
            stale.unlink()
        ok(run([venv / "bin" / "python", "-m", "pip", "download", "-q", "--disable-pip-version-check",
                "-d", WHEELHOUSE, wheel], cwd=venv.parent, env=env, timeout=900))
        ok(run([*pip, "--no-index", "--find-links", WHEELHOUSE, wheel], cwd=venv.parent, env=env, timeout=900))
    return venv / "bin"


def test_wheel_carries_every_role_and_playbook_file(wheel):
    """Nothing lost on the way into the wheel: argument specs, handlers, templates, files, filter
    plugins, byte for byte; and the example inventory `mailops init` starts from."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        expected = tracked("roles", "playbooks") + ["ansible.cfg"]
        missing = [p for p in expected if f"mailops/{p}" not in names]
        assert not missing, f"not in the wheel: {missing}"
        changed = [p for p in expected if zf.read(f"mailops/{p}") != (ROOT / p).read_bytes()]
        assert not changed, f"differ in the wheel: {changed}"
        for part in ("meta/argument_specs.yml", "handlers/main.yml", "templates/main.cf.j2"):
            assert f"mailops/roles/postfix/{part}" in names
        assert "mailops/roles/policyd/files/mailops-policyd" in names
        for p in tracked("inventories/example"):
            assert "mailops/example_inventory/" + p.removeprefix("inventories/example/") in names
        assert "mailops/collection_meta/galaxy.yml" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_mailops_runs_from_the_package_not_a_checkout(installed, tmp_path):
    where = ok(run([installed / "python", "-c", "import mailops, mailops.ansible as a; "
                    "print(mailops.__file__); print(a.project_dir())"], cwd=tmp_path, env=clean_env(installed)))
    module, project = where.stdout.split()
    assert str(ROOT) not in module and str(ROOT) not in project, where.stdout
    assert Path(project) == Path(module).parent and (Path(project) / "roles/postfix/meta/argument_specs.yml").is_file()


def test_installed_init_writes_a_starter_that_checks_once_secrets_are_given(installed, tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(), home.mkdir()
    env = clean_env(installed, HOME=str(home))
    init = ok(run([installed / "mailops", "init", "my-inventory", "--domain", "Shop.Example", "--host",
                   "mail.shop.example", "--ipv4", "192.0.2.7", "--ipv6", "2001:db8::7"], cwd=work, env=env))
    assert init.stdout.startswith("my-inventory: starter inventory for shop.example, host mail.shop.example\n")
    inv = work / "my-inventory"
    hosts, settings = (inv / "hosts.yml").read_text(), (inv / "group_vars/all/mailops.yml").read_text()
    assert "mail.shop.example:" in hosts and "ansible_host: 192.0.2.7" in hosts and '"2001:db8::7"' in hosts
    assert "example.com" not in hosts + settings and "mta2" not in hosts
    assert "shop.example:\n    # dns_provider (required)" in settings  # the comments stay
    # the schema part passes; what is left are the secrets, each named with what to do
    check = run([installed / "mailops", "inventory", "check", "my-inventory"], cwd=work, env=env)
    assert check.returncode == 1
    left = check.stdout.splitlines()
    assert left and all(": secret {" in line for line in left), check.stdout
    assert any("export it" in line and "CLOUDFLARE_API_TOKEN" in line for line in left)
    assert sorted(left) == sorted(line.strip() for line in init.stdout.splitlines()[2:-1])
    # provide them as told: variables exported, files created (under this HOME)
    cfg = home / ".config/mailops"
    cfg.mkdir(parents=True)
    (cfg / "hcloud.token").write_text("not-a-real-token\n")
    (cfg / "returnpath.key").write_text("00" * 32 + "\n")
    os.chmod(cfg / "returnpath.key", 0o600)
    env.update(CLOUDFLARE_API_TOKEN="t", MAILOPS_APP_PASSWORD="p", MAILOPS_GMAIL_APP_PASSWORD="g")
    clean = ok(run([installed / "mailops", "inventory", "check", "my-inventory"], cwd=work, env=env))
    assert clean.stdout == "my-inventory: OK (1 host, 1 domain)\n"
    # ./inventory is the default inventory when nothing else names one
    inv.rename(work / "inventory")
    assert ok(run([installed / "mailops", "inventory", "check"], cwd=work, env=env)).stdout == \
        "inventory: OK (1 host, 1 domain)\n"
    # never over an existing directory
    again = run([installed / "mailops", "init", "inventory", "--domain", "other.example"], cwd=work, env=env)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == ("mailops: error: inventory: already exists; mailops init never overwrites, "
                            "choose a new directory\n")
    assert "other.example" not in (work / "inventory/group_vars/all/mailops.yml").read_text()


@pytest.mark.lab
def test_installed_provision_apply_check_on_a_lab_vps(installed, lab_cfg, tmp_path):
    from tests.mailhost import ensure_lab_vps

    ensure_lab_vps(lab_cfg, VPS)
    work = tmp_path / "work"
    work.mkdir()

    def aim_at_vps(hosts: dict) -> None:
        mailhosts = hosts["all"]["children"]["mailhosts"]["hosts"]
        (entry,) = mailhosts.values()
        entry.update(ansible_host=f"198.51.100.{10 + VPS}", mailops_ipv4=f"198.51.100.{10 + VPS}",
                     mailops_ipv6=f"2001:db8:51::{10 + VPS}")
        mailhosts.clear()
        mailhosts[VPS_HOST] = entry

    copy_inventory(work / "my-inventory", hosts=aim_at_vps)
    env = clean_env(installed)
    ok(run([installed / "mailops", "inventory", "check", "my-inventory"], cwd=work, env=env))
    proc = ok(run([installed / "mailops", "provision", "apply", "-i", "./my-inventory", "--check", "--json"],
                  cwd=work, env=env, timeout=900))
    result = json.loads(proc.stdout)
    assert result["ok"] and result["check"] and set(result["hosts"]) == {VPS_HOST}, result
    host = result["hosts"][VPS_HOST]
    assert host["failed"] == 0 and host["unreachable"] == 0 and host["ok"] > 50, host


# -- the collection ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def collection_tarball(tmp_path_factory) -> Path:
    from mailops.collection import build

    return build(tmp_path_factory.mktemp("collection"))


def test_collection_carries_every_role_and_playbook_file(collection_tarball):
    with tarfile.open(collection_tarball) as tf:
        names = set(tf.getnames())
        manifest = json.load(tf.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["namespace"] == "mailops" and manifest["collection_info"]["name"] == "mailserver"
    filters = {p for p in tracked("roles") if "/filter_plugins/" in p}
    missing = [p for p in tracked("roles", "playbooks") if p not in names and p not in filters]
    assert not missing, f"not in the collection: {missing}"
    assert {f"plugins/filter/{Path(p).name}" for p in filters} <= names
    assert {"roles/postfix/meta/argument_specs.yml", "roles/postfix/handlers/main.yml", "meta/runtime.yml",
            "roles/policyd/files/mailops-policyd"} <= names


@pytest.mark.lab
def test_collection_role_runs_by_its_collection_name(collection_tarball, lab_cfg, tmp_path):
    """Installed with ansible-galaxy into a collections path of its own, run from a directory with no
    ansible.cfg and an empty roles path: only the collection can provide the role."""
    from tests.mailhost import ensure_lab_vps

    ensure_lab_vps(lab_cfg, VPS)
    cols, noroles = tmp_path / "collections", tmp_path / "no-roles"
    noroles.mkdir()
    env = clean_env(VENV_BIN, ANSIBLE_COLLECTIONS_PATH=str(cols), ANSIBLE_ROLES_PATH=str(noroles),
                    ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="True")
    ok(run([VENV_BIN / "ansible-galaxy", "collection", "install", "-p", cols, collection_tarball], cwd=tmp_path,
           env=env))
    inv = tmp_path / "inventory"
    shutil.copytree(LAB_INVENTORY, inv)
    (inv / HOSTS).write_text((inv / HOSTS).read_text().replace("mta1.shop.test", VPS_HOST)
                             .replace("198.51.100.11", f"198.51.100.{10 + VPS}")
                             .replace("2001:db8:51::11", f"2001:db8:51::{10 + VPS}"))
    play = tmp_path / "play.yml"
    play.write_text("- hosts: mailhosts\n  become: true\n  roles:\n    - mailops.mailserver.postfix\n")
    ok(run([VENV_BIN / "ansible-playbook", "-i", inv, "mailops.mailserver.site", "--syntax-check"], cwd=tmp_path,
           env=env))
    proc = run([VENV_BIN / "ansible-playbook", "-i", inv, play, "--check"], cwd=tmp_path, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count("TASK [mailops.mailserver.postfix : ") > 5, out[-3000:]
    recap = out.split("PLAY RECAP", 1)[1]
    assert f"{VPS_HOST}" in recap and "failed=0" in recap and "unreachable=0" in recap
    # the same play with the collection gone: the role is not found anywhere else
    shutil.rmtree(cols)
    gone = run([VENV_BIN / "ansible-playbook", "-i", inv, play, "--syntax-check"], cwd=tmp_path, env=env)
    assert gone.returncode != 0 and "mailops.mailserver.postfix" in gone.stdout + gone.stderr


# -- the default inventory ---------------------------------------------------------------------------
def test_default_inventory_order(tmp_path, monkeypatch):
    monkeypatch.delenv(INVENTORY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MailopsError, match=r"^no inventory chosen: pass -i DIR, set MAILOPS_INVENTORY=DIR, .*"
                                           r"`mailops init ./inventory"):
        default_inventory()  # never the checkout's lab inventory
    (tmp_path / "inventories" / "prod").mkdir(parents=True)
    (tmp_path / "inventories" / ".hidden").mkdir()
    assert default_inventory() == tmp_path / "inventories" / "prod"
    (tmp_path / "inventories" / "staging").mkdir()
    with pytest.raises(MailopsError, match=r"^no inventory chosen and ./inventories/ holds several \(prod, staging\); "
                                           r"pass -i NAME or set MAILOPS_INVENTORY=NAME$"):
        default_inventory()
    (tmp_path / "inventory").mkdir()
    assert default_inventory() == tmp_path / "inventory"
    monkeypatch.setenv(INVENTORY_ENV, "staging")  # a NAME under ./inventories/
    assert default_inventory() == tmp_path / "inventories" / "staging"
    monkeypatch.setenv(INVENTORY_ENV, str(LAB_INVENTORY))
    assert default_inventory() == LAB_INVENTORY


def test_commands_without_inventory_say_how_to_choose_one(tmp_path):
    env = clean_env(VENV_BIN)
    for args in (["dns", "plan"], ["provision", "apply", "--check"], ["inventory", "check"], ["verify"]):
        proc = run([VENV_BIN / "mailops", *args], cwd=tmp_path, env=env, timeout=120)
        assert proc.returncode == 1 and proc.stdout == "", (args, proc.stdout)
        assert proc.stderr.startswith("mailops: error: no inventory chosen: pass -i DIR, set MAILOPS_INVENTORY=DIR")
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
    # the checkout's root has two (example, lab): not silently either of them
    proc = run([VENV_BIN / "mailops", "dns", "plan"], cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stderr == (
        "mailops: error: no inventory chosen and ./inventories/ holds several (example, lab); "
        "pass -i NAME or set MAILOPS_INVENTORY=NAME\n")


def test_mailops_inventory_env_names_the_default(tmp_path):
    proc = run([VENV_BIN / "mailops", "inventory", "check"], cwd=tmp_path,
               env=clean_env(VENV_BIN, MAILOPS_INVENTORY=str(tmp_path / "nowhere")), timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.startswith("nowhere: (directory): inventory directory does not exist"), proc.stdout


def test_init_refuses_bad_options_in_one_line(tmp_path):
    env = clean_env(VENV_BIN)
    for args, message in ((["--domain", "bad domain"], "--domain 'bad domain': "),
                          (["--ipv4", "2001:db8::1"], "--ipv4 '2001:db8::1': not an IPv4 address"),
                          (["--ipv4", "10.0.0.1"], "the starter inventory does not check clean (x/hosts.yml:")):
        proc = run([VENV_BIN / "mailops", "init", "x", *args], cwd=tmp_path, env=env, timeout=120)
        assert proc.returncode == 1 and proc.stderr.startswith(f"mailops: error: {message}"), proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
        assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
