"""The inventory: an Ansible inventory directory that is also mailops' typed configuration.

``load(path_or_name)`` is the one loader: it returns a checked
:class:`Inventory` or raises :class:`InventoryError` (a MailopsError) listing
the problems. ``load_inventory(path)`` returns ``(Inventory | None, problems)``;
``check_inventory(path)`` returns only the problems. Problems are data
(:class:`Problem`), one line each; nothing here prints or imports click.

Modules: ``loader`` (discovery, ``load``), ``yamlsource`` (YAML with line
numbers), ``files`` (only regular files, size caps), ``ansiblevars`` (groups,
hosts, Ansible's variable precedence), ``validation`` (pydantic errors ->
problems), ``checker`` (required values, cross references), ``model``
(``Inventory``, ``MailHost``) over ``settings`` and ``scalars``, ``ssh`` (the
SSH options Ansible uses for a host), ``secrets`` ({env}/{file} references).
"""

from mailops.inventory.loader import (
    MAIL_GROUP,
    check_inventory,
    display_path,
    load,
    load_inventory,
    resolve_inventory_path,
)
from mailops.inventory.model import (
    CloudflareProvider,
    Domain,
    EnvSecret,
    FileSecret,
    HcloudProvider,
    Inventory,
    MailHost,
    Rfc2136Provider,
    SubmissionUser,
)
from mailops.inventory.problems import InventoryError, Problem
from mailops.inventory.secrets import resolve as resolve_secret

__all__ = [
    "MAIL_GROUP", "CloudflareProvider", "Domain", "EnvSecret", "FileSecret", "HcloudProvider",
    "Inventory", "InventoryError", "MailHost", "Problem", "Rfc2136Provider", "SubmissionUser", "check_inventory",
    "display_path", "load", "load_inventory", "resolve_inventory_path", "resolve_secret",
]
