#!/usr/bin/env bash
# The client libraries' own tests, each with its own ecosystem's runner (pytest,
# `go test`, `node --test`), against the real agent binary and the Kinesis
# emulator example; each also checks the shared protocol vectors. Installs what
# they need when missing: pytest in target/clients-venv (PyPI), Go from
# Debian's packages (golang-go, which needs root).
#
#   clients/test.sh        (.ci/test runs it with SHARDLINE_BIN set)
#
# SHARDLINE_BIN: the agent (default target/release/shardline). The emulator is
# built here (cargo's test profile, which the test build already compiled).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST_VERSION=8.3.4
SETUPTOOLS_VERSION=75.6.0

if ! command -v go >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends golang-go
fi
venv=target/clients-venv
if ! "$venv/bin/python" -c "import pytest, setuptools, sys; sys.exit(pytest.__version__ != '$PYTEST_VERSION')" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "pytest==$PYTEST_VERSION" "setuptools==$SETUPTOOLS_VERSION"
fi
# The Python package as a user installs it from this repository (offline: no
# build isolation, no dependencies to fetch).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-build-isolation --no-deps --editable clients/python

cargo build --locked --quiet --profile test --example emulator
SHARDLINE_EMULATOR=$PWD/target/debug/examples/emulator
SHARDLINE_BIN=${SHARDLINE_BIN:-$PWD/target/release/shardline}
[ -x "$SHARDLINE_BIN" ] || { echo "no agent binary at $SHARDLINE_BIN (cargo build --release, or set SHARDLINE_BIN)" >&2; exit 1; }
# A test that cannot find the agent fails rather than skips.
SHARDLINE_CLIENT_TESTS_REQUIRED=1
export SHARDLINE_EMULATOR SHARDLINE_BIN SHARDLINE_CLIENT_TESTS_REQUIRED

failed=()
echo "== Python client (pytest)"
(cd clients/python && "../../$venv/bin/python" -m pytest -q -p no:cacheprovider tests) || failed+=(python)
echo "== Go client (go vet, go test)"
(cd clients/go && GOFLAGS=-mod=mod go vet ./... && go test -count=1 ./...) || failed+=(go)
echo "== Node.js client (npm pack, node --test)"
(cd clients/node && npm pack --dry-run --silent >/dev/null && node --test --test-reporter=spec) || failed+=(node)
if [ ${#failed[@]} -gt 0 ]; then
  echo "client tests failed: ${failed[*]}" >&2
  exit 1
fi
echo "client tests passed: python, go, node"
