"""`provision new-vps --create` and `provision destroy`: a mail host from nothing and back.

Without the lab: the inventory write (comments kept, atomic), servers through the official
hcloud library against the emulator (its servers only data), the destroy plan and apply
on a two-host inventory whose zone and PTRs live in the emulator, hostile input as one line.

On the lab (marked lab): the emulator's servers are real lab machines (mailops/lab/cloud.py).
The CLI creates mta9.shop.test from nothing (an inventory entry with placeholder addresses, as
`mailops init` writes it) to a converged and verified server (live send included), a second
run continues with the same server, and destroy removes the server, its PTRs, its DNS and its
inventory entry, leaving the lab's DNS as the lab inventory has it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from mailops.cloud import MANAGED_LABEL, HostKeyPair, ServerSpec
from mailops.cloud.hcloud import HcloudServers
from mailops.cloud.lifecycle import apply_destroy, plan_destroy
from mailops.dkim.store import KeyStore
from mailops.dns.sync import apply_plan, make_plan
from mailops.errors import MailopsError
from mailops.inventory import hostsfile, load
from mailops.lab import hcloudemu
from tests.helpers import LAB_INVENTORY, copy_inventory, mailops, venv_env

TOKEN = "mailops-create-token-Xq81-abcdefghijklmnopqrstuvwxyz"
ZONE = "shop.example"
LAB_KEY = Path("/var/lib/mailops/lab/ssh/id_ed25519")


@pytest.fixture
def api():
    emulator = hcloudemu.HcloudEmulator()  # servers are data only (PaperBackend)
    emulator.add_token(TOKEN)
    emulator.add_zone(ZONE)
    server, url = hcloudemu.serve(emulator)
    yield emulator, url
    hcloudemu.shutdown(server)


def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def write_inventory(tmp_path: Path, url: str, hosts: dict[str, str]) -> Path:
    """A small inventory on disk: hosts (name -> IPv4), one domain in the emulator's zone, PTRs there."""
    inv = tmp_path / "inv"
    (inv / "group_vars/all").mkdir(parents=True)
    token = tmp_path / "hcloud.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    lines = ["# the fleet", "all:", "  children:", "    mailhosts:", "      vars:",
             f'        ansible_ssh_common_args: "-o UserKnownHostsFile={tmp_path}/known_hosts"',
             "      hosts:"]
    for name, ipv4 in hosts.items():
        lines += [f"        {name}:  # {name.split('.')[0]}", f"          ansible_host: {ipv4}",
                  f"          mailops_ipv4: {ipv4}", f'          mailops_ipv6: "2001:db8:5100:{ipv4.split(".")[-1]}::1"',
                  "          mailops_reverse_dns_provider: hz"]
    (inv / "hosts.yml").write_text("\n".join(lines) + "\n")
    (inv / "group_vars/all/mailops.yml").write_text(f"""\
mailops_dkim_keystore: {tmp_path}/keys
mailops_domains:
  {ZONE}:
    dns_provider: hz-dns
    dmarc:
      policy: reject
mailops_dns_providers:
  hz-dns:
    type: hetzner
    api_token: {{file: {token}}}
    api_base_url: {url}
mailops_reverse_dns_providers:
  hz:  # creates servers and sets their PTRs
    type: hcloud
    api_token: {{file: {token}}}
    api_base_url: {url}
""")
    KeyStore(tmp_path / "keys").generate(ZONE)
    return inv


# --- the inventory write --------------------------------------------------------------------

def test_inventory_write_keeps_comments_and_order_and_removal_restores_the_file(tmp_path):
    inv = copy_inventory(tmp_path / "inv")
    original = (inv / "hosts.yml").read_text()
    path = hostsfile.upsert_host(inv, "mta9.shop.test", {
        "ansible_host": "198.51.100.39", "ansible_user": "root", "mailops_ipv4": "198.51.100.39",
        "mailops_ipv6": "2001:db8:51::39"}, comment="hcloud server 7")
    text = path.read_text()
    assert path == inv / "hosts.yml" and text.startswith(original.rstrip("\n"))  # every line kept, in order
    assert "        mta9.shop.test:  # hcloud server 7\n          ansible_host: 198.51.100.39\n" in text
    assert 'mailops_ipv6: "2001:db8:51::39"' in text  # quoted: YAML 1.1 could read an IPv6 as a number
    hostsfile.upsert_host(inv, "mta9.shop.test", {"mailops_ipv6": None, "ansible_host": "198.51.100.40"})
    host = load(inv).host("mta9.shop.test")  # Ansible's view and mailops' agree on the entry
    assert (str(host.ipv4), host.ssh_host, host.ipv6) == ("198.51.100.39", "198.51.100.40", None)
    assert "# Only ever trust the host keys the lab recorded" in path.read_text()
    assert hostsfile.remove_host(inv, "mta9.shop.test") == path
    assert path.read_text() == original
    assert hostsfile.remove_host(inv, "mta9.shop.test") is None


