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
# installs pytest if missing, and runs tests/e2e/test_codex_cli.py (the remote-mode turn,
# test_codex_remote.py, runs from scripts/interop-remote.sh). Loopback only apart from that one
# install.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=e2e
. scripts/lib/upstream.sh

ensure_codex            # 1. the codex CLI
ensure_exec_server_bin  # 2. our server
ensure_pytest           # 3. pytest (the tests themselves use only the standard library)

# 4. The tests (each codex run has its own timeout, E2E_CODEX_TIMEOUT, default 120 s).
export CODEX_BIN="$codex" E2E_REQUIRE=1 PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)
rc=0
timeout 900 "$PY" -m pytest -p no:cacheprovider -v -rfEs tests/e2e/test_codex_cli.py "$@" || rc=$?
echo "== e2e: finished in $(( $(date +%s) - start ))s (exit code $rc)"
exit $rc
