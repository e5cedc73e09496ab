#!/usr/bin/env python3
"""B4: real daemons at scale (issue 11 item 8).

    python3 benches/b4_daemons.py [--nodes 64] [--lookups 1000] [--kill 0.2 0.5] [--settle 60]
                                  [--concurrency 32] [--records]

Starts --nodes release `p2psip node` processes on loopback (127.0.1.1 ... 127.0.2.x, overlay
port 5070, proxy 5060, status API 5090 on each), every one joining the first, as fast as they
can be spawned. Then, for the intact ring and for each --kill fraction (a fresh ring each):

- bootstrap: seconds from the last node's start until every live node's successor list is the
  next r live nodes in ID order (polled over the status API every 100 ms);
- lookups: --lookups random 40-hex keys, asked round-robin of the live nodes' status APIs
  (`GET /lookup?key=`, 32 at a time), with the latency of each answer and whether it named the
  node truly responsible (the first live node at or after the key);
- after kill -9 of a fraction of the nodes (chosen at random, never the first): the lookups
  again at once (started at the instant of the failure), then again once the survivors'
  successor lists are correct (or --settle seconds have passed); the AoR lookups (--records)
  once, besides, no survivor has re-puts waiting (`storage.reputs_queued` in /status);
- RSS per daemon (VmRSS of each process), median and max.

With --records every node is enrolled first (a real CA: `p2psip ca init`, `ca serve` on
127.0.9.1, `p2psip enroll sip:nodeI@b4.test`, then the CA is stopped), so each publishes its
user's signed registration at R+1 replica places; each round of lookups is then also run for
the AoRs of random nodes (`GET /lookup?key=sip:nodeK@b4.test`: the replica places are fetched
and compared), a success being the registration of that node.

Prints one JSON object per ring and a summary table. Traffic stays on 127.0.0.0/8; every
process it starts is ended by its PID at the end. Needs `cargo build --release` first.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from ca_session import ca_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "p2psip")
R = int(os.environ.get("B4_R", "8"))  # successor_list_len: the default, or B4_R for a build with another


def ip_of(i):
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def node_id(ip, port=5070):
    d = int.from_bytes(hashlib.sha1(bytes(int(x) for x in ip.split("."))).digest(), "big")
    return (d & ~((1 << 20) - 1)) | port


def get(ip, path, timeout=10):
    with urllib.request.urlopen(f"http://{ip}:5090{path}", timeout=timeout) as r:
        return json.load(r)


DOMAIN = "b4.test"
CONFIG = None  # --node-config: a TOML settings file every node reads


def aor(i):
    return f"sip:node{i}@{DOMAIN}"


def enroll_all(n, work):
    """Enrolls every node's data directory through a CA that is stopped afterwards."""
    with ca_session(BIN, work, DOMAIN, "127.0.9.1:5443", rate_limit=f"{n + 10}/min") as (url, fingerprint):
        def one(i):
            data = os.path.join(work, f"n{i}")
            os.makedirs(data, exist_ok=True)
            subprocess.run([BIN, "enroll", aor(i), "--ca", url, "--ca-fingerprint", fingerprint, "--data-dir", data],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(n)))


def start_ring(n, work):
    procs = []
    boot = f"{ip_of(0)}:5070"
    for i in range(n):
        ip = ip_of(i)
        data = os.path.join(work, f"n{i}")
        os.makedirs(data, exist_ok=True)
        args = [BIN, "node", *(["--config", CONFIG] if CONFIG else []), "--data-dir", data, "--listen", f"{ip}:5070", "--proxy", f"{ip}:5060", "--http", f"{ip}:5090"]
        if i > 0:
            args += ["--join", boot]
        log = open(os.path.join(work, f"n{i}.log"), "wb")
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL))
        if i == 0:
            wait_http(ip)
    return procs, time.monotonic()


def wait_http(ip, limit=10):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            get(ip, "/status", 1)
            return
        except Exception:
            time.sleep(0.05)


