#!/usr/bin/env python3
"""Prints the B8 tables (ns/message, median of criterion's samples; thread CPU time and wall
time) from the last `cargo bench --bench parse` run, for docs/performance.md.

With several criterion directories as arguments (copies of target/criterion from several runs),
each cell is the median over the runs."""
import glob, json, os, statistics, sys

default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")
roots = sys.argv[1:] or [default]
groups = ["register", "invite_sdp", "rfc4475_valid", "rfc4475_common"]
parsers = ["p2psip", "rsip", "rsipstack"]
runs = {}
for bench in [b for r in roots for b in glob.glob(os.path.join(r, "*", "*", "new", "benchmark.json"))]:
    b = json.load(open(bench))
    est = json.load(open(os.path.join(os.path.dirname(bench), "estimates.json")))
    n = b["throughput"]["Elements"]
    parser, mode = b["function_id"].split("/")
    corpus, clock = b["group_id"].split("/")
    runs.setdefault((corpus, clock, parser, mode), []).append((est["median"]["point_estimate"] / n, n))
if not runs:
    sys.exit("no criterion results under " + " ".join(roots))
ns = {k: (statistics.median(t for t, _ in v), v[0][1]) for k, v in runs.items()}
print(f"{len(roots)} run(s)")
for clock, mode in [(c, m) for c in ["cpu", "wall"] for m in ["parse", "parse_read"]]:
    print(f"\n{mode}, {clock} time: ns per message (messages timed)\n")
    print("| corpus | p2psip | rsip 0.4 | rsipstack 0.7 | rsip / p2psip | rsipstack / p2psip |")
    print("|---|---|---|---|---|---|")
    for g in groups:
        row = [ns.get((g, clock, p, mode)) for p in parsers]
        cells = [f"{v[0]:,.0f} ({v[1]})" if v else "–" for v in row]
        ratio = lambda o: f"{o[0] / row[0][0]:.1f}×" if o and row[0] else "–"
        print(f"| {g} | " + " | ".join(cells) + f" | {ratio(row[1])} | {ratio(row[2])} |")
