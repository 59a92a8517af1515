"""`dns sync` lists and applies zones concurrently: the guarantees of the sequential sync hold.

The real Cloudflare provider (official SDK) talks to the Cloudflare emulator in-process
over httpx's WSGI transport; no network, no lab.  Checked here: the API rate limiter
(mailops.dns.apilimit) never lets more than N requests into any window (fake clock),
every request of the provider goes through it, zone pages are fetched concurrently once
the total is known, address zones are applied before the others, a zone that fails is left
unchanged while the report says exactly which zones were applied and which not, and the
steps and the report come out in plan order whatever the threads do."""

from __future__ import annotations

import threading

import httpx
import pytest

from mailops.dns.apilimit import CLOUDFLARE_LIMITS, RateLimiter, peak
from mailops.dns.providers.cloudflare import CloudflareProvider
from mailops.dns.sync import ApplyFailed, Providers, apply_plan, make_plan
from mailops.inventory.model import Inventory
from mailops.lab.cfemu import CloudflareEmulator

TOKEN = "parallelTestToken_0123456789abcdefghijk"
ZONES = [f"z{i}.example" for i in range(6)]  # z0.example holds the mail host's A/AAAA
FQDN, ADDR4, ADDR6 = "mta1.z0.example", "198.51.100.41", "2001:db8:51::41"


class FakeClock:
    """time.monotonic/time.sleep stand-ins: sleeping moves the clock, nothing waits for real."""

    def __init__(self):
        self.now = 1000.0
        self.slept = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
            self.slept += seconds


class Recording(RateLimiter):
    """A limiter that keeps the clock time of every grant."""

    def __init__(self, limits, clock: FakeClock):
        super().__init__(limits, clock=clock, sleep=clock.sleep)
        self.clock, self.grants = clock, []

    def acquire(self) -> float:
        waited = super().acquire()
        self.grants.append(self._granted[-1])
        return waited


# --- the limiter ----------------------------------------------------------------------------

def test_peak_counts_the_fullest_sliding_window():
    assert peak([], 1.0) == 0
    assert peak([0.0, 0.5, 0.99, 1.0, 1.5], 1.0) == 3  # 0.0-0.99, or 0.5-1.5: three each
    assert peak([5.0, 1.0, 3.0, 1.2, 1.1], 1.0) == 3  # any order
    assert peak([0.0, 2.0, 4.0], 1.0) == 1


def test_limiter_never_lets_more_than_n_into_any_window_and_wastes_no_slot():
    clock = FakeClock()
    limiter = Recording(((10, 5.0), (3, 1.0)), clock)
    for _ in range(200):
        limiter.acquire()
    assert peak(limiter.grants, 5.0) == 10 and peak(limiter.grants, 1.0) == 3
    # As fast as the limits allow: 10 per 5 s, so 200 grants: 19 windows of 5 s, then 3 + 3 + 3 + 1 in the last.
    assert limiter.grants[-1] - limiter.grants[0] == pytest.approx(95.0 + 3.0)
    # the first 3 at once, the 4th after a second: the per-second limit binds inside the 5-s one
    assert limiter.grants[:4] == [1000.0, 1000.0, 1000.0, 1001.0]


def test_limiter_holds_with_many_threads():
    clock = FakeClock()
    limiter = Recording(CLOUDFLARE_LIMITS, clock)
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(150)]) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(limiter.grants) == 2400  # twice the 5-minute budget: the limit must have made them wait
    assert peak(limiter.grants, 300.0) <= 1200 and peak(limiter.grants, 1.0) <= 200
    assert max(limiter.grants) - min(limiter.grants) >= 300.0


def test_limiter_refuses_nonsense_limits():
    for limits in ((), ((0, 1.0),), ((5, 0),)):
        with pytest.raises(ValueError):
            RateLimiter(limits)


# --- the provider and the sync --------------------------------------------------------------

def inventory(tmp_path) -> Inventory:
    return Inventory.model_validate({
        "path": tmp_path, "dkim_keystore": tmp_path / "keys",
        "hosts": [{"name": "mta1", "fqdn": FQDN, "ipv4": ADDR4, "ipv6": ADDR6, "ssh_host": ADDR4}],
        "domains": {z: {"dns_provider": "cf", "dmarc": {"policy": "reject"}} for z in ZONES}})


@pytest.fixture
def cf():
    emulator = CloudflareEmulator()
    emulator.add_token(TOKEN)
    emulator.ids = {z: emulator.add_zone(z) for z in ZONES}
    clock = FakeClock()
    emulator.limiter = Recording(((10, 5.0), (4, 1.0)), clock)

    def provider(app=None) -> CloudflareProvider:
        return CloudflareProvider("cf", TOKEN, "http://cf.emulator/client/v4", limiter=emulator.limiter,
                                  transport=httpx.WSGITransport(app=app or emulator.wsgi_app))
    emulator.provider = provider
    return emulator


def plan_for(inv, provider):
    return make_plan(inv, None, providers=Providers(inv, {"cf": provider}), resolve_txt=lambda _n: [])


def state(emulator) -> dict[str, list]:
    return {z: sorted((r["name"], r["type"], r["content"]) for r in emulator.records(z)) for z in ZONES}