def successors_correct(live):
    ids = sorted(node_id(ip_of(i)) for i in live)
    want = {}
    for k, x in enumerate(ids):
        want[x] = [ids[(k + j) % len(ids)] for j in range(1, min(R, len(ids) - 1) + 1)]
    for i in live:
        try:
            s = get(ip_of(i), "/status", 2)
        except Exception:
            return False
        got = [int(e["node_id"], 16) for e in s["successors"]][: len(want[node_id(ip_of(i))])]
        if got != want[node_id(ip_of(i))]:
            return False
    return True


def storage_quiet(live):
    """Whether no live node has re-puts waiting (`storage.reputs_queued`), after a failure."""
    for i in live:
        try:
            s = get(ip_of(i), "/status", 2)
        except Exception:
            return False
        if (s.get("storage") or {}).get("reputs_queued", 0):
            return False
    return True


def wait_until(cond, limit):
    """Seconds until cond() holds (polled every 100 ms), or None after limit seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def wait_correct(live, limit):
    return wait_until(lambda: successors_correct(live), limit)


def lookups(live, count, rng, concurrency):
    ids = sorted(node_id(ip_of(i)) for i in live)
    keys = [rng.getrandbits(160) for _ in range(count)]

    t0 = time.monotonic()

    def one(k):
        key, asker = keys[k], ip_of(live[k % len(live)])
        want = next((x for x in ids if x >= key), ids[0])
        t = time.monotonic()
        try:
            a = get(asker, f"/lookup?key={key:040x}", 30)
            ok, node_ms = int(a["node"]["node_id"], 16) == want, a["elapsed_ms"]
            detail = {"hops": a["hops"], "confirmations": a["confirmations"], "got": a["node"]["node_id"], "want": f"{want:040x}",
                      "start_s": round(t - t0, 3), "asker": asker, "path": [p.get("address") or p.get("addr") for p in a["path"]]}
        except Exception as e:
            body = e.read().decode(errors="replace")[:200] if isinstance(e, urllib.error.HTTPError) else ""
            ok, node_ms, detail = False, None, {"error": f"{e} {body}".strip(), "start_s": round(t - t0, 3), "asker": asker}
        return (time.monotonic() - t) * 1000, node_ms, ok, detail

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(count)))
    if os.environ.get("B4_DUMP"):
        with open(os.environ["B4_DUMP"], "a") as f:
            for r in results:
                f.write(json.dumps({"ms": r[0], "node_ms": r[1], "ok": r[2], **r[3]}) + "\n")
        with open(os.environ["B4_DUMP"], "a") as f:
            f.write("---\n")
    lat = sorted(r[0] for r in results)
    node = sorted(r[1] for r in results if r[1] is not None) or [float("nan")]
    pct = lambda xs, p: round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1)
    return {"success": round(sum(r[2] for r in results) / count, 4), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
            "p99_ms": pct(lat, 99), "node_p50_ms": pct(node, 50), "node_p95_ms": pct(node, 95)}


def record_lookups(everyone, live, count, rng, concurrency):
    """Lookups of stored AoRs (any node's, dead or alive: records outlive their owners), asked
    round-robin of the live nodes; a success names that node's registered contact."""
    owners = [rng.choice(everyone) for _ in range(count)]

    def one(k):
        owner, asker = owners[k], ip_of(live[k % len(live)])
        t = time.monotonic()
        try:
            a = get(asker, f"/lookup?key={urllib.parse.quote(aor(owner))}", 30)
            contacts = (a.get("registration") or {}).get("contacts") or []
            ok = any(c["uri"] == f"sip:node{owner}@{ip_of(owner)}:5070" for c in contacts)
            node_ms = a["elapsed_ms"]
        except Exception:
            ok, node_ms = False, None
        if not ok and os.environ.get("B4_DUMP"):
            with open(os.environ["B4_DUMP"], "a") as f:
                f.write(json.dumps({"missed": aor(owner), "asker": asker}) + "\n")
        return (time.monotonic() - t) * 1000, node_ms, ok

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(count)))
    lat = sorted(r[0] for r in results)
    node = sorted(r[1] for r in results if r[1] is not None) or [float("nan")]
    pct = lambda xs, p: round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1)
    return {"success": round(sum(r[2] for r in results) / count, 4), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
            "p99_ms": pct(lat, 99), "node_p50_ms": pct(node, 50), "node_p95_ms": pct(node, 95)}


