#!/usr/bin/env bash
# The arrows that must never exist between crates (ARCHITECTURE.md, "Crates"):
# a client speaks only the wire contract, so its normal dependency tree holds
# neither the mirror, nor the kernel side, nor aya and the BPF build; the
# mirror, BTF and server crates never reach the kernel side; JSON text is the
# edge's (server, CLI), never the BTF crate's or the mirror's; and the client's
# tests (dev-dependencies) need no BPF toolchain either.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check_edges() { # edge kinds, crate, forbidden crate names...
    local edges=$1 crate=$2
    shift 2
    local tree
    tree=$(cargo tree -p "$crate" -e "$edges" --prefix none --format '{p}' | awk '{print $1}' | sort -u)
    for forbidden in "$@"; do
        if grep -qx "$forbidden" <<<"$tree"; then
            echo "error: $crate depends on $forbidden (cargo tree -p $crate -e $edges -i $forbidden)" >&2
            fail=1
        fi
    done
}
check() { # crate, forbidden crate names... (normal dependencies)
    check_edges normal "$@"
}
check mapsync-api aya mapsync-ebpf mapsync-core mapsync-grpc mapsync-client mapsync-kernel
check mapsync-client aya mapsync-ebpf mapsync-core mapsync-grpc mapsync-kernel
check mapsync-btf aya mapsync-ebpf mapsync-core mapsync-kernel serde_json
check mapsync-core aya mapsync-ebpf mapsync-kernel serde_json
check mapsync-grpc aya mapsync-ebpf mapsync-kernel
# the fleet follower speaks the write contract only, never the kernel side
check mapsync-fleet aya mapsync-ebpf mapsync-kernel
# the client's tests build against a mirror and a server fed directly: no BPF
check_edges normal,dev mapsync-client aya mapsync-ebpf mapsync-kernel
[ "$fail" = 0 ] && echo "dependency rules hold"
exit "$fail"
