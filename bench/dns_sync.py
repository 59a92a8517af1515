"""Benchmark: `dns sync` of many domains through the Cloudflare API emulator, next to octoDNS.

    .venv/bin/python bench/dns_sync.py                # 200 domains
    .venv/bin/python bench/dns_sync.py --domains 50
    .venv/bin/python bench/dns_sync.py --latency 50     # every API answer 50 ms late, both tools
    .venv/bin/python bench/dns_sync.py --provider hetzner --domains 50   # or route53 (moto); mailops only
    .venv/bin/pip install -e '.[bench]'               # octoDNS, for the comparison

Builds a throw-away inventory (one mail host, N sending domains, each its own
Cloudflare zone, one RSA-2048 DKIM key each).  mailops: inventory load, plan and
apply against the emulator in-process (the official SDK over httpx's WSGI
transport: no network; no read-back, which queries authoritative DNS servers),
first sync and no-op sync.  octoDNS (octodns + octodns-cloudflare): a YamlProvider
holding exactly the records mailops wants, synced to a CloudflareProvider whose
requests session calls a second, fresh emulator in-process (bench/octodns_compare.py),
first sync (``--doit``) and no-op sync.  Each phase starts from configuration on disk
(inventory / octoDNS config) with a new provider, as a new CLI run would.  ``--latency MS``
delays every answer of both emulators (CloudflareEmulator.delay), as a real API's round trip
would.  Prints wall time and API requests for both, the ratios against the goals of issue 17,
the peak requests in any sliding window of Cloudflare's documented limits (each fresh emulator
stands for a fresh API user; mailops's limiter is per user, so each emulator gets its own), and
whether the two emulators end up holding the same records.  Nothing is asserted.

``--provider hetzner`` syncs through the Hetzner Cloud DNS API emulator
(mailops.lab.hcloudemu on loopback), ``--provider route53`` through moto's Route 53
server (a loopback subprocess); both mailops only (the bench extra holds octoDNS's
Cloudflare provider only), with --latency added to each request (hetzner: in the
emulator; route53: in boto3's before-send hook) and the peak requests per window of
that provider's documented limit.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from mailops.dkim.store import KeyStore
from mailops.dns.desired import desired_state
from mailops.dns.apilimit import CLOUDFLARE_LIMITS, RateLimiter, peak
from mailops.dns.providers.cloudflare import CloudflareProvider
from mailops.dns.records import in_zone, join_txt
from mailops.dns.sync import API_WORKERS, Providers, apply_plan, make_plan
from mailops.inventory import load_inventory
from mailops.lab.cfemu import CloudflareEmulator

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import octodns_compare
except ImportError as exc:  # the bench extra is not installed
    octodns_compare = None
    OCTODNS_MISSING = f"{exc} (install the bench extra: .venv/bin/pip install -e '.[bench]')"

TOKEN = "bench-token"
TOKEN_ENV = "BENCH_CF_TOKEN"


def make_inventory(root: Path, n: int) -> Path:
    inv = root / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    domains = [f"d{i:03d}.test" for i in range(n)]
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"mailhosts": {"hosts": {
        f"mta1.{domains[0]}": {"ansible_host": "198.51.100.11", "mailops_ipv4": "198.51.100.11",
                               "mailops_ipv6": "2001:db8:51::11"}}}}}}))
    (inv / "group_vars" / "all" / "mailops.yml").write_text(yaml.safe_dump({
        "mailops_dkim_keystore": str(root / "dkim"),
        "mailops_dns_providers": {"cf": {"type": "cloudflare", "api_token": {"env": TOKEN_ENV},
                                         "api_base_url": "http://cf.emulator/client/v4"}},
        "mailops_domains": {d: {"dns_provider": "cf",
                                "dmarc": {"policy": "reject", "rua": ["mailto:dmarc-reports@example.net"]}}
                            for d in domains},
    }))
    return inv


def fresh_emulator(domains, latency: float = 0.0) -> CloudflareEmulator:
    emulator = CloudflareEmulator()
    emulator.delay(latency)
    emulator.bench_limiter = RateLimiter(CLOUDFLARE_LIMITS)  # a fresh emulator is a fresh API user
    emulator.add_token(TOKEN)
    for domain in domains:
        emulator.add_zone(domain)
    return emulator


def run_sync(inv_dir: Path, emulator: CloudflareEmulator) -> dict:
    """One `mailops dns sync` without the read-back: inventory load, plan, apply."""
    emulator.reset_stats()
    t = time.perf_counter()
    inv, problems = load_inventory(inv_dir)
    assert not problems, problems[:3]
    store = KeyStore.for_inventory(inv)
    transport = httpx.WSGITransport(app=emulator.wsgi_app)
    provider = CloudflareProvider("cf", TOKEN, "http://cf.emulator/client/v4", transport=transport,
                                  limiter=emulator.bench_limiter)
    plan, providers = make_plan(inv, store, providers=Providers(inv, {"cf": provider}))
    apply_plan(plan, providers)
    wall = time.perf_counter() - t
    return {"wall": wall, "changes": plan.pending, "zones": len(plan.zones),
            "requests": emulator.request_count()}


def peaks(emulator) -> list[int]:
    """The most requests of the last phase in any window of each of Cloudflare's limits."""
    times = [e["time"] for e in list(emulator.request_log)]
    return [peak(times, window) for _, window in CLOUDFLARE_LIMITS]


