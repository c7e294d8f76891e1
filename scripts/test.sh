#!/usr/bin/env bash
# Quick start, step 2: install what is missing and run the whole test suite
# (formatting, lints, unit tests, kernel tests, end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> crate dependency rules"
bash scripts/check-deps.sh
bash scripts/check-dashboard.sh
echo "==> rust client without a BPF toolchain (no clang, llc, llvm-*, bpftool on PATH)"
bash scripts/client-noclang.sh
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
CI="${CI:-}" cargo test --workspace
echo "==> python client (clients/python)"
cargo build --bin mapsync
python3 -m venv target/pyenv
target/pyenv/bin/pip install -q -r clients/python/requirements-dev.txt
target/pyenv/bin/pip install -q --no-build-isolation --no-deps --force-reinstall clients/python
PYTHON=target/pyenv/bin/python clients/python/generate.sh --check
# every pytest failure exits non-zero, "no tests collected" (5) included
CI="${CI:-}" MAPSYNC_BIN="$PWD/target/debug/mapsync" target/pyenv/bin/pytest -q -p no:cacheprovider clients/python/tests
echo "==> feature otlp: serve --otlp-endpoint exports spans to a collector"
CI="${CI:-}" cargo test --features otlp --test otlp_e2e
