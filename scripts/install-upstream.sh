#!/usr/bin/env bash
# Installs the upstream `codex` binary (0.169.0) from npm for comparison
# benchmarks (see docs/benchmarks.md) and prints the path of the binary.
#
# Usage: scripts/install-upstream.sh        (installs into $UPSTREAM_DIR, default /tmp/codex-upstream)
set -euo pipefail

version="${UPSTREAM_VERSION:-0.169.0}"
dir="${UPSTREAM_DIR:-/tmp/codex-upstream}"

mkdir -p "$dir"
npm install --silent --no-audit --no-fund --prefix "$dir" "@openai/codex@${version}" >&2

shopt -s nullglob
bins=("$dir"/node_modules/@openai/codex-linux-x64/vendor/*/bin/codex)
if [ "${#bins[@]}" -eq 0 ]; then
  echo "install-upstream: no codex binary found under $dir/node_modules/@openai/codex-linux-x64/vendor/*/bin/" >&2
  exit 1
fi
echo "${bins[0]}"