def window_name(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def records_by_zone(inv, store) -> dict[str, list]:
    """What mailops wants published, by zone (every domain is its own zone here)."""
    zones: dict[str, list] = {d: [] for d in inv.domains}
    for records in desired_state(inv, store, resolve_txt=lambda _name: []).forward.values():
        for rec in records:
            zone = max((z for z in zones if in_zone(rec.name, z)), key=len)
            zones[zone].append(rec)
    return zones


def requests_by_kind(emulator) -> dict[str, int]:
    """Requests of the last phase by method and endpoint (zone and record ids elided)."""
    kinds: dict[str, int] = {}
    for e in list(emulator.request_log):
        parts = e["path"].split("/")[3:]  # after /client/v4
        what = "/".join(p if i % 2 == 0 or p == "batch" else "{id}" for i, p in enumerate(parts))
        key = f"{e['method']} {what}"
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def end_state(emulator, zones) -> dict[tuple, list[str]]:
    """{(name, type, logical value, ttl, proxied): [raw contents]} of every record in zones:
    TXT compared as the logical string (quoting and chunking removed), MX with its priority."""
    out: dict[tuple, list[str]] = {}
    for zone in zones:
        for r in emulator.records(zone):
            value = join_txt(r["content"]) if r["type"] == "TXT" else r["content"]
            if r["type"] == "MX":
                value = f"{r['priority']} {value}"
            out.setdefault((r["name"], r["type"], value, r["ttl"], r["proxied"]), []).append(r["content"])
    return out


def string_lengths(content: str) -> str:
    """Byte lengths of the character-strings of a TXT content ("255+155"; one string if unquoted)."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', content) if content.startswith('"') else [content]
    return "+".join(str(len(re.sub(r"\\(.)", r"\1", p).encode())) for p in parts)


def comments(emulator, zones) -> str:
    """How many records carry each comment (mailops marks the records it owns)."""
    out: dict[str, int] = {}
    for zone in zones:
        for r in emulator.records(zone):
            if r["comment"]:
                out[r["comment"]] = out.get(r["comment"], 0) + 1
    return ", ".join(f"{v} x {k!r}" for k, v in out.items()) or "none"


def compare_states(mailops_state: dict, octodns_state: dict, expected: int) -> list[str]:
    lines = []
    for label, state in (("mailops", mailops_state), ("octoDNS", octodns_state)):
        count = sum(len(v) for v in state.values())
        lines.append(f"  {label:8} emulator holds {count} records (expected {expected})"
                     + ("" if count == expected else "  <-- MISMATCH"))
    if mailops_state.keys() == octodns_state.keys():
        lines.append("  record sets (name, type, value with TXT quoting/chunking removed, ttl, proxied): IDENTICAL")
    else:
        only_m = sorted(mailops_state.keys() - octodns_state.keys())
        only_o = sorted(octodns_state.keys() - mailops_state.keys())
        lines.append(f"  record sets DIFFER: {len(only_m)} only in mailops's, {len(only_o)} only in octoDNS's")
        lines += [f"    mailops only: {k}" for k in only_m[:3]] + [f"    octoDNS only: {k}" for k in only_o[:3]]
    raw_diff = [k for k in sorted(mailops_state.keys() & octodns_state.keys())
                if sorted(mailops_state[k]) != sorted(octodns_state[k])]
    if not raw_diff:
        lines.append("  raw content strings as stored: byte-identical")
    else:
        k = raw_diff[0]
        lines.append(f"  raw content as stored: {len(raw_diff)} {'/'.join(sorted({d[1] for d in raw_diff}))} "
                     f"records split differently, e.g. {k[0]}: mailops strings of "
                     f"{string_lengths(mailops_state[k][0])} bytes, octoDNS {string_lengths(octodns_state[k][0])}")
    return lines


def limits_text() -> str:
    return " and ".join(f"{n} per {window_name(w)}" for n, w in CLOUDFLARE_LIMITS)


# --- other providers (mailops only) -------------------------------------------------------------

# Documented API limits: Hetzner Cloud 3600 requests per hour per project; Route 53 five
# requests per second per account.
PROVIDER_LIMITS = {"hetzner": ((3600, 3600.0),), "route53": ((5, 1.0),)}
ROUTE53_KEYS = ("AKIAMAILOPSBENCH0001", "mailops-bench-secret-0815/abcdefghijklmnopq")


class HetznerBackend:
    def __init__(self, latency: float):
        from mailops.lab import hcloudemu
        self.hcloudemu, self.latency, self.server = hcloudemu, latency, None

    def fresh(self, domains) -> None:
        self.close()
        emulator = self.hcloudemu.HcloudEmulator()
        emulator.add_token(TOKEN)
        for domain in domains:
            emulator.add_zone(domain)
        self.times: list[float] = []
        handle = emulator.handle

        def slow(*args, **kwargs):  # the API's round trip, and the time each request came in
            self.times.append(time.time())
            if self.latency:
                time.sleep(self.latency)
            return handle(*args, **kwargs)
        emulator.handle = slow
        self.server, self.url = self.hcloudemu.serve(emulator)

    def provider(self):
        from mailops.dns.providers.hetzner import HetznerProvider
        return HetznerProvider("cf", TOKEN, self.url)

    def close(self) -> None:
        if self.server is not None:
            self.hcloudemu.shutdown(self.server)
            self.server = None


class Route53Backend:
    def __init__(self, latency: float):
        import socket
        import subprocess
        import urllib.request
        self.latency, self.urllib = latency, urllib.request
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        moto = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise SystemExit(f"moto_server did not start on {self.url}") from None
                time.sleep(0.1)

    def fresh(self, domains) -> None:
        import boto3
        self.urllib.urlopen(self.urllib.Request(f"{self.url}/moto-api/reset", method="POST")).read()
        client = boto3.client("route53", endpoint_url=self.url, region_name="us-east-1",
                              aws_access_key_id=ROUTE53_KEYS[0], aws_secret_access_key=ROUTE53_KEYS[1])
        for domain in domains:
            client.create_hosted_zone(Name=domain, CallerReference=domain)
        self.times = []

    def provider(self):
        from mailops.dns.providers.route53 import Route53Provider
        provider = Route53Provider("cf", keys=ROUTE53_KEYS, endpoint_url=self.url)

        def slow(**_kwargs) -> None:
            self.times.append(time.time())
            if self.latency:
                time.sleep(self.latency)
        provider.client.meta.events.register("before-send.route53", slow)
        return provider

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def other_provider(args, n: int) -> None:
    """First and no-op sync through the hetzner or route53 provider, mailops only."""
    limits = PROVIDER_LIMITS[args.provider]
    backend = (HetznerBackend if args.provider == "hetzner" else Route53Backend)(args.latency / 1000)
    rows: dict[str, list[dict]] = {"first": [], "no-op": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            inv_dir = make_inventory(root, n)
            inv = load_inventory(inv_dir)[0]
            store = KeyStore.for_inventory(inv)
            for domain, settings in inv.domains.items():
                store.generate(domain, settings.dkim)
            for _round in range(args.repeat):
                backend.fresh(list(inv.domains))
                for label in ("first", "no-op"):
                    backend.times = []
                    t = time.perf_counter()
                    inv = load_inventory(inv_dir)[0]
                    provider = backend.provider()
                    plan, providers = make_plan(inv, KeyStore.for_inventory(inv),
                                                providers=Providers(inv, {"cf": provider}),
                                                resolve_txt=lambda _name: [])
                    apply_plan(plan, providers)
                    wall = time.perf_counter() - t
                    rows[label].append({"wall": wall, "changes": plan.pending, "requests": provider.requests,
                                        "peaks": [peak(backend.times, w) for _, w in limits]})
    finally:
        backend.close()
    limit_text = " and ".join(f"{m} per {window_name(w)}" for m, w in limits)
    api = "Hetzner Cloud API emulator, mailops.lab.hcloudemu" if args.provider == "hetzner" else "moto Route 53 server"
    print(f"dns sync benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()}, {os.cpu_count()} cores; provider "
          f"{args.provider} ({api} on loopback); {n} domains/zones; API latency {args.latency:g} ms per request; "
          "mailops only; "
          f"wall s = best of {args.repeat} rounds")
    print(f"{'sync':>6} {'wall s':>8} {'changes':>8} {'requests':>9} {'req/zone':>9} "
          + " ".join(f"{'peak/' + window_name(w):>12}" for _, w in limits) + "  rounds")
    for label, rs in rows.items():
        r = min(rs, key=lambda x: x["wall"])
        worst = [max(x["peaks"][i] for x in rs) for i in range(len(limits))]
        print(f"{label:>6} {r['wall']:8.2f} {r['changes']:8d} {r['requests']:9d} {r['requests'] / n:9.2f} "
              + " ".join(f"{p:12d}" for p in worst) + "  [" + ", ".join(f"{x['wall']:.2f}" for x in rs) + "]")
    over = any(x["peaks"][i] > m for rs in rows.values() for x in rs for i, (m, _) in enumerate(limits))
    print(f"documented limit ({limit_text}): " + ("EXCEEDED: the provider has no client-side limiter"
                                                  if over else "never exceeded"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds (fresh emulators each); wall time is the best round's (default 3)")
    ap.add_argument("--octodns-workers", type=int, default=8,
                    help=f"octoDNS manager max_workers (default 8; mailops lists and applies with {API_WORKERS} "
                         "threads)")
    ap.add_argument("--latency", type=float, default=0.0, metavar="MS",
                    help="delay every API answer by MS milliseconds, for both tools (default 0)")
    ap.add_argument("--provider", choices=("cloudflare", "hetzner", "route53"), default="cloudflare",
                    help="DNS provider API (default cloudflare, the only one compared with octoDNS)")
    args = ap.parse_args()
    if args.repeat < 1 or args.domains < 1:
        ap.error("--repeat and --domains must be at least 1")
    if args.latency < 0:
        ap.error("--latency must be 0 or more")
    os.environ[TOKEN_ENV] = TOKEN
    if args.provider != "cloudflare":
        other_provider(args, args.domains)
        return
    latency = args.latency / 1000
    os.environ[TOKEN_ENV] = TOKEN
    n = args.domains
    results: dict[tuple[str, str], list[dict]] = {}
    kinds: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inv_dir = make_inventory(root, n)
        inv, problems = load_inventory(inv_dir)
        assert not problems, problems[:3]
        store = KeyStore.for_inventory(inv)
        t = time.perf_counter()
        for domain, settings in inv.domains.items():
            store.generate(domain, settings.dkim)
        keygen = time.perf_counter() - t
        wanted = records_by_zone(inv, store)
        expected = sum(len(v) for v in wanted.values())
        domains = list(inv.domains)
        config = None
        if octodns_compare:
            config = octodns_compare.write_config(root / "octodns", wanted, token_env=TOKEN_ENV,
                                                  workers=args.octodns_workers)

        def phase(tool: str, label: str, emulator, sync) -> dict:
            r = sync()
            r["peaks"] = peaks(emulator)
            results.setdefault((tool, label), []).append(r)
            kinds[f"{tool} {label}"] = requests_by_kind(emulator)
            return end_state(emulator, domains)

        def octodns_sync(emulator) -> dict:
            return octodns_compare.run_sync(config, emulator, workers=args.octodns_workers)

        # An untimed warm-up (first + no-op sync) of each tool on its own 1-zone emulator, so
        # neither tool's one-time costs (lazy imports, SDK model set-up) land in a measured phase.
        warm_dir = make_inventory(root / "warm", 1)
        warm_inv = load_inventory(warm_dir)[0]
        warm_store = KeyStore.for_inventory(warm_inv)
        for domain, settings in warm_inv.domains.items():
            warm_store.generate(domain, settings.dkim)
        warm_emu = fresh_emulator(warm_inv.domains)
        for _ in ("first", "no-op"):
            run_sync(warm_dir, warm_emu)
        if octodns_compare:
            warm_config = octodns_compare.write_config(root / "warm" / "octodns", records_by_zone(warm_inv, warm_store),
                                                       token_env=TOKEN_ENV, workers=args.octodns_workers)
            warm_emu = fresh_emulator(warm_inv.domains)
            for _ in ("first", "no-op"):
                octodns_compare.run_sync(warm_config, warm_emu, workers=args.octodns_workers)

        # Rounds alternate the tools, each on fresh emulators; the two tools never see each
        # other's records.  The end state is compared in every round, reported from the last.
        for _round in range(args.repeat):
            emu_m = fresh_emulator(domains, latency)
            state_m = phase("mailops", "first", emu_m, lambda: run_sync(inv_dir, emu_m))
            notes = [] if phase("mailops", "no-op", emu_m, lambda: run_sync(inv_dir, emu_m)) == state_m else \
                ["  mailops's no-op sync CHANGED the emulator's records"]
            if not octodns_compare:
                notes.append(f"  octoDNS not run: {OCTODNS_MISSING}")
                continue
            emu_o = fresh_emulator(domains, latency)
            state_o = phase("octoDNS", "first", emu_o, lambda: octodns_sync(emu_o))
            if phase("octoDNS", "no-op", emu_o, lambda: octodns_sync(emu_o)) != state_o:
                notes.append("  octoDNS's no-op sync CHANGED the emulator's records")
            notes = compare_states(state_m, state_o, expected) + notes
            notes += [f"  record comments, mailops: {comments(emu_m, domains)}; octoDNS: {comments(emu_o, domains)}"]

    load = os.getloadavg()
    print(f"dns sync benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()} {platform.machine()}, "
          f"{os.cpu_count()} cores (load average {load[0]:.1f}); {n} domains/zones, {expected} records; "
          f"Cloudflare emulator in-process (DKIM keys generated in {keygen:.1f}s, not counted)"
          + (f"; {octodns_compare.VERSIONS}" if octodns_compare else ""))
    print("transport: both tools call the emulator's WSGI app in-process, no network "
          "(mailops: official SDK over httpx.WSGITransport; octoDNS: requests session with a WSGI "
          f"transport adapter); API latency {args.latency:g} ms per request on both; threads: mailops {API_WORKERS} "
          f"(limited to {limits_text()}), octoDNS max_workers {args.octodns_workers}; "
          f"fresh emulators per tool and round; untimed 1-zone warm-up (first + no-op) of each first; "
          f"wall s = best of {len(next(iter(results.values())))} rounds (all rounds in brackets)")
    peak_head = " ".join(f"{'peak/' + window_name(w):>10}" for _, w in CLOUDFLARE_LIMITS)
    print(f"{'tool':>8} {'sync':>6} {'wall s':>8} {'changes':>8} {'requests':>9} {'req/zone':>9} {'ms/zone':>8}"
          f" {peak_head}  rounds")
    best: dict[tuple[str, str], dict] = {}
    for (tool, label), rs in results.items():
        r = best[(tool, label)] = min(rs, key=lambda x: x["wall"])
        varied = "" if len({(x["requests"], x["changes"]) for x in rs}) == 1 else \
            "  requests/changes VARIED: " + ", ".join(f"{x['requests']}/{x['changes']}" for x in rs)
        rounds = ", ".join(f"{x['wall']:.2f}" for x in rs)
        worst = [max(x["peaks"][i] for x in rs) for i in range(len(CLOUDFLARE_LIMITS))]
        print(f"{tool:>8} {label:>6} {r['wall']:8.2f} {r['changes']:8d} {r['requests']:9d} "
              f"{r['requests'] / n:9.2f} {1000 * r['wall'] / n:8.1f} "
              + " ".join(f"{p:10d}" for p in worst) + f"  [{rounds}]" + varied)
    print(f"peak = most requests in any sliding window of Cloudflare's documented limits ({limits_text()}), "
          "worst round")
    over = [f"{tool} {label}" for (tool, label), rs in results.items() if tool == "mailops"
            and any(x["peaks"][i] > n_max for x in rs for i, (n_max, _) in enumerate(CLOUDFLARE_LIMITS))]
    print("mailops over a documented limit: " + (", ".join(over) if over else "never"))
    if ("octoDNS", "first") in best:
        print("octoDNS / mailops, this run (goal of issue 17: first >= 10 x, no-op >= 2 x, requests >= 1 x):")
        for label, goal in (("first", 10.0), ("no-op", 2.0)):
            m, o = best[("mailops", label)], best[("octoDNS", label)]
            wall, req = o["wall"] / m["wall"], o["requests"] / m["requests"]
            print(f"  {label:>6}  wall {wall:5.2f} x   requests {req:5.2f} x   "
                  f"{'met' if wall >= goal and req >= 1 else 'NOT met'}")
    print("requests by endpoint (last round):")
    for label, k in kinds.items():
        print(f"  {label:14} " + ", ".join(f"{v} {key}" for key, v in sorted(k.items())))
    print("end state after each tool's first sync (last round):")
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
