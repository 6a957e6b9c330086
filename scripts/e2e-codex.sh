#!/usr/bin/env bash
# End-to-end test with the real Codex CLI: `codex exec` runs a whole scripted turn (a shell
# command, apply_patch create + edit, a TTY command fed through stdin) on OUR exec-server, with
# the model replaced by a local mock of the Responses API. See docs/e2e.md.
#
# Usage: scripts/e2e-codex.sh [pytest args...]      e.g. scripts/e2e-codex.sh -k workspace -x
#
# Installs @openai/codex@$UPSTREAM_VERSION (default 0.169.0) from the npm registry into
# $UPSTREAM_DIR (default /tmp/codex-upstream, shared with the benchmarks) when it is not there
# yet, builds target/release/exec-server (a no-op when fresh; skipped with EXEC_SERVER_BIN=path),
# installs pytest if missing, and runs tests/e2e. Loopback only apart from that one install.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${UPSTREAM_VERSION:-0.169.0}"
export UPSTREAM_DIR="${UPSTREAM_DIR:-/tmp/codex-upstream}"
export UPSTREAM_VERSION="$version"

find_codex() {
  local b
  for b in "$UPSTREAM_DIR"/node_modules/@openai/codex-linux-x64/vendor/*/bin/codex; do
    if [ -x "$b" ] && [ "$(timeout 20 "$b" --version 2>/dev/null)" = "codex-cli $version" ]; then
      echo "$b"
      return 0
    fi
  done
  return 1
}

# 1. The codex CLI.
if ! codex="$(find_codex)"; then
  echo "== e2e: installing @openai/codex@$version into $UPSTREAM_DIR"
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get update >/dev/null && apt-get install -y nodejs npm >/dev/null) ||
        { echo "e2e: npm is missing and could not be installed" >&2; exit 1; }
    else
      echo "e2e: npm is required to install @openai/codex@$version" >&2
      exit 1
    fi
  fi
  # A stale or partial install is rebuilt from scratch.
  rm -rf "$UPSTREAM_DIR/node_modules" "$UPSTREAM_DIR/package.json" "$UPSTREAM_DIR/package-lock.json"
  timeout 600 bash scripts/install-upstream.sh >/dev/null ||
    { echo "e2e: npm install of @openai/codex@$version failed or timed out" >&2; exit 1; }
  codex="$(find_codex)" ||
    { echo "e2e: no working codex $version binary under $UPSTREAM_DIR after install" >&2; exit 1; }
fi
echo "== e2e: codex $("$codex" --version) at $codex"

# 2. Our server.
if [ -z "${EXEC_SERVER_BIN:-}" ]; then
  timeout 1800 cargo build --release --locked -p exec-server
  EXEC_SERVER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/exec-server"
fi
[ -x "$EXEC_SERVER_BIN" ] || { echo "e2e: $EXEC_SERVER_BIN is not an executable" >&2; exit 1; }
echo "== e2e: server $EXEC_SERVER_BIN"

# 3. pytest (the tests themselves use only the standard library).
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import pytest' >/dev/null 2>&1; then
  if ! timeout 300 "$PY" -m pip install -q --disable-pip-version-check 'pytest>=7' >/dev/null 2>&1; then
    VENV="${TMPDIR:-/tmp}/exec-server-e2e-venv"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" >/dev/null
    timeout 300 "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'pytest>=7' >/dev/null
    PY="$VENV/bin/python"
  fi
fi

# 4. The tests (each codex run has its own timeout, E2E_CODEX_TIMEOUT, default 120 s).
export CODEX_BIN="$codex" EXEC_SERVER_BIN E2E_REQUIRE=1 PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)
rc=0
timeout 900 "$PY" -m pytest -p no:cacheprovider -v -rfEs tests/e2e "$@" || rc=$?
echo "== e2e: finished in $(( $(date +%s) - start ))s (exit code $rc)"
exit $rc
