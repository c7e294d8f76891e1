#!/usr/bin/env bash
# Proves the Rust client builds and its tests pass on a machine without a BPF
# toolchain: PATH is a directory of symlinks to /usr/bin minus clang*, llc*,
# llvm-* and bpftool, plus cargo's own directory; a separate target directory
# so that no BPF object built earlier (by mapsync-ebpf's build.rs) is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for tool in /usr/bin/*; do
    case "${tool##*/}" in
    clang* | llc* | llvm-* | bpftool) ;;
    *) ln -s "$tool" "$bin/" ;;
    esac
done
cargo_dir=$(dirname "$(command -v cargo)")
noclang_path="$bin:$cargo_dir"
for tool in clang llc bpftool; do
    if PATH="$noclang_path" command -v "$tool" >/dev/null; then
        echo "error: $tool is still on the no-toolchain PATH" >&2
        exit 1
    fi
done
PATH="$noclang_path" cargo test -p mapsync-client --target-dir target/noclang