def test_inventory_write_is_atomic(tmp_path, monkeypatch):
    inv = copy_inventory(tmp_path / "inv")
    (inv / "hosts.yml").chmod(0o640)
    original = (inv / "hosts.yml").read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hostsfile.os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        hostsfile.upsert_host(inv, "mta9.shop.test", {"ansible_host": "198.51.100.39"})
    assert (inv / "hosts.yml").read_bytes() == original
    assert sorted(p.name for p in inv.iterdir()) == ["README.md", "group_vars", "hosts.yml"]  # no temp file left
    monkeypatch.undo()
    hostsfile.upsert_host(inv, "mta9.shop.test", {"ansible_host": "198.51.100.39"})
    assert (inv / "hosts.yml").stat().st_mode & 0o777 == 0o640


# --- servers through the official library -----------------------------------------------------

def test_server_is_created_with_key_and_host_key_found_and_deleted(api, tmp_path):
    emulator, url = api
    servers = HcloudServers("hz", TOKEN, url)
    pub = ssh_key(tmp_path).with_suffix(".pub").read_text()
    host_key = HostKeyPair.generate("root@mta9.shop.example")
    server = servers.create(ServerSpec("mta9.shop.example", image="debian-13", ssh_public_key=pub,
                                       host_key=host_key, ipv6=False))
    assert (server.status, server.image, server.ipv6_network, server.managed) == ("running", "debian-13", None, True)
    assert servers.find("mta9.shop.example") == server
    posted = [p for m, p, s in emulator.request_log() if m == "POST"]
    assert posted == ["/v1/ssh_keys", "/v1/servers"]
    # the host key goes in cloud-init user_data; the private key is nowhere else
    import hcloud
    client = hcloud.Client(TOKEN, api_endpoint=url)
    assert client.servers.get_by_name("mta9.shop.example").labels == dict([MANAGED_LABEL])
    assert "ssh_genkeytypes: []" in host_key.cloud_config() and host_key.public in host_key.cloud_config()
    # a second server reuses the uploaded key (by fingerprint)
    servers.create(ServerSpec("mta8.shop.example", ssh_public_key=pub))
    assert len(client.ssh_keys.get_all()) == 1
    servers.delete(server)
    assert servers.find("mta9.shop.example") is None and emulator.server_status("mta8.shop.example") == "running"


@pytest.mark.parametrize("args, needle", [
    (["--server-type", "cx999"], "server_type 'cx999' does not exist; choose one of cpx11, cpx21, cx22, cx32"),
    (["--location", "mars1"], "location 'mars1' does not exist; choose one of fsn1, hel1, nbg1"),
    (["--image", "windows-11"], "image 'windows-11' does not exist; choose one of debian-12, debian-13"),
])
def test_hostile_create_input_is_one_line_and_creates_nothing(api, tmp_path, args, needle):
    emulator, url = api
    inv = write_inventory(tmp_path, url, {"mta1.shop.example": "198.51.100.200"})
    key = ssh_key(tmp_path)
    proc = mailops("provision", "new-vps", "mta9.shop.example", "--create", "--provider", "hz", "-i", str(inv),
                   "--ssh-key", str(key), *args, check=False, timeout=120, env=venv_env(COLUMNS="300"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [f"mailops: error: hcloud provider 'hz': {needle}"] == proc.stderr.strip().splitlines()[-1:]
    assert emulator.server_status("mta9.shop.example") is None


def test_bad_name_and_missing_token_are_one_line(api, tmp_path, monkeypatch):
    emulator, url = api
    inv = write_inventory(tmp_path, url, {"mta1.shop.example": "198.51.100.200"})
    wide = venv_env(COLUMNS="300")
    proc = mailops("provision", "new-vps", "Bad_Name", "--create", "-i", str(inv), check=False, env=wide)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "mailops: error: host name 'Bad_Name' must be the server's fully qualified name in lower case (letters, "
        "digits, hyphens; at least two labels), e.g. mta2.example.org"]
    settings = inv / "group_vars/all/mailops.yml"
    settings.write_text(settings.read_text().replace(f"api_token: {{file: {tmp_path}/hcloud.token}}\n    api_base_url"
                                                     ": " + url + "\n", "api_token: {env: MAILOPS_TEST_NO_TOKEN}\n", ))
    proc = mailops("provision", "new-vps", "mta9.shop.example", "--create", "--provider", "hz", "-i", str(inv),
                   check=False, env=wide)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"mailops: error: {inv}: mailops_reverse_dns_providers.hz.api_token: ")
    assert "MAILOPS_TEST_NO_TOKEN is not set" in lines[0]
    proc = mailops("provision", "new-vps", "mta9.shop.example", "--create", "--provider", "nosuch", "-i", str(inv),
                   check=False, env=wide)
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"mailops: error: {inv}: --provider nosuch: no hcloud provider of that name")
    assert emulator.server_status("mta9.shop.example") is None


