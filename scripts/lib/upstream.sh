# Shared by scripts/e2e-codex.sh and scripts/interop-remote.sh (sourced, not run): find or
# install the upstream Codex CLI, find or build our binary, find or install pytest.
#
#   ensure_codex            sets $codex to a working codex $UPSTREAM_VERSION binary, installing
#                           @openai/codex from npm into $UPSTREAM_DIR when there is none
#   ensure_exec_server_bin  sets $EXEC_SERVER_BIN (builds target/release/exec-server unless set)
#   ensure_pytest           sets $PY to a python with pytest (pip, else a venv under $TMPDIR)
#
# Each prints a line prefixed with $LOG_PREFIX (default "upstream") and exits 1 on failure.

UPSTREAM_VERSION="${UPSTREAM_VERSION:-0.169.0}"
UPSTREAM_DIR="${UPSTREAM_DIR:-/tmp/codex-upstream}"
export UPSTREAM_VERSION UPSTREAM_DIR
LOG_PREFIX="${LOG_PREFIX:-upstream}"

find_codex() {
  local b
  for b in "$UPSTREAM_DIR"/node_modules/@openai/codex-linux-x64/vendor/*/bin/codex; do
    if [ -x "$b" ] && [ "$(timeout 20 "$b" --version 2>/dev/null)" = "codex-cli $UPSTREAM_VERSION" ]; then
      echo "$b"
      return 0
    fi
  done
  return 1
}

ensure_codex() {
  if ! codex="$(find_codex)"; then
    echo "== $LOG_PREFIX: installing @openai/codex@$UPSTREAM_VERSION into $UPSTREAM_DIR"
    if ! command -v npm >/dev/null; then
      if [ "$(id -u)" = 0 ]; then
        (apt-get update >/dev/null && apt-get install -y nodejs npm >/dev/null) ||
          { echo "$LOG_PREFIX: npm is missing and could not be installed" >&2; exit 1; }
      else
        echo "$LOG_PREFIX: npm is required to install @openai/codex@$UPSTREAM_VERSION" >&2
        exit 1
      fi
    fi
    # A stale or partial install is rebuilt from scratch.
    rm -rf "$UPSTREAM_DIR/node_modules" "$UPSTREAM_DIR/package.json" "$UPSTREAM_DIR/package-lock.json"
    timeout 600 bash "$(dirname "${BASH_SOURCE[0]}")/../install-upstream.sh" >/dev/null ||
      { echo "$LOG_PREFIX: npm install of @openai/codex@$UPSTREAM_VERSION failed or timed out" >&2; exit 1; }
    codex="$(find_codex)" ||
      { echo "$LOG_PREFIX: no working codex $UPSTREAM_VERSION binary under $UPSTREAM_DIR after install" >&2; exit 1; }
  fi
  echo "== $LOG_PREFIX: codex $("$codex" --version) at $codex"
}

ensure_exec_server_bin() {
  if [ -z "${EXEC_SERVER_BIN:-}" ]; then
    timeout 1800 cargo build --release --locked -p exec-server
    EXEC_SERVER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/exec-server"
  fi
  [ -x "$EXEC_SERVER_BIN" ] || { echo "$LOG_PREFIX: $EXEC_SERVER_BIN is not an executable" >&2; exit 1; }
  export EXEC_SERVER_BIN
  echo "== $LOG_PREFIX: server $EXEC_SERVER_BIN"
}

ensure_pytest() {
  PY="${PYTHON:-python3}"
  if ! "$PY" -c 'import pytest' >/dev/null 2>&1; then
    if ! timeout 300 "$PY" -m pip install -q --disable-pip-version-check 'pytest>=7' >/dev/null 2>&1; then
      local venv="${TMPDIR:-/tmp}/exec-server-e2e-venv"
      [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv" >/dev/null
      timeout 300 "$venv/bin/python" -m pip install -q --disable-pip-version-check 'pytest>=7' >/dev/null
      PY="$venv/bin/python"
    fi
  fi
}
