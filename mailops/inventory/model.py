"""Typed model of a mailops inventory (pydantic v2, unknown keys forbidden): the whole inventory.

The scalar types live in :mod:`mailops.inventory.scalars`, the settings sections
in :mod:`mailops.inventory.settings`; both are re-exported here, so
``from mailops.inventory.model import X`` works for every model name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from mailops.errors import MailopsError
from mailops.inventory import ssh

from mailops.inventory.scalars import (  # noqa: F401 - re-exported
    _email,
    _Model,
    _need_text,
    _secret_ref,
    dns_name,
    DnsOwner,
    DomainName,
    Duration,
    EmailAddress,
    EnvSecret,
    FileSecret,
    Fqdn,
    HostOrIp,
    HttpUrl,
    INLINE_SECRET,
    IpAddress,
    IPv4Net,
    IPv6Net,
    kind,
    MailtoUri,
    PasswordHash,
    ProviderName,
    PublicIPv4,
    PublicIPv6,
    SecretRef,
    Selector,
    SelectorPrefix,
    show,
    SshArgs,
    SpfInclude,
    Text,
    TlsRptUri,
    TsigKeyName,
    ZoneName,
)
from mailops.inventory.settings import (  # noqa: F401 - re-exported
    CloudflareProvider,
    DestinationLimit,
    DkimSettings,
    DmarcSettings,
    DnsblSettings,
    DnsProvider,
    Domain,
    HcloudProvider,
    MtaStsSettings,
    ParkedDomain,
    PerUserLimit,
    RateLimits,
    ReturnPathSettings,
    ReverseDnsProvider,
    Rfc2136Provider,
    SoftBounceSettings,
    SpfSettings,
    SubmissionUser,
    TlsRptSettings,
    TlsSettings,
    VerifySettings,
    Warmup,
    WarmupStep,
    Window,
)


# --- the whole inventory ---------------------------------------------------

# The Ansible group whose hosts mailops manages.
MAIL_GROUP = "mailhosts"

class MailHost(_Model):
    """One host of group ``mailhosts``, with its Ansible SSH access."""
    name: str
    fqdn: Fqdn
    ipv4: PublicIPv4
    ipv6: PublicIPv6 | None = None
    ssh_host: HostOrIp
    ssh_user: Text = "root"
    ssh_port: int = Field(22, ge=1, le=65535)
    ssh_private_key_file: Text | None = None
    # ansible_ssh_common_args: extra ssh options, above all UserKnownHostsFile (the keys trusted for it)
    ssh_common_args: SshArgs = ""
    reverse_dns_provider: ProviderName | None = None
    # False when the IPv6 address has no PTR: the server then sends over IPv4 only.
    ipv6_ptr: bool = True

    @property
    def known_hosts(self) -> Path:
        """The known_hosts file Ansible's ssh checks this host's key against."""
        return ssh.known_hosts_file(self.ssh_common_args)

    @property
    def known_host_name(self) -> str:
        """The host's name in known_hosts (``addr`` or ``[addr]:port``)."""
        return ssh.known_host_name(self.ssh_host, self.ssh_port)

    def ssh_command(self) -> list[str]:
        """``ssh`` to this host with the options Ansible uses; append the remote command."""
        return ssh.ssh_command(self.ssh_host, user=self.ssh_user, port=self.ssh_port,
                               private_key_file=self.ssh_private_key_file, common_args=self.ssh_common_args)


