#!/usr/bin/env python3
"""Manual interop check: the real upstream executor and the real upstream harness, both talking
to our `exec-server rendezvous` (registry + rendezvous). The model is mocked (tests/e2e/
mock_responses.py) and asks for one `exec_command`; the check passes when the command's output
comes back to the model, i.e. register, connect, validate, the Noise handshake and JSON-RPC all
crossed our rendezvous between two upstream binaries.

Usage: python3 upstream_both.py <codex binary> <exec-server binary>
Not part of CI (it needs the upstream binary); exits 0 on success.
"""
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "tests" / "e2e"))
import mock_responses as mr  # noqa: E402

MARKER = "rdv-interop-4242"


def main(codex, ours):
    root = pathlib.Path(tempfile.mkdtemp())
    digest = hashlib.sha256(b"exec-secret").hexdigest()
    (root / "rv.toml").write_text(
        f'[environments.e2e]\nexecutor_tokens = ["sha256:{digest}"]\n'
        'harness_tokens = ["harness-secret"]\n')
    rv = subprocess.Popen([ours, "rendezvous", "--listen", "http://127.0.0.1:0",
                           "--config", str(root / "rv.toml")],
                          stdout=subprocess.PIPE, text=True)
    url = rv.stdout.readline().strip()
    print("rendezvous:", url)
    exec_home = root / "exec-home"
    exec_home.mkdir()
    executor = subprocess.Popen(
        [codex, "exec-server", "--remote", url, "--environment-id", "e2e",
         "--registration-bearer-stdin"],
        stdin=subprocess.PIPE, env={**os.environ, "CODEX_HOME": str(exec_home)})
    executor.stdin.write(b"exec-secret\n")
    executor.stdin.flush()
    time.sleep(2)

    def shell(body, _mock):
        return [mr.function_call("call_1", "exec_command",
                                 {"cmd": f"echo {MARKER}", "yield_time_ms": 10000})]

    try:
        with mr.MockResponses([shell]) as mock:
            home = root / "harness-home"
            home.mkdir()
            (home / "config.toml").write_text(f"""
model = "gpt-5.5"
model_provider = "mock"
approval_policy = "never"
sandbox_mode = "danger-full-access"
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
                   "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL": url,
                   "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID": "e2e",
                   "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN": "harness-secret"}
            result = subprocess.run(
                [codex, "exec", "--skip-git-repo-check", "-C", str(home), "run it"],
                stdin=subprocess.DEVNULL, env=env, timeout=120, capture_output=True, text=True)
            print("codex exec exit", result.returncode)
            outputs = [mr.tool_outputs(body) for body in mock.requests]
            print("tool outputs:", outputs[1:] if len(outputs) > 1 else outputs)
            ok = any(MARKER in mr.output_text(v) for o in outputs for v in o.values())
            if not ok:
                print(result.stderr[-3000:])
                print("FAIL: the command output did not come back")
                return 1
            print("OK: upstream harness ran a command on the upstream executor through our rendezvous")
            return 0
    finally:
        executor.terminate()
        rv.terminate()
        executor.wait()
        rv.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
