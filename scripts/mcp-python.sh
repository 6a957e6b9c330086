#!/usr/bin/env bash
# Runs tests/mcp (the MCP `shell` tool tests) with the official MCP Python SDK client, in a venv
# cached under ${TMPDIR:-/tmp} with pinned versions of `mcp` and `pytest`.
#
# Usage: scripts/mcp-python.sh [pytest args...]
#
#   SHELL_TOOL_MCP_FLAVOR=ours (default)  against `$EXEC_SERVER_BIN mcp-serve --stdio --rules
#                                         {rules}`; builds target/release/exec-server unless
#                                         EXEC_SERVER_BIN or SHELL_TOOL_MCP_CMD is set
#   SHELL_TOOL_MCP_FLAVOR=upstream        against @openai/codex-shell-tool-mcp 0.97.0, installed
#                                         by scripts/install-shell-tool-mcp.sh unless
#                                         SHELL_TOOL_MCP_CMD is set (expect failures: the
#                                         expectations are ours)
#
# See tests/mcp/test_shell_tool.py for SHELL_TOOL_MCP_CMD and the other variables.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MCP_VERSION="${MCP_VERSION:-2.3.0}"
PYTEST_VERSION="${PYTEST_VERSION:-9.2.0}"
venv="${TMPDIR:-/tmp}/exec-server-mcp-venv-${MCP_VERSION}-${PYTEST_VERSION}"

venv_ok() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$MCP_VERSION" "$PYTEST_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if (version("mcp"), version("pytest")) == (sys.argv[1], sys.argv[2]) else 1)
PY
}

if ! venv_ok; then
  echo "== mcp-python: making $venv (mcp $MCP_VERSION, pytest $PYTEST_VERSION)"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  timeout 600 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "mcp==$MCP_VERSION" "pytest==$PYTEST_VERSION" ||
    { echo "mcp-python: pip install of mcp $MCP_VERSION / pytest $PYTEST_VERSION failed" >&2; rm -rf "$venv"; exit 1; }
  venv_ok || { echo "mcp-python: $venv is not usable after install" >&2; exit 1; }
fi

export SHELL_TOOL_MCP_FLAVOR="${SHELL_TOOL_MCP_FLAVOR:-ours}"
if [ -z "${SHELL_TOOL_MCP_CMD:-}" ]; then
  case "$SHELL_TOOL_MCP_FLAVOR" in
    ours)
      LOG_PREFIX=mcp-python
      # shellcheck source=lib/upstream.sh
      . scripts/lib/upstream.sh
      ensure_exec_server_bin
      ;;
    upstream)
      bin="$(bash scripts/install-shell-tool-mcp.sh)"
      export SHELL_TOOL_MCP_CMD="node $bin"
      echo "== mcp-python: upstream server: $SHELL_TOOL_MCP_CMD"
      ;;
    *) echo "mcp-python: SHELL_TOOL_MCP_FLAVOR must be ours or upstream" >&2; exit 1 ;;
  esac
fi

exec "$venv/bin/python" -m pytest -p no:cacheprovider tests/mcp "$@"
