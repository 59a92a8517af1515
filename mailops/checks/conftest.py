"""Fixtures for the server checks."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def hostvars(host) -> dict:
    """The host's inventory variables (empty when not using the ansible backend)."""
    try:
        return host.ansible.get_variables()
    except Exception:
        return {}


@pytest.fixture(scope="module")
def fqdn(host, hostvars) -> str:
    return str(hostvars.get("mailops_fqdn") or hostvars.get("inventory_hostname")
               or host.check_output("hostname -f"))
