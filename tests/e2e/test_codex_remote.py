"""End to end, remote mode (spec §10): the real Codex CLI (`codex exec`, the upstream harness)
runs the whole scripted turn of test_codex_cli.py on OUR executor, which is registered with OUR
rendezvous and reachable only through it.

    our exec-server --remote  --dials-->  our exec-server rendezvous  <--dials--  codex exec

* `exec-server rendezvous` runs with a temporary config: environment `e2e`, a `sha256:` executor
  token and a plain harness token.
* Our executor runs as in test_codex_cli.py (own mount namespace, private tmpfs over the
  workspace) but with `--remote <rendezvous> --environment-id e2e --registration-bearer-stdin`:
  it listens on nothing, so every command and file operation codex makes crossed the rendezvous
  inside the Noise channel.
* codex gets no `environments.toml`, only `CODEX_EXEC_SERVER_NOISE_REGISTRY_URL`,
  `CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID` and `CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN` (its
  environment `remote`): it calls `connect`, dials the harness socket, runs the hybrid Noise
  handshake against the executor key the registry handed out, and speaks JSON-RPC through it.

The checks are those of test_codex_cli.py (commands ran under our executor's pid, files landed
in its view of the workspace, TTY + stdin, the workspace-write sandbox), plus: the rendezvous
accepted the harness key (`validate` said yes) and the executor registered exactly once.

A second test puts the upstream executor (`codex exec-server --remote`, same namespace set-up)
in our executor's place, sandbox off: both ends upstream, only the rendezvous ours.
Run by scripts/interop-remote.sh (see docs/e2e.md); `python3 -m pytest tests/e2e` runs it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_codex_cli import Server, binaries, run_scripted_turn  # noqa: E402

ENV_ID = "e2e"
EXECUTOR_TOKEN = "e2e-executor-secret"
HARNESS_TOKEN = "e2e-harness-secret"
START_TIMEOUT = 15.0


class Rendezvous:
    """`exec-server rendezvous` on a loopback port with a one-environment config."""

    def __init__(self, binary: str, root: Path):
        digest = hashlib.sha256(EXECUTOR_TOKEN.encode()).hexdigest()
        config = root / "rendezvous.toml"
        config.write_text(
            f"[environments.{ENV_ID}]\n"
            f'executor_tokens = ["sha256:{digest}"]\n'
            f'harness_tokens = ["{HARNESS_TOKEN}"]\n'
        )
        self.stderr_path = root / "rendezvous.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "rendezvous", "--listen", "http://127.0.0.1:0", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "info"},
            start_new_session=True,
        )
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        self.url = line[0].decode(errors="replace").strip() if line else ""
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            pytest.fail(f"the rendezvous printed {self.url!r}, not its URL; stderr:\n"
                        f"{self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr)"

    def wait_for_executor(self, executor: Server) -> None:
        """Polls `connect` with the harness token until the executor registered and attached
        its socket (503 until then)."""
        request = json.dumps({"harness_public_key": {
            "suite": "Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256",
            "x25519_public_key": "A" * 43 + "=",
            "mlkem768_public_key": "A" * 1579 + "=",
        }}).encode()
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if not executor.alive():
                break
            req = urllib.request.Request(
                f"{self.url}/cloud/environment/{ENV_ID}/connect", data=request, method="POST",
                headers={"content-type": "application/json",
                         "authorization": f"Bearer {HARNESS_TOKEN}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"{e.code} {e.read()[:200]!r}"
                if e.code != 503:
                    break
            time.sleep(0.1)
        executor.stop()
        pytest.fail(f"the executor did not attach to the rendezvous (last connect: {last}); "
                    f"executor stderr:\n{executor.stderr_tail()}\nrendezvous stderr:\n"
                    f"{self.stderr()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._stderr.close()


def _turn_through_rendezvous(tmp_path: Path, sandbox: str, upstream_executor: bool) -> None:
    root = tmp_path
    codex, server_bin = binaries()
    workspace = root / "workspace"
    workspace.mkdir()
    rendezvous = Rendezvous(server_bin, root)
    remote = ["--remote", rendezvous.url, "--environment-id", ENV_ID,
              "--registration-bearer-stdin"]
    try:
        if upstream_executor:
            executor = Server(codex, root, workspace, args=["exec-server"] + remote,
                              stdin_line=EXECUTOR_TOKEN)
        else:
            executor = Server(server_bin, root, workspace,
                              args=remote + ["--name", "e2e remote executor"],
                              stdin_line=EXECUTOR_TOKEN)
        rendezvous.wait_for_executor(executor)
        noise_env = {
            "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL": rendezvous.url,
            "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID": ENV_ID,
            "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN": HARNESS_TOKEN,
        }
        run_scripted_turn(
            codex, root, workspace, executor, sandbox, extra_env=noise_env,
            extra_context=lambda: f"--- rendezvous stderr tail:\n{rendezvous.stderr()[-4000:]}\n")
    finally:
        rendezvous.stop()
    log = rendezvous.stderr()
    assert log.count("executor registered") == 1, f"one registration expected:\n{log[-4000:]}"
    assert "harness key accepted" in log, (
        f"the rendezvous never validated codex's harness key:\n{log[-4000:]}")


@pytest.mark.parametrize("sandbox", ["danger-full-access", "workspace-write"])
def test_codex_exec_turn_runs_on_our_executor_through_our_rendezvous(
        tmp_path: Path, sandbox: str) -> None:
    _turn_through_rendezvous(tmp_path, sandbox, upstream_executor=False)


def test_codex_exec_turn_runs_on_the_upstream_executor_through_our_rendezvous(
        tmp_path: Path) -> None:
    """Both ends upstream (`codex exec-server --remote` and `codex exec`), only the rendezvous
    ours: the same turn and checks, sandbox off (the upstream executor's own sandbox helper is
    not what this checks)."""
    _turn_through_rendezvous(tmp_path, "danger-full-access", upstream_executor=True)
