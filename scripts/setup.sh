#!/usr/bin/env bash
# Installs what mapsync needs to build and run on a fresh Debian machine, and
# mounts bpffs and tracefs where missing. Needs root. Idempotent.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (mapsync loads BPF programs): sudo $0" >&2
    exit 1
fi

# etcd-server: the fleet tests run a real etcd; protobuf-compiler: etcd-client
# compiles its protos at build time (mapsync-fleet)
packages=(clang llvm libbpf-dev bpftool etcd-server protobuf-compiler)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# the Python client's tests run in a venv (target/pyenv)
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "==> installing python3 python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    for dir in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
        [ -x "$dir/cargo" ] && export PATH="$dir:$PATH" && break
    done
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found: install Rust (rustup) first" >&2; exit 1; }

if ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
    echo "==> mounting bpffs at /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
fi
if [ ! -e /sys/kernel/tracing/events/syscalls ] && ! grep -qs ' /sys/kernel/tracing tracefs ' /proc/mounts; then
    echo "==> mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs nodev /sys/kernel/tracing
fi
if [ ! -e /sys/kernel/btf/vmlinux ]; then
    echo "error: /sys/kernel/btf/vmlinux is missing: mapsync needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF)" >&2
    exit 1
fi