# --- destroy: plan, then apply ---------------------------------------------------------------

def test_destroy_plans_then_removes_server_ptrs_dns_and_inventory_entry(api, tmp_path):
    emulator, url = api
    servers = HcloudServers("hz", TOKEN, url)
    pub = ssh_key(tmp_path).with_suffix(".pub").read_text()
    made = {name: servers.create(ServerSpec(name, ssh_public_key=pub))
            for name in ("mta1.shop.example", "mta9.shop.example")}
    inv_dir = write_inventory(tmp_path, url, {name: s.ipv4 for name, s in made.items()})
    inv = load(inv_dir)
    plan, providers = make_plan(inv, KeyStore.for_inventory(inv), resolve_txt=lambda _: [])
    apply_plan(plan, providers)  # the fleet published: A/AAAA of both, SPF with both, PTRs in the emulator
    zone_before = emulator.rrsets(ZONE)
    v4 = made["mta9.shop.example"].ipv4
    assert emulator.ptr(v4) == "mta9.shop.example" and ("mta9", "A") in zone_before
    hosts_before = (inv_dir / "hosts.yml").read_text()

    plan, context = plan_destroy(inv_dir, "mta9.shop.example")
    assert plan.server.id == made["mta9.shop.example"].id and plan.problems == []
    assert plan.ptrs == [(v4, "mta9.shop.example"), ("2001:db8:5100:201::1", "mta9.shop.example")]
    rows = [(r["action"], r["name"], r["type"]) for z in plan.dns.zones for r in z.rows()]
    assert ("delete", "mta9.shop.example", "A") in rows and ("delete", "mta9.shop.example", "AAAA") in rows
    assert not any("mta1" in name for _, name, _ in rows)
    spf = next(r for z in plan.dns.zones for r in z.rows() if r["type"] == "TXT" and "spf1" in str(r.get("old")))
    assert v4 in spf["old"] and v4 not in spf["new"] and made["mta1.shop.example"].ipv4 in spf["new"]
    assert emulator.rrsets(ZONE) == zone_before and emulator.server_status("mta9.shop.example") == "running"

    steps: list[str] = []
    apply_destroy(plan, context, on_step=steps.append)
    zone = emulator.rrsets(ZONE)
    assert ("mta9", "A") not in zone and ("mta9", "AAAA") not in zone and ("mta1", "A") in zone
    assert emulator.server_status("mta9.shop.example") is None and emulator.ptr(v4) is None
    assert emulator.ptr(made["mta1.shop.example"].ipv4) == "mta1.shop.example"
    after = (inv_dir / "hosts.yml").read_text()
    assert "mta9" not in after and after == re.sub(r"        mta9\.shop\.example:.*\n(          .*\n)*", "",
                                                   hosts_before)
    assert [h.name for h in load(inv_dir).hosts] == ["mta1.shop.example"]
    assert steps[1:] == ["DNS: 4 changes applied", f"server mta9.shop.example (id {plan.server.id}) deleted at hz; "
                         "its PTRs went with its addresses", f"inventory: mta9.shop.example removed from {inv_dir}/hosts.yml"]

    again, _ = plan_destroy(inv_dir, "mta9.shop.example", provider_name="hz")
    assert again.empty
    last, _ = plan_destroy(inv_dir, "mta1.shop.example")
    assert last.problems and "only mail host" in last.problems[0]
    with pytest.raises(MailopsError, match="only mail host"):
        apply_destroy(last, _)
    assert emulator.server_status("mta1.shop.example") == "running"


