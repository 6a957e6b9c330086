#!/usr/bin/env python3
"""Manual interop check: the real upstream executor (codex exec-server --remote) against our
harness code (examples/harness_probe.rs) through a minimal fake registry + rendezvous.

Usage: python3 upstream_executor.py <codex binary> <harness_probe binary>
Needs the `websockets` package. Exits 0 when the executor answered `initialize` through the Noise
channel, after checking the registry saw the harness key and authorization the probe sent.
Not part of CI: a manual check for spec §10 wire compatibility (issue 11).
"""
import asyncio
import json
import os
import socket
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets

ENV_ID = "e2e"
REG_ID = "reg-1"
AUTH = "auth-abc123"
state = {"executor_key": None, "validate": None, "ws_port": None}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path == f"/cloud/environment/{ENV_ID}/register":
            state["executor_key"] = body["executor_public_key"]
            reply = {"environment_id": ENV_ID, "url": f"ws://127.0.0.1:{state['ws_port']}/rv",
                     "security_profile": "noise_hybrid_ik_v1", "executor_registration_id": REG_ID}
        elif self.path == f"/cloud/environment/{ENV_ID}/validate":
            state["validate"] = (body, self.headers.get("x-codex-noise-stream-id"))
            reply = {"valid": True}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


async def main(codex, probe):
    reg_port = free_port()
    state["ws_port"] = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", reg_port), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    done = asyncio.get_running_loop().create_future()

    async def rendezvous(ws):
        harness_key = None
        proc = await asyncio.create_subprocess_exec(
            probe, json.dumps(state["executor_key"]), ENV_ID, REG_ID, AUTH,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

        async def pump_in():
            try:
                async for msg in ws:
                    if isinstance(msg, bytes):
                        print(f"executor -> harness: {len(msg)} bytes")
                        proc.stdin.write(b"RECV " + msg.hex().encode() + b"\n")
                        await proc.stdin.drain()
            except websockets.ConnectionClosed:
                pass

        reader = asyncio.ensure_future(pump_in())
        async for line in proc.stdout:
            kind, _, rest = line.decode().strip().partition(" ")
            if kind == "SEND":
                frame = bytes.fromhex(rest)
                print(f"harness -> executor: {len(frame)} bytes")
                await ws.send(frame)
            elif kind == "HARNESS_KEY":
                harness_key = json.loads(rest)
            elif kind == "MSG":
                print("reply:", rest[:200])
            elif kind == "DONE":
                body, stream_id = state["validate"]
                assert body["executor_registration_id"] == REG_ID, body
                assert body["harness_public_key"] == harness_key, "validate saw another key"
                assert body["harness_key_authorization"] == AUTH, body
                print("validate stream id:", stream_id)
                if not done.done():
                    done.set_result(True)
        reader.cancel()
        if not done.done():
            done.set_exception(RuntimeError(f"probe exited {await proc.wait()}"))

    async with websockets.serve(rendezvous, "127.0.0.1", state["ws_port"], max_size=256 * 1024):
        home = tempfile.mkdtemp()
        executor = await asyncio.create_subprocess_exec(
            codex, "exec-server", "--remote", f"http://127.0.0.1:{reg_port}",
            "--environment-id", ENV_ID, "--registration-bearer-stdin",
            stdin=asyncio.subprocess.PIPE, env={**os.environ, "CODEX_HOME": home})
        executor.stdin.write(b"exec-secret\n")
        await executor.stdin.drain()
        try:
            await asyncio.wait_for(done, 30)
            print("OK: upstream executor answered initialize through our harness")
        finally:
            executor.terminate()
            await executor.wait()
            server.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
