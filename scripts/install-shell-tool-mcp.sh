#!/usr/bin/env bash
# Installs upstream's MCP shell tool, @openai/codex-shell-tool-mcp (0.97.0), from npm so that
# tests/mcp/test_shell_tool.py can be run against it for the record (see
# /work/notes/upstream-shell-tool-0.97.md). Idempotent: a complete install of the right version
# is kept; a stale or partial one is rebuilt. Prints the path of the package's bin script
# (run it with node).
#
# Usage: scripts/install-shell-tool-mcp.sh   (into $SHELL_TOOL_MCP_DIR, default
#                                              /tmp/shell-tool-mcp-$SHELL_TOOL_MCP_VERSION)
set -euo pipefail

version="${SHELL_TOOL_MCP_VERSION:-0.97.0}"
dir="${SHELL_TOOL_MCP_DIR:-/tmp/shell-tool-mcp-$version}"
pkg="$dir/node_modules/@openai/codex-shell-tool-mcp"

installed_version() {
  [ -f "$pkg/package.json" ] && node -e 'process.stdout.write(require(process.argv[1]).version)' "$pkg/package.json" 2>/dev/null
}

if [ "$(installed_version || true)" != "$version" ] || [ ! -f "$dir/.complete" ]; then
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get update >/dev/null && apt-get install -y nodejs npm >/dev/null) ||
        { echo "install-shell-tool-mcp: npm is missing and could not be installed" >&2; exit 1; }
    else
      echo "install-shell-tool-mcp: npm is required" >&2
      exit 1
    fi
  fi
  rm -rf "$dir/node_modules" "$dir/package.json" "$dir/package-lock.json" "$dir/.complete"
  mkdir -p "$dir"
  timeout 600 npm install --silent --no-audit --no-fund --prefix "$dir" \
    "@openai/codex-shell-tool-mcp@${version}" >&2
  [ "$(installed_version || true)" = "$version" ] ||
    { echo "install-shell-tool-mcp: no @openai/codex-shell-tool-mcp $version under $dir" >&2; exit 1; }
  touch "$dir/.complete"
fi

bin="$(node -e '
  const p = require(process.argv[1]);
  const b = typeof p.bin === "string" ? p.bin : Object.values(p.bin)[0];
  process.stdout.write(require("path").join(process.argv[2], b));
' "$pkg/package.json" "$pkg")"
[ -f "$bin" ] || { echo "install-shell-tool-mcp: bin entry $bin is missing" >&2; exit 1; }
echo "$bin"