class Inventory(_Model):
    """A checked inventory. Only built when the directory has no problems."""
    path: Path
    hosts: list[MailHost]
    domains: dict[DomainName, Domain]
    parked_domains: dict[DomainName, ParkedDomain] = Field(default_factory=dict)
    dns_providers: dict[str, DnsProvider] = Field(default_factory=dict)
    reverse_dns_providers: dict[str, ReverseDnsProvider] = Field(default_factory=dict)
    submission_users: list[SubmissionUser] = Field(default_factory=list)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    dkim_keystore: Path
    apt_proxy: HttpUrl | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    # host[:port] that pre-flight checks connect to on port 25 (outbound SMTP test)
    smtp_probe: HostOrIp = "gmail-smtp-in.l.google.com"
    # Resolvers that DNS read-backs and checks ask (empty: the system's /etc/resolv.conf)
    dns_resolvers: list[IpAddress] = Field(default_factory=list)
    # Owner id for `dns sync` when several inventories share a zone (default: the one shared owner)
    dns_owner: DnsOwner | None = None
    dnsbl: DnsblSettings = Field(default_factory=DnsblSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    # None: the return path is off (the servers behave as without it)
    return_path: ReturnPathSettings | None = None

    def host(self, name: str) -> MailHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def select_hosts(self, only: str | None = None) -> list[MailHost]:
        """Every mail host, or just the one named ``only`` (a MailopsError naming the choices if none is)."""
        if only is None:
            return list(self.hosts)
        for host in self.hosts:
            if host.name == only:
                return [host]
        names = ", ".join(h.name for h in self.hosts) or "none"
        raise MailopsError(f"{self.path}: no mail host {only!r}; mail hosts: {names}")

    def hosts_for(self, domain: str) -> list[MailHost]:
        """The mail hosts that send for ``domain``."""
        names = self.domains[domain].hosts or [h.name for h in self.hosts]
        return [h for h in self.hosts if h.name in names]

    def return_path_domain(self, domain: str) -> str | None:
        """The return-path (bounce) domain of sending domain ``domain``, None when the return path is off."""
        if self.return_path is None:
            return None
        return self.domains[domain].return_path or f"{self.return_path.subdomain}.{domain}"

    def return_path_domains(self) -> dict[str, list[str]]:
        """Return-path domain -> the sending domains that use it (a shared one lists several)."""
        out: dict[str, list[str]] = {}
        for domain in sorted(self.domains):
            rp = self.return_path_domain(domain)
            if rp is not None:
                out.setdefault(rp, []).append(domain)
        return out

    def report_addresses(self) -> list[tuple[str, str, str]]:
        """(sending domain, setting, address) of every report address (DMARC rua/ruf, TLS-RPT rua)
        inside a mailops domain: the mail hosts must accept these (only with the return path on)."""
        return [(domain, where, address) for domain, settings in sorted(self.domains.items())
                for where, address in report_mailtos(settings) if address.rpartition("@")[2] in self.domains]

    def secret(self, ref: EnvSecret | FileSecret) -> str:
        """Resolve a secret reference relative to this inventory."""
        from mailops.inventory.secrets import resolve
        return resolve(ref, self.path)


def report_mailtos(settings: Domain) -> list[tuple[str, str]]:
    """(setting, address) of a domain's mailto: report URIs, e.g. ("dmarc.rua", "dmarc@shop.test")."""
    uris = [("dmarc.rua", u) for u in settings.dmarc.rua] + [("dmarc.ruf", u) for u in settings.dmarc.ruf]
    uris += [("tls_rpt.rua", u) for u in (settings.tls_rpt.rua if settings.tls_rpt else [])]
    return [(where, uri[7:].partition("!")[0].lower()) for where, uri in uris if uri.lower().startswith("mailto:")]


# Variables mailops reads. Every other ``mailops_*`` variable is reported as
# unknown, so roles that add variables must add them here.
# name -> (MailHost field, type)
HOST_VARS: dict[str, tuple[str, Any]] = {
    "ansible_host": ("ssh_host", HostOrIp),
    "ansible_user": ("ssh_user", Text),
    "ansible_port": ("ssh_port", Annotated[int, Field(ge=1, le=65535)]),
    "ansible_ssh_private_key_file": ("ssh_private_key_file", Text),
    "ansible_ssh_common_args": ("ssh_common_args", SshArgs),
    "mailops_fqdn": ("fqdn", Fqdn),
    "mailops_ipv4": ("ipv4", PublicIPv4),
    "mailops_ipv6": ("ipv6", PublicIPv6),
    "mailops_reverse_dns_provider": ("reverse_dns_provider", ProviderName),
    "mailops_ipv6_ptr": ("ipv6_ptr", bool),
}
REQUIRED_HOST_VARS = ("ansible_host", "mailops_ipv4")

# name -> (Inventory field, type); read from group_vars/all and all.vars only.
GLOBAL_VARS: dict[str, tuple[str, Any]] = {
    "mailops_dkim_keystore": ("dkim_keystore", Text),
    "mailops_apt_proxy": ("apt_proxy", HttpUrl),
    "mailops_domains": ("domains", Annotated[dict[DomainName, Domain], Field(min_length=1)]),
    "mailops_parked_domains": ("parked_domains", dict[DomainName, ParkedDomain]),
    "mailops_dns_providers": ("dns_providers", dict[ProviderName, DnsProvider]),
    "mailops_reverse_dns_providers": ("reverse_dns_providers", dict[ProviderName, ReverseDnsProvider]),
    "mailops_submission_users": ("submission_users", list[SubmissionUser]),
    "mailops_rate_limits": ("rate_limits", RateLimits),
    "mailops_tls": ("tls", TlsSettings),
    "mailops_smtp_probe": ("smtp_probe", HostOrIp),
    "mailops_dns_resolvers": ("dns_resolvers", list[IpAddress]),
    "mailops_dns_owner": ("dns_owner", DnsOwner),
    "mailops_dnsbl": ("dnsbl", DnsblSettings),
    "mailops_verify": ("verify", VerifySettings),
    "mailops_return_path": ("return_path", ReturnPathSettings),
}
REQUIRED_GLOBAL_VARS = ("mailops_dkim_keystore", "mailops_domains")

# Extra advice for a missing key, by key name.
MISSING_HINTS: dict[str, str] = {
    "ansible_host": "set ansible_host: to the IP address or name Ansible connects to over SSH",
    "mailops_ipv4": "set mailops_ipv4: to the public IPv4 address this host sends mail from",
    "mailops_dkim_keystore": "set mailops_dkim_keystore: to a directory outside git, e.g. /var/lib/mailops/dkim",
    "mailops_domains": "add mailops_domains: with at least one domain in group_vars/all",
    "dns_provider": "every domain needs dns_provider: naming an entry of mailops_dns_providers",
    "api_token": "write api_token: {env: NAME} or {file: PATH}",
    "tsig_secret": "write tsig_secret: {env: NAME} or {file: PATH}",
    "tsig_key_name": "set tsig_key_name: to the TSIG key's name, e.g. mailops-key.",
    "server": "set server: to the IP address of the DNS server that accepts updates",
    "login": "set login: to the user's email address",
    "key": "write key: {file: PATH} (hex keys, one per line) or {env: NAME}",
    "operator_email": "set operator_email: to the address postmaster@, abuse@ and unrecognised mail go to",
    "rua": "list at least one report address, e.g. [mailto:tlsrpt@example.com]",
}
