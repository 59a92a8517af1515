"""Fixtures for the server checks."""

from __future__ import annotations

import pytest


_HOSTVARS: dict[str, dict] = {}


def host_variables(host) -> dict:
    """The host's inventory variables, read once per host and run (each read runs
    ansible-inventory, about a second); empty when not using the ansible backend."""
    if host.backend.NAME != "ansible":
        return {}
    name = host.backend.get_hostname()
    if name not in _HOSTVARS:
        try:
            _HOSTVARS[name] = host.ansible.get_variables() or {}
        except Exception:  # noqa: BLE001 - no inventory variables to compare against
            _HOSTVARS[name] = {}
    return _HOSTVARS[name]


@pytest.fixture(scope="module")
def hostvars(host) -> dict:
    """The host's inventory variables (empty when not using the ansible backend)."""
    return host_variables(host)


@pytest.fixture(scope="module")
def fqdn(host, hostvars) -> str:
    return str(hostvars.get("mailops_fqdn") or hostvars.get("inventory_hostname")
               or host.check_output("hostname -f"))


# --- checks from outside the server (DNS, security probes, live send) --------------
# They read the mailops inventory named by --ansible-inventory and run on the
# controller; `mailops verify` runs the same functions.  Marked "outside" so that
# verify's server group can run the testinfra checks alone (-m "not outside").

def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "outside: a mailops check made from outside the server")


def _mailops_inventory(config):
    path = config.getoption("ansible_inventory", default=None)
    if not path:
        return None
    from mailops.inventory import load_inventory
    inv, problems = load_inventory(path)
    return None if problems else inv


def pytest_generate_tests(metafunc) -> None:
    for fixture, values in (("mailops_domain", lambda inv: sorted(inv.domains)),
                            ("mailops_host", lambda inv: [h.name for h in inv.hosts])):
        if fixture in metafunc.fixturenames:
            inv = _mailops_inventory(metafunc.config)
            metafunc.parametrize(fixture, values(inv) if inv else [])


@pytest.fixture(scope="session")
def mailops_inventory(request):
    inv = _mailops_inventory(request.config)
    if inv is None:
        pytest.skip("--ansible-inventory is not a valid mailops inventory (run `mailops inventory check`)")
    return inv


def assert_no_failures(results) -> None:
    """Fail with one line per failed check (and its fix); skip when nothing could be decided."""
    failures = [r for r in results if r.status == "fail"]
    assert not failures, "\n".join(f"{r.subject} {r.name}: {r.detail} -- fix: {r.fix}" for r in failures)
    if results and all(r.status == "inconclusive" for r in results):
        pytest.skip("inconclusive: " + "; ".join(r.detail for r in results[:3]))


# --- one persistent connection per host (mailops.checks.connection) ----------------

def pytest_runtest_setup(item) -> None:
    host = getattr(item, "callspec", None) and item.callspec.params.get("_testinfra_host")
    if host is not None:
        from mailops.checks import connection
        connection.attach(host)


def pytest_sessionfinish(session) -> None:
    from mailops.checks import connection
    connection.close_all()
