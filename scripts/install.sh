#!/usr/bin/env bash
# Installs mapsync on a fresh Debian machine (run as root from a checkout):
# build dependencies, the binary (/usr/local/bin/mapsync), the `mapsync`
# group, /etc/mapsync/mapsync.env and the systemd unit, then enables it.
# Options: --no-deps (skip apt-get), --no-start (install without starting).
set -euo pipefail
cd "$(dirname "$0")/.."

deps=1 start=1
for arg in "$@"; do
    case "$arg" in
        --no-deps) deps=0 ;;
        --no-start) start=0 ;;
        *) echo "install.sh: unknown option $arg (--no-deps, --no-start)" >&2; exit 2 ;;
    esac
done
if [[ $EUID -ne 0 ]]; then
    echo "install.sh: run as root (it installs to /usr/local/bin and /etc/systemd/system)" >&2
    exit 1
fi
if [[ $deps -eq 1 ]]; then
    apt-get update
    apt-get install -y --no-install-recommends clang llvm libbpf-dev linux-libc-dev pkg-config \
        build-essential curl ca-certificates bpftool
fi
if ! command -v cargo >/dev/null; then
    echo "install.sh: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
    exit 1
fi
cargo build --release --bin mapsync
install -m 0755 target/release/mapsync /usr/local/bin/mapsync
getent group mapsync >/dev/null || groupadd --system mapsync
install -d -m 0755 /etc/mapsync
if [[ ! -e /etc/mapsync/mapsync.env ]]; then
    cat >/etc/mapsync/mapsync.env <<'ENV'
# Flags of `mapsync serve` besides --listen, e.g.:
# MAPSYNC_ARGS=--map flows=/sys/fs/bpf/flows --metrics-listen 127.0.0.1:9464
# or a TOML file of the same flags: MAPSYNC_ARGS=--config /etc/mapsync/mapsync.toml
MAPSYNC_ARGS=
ENV
fi
install -m 0644 scripts/systemd/mapsync.service /etc/systemd/system/mapsync.service
systemctl daemon-reload
if [[ $start -eq 1 ]]; then
    if grep -q '^MAPSYNC_ARGS=$' /etc/mapsync/mapsync.env; then
        echo "installed; set the maps in /etc/mapsync/mapsync.env, then: systemctl enable --now mapsync"
    else
        systemctl enable --now mapsync
        systemctl --no-pager status mapsync || true
    fi
fi