def wait_records(n, limit):
    """Seconds until one lookup of every node's AoR, from node 0, finds its registration."""
    t0 = time.monotonic()
    pending = list(range(n))
    while pending and time.monotonic() - t0 < limit:
        still = []
        for i in pending:
            try:
                a = get(ip_of(0), f"/lookup?key={urllib.parse.quote(aor(i))}", 10)
                if not (a.get("registration") or {}).get("contacts"):
                    still.append(i)
            except Exception:
                still.append(i)
        pending = still
        if pending:
            time.sleep(0.5)
    return None if pending else round(time.monotonic() - t0, 1)


def rss_kb(procs):
    out = []
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                out += [int(line.split()[1]) for line in f if line.startswith("VmRSS")]
        except OSError:
            pass
    return out


def ring(n, kill, args, rng):
    work = tempfile.mkdtemp(prefix="p2psip-b4-")
    if args.records:
        enroll_all(n, work)
    procs, last_start = start_ring(n, work)
    try:
        live = list(range(n))
        boot = wait_correct(live, 120)
        boot_s = None if boot is None else round(time.monotonic() - last_start, 2)
        result = {"nodes": n, "bootstrap_s": boot_s, "intact": lookups(live, args.lookups, rng, args.concurrency)}
        records = lambda: record_lookups(list(range(n)), live, args.lookups, rng, args.concurrency)
        if args.records:
            result["records_stored_s"] = wait_records(n, 120)
            result["intact_records"] = records()
        rss = rss_kb(procs)
        result["rss_kb_median"], result["rss_kb_max"] = int(statistics.median(rss)), max(rss)
        if kill:
            victims = rng.sample(range(1, n), int(kill * n))
            for v in victims:
                procs[v].send_signal(signal.SIGKILL)
            live = [i for i in live if i not in victims]
            result["killed"] = len(victims)
            result["at_failure"] = lookups(live, args.lookups, rng, args.concurrency)
            if args.records:
                result["at_failure_records"] = records()
            settled = wait_correct(live, args.settle)
            result["settle_s"] = None if settled is None else round(settled, 1)
            result["settled"] = lookups(live, args.lookups, rng, args.concurrency)
            if args.records:
                # Settled for records: the ring is, and no survivor has re-puts waiting.
                quiet = wait_until(lambda: storage_quiet(live), args.settle)
                result["records_settle_s"] = None if quiet is None else round((settled or 0) + quiet, 1)
                result["settled_records"] = records()
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--kill", type=float, nargs="*", default=[0.2, 0.5])
    ap.add_argument("--settle", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=32, help="lookups in flight at once")
    ap.add_argument("--records", action="store_true", help="enroll every node and look up stored AoRs too")
    ap.add_argument("--node-config", help="a TOML settings file for every node (p2psip node --config)")
    args = ap.parse_args()
    global CONFIG
    CONFIG = args.node_config and os.path.abspath(args.node_config)
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    rng = random.Random(args.seed)
    rows = []
    for kill in [0.0] + args.kill:
        r = ring(args.nodes, kill, args, rng)
        print(json.dumps(r), flush=True)
        rows.append(r)
    print("\n| ring | bootstrap s | lookups intact p50/p95 ms, success | at failure p50/p95, success | settled after s | settled p50/p95, success | RSS median/max MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda x: f"{x['p50_ms']}/{x['p95_ms']}, {x['success']:.1%}" if x else "-"
        print(f"| {r['nodes']} nodes, kill {r.get('killed', 0)} | {r['bootstrap_s']} | {f(r['intact'])} | {f(r.get('at_failure'))} | "
              f"{r.get('settle_s', '-')} | {f(r.get('settled'))} | {r['rss_kb_median'] / 1024:.1f}/{r['rss_kb_max'] / 1024:.1f} |")
    if args.records:
        print("\n| ring, AoR lookups | records stored after s | intact p50/p95 ms, success | at failure p50/p95, success | settled p50/p95, success |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['nodes']} nodes, kill {r.get('killed', 0)} | {r.get('records_stored_s')} | {f(r.get('intact_records'))} | "
                  f"{f(r.get('at_failure_records'))} | {f(r.get('settled_records'))} |")


if __name__ == "__main__":
    main()
