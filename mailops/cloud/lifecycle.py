"""A mail host from nothing (``provision new-vps --create``) and back to nothing (``provision destroy``).

create_vps: find the server by name at the provider or create it (its SSH host
key made here and recorded before first contact), write the host into the
inventory's hosts file, read the IPv6 address the server configured in its /64,
publish DNS and PTRs (``dns sync``), then the first-contact workflow of
``provision new-vps`` (trust, pre-flight, converge) and ``verify``.  Every step
looks before it acts, so running it again after a failure continues where it
stopped.

destroy: a plan first (the server, its PTRs, the DNS records only it needed,
the inventory entry, its known_hosts lines), applied only when confirmed, in
the order that leaves a re-run able to finish: DNS, server, known_hosts,
inventory entry.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mailops.ansible import forget_facts
from mailops.cloud import HostKeyPair, Server, ServerProvider, ServerSpec, server_provider
from mailops.dkim.store import KeyStore
from mailops.errors import MailopsError
from mailops.inventory import Inventory, MailHost, load
from mailops.inventory.hostsfile import remove_host, upsert_host

Step = Callable[[str], None]
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def check_name(name: str) -> str:
    """The host's FQDN: it names the server, its PTR and its inventory entry."""
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise MailopsError(f"host name {name!r} must be the server's fully qualified name in lower case "
                           "(letters, digits, hyphens; at least two labels), e.g. mta2.example.org")
    return name


@dataclass
class CreateOptions:
    provider: str = "hcloud"  # a reverse DNS provider of type hcloud (see mailops.cloud)
    server_type: str = "cx22"
    location: str = "fsn1"
    image: str = "debian-13"
    ssh_key: Path | None = None  # private key file; its .pub is installed; default: the other hosts' key
    ipv6: bool = True
    ssh_timeout: float = 300.0


@dataclass
class CreateResult:
    server: Server
    created: bool
    inventory_file: Path
    converge: object = None  # mailops.ansible.ApplyResult
    report: object = None  # mailops.verify.runner.VerifyReport (None when not verified)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.converge is not None and self.converge.ok and (self.report is None or self.report.ok))


def _partial(inv_path: Path) -> Inventory | None:
    try:
        return load(inv_path)
    except MailopsError:
        return None


def _key_files(inv: Inventory, option: Path | None) -> tuple[Path, str]:
    private = option or next((Path(h.ssh_private_key_file) for h in inv.hosts if h.ssh_private_key_file), None)
    private = (private or Path("~/.ssh/id_ed25519")).expanduser()
    public = private.with_name(private.name + ".pub")
    try:
        text = public.read_text().strip()
    except OSError as exc:
        raise MailopsError(f"--ssh-key {private}: cannot read its public key {public} ({exc.strerror}); "
                           "name a private key whose .pub lies next to it") from None
    if not private.is_file():
        raise MailopsError(f"--ssh-key {private}: no such private key file (Ansible logs in with it)")
    return private, text


def record_host_key(host: MailHost, public_key: str) -> Path:
    """Make ``public_key`` the one key known_hosts holds for the host (a key mailops made itself)."""
    kh = host.known_hosts
    kh.parent.mkdir(parents=True, exist_ok=True)
    if kh.exists():
        subprocess.run(["ssh-keygen", "-R", host.known_host_name, "-f", str(kh)], capture_output=True, timeout=30)
        Path(f"{kh}.old").unlink(missing_ok=True)
    keytype, key = public_key.split()[:2]
    with open(kh, "a") as fh:
        fh.write(f"{host.known_host_name} {keytype} {key}\n")
    return kh


def wait_ssh(host: MailHost, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.ssh_host, host.ssh_port), timeout=5) as sock:
                sock.settimeout(5)
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise MailopsError(f"server {host.name} runs but SSH on {host.ssh_host}:{host.ssh_port} did not answer "
                               f"within {timeout:.0f} s; look at its console at the provider, then run again")
        time.sleep(2)


def server_ipv6(host: MailHost, network: str) -> str:
    """The address the server configured inside its IPv6 /64 (Hetzner's cloud-init: ::1)."""
    net = ipaddress.ip_network(network, strict=False)
    proc = subprocess.run(host.ssh_command() + ["ip", "-6", "-o", "addr", "show", "scope", "global"],
                          capture_output=True, text=True, timeout=60)
    for match in re.finditer(r"inet6 ([0-9a-fA-F:]+)/", proc.stdout):
        address = ipaddress.ip_address(match[1])
        if address in net:
            return address.compressed
    return (net.network_address + 1).compressed


