#!/usr/bin/env bash
# Every figure of ARCHITECTURE.md "Figures" that issue 13 sets a target for,
# in one run on one release build: each bench measures mapsync beside its
# bare reference (a `bpf()` lookup and an `ArcSwap<HashMap>`, a bare ring
# consumer, a bare tonic broadcast hub) in the same process and prints both.
# Root (the kernel benches load BPF programs). ~12 minutes after the build
# on 2 vCPUs. The whole output goes to stdout and to FILE
# (default target/bench-figures.txt).
#
#   scripts/bench.sh [FILE]          (as root, as on the project's VMs)
#   sudo -E env "PATH=$PATH" scripts/bench.sh [FILE]
#                                    (elsewhere: keeps cargo on the PATH;
#                                    target/ then holds root-owned files)
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "bench.sh: the kernel benches load BPF programs: run it as root" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
out=${1:-target/bench-figures.txt}
mkdir -p "$(dirname "$out")"

run() { # title, cargo bench arguments...
    local title=$1
    shift
    echo
    echo "==> $title ($(cut -d' ' -f1-3 /proc/loadavg) load average)"
    echo "    cargo bench $*"
    cargo bench -q "$@" 2>&1 | grep -v -E '^(Benchmarking|Gnuplot|WARNING: HTML)'
}

{
    echo "mapsync figures: $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u '+%F %T UTC'), $(nproc) CPUs"
    echo "==> building the benches (release)"
    cargo bench -q -p mapsync-kernel -p mapsync-grpc --no-run 2>&1 | tail -n 2
    run "reads: snapshot vs bpf() and ArcSwap<HashMap>" -p mapsync-kernel --bench snapshot_read
    run "memory and apply: 1M entries, allocations per put" -p mapsync-kernel --bench memory
    run "start to ready and resync: 1M entries" -p mapsync-kernel --bench start_to_ready
    run "ingest: emit and trace vs a bare ring consumer" -p mapsync-kernel --bench ingest
    run "fan-out: watchers vs a bare tonic hub (same lag bound)" -p mapsync-grpc --bench fanout -- same-lag
    echo
    echo "==> done, $(date -u '+%T UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
