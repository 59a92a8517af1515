"""Read an Ansible inventory directory, validate the mailops part, report problems.

The directory stays a plain Ansible inventory: mailops reads the same files
Ansible reads (top-level ``*.yml`` inventories, ``group_vars/``, ``host_vars/``),
merges variables the way Ansible does, and validates only ``mailops_*`` variables
and the SSH access of hosts in group ``mailhosts``.

Problems are returned as data. Each names the file (with the line when known)
and the field path inside that file, e.g.
``inventories/lab/group_vars/all/mailops.yml:12: mailops_domains["shop.test"].dmarc.policy: ...``.
"""

from __future__ import annotations

from pathlib import Path

from mailops.inventory import model as m
from mailops.inventory.ansiblevars import AnsibleInventory
from mailops.inventory.checker import Checker
from mailops.inventory.model import MAIL_GROUP  # noqa: F401 - re-exported
from mailops.inventory.paths import display_path, resolve_inventory_path
from mailops.inventory.problems import InventoryError, Problem
from mailops.inventory.yamlsource import YAML_SUFFIXES, Collector, read_yaml


def _discover(root: Path) -> tuple[list[Path], list[tuple[str, str, Path]]]:
    # Everything named *.yml that is not a directory is read, so a FIFO or device there is
    # reported (Ansible would read it too) rather than skipped.
    inventories = sorted(p for p in root.iterdir()
                         if not p.is_dir() and p.suffix in YAML_SUFFIXES and not p.name.startswith("."))
    var_files: list[tuple[str, str, Path]] = []
    for kind in ("group_vars", "host_vars"):
        base = root / kind
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                files = sorted(f for f in entry.rglob("*") if not f.is_dir() and f.suffix in YAML_SUFFIXES
                               and not any(part.startswith(".") for part in f.relative_to(entry).parts))
                var_files += [(kind, entry.name, f) for f in files]
            elif entry.suffix in YAML_SUFFIXES:
                var_files.append((kind, entry.stem, entry))
    return inventories, var_files


def load_inventory(path: str | Path, *, secrets: bool | tuple[str, ...] = False
                   ) -> tuple[m.Inventory | None, list[Problem]]:
    """Read and check the inventory directory at ``path``; with ``secrets``, also resolve the
    secret references (True: all of them; a tuple: those of these variables, e.g.
    ``("mailops_dns_providers",)``), each problem at the field that names it, never showing a
    value, and check the return-path key's content.

    Returns ``(inventory, [])`` when it is clean, else ``(None, problems)``:
    callers never act on a half-valid inventory.
    """
    root = Path(path)
    out = Collector()
    shown = display_path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        out.add(Problem(shown, "(directory)", f"inventory directory {what}; create it (copy inventories/example) "
                                               "or pass the right NAME or path"))
        return None, out.problems
    try:
        inv_files, var_files = _discover(root)
    except OSError as exc:
        out.add(Problem(shown, "(directory)", f"cannot list the directory ({exc.strerror or exc}); check permissions"))
        return None, out.problems
    if not inv_files:
        out.add(Problem(shown, "(directory)", "no inventory file; create hosts.yml with all: children: mailhosts: hosts:"))
        return None, out.problems

    ans = AnsibleInventory(out)
    inv_sources = [s for s in (read_yaml(f, out) for f in inv_files) if s is not None]
    for src in inv_sources:
        ans.parse_inventory(src)
    all_sources = []
    for kind, name, file in var_files:
        src = read_yaml(file, out)
        if src is None:
            continue
        ans.add_vars_file(kind, name, src)
        if kind == "group_vars" and name == "all":
            all_sources.append(src)
    if not inv_sources:  # every inventory file was unreadable: nothing more to say
        return None, out.problems

    checker = Checker(root, ans, inv_sources, all_sources, out)
    checker.unknown_keys()
    gvals, gdefs = checker.globals()
    hosts = checker.mail_hosts()
    if not out.incomplete:
        checker.cross(gvals, gdefs, hosts)
    if secrets and not out.problems:
        checker.secret_references(gvals, gdefs, None if secrets is True else secrets)
        if secrets is True or "mailops_return_path" in secrets:
            checker.return_path_key(gvals, gdefs)
    if out.problems:
        return None, out.problems

    mail_hosts = [mh for _, _, mh in hosts if mh is not None]
    names = [h.name for h in mail_hosts]
    domains = {d: s.model_copy(update={"hosts": s.hosts or list(names)}) for d, s in gvals["domains"].items()}
    gvals["dkim_keystore"] = checker.keystore_path(gvals["dkim_keystore"])
    inventory = m.Inventory(path=root.resolve(), hosts=mail_hosts, **{**gvals, "domains": domains})
    return inventory, []


def load(path_or_name: str | Path, *, secrets: bool | tuple[str, ...] = False) -> m.Inventory:
    """The one way to get an :class:`Inventory`: read and check ``path_or_name`` and raise
    :class:`InventoryError` listing every problem, so nobody acts on a half-valid inventory.

    Text is resolved as the CLI's ``-i`` (a directory, or a name under ``inventories/``);
    a ``Path`` is taken as it is (resolving ``Path("./x")`` again would lose the ``./``).
    """
    path = path_or_name if isinstance(path_or_name, Path) else resolve_inventory_path(path_or_name)
    inventory, problems = load_inventory(path, secrets=secrets)
    if problems or inventory is None:
        raise InventoryError(path, problems)
    return inventory


def check_inventory(path: str | Path) -> list[Problem]:
    """Every problem of the inventory at ``path`` (empty list when it is clean), secrets checked too."""
    return load_inventory(path, secrets=True)[1]
