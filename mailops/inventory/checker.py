"""The checks of a parsed inventory: known keys, required values, and cross references.

Cross references are what no single value's type can see: a domain's provider
must exist and be authoritative for it, hosts named by a domain must be mail
hosts, logins and FQDNs must be unique, and the DKIM key store must live
outside git.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mailops.inventory import model as m
from mailops.inventory.ansiblevars import AnsibleInventory, Host, Var
from mailops.inventory.paths import REPO_ROOT, display_path
from mailops.inventory.problems import suggest
from mailops.inventory.validation import validate
from mailops.inventory.yamlsource import Collector, Source


def _git_roots(inventory: Path) -> list[tuple[Path, str]]:
    roots = [(inventory, "the inventory directory")]
    for parent in [inventory, *inventory.parents]:
        if (parent / ".git").exists():
            roots.append((parent, f"the git repository {display_path(parent)}"))
            break
    if (REPO_ROOT / ".git").exists():
        roots.append((REPO_ROOT, f"the mailops checkout {REPO_ROOT}"))
    return roots


def _norm_domain(name: Any) -> str | None:
    try:
        return m.dns_name(name)
    except ValueError:
        return None


class Checker:
    def __init__(self, root: Path, ans: AnsibleInventory, inv_sources: list[Source], all_sources: list[Source],
                 out: Collector) -> None:
        self.root, self.ans, self.inv_sources, self.all_sources, self.out = root, ans, inv_sources, all_sources, out

    def _missing_global_place(self, name: str) -> tuple[Source, tuple]:
        if self.all_sources:
            return self.all_sources[0], (name,)
        return self.inv_sources[0], ("all", "vars", name)

    def unknown_keys(self) -> None:
        known = list(m.HOST_VARS) + list(m.GLOBAL_VARS)
        global_scope = {id(v) for v in self.ans.groups["all"].vars.values()} | \
                       {id(v) for v in self.ans.groups["all"].file_vars.values()}
        for var in self.ans.all_defs:
            if var.name.startswith("mailops_") and var.name not in known:
                self.out.at(var.src, var.path, "unknown key; remove it or fix its spelling" + suggest(var.name, known))
            elif var.name in m.GLOBAL_VARS and id(var) not in global_scope:
                self.out.at(var.src, var.path,
                            "is a global setting, read only from group_vars/all or all.vars; move it there")

    def globals(self) -> tuple[dict[str, Any], dict[str, Var]]:
        defs = self.ans.global_vars()
        values: dict[str, Any] = {}
        for name, (attr, tp) in m.GLOBAL_VARS.items():
            var = defs.get(name)
            if var is None or (var.value is None and name not in m.REQUIRED_GLOBAL_VARS):
                if name in m.REQUIRED_GLOBAL_VARS and not self.out.incomplete:
                    src, path = self._missing_global_place(name)
                    self.out.at(src, path, "required; " + m.MISSING_HINTS[name])
                continue
            ok, value = validate(var, tp, self.out)
            if ok:
                values[attr] = value
        return values, defs

    def mail_hosts(self) -> list[tuple[Host, dict[str, Var], m.MailHost | None]]:
        names = self.ans.members(m.MAIL_GROUP)
        if not names and not self.out.incomplete:
            src = self.inv_sources[0]
            self.out.at(src, ("all", "children", m.MAIL_GROUP, "hosts"),
                        f"no hosts in group {m.MAIL_GROUP}; add your mail servers under all.children.{m.MAIL_GROUP}.hosts")
        result = []
        for name in names:
            host = self.ans.hosts[name]
            decl_src, decl_path = host.decls[0]
            defs = self.ans.host_vars(name)
            values: dict[str, Any] = {"name": name}
            ok = True
            for var_name, (attr, tp) in m.HOST_VARS.items():
                var = defs.get(var_name)
                if var is None or var.value is None:
                    if var_name in m.REQUIRED_HOST_VARS and not self.out.incomplete:
                        self.out.at(decl_src, decl_path + (var_name,), "required; " + m.MISSING_HINTS[var_name])
                        ok = False
                    continue
                good, value = validate(var, tp, self.out)
                ok &= good
                if good:
                    values[attr] = value
            if "fqdn" not in values and getattr(defs.get("mailops_fqdn"), "value", None) is None:
                fqdn = _norm_domain(name)
                if fqdn is None:
                    self.out.at(decl_src, decl_path,
                                f"host name {m.show(name)} is not a fully qualified domain name and mailops_fqdn "
                                "is not set; set mailops_fqdn: (e.g. mail.example.com) or name the host by its FQDN")
                    ok = False
                values["fqdn"] = fqdn
            mail_host = None
            if ok:
                try:
                    mail_host = m.MailHost(**values)
                except ValidationError:  # a required value is missing in an unreadable file
                    pass
            result.append((host, defs, mail_host))
        return result

    def cross(self, gvals: dict[str, Any], gdefs: dict[str, Var], hosts: list) -> None:
        """The cross references (only run on a complete inventory: follow-ups would mislead)."""
        domain_names = self.domains(gvals, gdefs, hosts)
        self.parked(gdefs, domain_names)
        self.reverse_providers(gdefs, hosts)
        self.unique_fqdns(hosts)
        self.logins(gdefs, domain_names)
        self.keystore_outside_git(gvals, gdefs)
        self.return_path(gvals, gdefs)

    @staticmethod
    def _declared(gdefs: dict[str, Var], var_name: str) -> list[str]:
        var = gdefs.get(var_name)
        return [str(k) for k in var.value] if var and isinstance(var.value, dict) else []

    def _provider_defined(self, var: Var, path: tuple, name: Any, kind: str, names: list[str]) -> None:
        if isinstance(name, str) and name not in names:
            if not names:
                self.out.at(var.src, var.path + path, f"{m.show(name)} is not defined: {kind} is empty or missing; "
                            f"add {kind} with an entry {name}")
                return
            self.out.at(var.src, var.path + path, f"{m.show(name)} is not defined in {kind}; define it there or use "
                        f"one of: {', '.join(names)}" + suggest(name, names))

    def domains(self, gvals: dict[str, Any], gdefs: dict[str, Var], hosts: list) -> set[str]:
        """Each domain's provider exists and serves it, its hosts are mail hosts; returns the domain names."""
        out = self.out
        mail_names = [h.name for h, _, _ in hosts]
        dns_names = self._declared(gdefs, "mailops_dns_providers")
        providers = gvals.get("dns_providers", {})
        domains_var = gdefs.get("mailops_domains")
        domain_names: set[str] = set()
        if not (domains_var and isinstance(domains_var.value, dict)):
            return domain_names
        for key, dom in domains_var.value.items():
            norm = _norm_domain(key)
            if norm:
                domain_names.add(norm)
            if not isinstance(dom, dict):
                continue
            prov = dom.get("dns_provider")
            self._provider_defined(domains_var, (key, "dns_provider"), prov, "mailops_dns_providers", dns_names)
            zones = getattr(providers.get(prov), "zones", None) if isinstance(prov, str) else None
            if norm and zones and not any(norm == z or norm.endswith("." + z) for z in zones):
                out.at(domains_var.src, domains_var.path + (key, "dns_provider"),
                       f"provider {prov!r} is only authoritative for {', '.join(zones)}; add the zone to its "
                       "zones: list or use another provider")
            if isinstance(dom.get("hosts"), list):
                for i, h in enumerate(dom["hosts"]):
                    if isinstance(h, str) and h not in mail_names:
                        out.at(domains_var.src, domains_var.path + (key, "hosts", i),
                               f"{m.show(h)} is not a host of group {m.MAIL_GROUP}; use one of: "
                               f"{', '.join(mail_names) or '(none)'}" + suggest(h, mail_names))
        return domain_names

    def parked(self, gdefs: dict[str, Var], domain_names: set[str]) -> None:
        parked = gdefs.get("mailops_parked_domains")
        if not (parked and isinstance(parked.value, dict)):
            return
        dns_names = self._declared(gdefs, "mailops_dns_providers")
        for key, dom in parked.value.items():
            if _norm_domain(key) in domain_names:
                self.out.at(parked.src, parked.path + (key,),
                            "is also in mailops_domains; a domain either sends or is parked, remove one")
            if isinstance(dom, dict):
                self._provider_defined(parked, (key, "dns_provider"), dom.get("dns_provider"),
                                       "mailops_dns_providers", dns_names)

    def reverse_providers(self, gdefs: dict[str, Var], hosts: list) -> None:
        rdns_names = self._declared(gdefs, "mailops_reverse_dns_providers")
        for _host, defs, _ in hosts:
            var = defs.get("mailops_reverse_dns_provider")
            if var is not None:
                self._provider_defined(var, (), var.value, "mailops_reverse_dns_providers", rdns_names)

    def unique_fqdns(self, hosts: list) -> None:
        seen_fqdn: dict[str, str] = {}
        for host, defs, mh in hosts:
            if mh is None:
                continue
            if mh.fqdn in seen_fqdn:
                var = defs.get("mailops_fqdn")
                src, path = (var.src, var.path) if var else host.decls[0]
                self.out.at(src, path, f"fqdn {mh.fqdn} is already used by host {seen_fqdn[mh.fqdn]}; "
                                       "give each mail host its own mailops_fqdn")
            seen_fqdn.setdefault(mh.fqdn, mh.name)

    def logins(self, gdefs: dict[str, Var], domain_names: set[str]) -> None:
        """Logins are unique and at a sending domain."""
        users = gdefs.get("mailops_submission_users")
        if not (users and isinstance(users.value, list)):
            return
        logins: dict[str, int] = {}
        for i, user in enumerate(users.value):
            if not isinstance(user, dict):
                continue
            try:
                login = m._email(user.get("login"))
            except ValueError:
                continue
            path = users.path + (i, "login")
            key = login.lower()
            if key in logins:
                self.out.at(users.src, path, f"login {login} is already used by entry {logins[key]}; "
                                             "each login must be unique, remove or rename one")
                continue
            logins[key] = i
            domain = login.rpartition("@")[2]
            if gdefs.get("mailops_domains") and domain_names and domain not in domain_names:
                self.out.at(users.src, path, f"domain {domain} is not in mailops_domains; add it there or use a "
                                             f"login at one of: {', '.join(sorted(domain_names))}")

    def return_path(self, gvals: dict[str, Any], gdefs: dict[str, Var]) -> None:
        """Report addresses in a mailops domain need the return path (nothing else accepts them);
        each return-path domain is nobody's sending or parked domain, lies in its provider's zones,
        and domains sharing one publish it through the same provider."""
        domains_var, settings = gdefs.get("mailops_domains"), gvals.get("return_path")
        domains = gvals.get("domains")
        if not (domains_var and isinstance(domains_var.value, dict) and domains):
            return
        if settings is None and gdefs.get("mailops_return_path") is not None:
            return                  # set but invalid: its own problem says so, follow-ups would mislead
        parked = {d for d in (gvals.get("parked_domains") or {})}
        providers = gvals.get("dns_providers", {})
        owners: dict[str, tuple[str, str]] = {}
        for key in domains_var.value:
            name = _norm_domain(key)
            dom = domains.get(name) if name else None
            if dom is None:
                continue
            if settings is None:
                if dom.return_path is not None:
                    self.out.at(domains_var.src, domains_var.path + (key, "return_path"),
                                "has no effect: mailops_return_path is not set; set mailops_return_path in "
                                "group_vars/all or remove return_path")
                self._unaccepted_report_addresses(domains_var, key, dom, domains)
                continue
            rp = dom.return_path or f"{settings.subdomain}.{name}"
            where = domains_var.path + ((key, "return_path") if dom.return_path else (key,))
            what = f"return-path domain {rp}"
            if rp in domains or rp in parked:
                self.out.at(domains_var.src, where, f"{what} is a {'sending' if rp in domains else 'parked'} "
                            "domain itself; use a subdomain of its own, e.g. bounces." + (name or ""))
                continue
            zones = getattr(providers.get(dom.dns_provider), "zones", None)
            in_zones = lambda d: any(d == z or d.endswith("." + z) for z in zones)  # noqa: E731
            # a sending domain outside the zones is its own problem; its return path would only repeat it
            if zones and in_zones(name) and not in_zones(rp):
                self.out.at(domains_var.src, where, f"{what} is outside the zones of provider "
                            f"{dom.dns_provider!r} ({', '.join(zones)}); add its zone to zones: or choose "
                            "another return_path")
            first = owners.setdefault(rp, (name, dom.dns_provider))
            if first[1] != dom.dns_provider:
                self.out.at(domains_var.src, where, f"{what} is shared with {first[0]}, which publishes through "
                            f"{first[1]!r}, not {dom.dns_provider!r}; give the domains one provider or their own "
                            "return_path")

    def _unaccepted_report_addresses(self, domains_var: Var, key: Any, dom, domains: dict) -> None:
        """Without the return path nothing accepts mail for a report address in a mailops domain."""
        raw = domains_var.value[key] if isinstance(domains_var.value[key], dict) else {}
        for where, address in m.report_mailtos(dom):
            if address.rpartition("@")[2] not in domains:
                continue
            section, field = where.split(".")
            uris = (raw.get(section) or {}).get(field) if isinstance(raw.get(section), dict) else None
            index = next((i for i, u in enumerate(uris or []) if isinstance(u, str)
                          and u[7:].partition("!")[0].strip().lower() == address), 0)
            self.out.at(domains_var.src, domains_var.path + (key, section, field, index),
                        f"{address} is in a mailops domain, but nothing would accept it; set "
                        "mailops_return_path or use an address outside the mailops domains")

    def secret_references(self, gvals: dict[str, Any], gdefs: dict[str, Var], only: tuple[str, ...] | None) -> None:
        """Resolve every secret reference (of the variables in ``only``, or all), never showing a
        value: an unset variable, a missing, empty or unreadable file is a problem at its field.
        (The return-path key, whose content is checked too: :meth:`return_path_key`.)"""
        from mailops.errors import MailopsError
        from mailops.inventory.secrets import resolve

        refs: list[tuple[str, tuple, Any]] = []
        for var_name, key in (("mailops_dns_providers", "dns_providers"),
                              ("mailops_reverse_dns_providers", "reverse_dns_providers")):
            for name, provider in (gvals.get(key) or {}).items():
                refs += [(var_name, (name, f), getattr(provider, f))
                         for f in ("api_token", "tsig_secret", "access_key_id", "secret_access_key")
                         if getattr(provider, f, None) is not None]
        refs += [("mailops_submission_users", (i, "password"), user.password)
                 for i, user in enumerate(gvals.get("submission_users") or []) if user.password is not None]
        verify = gvals.get("verify")
        refs += [("mailops_verify", ("mailboxes", i, "imap", "password"), box.imap.password)
                 for i, box in enumerate(verify.mailboxes if verify else []) if box.imap is not None]
        for var_name, where, ref in refs:
            var = gdefs.get(var_name)
            if var is None or (only is not None and var_name not in only):
                continue
            try:
                resolve(ref, self.root)
            except MailopsError as exc:
                self.out.at(var.src, var.path + where, str(exc))

    def return_path_key(self, gvals: dict[str, Any], gdefs: dict[str, Var]) -> None:
        """Resolve the return-path key secret and check its content (never shown)."""
        from mailops.errors import MailopsError
        from mailops.inventory.secrets import resolve_hex_keys

        settings, var = gvals.get("return_path"), gdefs.get("mailops_return_path")
        if settings is None or var is None:
            return
        try:
            resolve_hex_keys(settings.key, self.root)
        except MailopsError as exc:
            self.out.at(var.src, var.path + ("key",), str(exc))

    def keystore_outside_git(self, gvals: dict[str, Any], gdefs: dict[str, Var]) -> None:
        keystore = gdefs.get("mailops_dkim_keystore")
        unset = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)",
                          os.path.expandvars(os.path.expanduser(gvals.get("dkim_keystore", ""))))
        if keystore and unset:
            self.out.at(keystore.src, keystore.path, f"environment variable {unset.group(1)} is not set, so the key "
                        f"store location is unknown; export {unset.group(1)} or write the path without it")
        elif keystore and "dkim_keystore" in gvals:
            path = self.keystore_path(gvals["dkim_keystore"])
            for root, what in _git_roots(self.root.resolve()):
                if path == root or root in path.parents:
                    self.out.at(keystore.src, keystore.path,
                                f"keys must live outside git: {path} is inside {what}; move the key store to a "
                                "directory outside the repository, e.g. /var/lib/mailops/dkim")
                    break

    def keystore_path(self, text: str) -> Path:
        path = Path(os.path.expandvars(os.path.expanduser(text)))
        if not path.is_absolute():
            path = self.root / path
        return Path(os.path.abspath(path)).resolve()
