#!/usr/bin/env bash
# The Grafana dashboard is valid JSON with panels whose queries all name
# mapsync metrics. That every metric it names exists is proven against a
# real scrape by `cargo test --test status_e2e` (dashboard_names_only_scraped_metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - scripts/grafana/mapsync.json <<'PY'
import json, re, sys
board = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
assert exprs, "no queries"
for e in exprs:
    assert re.search(r"mapsync_[a-z_]+", e), f"query names no mapsync metric: {e}"
print(f"dashboard: {len(board['panels'])} panels, {len(exprs)} queries, valid JSON")
PY
# every metric a query names is in README's metrics table (the documented set)
python3 - scripts/grafana/mapsync.json README.md <<'PY'
import json, re, sys
board = json.load(open(sys.argv[1]))
documented = set(re.findall(r"^\| `(mapsync_[a-z_]+)` \|", open(sys.argv[2]).read(), re.M))
assert documented, "no metrics table in README.md"
for p in board["panels"]:
    for t in p.get("targets", []):
        for name in re.findall(r"mapsync_[a-z_]+", t["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in documented or base in documented, f"panel {p['title']!r} names {name}, not in README's metrics table"
print(f"dashboard: every metric named is in README's table of {len(documented)}")
PY
