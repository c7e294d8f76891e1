#!/usr/bin/env bash
# Quick start, step 2: install what is missing and run the whole test suite
# (formatting, lints, unit tests, kernel tests, end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
CI="${CI:-}" cargo test --workspace
