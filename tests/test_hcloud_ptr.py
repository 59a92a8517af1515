"""Reverse DNS through the official hcloud library, against the Hetzner Cloud emulator on loopback."""

from __future__ import annotations

import hcloud
import pytest

from mailops.dns.providers.hcloud import HcloudReverseProvider
from mailops.errors import MailopsError
from mailops.lab import hcloudemu

TOKEN = "mailops-test-token-7Qm2"
MX1_V4, MX1_V6_NET, MX1_V6 = "198.51.100.11", "2001:db8:51::/64", "2001:db8:51::25"


@pytest.fixture
def api():
    """(emulator, base URL): a project with the mail host mx1 and one unrelated server."""
    emulator = hcloudemu.HcloudEmulator()
    emulator.add_token(TOKEN)
    emulator.add_server("mx1", MX1_V4, MX1_V6_NET, labels={"role": "mail"})
    emulator.add_server("web1", "198.51.100.20", "2001:db8:52::/64")
    server, base_url = hcloudemu.serve(emulator)
    yield emulator, base_url
    hcloudemu.shutdown(server)


def provider(base_url: str, token: str = TOKEN) -> HcloudReverseProvider:
    p = HcloudReverseProvider("hetzner", token, api_base_url=base_url)
    p.retry_delays = (0.01, 0.01, 0.01)  # keep our own 5xx backoff short in tests
    return p


def calls(emulator, method: str, path_end: str) -> list[int]:
    """HTTP statuses of the requests the emulator saw for one endpoint."""
    return [status for m, path, status in emulator.request_log() if m == method and path.endswith(path_end)]