def create_vps(inv_path: Path, name: str, options: CreateOptions, *, expect_fingerprint: str | None = None,
               confirm=None, verify: bool = True, on_step: Step = lambda s: None,
               on_trust=lambda t: None, on_check=lambda c: None, on_event=None) -> CreateResult:
    from mailops import provision
    from mailops.dns.sync import sync

    started = time.monotonic()
    check_name(name)
    inv = load(inv_path)
    provider = server_provider(inv, options.provider)
    private_key, public_key = _key_files(inv, options.ssh_key)
    server = provider.find(name)
    host_key = None
    if server is None:
        host_key = HostKeyPair.generate(f"root@{name}")
        on_step(f"creating server {name} ({options.server_type}, {options.location}, {options.image}) at "
                f"{provider.name}")
        server = provider.create(ServerSpec(name, options.server_type, options.location, options.image,
                                            public_key, host_key, ipv4=True, ipv6=options.ipv6))
        on_step(f"server {name} is running: id {server.id}, {server.ipv4}, {server.ipv6_network}")
    elif not server.managed:
        raise MailopsError(f"a server named {name} exists at {provider.name} but mailops did not create it (no "
                           "label managed-by=mailops); pick another name, or add it with `provision new-vps` "
                           "without --create")
    else:
        on_step(f"server {name} exists (id {server.id}, {server.status}): continuing with it")
    if server.status != "running" or not server.ipv4:
        raise MailopsError(f"server {name} is {server.status}" + ("" if server.ipv4 else " without an IPv4 address")
                           + "; start it at the provider (mailops needs it running with a public IPv4)")
    entry = {"ansible_host": server.ipv4, "ansible_user": "root", "ansible_ssh_private_key_file": str(private_key),
             "mailops_ipv4": server.ipv4, "mailops_reverse_dns_provider": provider.name}
    if not server.ipv6_network:
        entry["mailops_ipv6"] = None
    written = upsert_host(inv.path, name, entry, comment=f"{provider.kind} server {server.id}, {server.server_type}, "
                          f"{server.location}, {server.image} (made by mailops provision new-vps --create)")
    on_step(f"inventory: {name} in {written}")
    inv = load(inv_path)
    host = inv.host(name)
    if host_key is not None:
        on_step(f"host key recorded before first contact: {record_host_key(host, host_key.public)}")
    wait_ssh(host, options.ssh_timeout)
    on_trust(provision.establish_trust(host, expect_fingerprint=expect_fingerprint, confirm=confirm))
    if server.ipv6_network:
        upsert_host(inv.path, name, {"mailops_ipv6": server_ipv6(host, server.ipv6_network)})
        inv = load(inv_path)
    figures = sync(inv, KeyStore.for_inventory(inv))
    on_step(f"DNS published: {figures['changes']} changes in {figures['zones']} zones (PTRs included)")
    result = CreateResult(server, host_key is not None, written)
    result.converge = provision.new_vps(inv, name, expect_fingerprint=expect_fingerprint, confirm=confirm,
                                        on_trust=lambda t: None, on_check=on_check, on_event=on_event)
    if verify and result.converge.ok:
        from mailops.verify.runner import verify as run_verify
        result.report = run_verify(inv.path, hosts=[name])
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- destroy ---------------------------------------------------------------

@dataclass
class DestroyPlan:
    host: str
    inventory_file: Path | None
    server: Server | None
    provider: str | None
    ptrs: list[tuple[str, str | None]] = field(default_factory=list)  # (address, current PTR)
    dns: object = None  # mailops.dns.sync.Plan for the inventory without the host
    known_hosts: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return (self.server is None and self.inventory_file is None and not (self.dns and self.dns.pending))

    def to_dict(self) -> dict:
        return {"host": self.host, "inventory_file": str(self.inventory_file) if self.inventory_file else None,
                "server": self.server.to_dict() if self.server else None, "provider": self.provider,
                "ptrs": [{"address": a, "ptr": p} for a, p in self.ptrs],
                "dns": self.dns.to_dict() if self.dns else None, "problems": self.problems}