def test_destroy_refuses_a_host_another_setting_still_names(api, tmp_path):
    emulator, url = api
    servers = HcloudServers("hz", TOKEN, url)
    pub = ssh_key(tmp_path).with_suffix(".pub").read_text()
    made = [servers.create(ServerSpec(n, ssh_public_key=pub)) for n in ("mta1.shop.example", "mta9.shop.example")]
    inv_dir = write_inventory(tmp_path, url, {s.name: s.ipv4 for s in made})
    settings = inv_dir / "group_vars/all/mailops.yml"
    settings.write_text(settings.read_text().replace("    dmarc:\n", "    hosts: [mta9.shop.example]\n    dmarc:\n"))
    plan, context = plan_destroy(inv_dir, "mta9.shop.example")
    assert len(plan.problems) == 1 and plan.problems[0].startswith(
        f"without mta9.shop.example the inventory would be invalid: {settings}"), plan.problems
    assert "mta9.shop.example" in plan.problems[0] and str(tmp_path / "mailops-destroy") not in plan.problems[0]
    with pytest.raises(MailopsError, match="would be invalid"):
        apply_destroy(plan, context)
    assert emulator.server_status("mta9.shop.example") == "running" and "mta9" in (inv_dir / "hosts.yml").read_text()


def test_destroy_without_a_terminal_needs_yes(api, tmp_path):
    emulator, url = api
    servers = HcloudServers("hz", TOKEN, url)
    made = [servers.create(ServerSpec(n, ssh_public_key=ssh_key(tmp_path / n).with_suffix(".pub").read_text()))
            for n in ("mta1.shop.example", "mta9.shop.example") if (tmp_path / n).mkdir() or True]
    inv_dir = write_inventory(tmp_path, url, {s.name: s.ipv4 for s in made})
    proc = mailops("provision", "destroy", "mta9.shop.example", "-i", str(inv_dir), check=False,
                   env=venv_env(COLUMNS="300"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "  server: mta9.shop.example (id" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "mailops: error: destroy mta9.shop.example needs confirmation: run it at a terminal or add --yes")
    assert emulator.server_status("mta9.shop.example") == "running" and "mta9" in (inv_dir / "hosts.yml").read_text()


# --- the whole path on the lab -----------------------------------------------------------------

HOST = "mta9.shop.test"
PLACEHOLDER = "198.51.100.250"  # what `mailops init` leaves for the operator to replace


def dig(*args: str) -> list[str]:
    out = subprocess.run(["dig", "+short", "@198.51.100.1", *args], capture_output=True, text=True, timeout=30)
    return sorted(out.stdout.split("\n")[:-1])


@pytest.fixture
def cloud_lab(tmp_path):
    """The hcloud emulator on loopback, its servers lab machines; a copy of the lab inventory with
    mta9.shop.test first (placeholder addresses) and an hcloud provider pointing at the emulator."""
    from mailops.lab import core
    from mailops.lab.cloud import LabMachines
    from mailops.lab.config import LabConfig

    cfg = LabConfig()
    state = core.load_state(cfg)
    if os.geteuid() != 0 or "mx" not in state.get("machines", {}):
        pytest.fail("needs root and a running lab (mailops lab up)")
    emulator = hcloudemu.HcloudEmulator(backend=LabMachines(cfg))
    emulator.add_token(TOKEN)
    server, url = hcloudemu.serve(emulator)
    inv = copy_inventory(tmp_path / "inv")
    hosts = inv / "hosts.yml"
    text = hosts.read_text().replace("UserKnownHostsFile=/var/lib/mailops/lab/ssh/known_hosts",
                                     f"UserKnownHostsFile={tmp_path}/known_hosts")
    text = text.replace("      hosts:\n", f"""      hosts:
        {HOST}:
          ansible_host: {PLACEHOLDER}   # REPLACE: the server's public IPv4 address
          mailops_ipv4: {PLACEHOLDER}   # REPLACE: the server's public IPv4 address
""", 1)
    hosts.write_text(text)
    token = tmp_path / "hcloud.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    settings = inv / "group_vars/all/mailops.yml"
    settings.write_text(settings.read_text().replace("mailops_reverse_dns_providers:\n", f"""\
mailops_reverse_dns_providers:
  lab-hcloud:
    type: hcloud
    api_token: {{file: {token}}}
    api_base_url: {url}
""", 1))
    yield emulator, inv, cfg
    servers = HcloudServers("lab-hcloud", TOKEN, url)
    if (left := servers.find(HOST)) is not None:  # a failed test leaves no machine behind
        servers.delete(left)
    hcloudemu.shutdown(server)


@pytest.mark.lab
def test_create_from_nothing_to_verified_then_destroy(cloud_lab):
    from mailops.lab import core

    emulator, inv, cfg = cloud_lab
    wide = venv_env(COLUMNS="300")
    create = ["provision", "new-vps", HOST, "--create", "--provider", "lab-hcloud", "--image", "debian-13",
              "--ssh-key", str(LAB_KEY), "-i", str(inv)]
    t0 = time.monotonic()
    proc = mailops(*create, "--json", env=wide, timeout=900, check=False)
    seconds = time.monotonic() - t0
    result = json.loads(proc.stdout)
    failed = [r for r in (result["verify"] or {}).get("results", []) if r["status"] == "fail"]
    assert proc.returncode == 0, "\n".join([f"{r['subject']} {r['name']}: {r['detail']}" for r in failed]
                                           + [json.dumps(result["converge"]["hosts"]), proc.stderr[-2000:]])
    server = result["server"]
    assert result["created"] and server["status"] == "running" and server["image"] == "debian-13"
    machines = core.load_state(cfg)["machines"]
    name = next(n for n, m in machines.items() if m["ipv4"] == server["ipv4"])
    assert int(name.removeprefix("vps")) >= 20 and machines[name]["fqdn"] == HOST
    assert machines[name]["suite"] == "trixie" and "os: debian 13" in proc.stderr
    # the inventory: the placeholder replaced by the server's addresses, everything else kept
    entry = load(inv).host(HOST)
    assert str(entry.ipv4) == entry.ssh_host == server["ipv4"] and str(entry.ipv6) == machines[name]["ipv6"]
    assert "# Only ever trust the host keys the lab recorded" in (inv / "hosts.yml").read_text()
    # the host key came from mailops (user_data), was recorded before first contact, and is the only one
    known = (inv.parent / "known_hosts").read_text().split()
    served = Path(machines[name]["root"], "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    assert known == [server["ipv4"], *served[:2]]
    # first contact found it already known: nothing was trusted on first use
    assert "host key recorded before first contact" in proc.stderr and "host key known: SHA256:" in proc.stderr
    assert "host key recorded:" not in proc.stderr
    # PTRs at the provider, and where the world sees them; the converge and verify (live send too)
    assert emulator.ptr(server["ipv4"]) == HOST and dig("-x", server["ipv4"]) == [f"{HOST}."]
    assert dig(HOST, "A") == [server["ipv4"]]
    assert result["converge"]["ok"], result["converge"]
    report = result["verify"]
    assert report["ok"], [r for r in report["results"] if r["status"] == "fail"]
    rows = {(r["subject"], r["name"]): r["status"] for r in report["results"]}
    assert rows[("shop.test", "lab.live-send")] == "pass", rows
    print(f"\nfrom nothing to verified: {seconds:.0f} s")

    # again: the same server, nothing created, converge without changes
    proc = mailops(*create, "--json", "--no-verify", env=wide, timeout=600)
    again = json.loads(proc.stdout)
    assert not again["created"] and again["server"]["id"] == server["id"]
    assert f"server {HOST} exists (id {server['id']}, running): continuing with it" in proc.stderr
    assert sum(h["changed"] for h in again["converge"]["hosts"].values()) == 0, again["converge"]

    # destroy: the plan, then everything it names is gone
    proc = mailops("provision", "destroy", HOST, "-i", str(inv), "--yes", env=wide, timeout=300)
    assert f"PTR {server['ipv4']}: {HOST}" in proc.stderr and f"{HOST} destroyed" in proc.stderr
    assert emulator.server_status(HOST) is None and name not in core.load_state(cfg)["machines"]
    assert not (cfg.machines_dir / name).exists()
    assert emulator.ptr(server["ipv4"]) is None and dig("-x", server["ipv4"]) == []
    assert dig(HOST, "A") == [] and dig(HOST, "AAAA") == []
    assert server["ipv4"] not in " ".join(dig("shop.test", "TXT"))
    assert HOST not in (inv / "hosts.yml").read_text()
    assert load(inv).hosts[0].name == "mta1.shop.test"
    # the lab's DNS is the lab inventory's again: nothing pending for it
    plan = mailops("dns", "plan", "-i", str(LAB_INVENTORY), "--json", env=wide)
    assert json.loads(plan.stdout)["pending"] == 0, plan.stdout