def test_every_request_of_a_sync_goes_through_the_limiter_retries_included(tmp_path, cf):
    inv = inventory(tmp_path)
    cf.inject_fault(503, count=2, path_contains="/dns_records")  # the SDK retries these
    plan, providers = plan_for(inv, cf.provider())
    apply_plan(plan, providers)
    assert len(cf.request_log) == len(cf.limiter.grants) == providers.requests()["cf"]
    assert sum(1 for r in cf.request_log if r["status"] == 503) == 2
    assert peak(cf.limiter.grants, 5.0) <= 10 and peak(cf.limiter.grants, 1.0) <= 4
    assert cf.limiter.clock.slept > 0  # 1 + 6 + 2 + 6 requests: the fake limits had to pace them
    assert plan_for(inv, cf.provider())[0].pending == 0


def test_zone_pages_after_the_first_are_fetched_concurrently_and_only_as_many_as_announced():
    emulator = CloudflareEmulator()
    emulator.add_token(TOKEN)
    names = sorted(f"p{i:03d}.example" for i in range(120))  # pages of 50: 50 + 50 + 20
    for name in names:
        emulator.add_zone(name)
    both = threading.Barrier(2, timeout=10)  # pages 2 and 3 must be in flight together

    def app(environ, start_response):
        if environ["PATH_INFO"].endswith("/zones") and "page=1&" not in environ["QUERY_STRING"] + "&":
            both.wait()
        return emulator.wsgi_app(environ, start_response)
    provider = CloudflareProvider("cf", TOKEN, "http://cf.emulator/client/v4", limiter=RateLimiter(CLOUDFLARE_LIMITS),
                                  transport=httpx.WSGITransport(app=app))
    assert provider.zone_for("mta1.p119.example") == "p119.example"
    assert sorted(provider._zone_ids()) == names
    pages = sorted(r["query"].get("page") for r in emulator.request_log)
    assert pages == ["1", "2", "3"]  # no empty 4th page


def test_address_zones_are_applied_before_all_others_and_steps_come_in_plan_order(tmp_path, cf):
    inv = inventory(tmp_path)
    steps: list[str] = []
    plan, providers = plan_for(inv, cf.provider())
    cf.reset_stats()
    apply_plan(plan, providers, on_step=steps.append)
    batches = [r["path"].split("/")[4] for r in cf.request_log if r["path"].endswith("/batch")]
    zone_of = {v: k for k, v in cf.ids.items()}
    assert zone_of[batches[0]] == "z0.example" and sorted(zone_of[b] for b in batches) == ZONES
    assert [s.split(" ")[0] for s in steps] == ZONES  # z0 first (the address zone), then plan order
    assert plan_for(inv, cf.provider())[0].pending == 0


def test_a_failing_zone_is_left_unchanged_and_the_report_is_exact(tmp_path, cf):
    inv = inventory(tmp_path)
    plan, providers = plan_for(inv, cf.provider())
    before = state(cf)
    # 400 is not retried: the batch of z3 fails as a whole, inside Cloudflare's transaction
    cf.inject_fault(400, path_contains=f"/zones/{cf.ids['z3.example']}/dns_records/batch")
    with pytest.raises(ApplyFailed) as err:
        apply_plan(plan, providers)
    failed = err.value
    assert failed.failed == ["z3.example"]
    assert sorted(failed.applied + failed.failed + failed.not_applied) == ZONES  # every zone accounted for
    for group in (failed.applied, failed.not_applied):
        assert group == sorted(group)  # plan order
    assert failed.applied[0] == "z0.example"  # the address zone went first, alone
    after = state(cf)
    for zone in failed.failed + failed.not_applied:
        assert after[zone] == before[zone] == []
    left = plan_for(inv, cf.provider())[0]
    for zp in left.zones:
        assert bool(zp.changes) == (zp.zone not in failed.applied), zp.zone
    message = str(failed)
    assert "applying the changes to z3.example failed" in message and "\n" not in message
    assert f"{len(failed.applied)} applied, 1 failed and left unchanged (z3.example)" in message
    apply_plan(left, providers)  # once the API works again, the rest lands
    assert plan_for(inv, cf.provider())[0].pending == 0


def test_one_worker_keeps_the_sequential_semantics_exactly(tmp_path, cf):
    inv = inventory(tmp_path)
    plan, providers = plan_for(inv, cf.provider())
    cf.inject_fault(400, path_contains=f"/zones/{cf.ids['z3.example']}/dns_records/batch")
    with pytest.raises(ApplyFailed) as err:
        apply_plan(plan, providers, workers=1)
    assert err.value.applied == ["z0.example", "z1.example", "z2.example"]
    assert err.value.not_applied == ["z4.example", "z5.example"]
    assert "2 not applied (z4.example, z5.example)" in str(err.value)


def test_a_failing_address_zone_stops_every_other_zone_and_reports_the_same_each_time(tmp_path, cf):
    inv = inventory(tmp_path)
    messages = []
    for _ in range(2):
        plan, providers = plan_for(inv, cf.provider())
        cf.inject_fault(400, path_contains=f"/zones/{cf.ids['z0.example']}/dns_records/batch")
        with pytest.raises(ApplyFailed) as err:
            apply_plan(plan, providers)
        messages.append(str(err.value))
        assert err.value.applied == [] and err.value.failed == ["z0.example"]
        assert err.value.not_applied == ZONES[1:]
        assert all(records == [] for records in state(cf).values())
    assert messages[0] == messages[1]
    assert "0 applied, 1 failed and left unchanged (z0.example), 5 not applied (z1.example, " in messages[0]
