#!/usr/bin/env python3
"""Manual interop check: the real upstream harness (`codex exec` with the
CODEX_EXEC_SERVER_NOISE_* variables) against our executor-side relay code
(examples/executor_probe.rs) through a minimal fake registry + rendezvous.

Usage: python3 upstream_harness.py <codex binary> <executor_probe binary>
Needs the `websockets` package and tests/e2e/mock_responses.py (the model is mocked). Exits 0
when the probe decrypted the first JSON-RPC message the harness sent through the Noise channel,
after checking it carried the authorization our registry issued. Not part of CI.
"""
import asyncio
import json
import os
import pathlib
import socket
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "tests" / "e2e"))
import mock_responses as mr  # noqa: E402

ENV_ID = "e2e"
REG_ID = "reg-1"
AUTH = "auth-xyz789"
state = {"executor_key": None, "ws_port": None, "connects": 0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != f"/cloud/environment/{ENV_ID}/connect":
            self.send_response(404)
            self.end_headers()
            return
        state["connects"] += 1
        data = json.dumps({
            "environment_id": ENV_ID, "url": f"ws://127.0.0.1:{state['ws_port']}/rv",
            "security_profile": "noise_hybrid_ik_v1", "executor_registration_id": REG_ID,
            "executor_public_key": state["executor_key"], "harness_key_authorization": AUTH,
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


async def main(codex, probe_bin):
    reg_port = free_port()
    state["ws_port"] = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", reg_port), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    done = asyncio.get_running_loop().create_future()
    probe = await asyncio.create_subprocess_exec(
        probe_bin, ENV_ID, REG_ID, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    kind, _, rest = (await probe.stdout.readline()).decode().strip().partition(" ")
    assert kind == "EXECUTOR_KEY", kind
    state["executor_key"] = json.loads(rest)
    harness_ws = {}

    async def pump_probe():
        async for line in probe.stdout:
            kind, _, rest = line.decode().strip().partition(" ")
            if kind == "SEND":
                frame = bytes.fromhex(rest)
                print(f"executor -> harness: {len(frame)} bytes")
                await harness_ws["ws"].send(frame)
            elif kind == "VALIDATE":
                assert rest == AUTH, rest
                print("validate: authorization matches")
            elif kind == "MSG":
                print("harness sent:", rest[:200])
            elif kind == "DONE" and not done.done():
                done.set_result(True)
        if not done.done():
            done.set_exception(RuntimeError(f"probe exited {await probe.wait()}"))

    async def rendezvous(ws):
        harness_ws["ws"] = ws
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    print(f"harness -> executor: {len(msg)} bytes")
                    probe.stdin.write(b"RECV " + msg.hex().encode() + b"\n")
                    await probe.stdin.drain()
        except websockets.ConnectionClosed:
            pass  # the harness drops TCP without a close frame at exit (spec 10.11)

    pumper = asyncio.ensure_future(pump_probe())
    with mr.MockResponses([]) as mock:
        async with websockets.serve(rendezvous, "127.0.0.1", state["ws_port"],
                                    max_size=256 * 1024):
            home = pathlib.Path(tempfile.mkdtemp())
            (home / "config.toml").write_text(f"""
model = "gpt-5.5"
model_provider = "mock"
approval_policy = "never"
check_for_update_on_startup = false
[analytics]
enabled = false
[features]
plugins = false
remote_plugin = false
apps = false
[model_providers.mock]
name = "mock"
base_url = "{mock.base_url}"
wire_api = "responses"
env_key = "MOCK_KEY"
request_max_retries = 0
stream_max_retries = 0
""")
            env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home),
                   "MOCK_KEY": "x", "NO_PROXY": "127.0.0.1,localhost",
                   "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL": f"http://127.0.0.1:{reg_port}",
                   "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID": ENV_ID,
                   "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN": "harness-secret"}
            harness = await asyncio.create_subprocess_exec(
                codex, "exec", "--skip-git-repo-check", "-C", str(home), "say hi",
                stdin=asyncio.subprocess.DEVNULL, env=env)
            try:
                await asyncio.wait_for(done, 60)
                print("OK: our executor side decrypted the upstream harness's first message")
            finally:
                if harness.returncode is None:
                    harness.terminate()
                await harness.wait()
                pumper.cancel()
                if probe.returncode is None:
                    probe.terminate()
                server.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
