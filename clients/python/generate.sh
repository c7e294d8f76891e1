#!/usr/bin/env bash
# Regenerates the protobuf and gRPC stubs of mapsync_client from ../../proto
# with grpcio-tools (pinned in requirements-dev.txt, so the output is
# reproducible).
#
#   ./generate.sh            write them into src/mapsync_client/_proto/
#   ./generate.sh --check    regenerate into a temp dir and fail if the
#                            committed files differ
#
# PYTHON selects the interpreter that has grpcio-tools (default: python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto_root="$here/../../proto"
package_dir="$here/src/mapsync_client/_proto"
python="${PYTHON:-python3}"

generate() {
    local out="$1" work
    work="$(mktemp -d)"
    "$python" -m grpc_tools.protoc -I "$proto_root" \
        --python_out="$work" --pyi_out="$work" --grpc_python_out="$work" \
        mapsync/v1/mapsync.proto
    mkdir -p "$out"
    cp "$work"/mapsync/v1/mapsync_pb2.py "$work"/mapsync/v1/mapsync_pb2.pyi "$out"/
    # the plugin imports the messages by their proto path (mapsync.v1); inside
    # this package they are a sibling module
    sed -e 's/^from mapsync\.v1 import mapsync_pb2 as /from . import mapsync_pb2 as /' \
        "$work"/mapsync/v1/mapsync_pb2_grpc.py >"$out"/mapsync_pb2_grpc.py
    rm -rf "$work"
}

case "${1:-}" in
    --check)
        fresh="$(mktemp -d)"
        trap 'rm -rf "$fresh"' EXIT
        generate "$fresh"
        for f in mapsync_pb2.py mapsync_pb2.pyi mapsync_pb2_grpc.py; do
            if ! diff -u "$package_dir/$f" "$fresh/$f"; then
                echo "error: clients/python/src/mapsync_client/_proto/$f is stale: run clients/python/generate.sh" >&2
                exit 1
            fi
        done
        echo "python stubs are up to date"
        ;;
    "")
        generate "$package_dir"
        ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac
