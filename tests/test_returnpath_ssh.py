"""`mailops suppressions add/list/remove` over real SSH to a lab VPS (vps9): the return-path
package copied to the host the way the returnpath role lays it out
(/usr/local/lib/mailops-returnpath/mailops/..., state in /var/lib/mailops-returnpath owned by
mailops-rp, 0700), hostcli run there by the controller as that user through Fabric."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from mailops.lab import core
from tests.helpers import HOSTS, ROOT, SETTINGS, mailops, write_yaml
from tests.mailhost import ensure_lab_vps

pytestmark = pytest.mark.lab

NUMBER = 9
CODE = ["mailops/__init__.py", "mailops/errors.py", "mailops/ops/__init__.py", "mailops/ops/postfixlines.py"]


def package_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        files = CODE + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "mailops" / "returnpath").glob("*.py"))
        for rel in files:
            tar.add(ROOT / rel, arcname=rel)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vps(lab_cfg, tmp_path_factory):
    ensure_lab_vps(lab_cfg, NUMBER)
    name = f"vps{NUMBER}"
    setup = ("set -e; id mailops-rp >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "
             "mailops-rp; rm -rf /usr/local/lib/mailops-returnpath /var/lib/mailops-returnpath; "
             "mkdir -p /usr/local/lib/mailops-returnpath; tar -x -C /usr/local/lib/mailops-returnpath; "
             "chmod -R go-w,a+rX /usr/local/lib/mailops-returnpath; "
             "install -d -o mailops-rp -g mailops-rp -m 0700 /var/lib/mailops-returnpath")
    proc = core.ssh_run(lab_cfg, name, setup, input=package_tar())
    assert proc.returncode == 0, proc.stderr
    work = tmp_path_factory.mktemp("rp-ssh")
    inv = work / "inventory"
    ssh = lab_cfg.state_dir / "ssh"
    ipv4, ipv6 = f"198.51.100.{10 + NUMBER}", f"2001:db8:51::{10 + NUMBER}"
    write_yaml(inv / HOSTS, {"all": {"children": {"mailhosts": {"hosts": {f"mta{NUMBER}.shop.test": {
        "ansible_host": ipv4, "ansible_user": "root", "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=yes",
        "mailops_ipv4": ipv4, "mailops_ipv6": ipv6}}}}}})
    key = work / "rp.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    write_yaml(inv / SETTINGS, {
        "mailops_dkim_keystore": str(work / "keys"),
        "mailops_domains": {"shop.test": {"dns_provider": "lab"}},
        "mailops_dns_providers": {"lab": {"type": "rfc2136", "server": lab_cfg.gateway_ipv4,
                                          "tsig_key_name": "mailops-lab.",
                                          "tsig_secret": {"file": str(lab_cfg.state_dir / "dns/tsig.secret")}}},
        "mailops_return_path": {"key": {"file": str(key)}, "operator_email": "postmaster@inbox.test"}})
    yield inv
    core.ssh_run(lab_cfg, name, "rm -rf /usr/local/lib/mailops-returnpath /var/lib/mailops-returnpath; "
                                "userdel mailops-rp 2>/dev/null || true")


def test_suppressions_add_list_remove_over_ssh(vps, lab_cfg):
    host = f"mta{NUMBER}.shop.test"
    added = json.loads(mailops("suppressions", "add", "Gone@Example.org", "--detail", "lab test", "--json",
                               "-i", str(vps), timeout=120).stdout)
    assert added["applied"] == [host] and added["unreachable"] == {}
    assert added["entry"]["target"] == "gone@example.org" and added["entry"]["origin"]
    listing = json.loads(mailops("suppressions", "list", "--json", "-i", str(vps), timeout=120).stdout)
    assert [(e["target"], e["cause"], e["hosts"]) for e in listing["entries"]] == [
        ("gone@example.org", "manual", [host])]
    # the sqlite files belong to the service user, not to root who logged in
    owners = core.ssh_run(lab_cfg, f"vps{NUMBER}", "stat -c '%U %a %n' /var/lib/mailops-returnpath "
                                                   "/var/lib/mailops-returnpath/*").stdout.split("\n")
    assert all(line.startswith("mailops-rp ") for line in owners if line.strip()), owners
    removed = json.loads(mailops("suppressions", "remove", "gone@example.org", "--json", "-i", str(vps),
                                 timeout=120).stdout)
    assert removed["removed"] is True and removed["held_by"] == [host]
    assert json.loads(mailops("suppressions", "list", "--json", "-i", str(vps), timeout=120).stdout)["entries"] == []