def _without(inv: Inventory, name: str) -> Inventory:
    """The inventory as it will be without host ``name`` (domains keep their other hosts)."""
    hosts = [h for h in inv.hosts if h.name != name]
    domains = {d: s.model_copy(update={"hosts": [h for h in s.hosts if h != name]}) for d, s in inv.domains.items()}
    return inv.model_copy(update={"hosts": hosts, "domains": domains})


def _dangling(inv_dir: Path, name: str) -> list[str]:
    """Problems the inventory would have without the host that name it (e.g. a domain's hosts: list),
    found by checking a copy of the inventory without it."""
    import shutil
    import tempfile

    from mailops.inventory import load_inventory

    with tempfile.TemporaryDirectory(prefix="mailops-destroy-") as tmp:
        copy = Path(tmp) / inv_dir.name
        shutil.copytree(inv_dir, copy, symlinks=True)
        remove_host(copy, name)
        _, problems = load_inventory(copy)
    return [f"without {name} the inventory would be invalid: {p}".replace(str(copy), str(inv_dir))
            for p in problems if name in str(p)]


def plan_destroy(inv_path: Path, name: str, *, provider_name: str | None = None) -> tuple[DestroyPlan, dict]:
    """What destroy would remove, and the objects apply needs (providers)."""
    from mailops.dns.sync import make_plan, reverse_provider

    check_name(name)
    inv = load(inv_path)
    host = next((h for h in inv.hosts if h.name == name), None)
    pname = provider_name or (host.reverse_dns_provider if host else None)
    if pname is None:
        raise MailopsError(f"{inv.path}: {name} is not a mail host here; name its server provider with --provider")
    provider = server_provider(inv, pname)
    server = provider.find(name)
    plan = DestroyPlan(name, None, server, provider.name)
    if server is not None and not server.managed:
        raise MailopsError(f"server {name} at {provider.name} was not created by mailops (no label "
                           "managed-by=mailops); delete it at the provider yourself")
    context = {"provider": provider, "inventory": inv}
    if host is None:
        return plan, context
    from mailops.inventory.hostsfile import hosts_file
    plan.inventory_file = hosts_file(inv.path)
    plan.known_hosts = host.known_hosts
    plan.problems += _dangling(inv.path, name)
    rdns = reverse_provider(inv, host.reverse_dns_provider) if host.reverse_dns_provider else None
    for address in [str(host.ipv4)] + ([str(host.ipv6)] if host.ipv6 else []):
        plan.ptrs.append((address, rdns.get_ptr(address) if rdns else None))
    if inv.hosts == [host]:
        plan.problems.append(f"{name} is the inventory's only mail host: the DNS of its domains would be left "
                             "without a sender; add the new host first, or remove the domains and their DNS yourself")
    else:
        # No share threshold: the plan comes from taking out one host and is shown and confirmed as a
        # whole (the apex NS/SOA and other owners' records stay protected).
        plan.dns, context["dns_providers"] = make_plan(_without(inv, name), KeyStore.for_inventory(inv),
                                                       threshold=1.0)
        plan.problems += plan.dns.refused + plan.dns.conflicts
    return plan, context


def apply_destroy(plan: DestroyPlan, context: dict, *, on_step: Step = lambda s: None) -> None:
    from mailops.dns.sync import apply_plan

    if plan.problems:
        raise MailopsError(f"destroy {plan.host}: {plan.problems[0]}")
    provider: ServerProvider = context["provider"]
    if plan.dns is not None and plan.dns.pending:
        apply_plan(plan.dns, context["dns_providers"], on_step=on_step)
        on_step(f"DNS: {plan.dns.pending} changes applied")
    if plan.server is not None:
        provider.delete(plan.server)  # its Primary IPs go with it (auto_delete), and with them the PTRs
        on_step(f"server {plan.host} (id {plan.server.id}) deleted at {provider.name}; its PTRs went with its "
                "addresses")
    if plan.known_hosts is not None and plan.known_hosts.exists():
        inv: Inventory = context["inventory"]
        host = inv.host(plan.host)
        subprocess.run(["ssh-keygen", "-R", host.known_host_name, "-f", str(plan.known_hosts)],
                       capture_output=True, timeout=30)
        Path(f"{plan.known_hosts}.old").unlink(missing_ok=True)
    forget_facts(plan.host)  # a later server of the same name is another machine
    if plan.inventory_file is not None:
        remove_host(plan.inventory_file.parent, plan.host)
        on_step(f"inventory: {plan.host} removed from {plan.inventory_file}")
