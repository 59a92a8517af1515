"""The Ansible side of an inventory directory: groups, hosts, and their variables.

Parsed like Ansible's yaml inventory plugin, and merged with Ansible's
precedence, so mailops sees the values ansible-playbook will use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailops.inventory.problems import Problem, suggest
from mailops.inventory.scalars import kind
from mailops.inventory.yamlsource import Collector, Source


@dataclass
class Var:
    """One definition of a variable and where it was written."""
    name: str
    value: Any
    src: Source
    path: tuple  # path of the variable's key inside src


@dataclass
class Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Var] = field(default_factory=dict)       # from inventory files
    file_vars: dict[str, Var] = field(default_factory=dict)  # from group_vars/


@dataclass
class Host:
    name: str
    decls: list[tuple[Source, tuple]] = field(default_factory=list)
    vars: dict[str, Var] = field(default_factory=dict)
    file_vars: dict[str, Var] = field(default_factory=dict)


class AnsibleInventory:
    """The groups/hosts/variables of the directory, parsed like Ansible's yaml plugin."""

    def __init__(self, out: Collector) -> None:
        self.out = out
        self.groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped")}
        self.hosts: dict[str, Host] = {}
        self.all_defs: list[Var] = []  # every variable definition, for the unknown-key check

    def _lost(self, src: Source, path: tuple, message: str) -> None:
        """A structure problem: the data under ``path`` is not used, so skip completeness checks."""
        self.out.incomplete = True
        self.out.at(src, path, message)

    def _vars(self, src: Source, data: Any, path: tuple, into: dict[str, Var]) -> None:
        for name, value in self._mapping(src, path, data, "variables must be a mapping (name: value)"):
            if not isinstance(name, str):
                self._lost(src, path + (name,), "variable names must be text; rename it")
                continue
            var = Var(name, value, src, path + (name,))
            into[name] = var
            self.all_defs.append(var)

    def parse_inventory(self, src: Source) -> None:
        for name, data in src.data.items():
            self._group(src, str(name), data, (name,), parent="all" if name != "all" else None, depth=0)

    def _mapping(self, src: Source, path: tuple, value: Any, what: str) -> list[tuple[Any, Any]]:
        """The items of ``value`` (none for null); anything but a mapping is reported as ``what``."""
        if value is None:
            return []
        if not isinstance(value, dict):
            self._lost(src, path, f"{what}, found {kind(value)}")
            return []
        return list(value.items())

    def _group(self, src: Source, name: str, data: Any, path: tuple, parent: str | None, depth: int) -> None:
        group = self.groups.setdefault(name, Group(name))
        if parent and name not in self.groups[parent].children and name != parent:
            self.groups[parent].children.append(name)
        if data is None:
            return
        if not isinstance(data, dict):
            self._lost(src, path, f"a group must be a mapping with hosts:, children: and vars:, found {kind(data)}")
            return
        for key, value in data.items():
            kpath = path + (key,)
            if key == "vars":
                self._vars(src, value, kpath, group.vars)
            elif key == "hosts":
                for host_name, host_vars in self._mapping(src, kpath, value,
                                                          "hosts must be a mapping of host names to their variables"):
                    hname = str(host_name)
                    host = self.hosts.setdefault(hname, Host(hname))
                    host.decls.append((src, kpath + (host_name,)))
                    if hname not in group.hosts:
                        group.hosts.append(hname)
                    self._vars(src, host_vars, kpath + (host_name,), host.vars)
            elif key == "children":
                for child, child_data in self._mapping(src, kpath, value, "children must be a mapping of group names"):
                    if depth > 50:
                        self._lost(src, kpath, "groups nested too deeply; flatten them")
                        break
                    self._group(src, str(child), child_data, kpath + (child,), parent=name, depth=depth + 1)
            else:
                self._lost(src, kpath, "unknown key in a group; a group holds only hosts, children and vars"
                            + suggest(key, ["hosts", "children", "vars"]))

    def add_vars_file(self, kind: str, name: str, src: Source) -> None:
        target = self.groups.get(name) if kind == "group_vars" else self.hosts.get(name)
        if target is None:
            known = list(self.groups) if kind == "group_vars" else list(self.hosts)
            what = "group" if kind == "group_vars" else "host"
            self.out.incomplete = True
            self.out.add(Problem(src.display, "(file)",
                                 f"there is no {what} {name!r} in the inventory, so Ansible ignores this file; "
                                 f"rename it after an existing {what}" + suggest(name, known), 1))
            return
        self._vars(src, src.data, (), target.file_vars)

    # Membership and precedence -------------------------------------------

    def members(self, group: str) -> list[str]:
        """Hosts of ``group``, directly or through child groups (cycle-safe)."""
        seen, order, todo = set(), [], [group]
        while todo:
            g = todo.pop(0)
            if g in seen or g not in self.groups:
                continue
            seen.add(g)
            for h in self.groups[g].hosts:
                if h not in order:
                    order.append(h)
            todo.extend(self.groups[g].children)
        return order

    def _depths(self) -> dict[str, int]:
        depth = {"all": 0}
        for _ in range(len(self.groups)):  # longest path from all, bounded for cycles
            changed = False
            for g in self.groups.values():
                if g.name in depth:
                    for c in g.children:
                        if c != "all" and depth.get(c, -1) < depth[g.name] + 1 <= len(self.groups):
                            depth[c] = depth[g.name] + 1
                            changed = True
            if not changed:
                break
        return depth

    def host_vars(self, name: str) -> dict[str, Var]:
        """Ansible's precedence: inventory group vars < group_vars/all < group_vars/* < host vars < host_vars/."""
        groups = {g for g in self.groups if name in self.members(g)} | {"all"}
        depth = self._depths()
        order = sorted(groups, key=lambda g: (depth.get(g, 1), g))
        merged: dict[str, Var] = {}
        for g in order:
            merged.update(self.groups[g].vars)
        for g in order:
            merged.update(self.groups[g].file_vars)
        merged.update(self.hosts[name].vars)
        merged.update(self.hosts[name].file_vars)
        return merged

    def global_vars(self) -> dict[str, Var]:
        return {**self.groups["all"].vars, **self.groups["all"].file_vars}
