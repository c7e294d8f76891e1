#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, and run the demo.
# Extra arguments go to `mapsync demo` (e.g. --duration 10).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --bin mapsync
exec ./target/release/mapsync demo "$@"
