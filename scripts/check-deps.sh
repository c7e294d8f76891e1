#!/usr/bin/env bash
# The arrows that must never exist between crates (ARCHITECTURE.md, "Crates"):
# a client speaks only the wire contract, so its normal dependency tree holds
# neither the mirror, nor the kernel side, nor aya and the BPF build.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() { # crate, forbidden crate names...
    local crate=$1
    shift
    local tree
    tree=$(cargo tree -p "$crate" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
    for forbidden in "$@"; do
        if grep -qx "$forbidden" <<<"$tree"; then
            echo "error: $crate depends on $forbidden (cargo tree -p $crate -e normal -i $forbidden)" >&2
            fail=1
        fi
    done
}
check mapsync-api aya mapsync-ebpf mapsync-core mapsync-grpc mapsync-client
check mapsync-client aya mapsync-ebpf mapsync-core mapsync-grpc
[ "$fail" = 0 ] && echo "dependency rules hold"
exit "$fail"
