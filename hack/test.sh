#!/usr/bin/env bash
# The one test command: installs prerequisites, then checks formatting, lints and runs every test
# (unit, property, integration against the dev stack, end-to-end with real buildah).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/prereqs.sh
# A clean CI build gains nothing from incremental artifacts, which roughly double target/'s size.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi
# The suite needs several GB (target/ of a clean build is ~4 GB; real buildah tests store images).
df -h . "${TMPDIR:-/tmp}" | sed 's/^/disk: /'
export JOBFORGE_TEST_PYTHON="$PWD/target/pyvenv/bin/python"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Integration tests start the binaries (dev stack, controller, CLI) as processes.
cargo build --workspace --bins --locked
# The docker profile's tool image, from Debian's packages: debootstrap runs once per machine
# (~3 minutes), later runs hit the cache under target/docker-images/.
hack/docker-engine.sh images
# The Debian base image of examples/multi-stage (FROM debian:bookworm-slim through a registry
# mirror), also from debootstrap once, then cached.
hack/docker-engine.sh debian-base
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first: nextest's summary line is the run's closing line.
  cargo test --workspace --locked --doc
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
