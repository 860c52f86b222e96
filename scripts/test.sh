#!/usr/bin/env bash
# The one test command: installs what a fresh machine lacks, then runs every
# check and test the project has (formatting, the dependency policy, the
# suite, the doc tests). CI runs exactly this script.
#
# It needs PostgreSQL on 127.0.0.1:5432 (a `test` database, trust auth) and
# Redis on 127.0.0.1:6379, already running: it installs tools, it starts no
# service. Debian packages are installed with apt-get (through sudo when not
# root). Set REMEDY_TEST_NO_INSTALL=1 to only run the checks.
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
  # The toolchain and the plugins' target (rust-toolchain.toml pins both).
  rustup show active-toolchain >/dev/null
  rustup target add wasm32-wasip2

  # Debian packages: a real Prometheus for the metrics backend's tests,
  # a real Alertmanager for alert-aware acting, minisign for the
  # signed-plugin tests, chromium and its driver for the console's browser
  # tests.
  local missing=()
  command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
  command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  command -v minisign >/dev/null 2>&1 || missing+=(minisign)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # git: the deploy capability runs it, and its tests push to real
  # repositories.
  command -v git >/dev/null 2>&1 || missing+=(git)
  # systemd-analyze: the example unit is verified and its hardening rated;
  # promtool (in prometheus, above) tests the example alerting rules.
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  fi

  # The Python and JavaScript runbook toolchains `remedy new` scaffolds for
  # (both work offline once installed).
  if ! command -v componentize-py >/dev/null 2>&1; then
    python3 -m pip install -q componentize-py==0.25.1
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  fi
  # The official MCP Python SDK and the MCP Inspector: the agents the MCP
  # tests drive Remedy with.
  python3 -c 'import mcp' 2>/dev/null || python3 -m pip install -q mcp==2.3.0
  command -v mcp-inspector >/dev/null 2>&1 ||
    npm install -g --silent @modelcontextprotocol/inspector@2.12.0
  command -v componentize-js >/dev/null 2>&1 ||
    npm install -g --silent @bytecodealliance/componentize-js@0.23.0

  # Cargo tools: the test runner, and the dependency policy checker — built
  # in the background, beside the suite's own build, which leaves a core
  # idle for long stretches (one big crate at a time).
  command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
  # Every locked crate, for every platform: the dependency policy check
  # reads them all offline (a build fetches only this platform's).
  cargo fetch --locked
  if ! command -v cargo-deny >/dev/null 2>&1; then
    deny_log=$(mktemp)
    cargo install --locked cargo-deny@0.20.2 >"$deny_log" 2>&1 &
    deny_install=$!
  fi
}

# mdBook builds the book under docs/ (its links are checked by the suite's
# docs test); only the HTML renderer is needed. Built while the tests run,
# which leave the cores idle much of the time, rather than beside the
# suite's own build.
install_mdbook() {
  if ! command -v mdbook >/dev/null 2>&1; then
    book_log=$(mktemp)
    cargo install --locked mdbook@0.5.4 --no-default-features >"$book_log" 2>&1 &
    book_install=$!
  fi
}

deny_install=
book_install=
[ "${REMEDY_TEST_NO_INSTALL:-}" = 1 ] || install

cargo fmt --all -- --check
cargo nextest run --workspace --no-run
[ "${REMEDY_TEST_NO_INSTALL:-}" = 1 ] || install_mdbook
cargo nextest run --workspace
if [ -n "$deny_install" ] && ! wait "$deny_install"; then
  cat "$deny_log" >&2
  exit 1
fi
# Licenses, banned crates and sources need no network; `advisories` does
# (it fetches the RustSec database), so maintainers run it by hand:
# `cargo deny check advisories`.
cargo deny --offline check licenses bans sources
# The book builds (a chapter SUMMARY.md lists but that is missing fails).
if [ -n "$book_install" ] && ! wait "$book_install"; then
  cat "$book_log" >&2
  exit 1
fi
mdbook build docs
# nextest runs no doctests; these prove the gate cannot be bypassed. The
# whole workspace, so that the libraries built for the tests are reused
# (`-p remedy` alone resolves features differently and rebuilds them).
cargo test --doc --workspace