def assert_one_line(err: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(err.value)
    assert "\n" not in message and message.startswith("hcloud provider 'hetzner': ")
    for needle in needles:
        assert needle in message, message
    return message


def test_ipv4_and_ipv6_ptrs_are_set_and_read_back(api):
    emulator, base_url = api
    rdns = provider(base_url)
    assert rdns.get_ptr(MX1_V4) == "static.11.100.51.198.clients.your-server.de"  # Hetzner's default
    assert rdns.get_ptr(MX1_V6) is None

    rdns.set_ptr(MX1_V4, "MX1.Shop.Test.")  # normalised before it is sent
    rdns.set_ptr("2001:db8:51:0:0::25", "mx1.shop.test")  # any spelling of an address in the /64

    assert rdns.get_ptr(MX1_V4) == "mx1.shop.test"
    assert rdns.get_ptr(MX1_V6) == "mx1.shop.test"
    # The owner was found from one listing; the actions were waited for, which applies them.
    assert calls(emulator, "GET", "/v1/servers") == [200]
    assert len(calls(emulator, "POST", "/actions/change_dns_ptr")) == 2
    assert emulator.ptr(MX1_V4) == emulator.ptr(MX1_V6) == "mx1.shop.test"

    # A fresh client of the official library sees the same through server.public_net.
    public_net = hcloud.Client(TOKEN, api_endpoint=base_url).servers.get_by_name("mx1").public_net
    assert public_net.ipv4.dns_ptr == "mx1.shop.test"
    assert public_net.ipv6.dns_ptr == [{"ip": MX1_V6, "dns_ptr": "mx1.shop.test"}]
    assert rdns.get_ptr("198.51.100.20") == "static.20.100.51.198.clients.your-server.de"  # untouched


def test_unassigned_primary_ip_is_found_and_set(api):
    emulator, base_url = api
    emulator.add_primary_ip("203.0.113.7", name="kept-after-rebuild")
    rdns = provider(base_url)
    rdns.set_ptr("203.0.113.7", "mx2.shop.test")
    assert rdns.get_ptr("203.0.113.7") == "mx2.shop.test"
    assert calls(emulator, "POST", "/actions/change_dns_ptr")  # through /v1/primary_ips/{id}/actions/...
    assert all("/primary_ips/" in path for m, path, _ in emulator.request_log() if m == "POST")


@pytest.mark.parametrize("address", ["198.51.100.99", "2001:db8:53::1"])
def test_address_no_server_owns_is_a_one_line_error(api, address):
    _, base_url = api
    with pytest.raises(MailopsError) as err:
        provider(base_url).set_ptr(address, "mx1.shop.test")
    assert_one_line(err, f"no server or Primary IP owns {address}", "check mailops_ipv4")


def test_refused_token_names_401_and_never_the_token(api):
    _, base_url = api
    wrong = "wrong-token-Zx81"
    with pytest.raises(MailopsError) as err:
        provider(base_url, token=wrong).get_ptr(MX1_V4)
    message = assert_one_line(err, "401", "api_token of mailops_reverse_dns_providers.hetzner")
    assert wrong not in message and TOKEN not in message


@pytest.mark.parametrize("status, count", [(429, 1), (503, 2)])
def test_rate_limit_and_unavailable_are_retried_to_success(api, status, count):
    # 429: the hcloud library retries it itself; 503: the provider does.
    emulator, base_url = api
    emulator.inject_fault(status, count=count, retry_after=1)
    rdns = provider(base_url)
    rdns.set_ptr(MX1_V4, "mx1.shop.test")
    assert calls(emulator, "GET", "/v1/servers") == [status] * count + [200]
    assert rdns.get_ptr(MX1_V4) == "mx1.shop.test" == emulator.ptr(MX1_V4)


def test_persistent_503_gives_up_with_a_one_line_error(api):
    emulator, base_url = api
    rdns = provider(base_url)
    rdns.get_ptr(MX1_V4)  # listing cached: the failures hit the change itself
    emulator.inject_fault(503, count=10)
    with pytest.raises(MailopsError) as err:
        rdns.set_ptr(MX1_V4, "mx1.shop.test")
    assert_one_line(err, "503 unavailable", "after 4 attempts", f"setting the PTR of {MX1_V4}")
    assert calls(emulator, "POST", "/actions/change_dns_ptr") == [503] * 4


def test_setting_the_current_ptr_again_is_a_no_op(api):
    emulator, base_url = api
    rdns = provider(base_url)
    rdns.set_ptr(MX1_V6, "mx1.shop.test")
    rdns.set_ptr(MX1_V6, "mx1.shop.test.")
    assert len(calls(emulator, "POST", "/actions/change_dns_ptr")) == 1
    assert rdns.get_ptr(MX1_V6) == "mx1.shop.test"

    # The API itself accepts an unchanged value too; its action runs, then succeeds when polled.
    client = hcloud.Client(TOKEN, api_endpoint=base_url)
    action = client.servers.change_dns_ptr(client.servers.get_by_name("mx1"), ip=MX1_V6, dns_ptr="mx1.shop.test")
    assert action.status == "running"
    action.wait_until_finished()
    assert action.status == "success" and emulator.ptr(MX1_V6) == "mx1.shop.test"


def test_invalid_hostname_is_rejected_by_the_api_as_one_line(api):
    emulator, base_url = api
    rdns = provider(base_url)
    with pytest.raises(MailopsError) as err:
        rdns.set_ptr(MX1_V4, "mx1 shop.test")
    assert_one_line(err, "400 invalid_input", "dns_ptr", MX1_V4, "use a valid host name")
    assert calls(emulator, "POST", "/actions/change_dns_ptr") == [400]
    assert rdns.get_ptr(MX1_V4) == "static.11.100.51.198.clients.your-server.de"


def test_owner_on_a_later_page_is_found(api):
    emulator, base_url = api
    for n in range(60):
        emulator.add_server(f"filler{n}", f"192.0.2.{n + 1}", None)
    emulator.add_server("mx9", "198.51.100.99", None)
    pagination = hcloud.Client(TOKEN, api_endpoint=base_url).servers.get_list(page=2, per_page=50).meta.pagination
    assert (pagination.page, pagination.previous_page, pagination.next_page,
            pagination.last_page, pagination.total_entries) == (2, 1, None, 2, 63)

    rdns = provider(base_url)
    rdns.set_ptr("198.51.100.99", "mx9.shop.test")
    assert rdns.get_ptr("198.51.100.99") == "mx9.shop.test"
    assert calls(emulator, "GET", "/v1/servers") == [200, 200, 200]  # one get_list above, two pages here


def test_emulator_refuses_to_listen_beyond_loopback():
    with pytest.raises(ValueError, match="loopback only"):
        hcloudemu.serve(hcloudemu.HcloudEmulator(), host="0.0.0.0")
