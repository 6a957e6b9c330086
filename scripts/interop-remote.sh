#!/usr/bin/env bash
# Remote-mode interoperability with the upstream Codex binary (0.169.0): every pairing of
# executor and harness, ours and upstream's, through OUR rendezvous. See docs/e2e.md (the
# matrix) and docs/remote.md. Run from .ci/run after the e2e step.
#
#   1. our executor      -> our rendezvous <- upstream harness (`codex exec`)  full scripted turn
#   2. upstream executor -> our rendezvous <- upstream harness (`codex exec`)  full scripted turn
#   3. upstream executor -> our rendezvous <- relay-crate harness (examples/upstream_executor)
#   4. upstream executor -> our rendezvous <- our harness (`exec-server run` / `cp`)
#      our executor      -> our rendezvous <- our harness (same checks)
#
# 1 and 2 are tests/e2e/test_codex_remote.py: the turn of tests/e2e/test_codex_cli.py (mocked
# model, commands, apply_patch, TTY + stdin; effects checked on the executor's side), reached
# through the CODEX_EXEC_SERVER_NOISE_* variables instead of a ws:// URL.
#
# Usage: scripts/interop-remote.sh [pytest args for 1 and 2...]
# Uses EXEC_SERVER_BIN (built when unset) and the codex CLI from $UPSTREAM_DIR (installed from
# npm when missing, as scripts/e2e-codex.sh does). Loopback only apart from that install.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=interop
. scripts/lib/upstream.sh

ensure_codex
ensure_exec_server_bin
ensure_pytest
export CODEX_BIN="$codex" E2E_REQUIRE=1 PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)

echo "== interop 1+2: our / upstream executor -> our rendezvous <- codex exec (tests/e2e/test_codex_remote.py)"
timeout 600 "$PY" -m pytest -p no:cacheprovider -v -rfEs tests/e2e/test_codex_remote.py "$@"

echo "== interop 3: upstream executor -> our rendezvous <- relay-crate harness (Noise handshake + initialize)"
timeout 1800 cargo build --release --locked -q -p exec-server-rendezvous --example upstream_executor
timeout 120 "${CARGO_TARGET_DIR:-$PWD/target}/release/examples/upstream_executor" "$codex"

# ---------------------------------------------------------------------------------------------
# 4. <- our harness: `exec-server run` and `exec-server cp` with the CODEX_EXEC_SERVER_NOISE_*
# variables (environment `remote`), against the upstream executor and against ours.

work="$(mktemp -d "${TMPDIR:-/tmp}/interop-remote.XXXXXX")"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "interop: FAIL: $*" >&2
  local f
  for f in "$work"/*.log; do
    [ -f "$f" ] && { echo "--- $f (tail)" >&2; tail -n 30 "$f" >&2; }
  done
  exit 1
}

# Lines of file $1 matching $2.
count() {
  local n
  n="$(grep -c -- "$2" "$1" 2>/dev/null)" || true
  echo "${n:-0}"
}

# Waits up to 20 s for at least $3 (default 1) lines matching $2 in file $1.
wait_for_line() {
  local i
  for i in $(seq 200); do
    [ "$(count "$1" "$2")" -ge "${3:-1}" ] && return 0
    sleep 0.1
  done
  return 1
}

# Starts our rendezvous with a one-environment config; sets $rv_url.
start_rendezvous() {
  printf '[environments.e2e]\nexecutor_tokens = ["sha256:%s"]\nharness_tokens = ["harness-secret"]\n' \
    "$(printf %s exec-secret | sha256sum | cut -d' ' -f1)" >"$work/rv.toml"
  RUST_LOG=info "$EXEC_SERVER_BIN" rendezvous --listen http://127.0.0.1:0 --config "$work/rv.toml" \
    >"$work/rv.out" 2>"$work/rendezvous.log" &
  pids+=($!)
  wait_for_line "$work/rv.out" '^http://' || fail "the rendezvous printed no URL"
  rv_url="$(head -n1 "$work/rv.out")"
}

# Our harness's environment: nothing but the Noise variables (no environments.toml).
harness() {
  env -u CODEX_EXEC_SERVER_URL CODEX_HOME="$work/harness-home" \
    CODEX_EXEC_SERVER_NOISE_REGISTRY_URL="$rv_url" \
    CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID=e2e \
    CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN=harness-secret \
    "$EXEC_SERVER_BIN" "$@"
}

# `run` and `cp` through the rendezvous to the executor registered as e2e.
check_our_harness() {
  local who="$1" tag="interop-$1-$$" out rc=0
  local accepted
  accepted="$(count "$work/rendezvous.log" 'harness key accepted')"
  out="$(harness run remote -- sh -c "echo $tag; echo to-stderr >&2; exit 7" 2>"$work/harness-run.log")" || rc=$?
  [ "$rc" = 7 ] || fail "$who: exec-server run exit code $rc, expected 7 (stdout: $out)"
  [ "$out" = "$tag" ] || fail "$who: exec-server run printed '$out', expected '$tag'"
  grep -q to-stderr "$work/harness-run.log" || fail "$who: the command's stderr did not come back"
  printf 'line one\n%s\n' "$tag" >"$work/upload.txt"
  harness cp remote "$work/upload.txt" ":$work/remote-$who.txt" ||
    fail "$who: exec-server cp upload failed"
  out="$(harness run remote -- cat "$work/remote-$who.txt")" || fail "$who: reading the upload back failed"
  [ "$out" = "$(cat "$work/upload.txt")" ] || fail "$who: uploaded file reads back as '$out'"
  harness cp remote ":$work/remote-$who.txt" "$work/download-$who.txt" ||
    fail "$who: exec-server cp download failed"
  cmp -s "$work/upload.txt" "$work/download-$who.txt" || fail "$who: the downloaded file differs"
  [ "$(count "$work/rendezvous.log" 'harness key accepted')" -gt "$accepted" ] ||
    fail "$who: the rendezvous never validated our harness's key"
  echo "interop 4: OK: $who executor <- exec-server run/cp through our rendezvous"
}

mkdir -p "$work/harness-home" "$work/exec-home"
echo "== interop 4a: upstream executor -> our rendezvous <- our harness (exec-server run, cp)"
start_rendezvous
CODEX_HOME="$work/exec-home" "$codex" exec-server --remote "$rv_url" --environment-id e2e \
  --registration-bearer-stdin <<<"exec-secret" >"$work/upstream-executor.log" 2>&1 &
pids+=($!)
wait_for_line "$work/rendezvous.log" 'executor socket attached' ||
  fail "the upstream executor did not attach to the rendezvous"
check_our_harness upstream

echo "== interop 4b: our executor -> our rendezvous <- our harness (exec-server run, cp)"
# A new registration replaces the upstream one (its socket is closed).
"$EXEC_SERVER_BIN" --remote "$rv_url" --environment-id e2e --registration-bearer-stdin \
  <<<"exec-secret" >"$work/our-executor.log" 2>&1 &
pids+=($!)
wait_for_line "$work/rendezvous.log" 'registration replaced' ||
  fail "our executor did not replace the upstream registration"
wait_for_line "$work/rendezvous.log" 'executor socket attached' 2 ||
  fail "our executor did not attach to the rendezvous"
check_our_harness our

echo "== interop: all cases passed in $(( $(date +%s) - start ))s"
