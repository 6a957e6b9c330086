"""End to end: the real Codex CLI (`codex exec`) runs a whole turn on OUR exec-server.

The model is replaced by a scripted mock of the Responses API (mock_responses.py) that makes the
agent run, in order: a shell command, an `apply_patch` that creates a file, an `apply_patch` that
edits it, a command in a TTY that waits for a line on stdin, a `write_stdin` that feeds it, and a
shell command that reads everything back. The codex client is pointed at our server through
`$CODEX_HOME/environments.toml` or, separately, `CODEX_EXEC_SERVER_URL`. (test_codex_remote.py
runs the same turn, `run_scripted_turn`, on our executor in remote mode behind our rendezvous.)

Proof that the effects happened on the server and not in the client:

* The server runs in its own mount namespace in which the workspace directory W (the client's
  working directory, the turn's cwd) is covered by a private tmpfs. Whatever is written to W by
  the server (or by anything it spawns) lands in that tmpfs; the client's W stays empty. We read
  the server's view through /proc/<server pid>/root.
* The shell command records its process ancestry: our server's pid is in it, codex's is not.
* The server has its own HOME, working directory and E2E_SIDE variable, distinct from the
  client's; the command sees the server's.
* An AGENTS.md exists only in the server's W: codex must put its text in the model request.

Each scenario runs with the sandbox off (danger-full-access) and with workspace-write; under
workspace-write a write outside the workspace must be refused by the server's sandbox.

Environment: CODEX_BIN (the codex binary), EXEC_SERVER_BIN (default target/release/exec-server),
E2E_REQUIRE=1 turns a missing binary into a failure instead of a skip, E2E_CODEX_TIMEOUT (seconds,
default 120), E2E_SERVER_LOG / E2E_CODEX_LOG (RUST_LOG of the server / of codex). Each test's
directory (codex's stdout/stderr, the server's stderr, mock-log/ with every request and answer)
is named in a failure message; pytest keeps those of its last three runs.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mock_responses as mr  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CODEX_TIMEOUT = float(os.environ.get("E2E_CODEX_TIMEOUT", "120"))
SERVER_START_TIMEOUT = 15.0
# A model slug from codex's bundled catalog whose metadata enables the freeform `apply_patch`
# tool (with an unknown slug codex 0.169.0 falls back to metadata that offers no apply_patch).
MODEL = os.environ.get("E2E_MODEL", "gpt-5.5")
FINAL_TEXT = "E2E turn finished."


# ---------------------------------------------------------------------------------------------
# Binaries


def _find_codex() -> str | None:
    env = os.environ.get("CODEX_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    for root in (os.environ.get("UPSTREAM_DIR"), "/tmp/codex-upstream"):
        if not root:
            continue
        hits = sorted(glob.glob(f"{root}/node_modules/@openai/codex-linux-x64/vendor/*/bin/codex"))
        if hits:
            return hits[0]
    return None


def _find_server() -> str | None:
    path = os.environ.get("EXEC_SERVER_BIN") or str(REPO / "target" / "release" / "exec-server")
    return path if os.access(path, os.X_OK) else None


def _missing(what: str) -> None:
    msg = f"{what} not found"
    if os.environ.get("E2E_REQUIRE") == "1":
        pytest.fail(msg + " (E2E_REQUIRE=1)")
    pytest.skip(msg)


# ---------------------------------------------------------------------------------------------
# Our server, in a mount namespace where the workspace is a private tmpfs


class Server:
    """Our exec-server. By default it listens on a loopback WebSocket (`self.url`); with `args`
    it runs with those arguments instead (e.g. `--remote …`: nothing to connect to, `url` is
    None), and `stdin_line` is written to its stdin (e.g. the registration bearer)."""

    def __init__(self, binary: str, root: Path, workspace: Path, args: list[str] | None = None,
                 stdin_line: str | None = None):
        self.root = root
        self.workspace = workspace
        self.home = root / "server-home"
        self.cwd = root / "server-cwd"
        self.home.mkdir()
        self.cwd.mkdir()
        self.stderr_path = root / "server.stderr"
        unshare = shutil.which("unshare")
        if not unshare:
            pytest.fail("`unshare` (util-linux) is required to give the server its own mount namespace")
        ns = [unshare, "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            ns = [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"]
        # sh replaces itself with the server, so the pid we hold is the server's pid.
        script = (
            'mount -t tmpfs -o size=64m,mode=0755 exec-server-e2e "$1" || exit 97; '
            'cd "$2" || exit 98; shift 2; exec "$@"'
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "RUST_LOG": os.environ.get("E2E_SERVER_LOG", "info"),
            "E2E_SIDE": "server",
        }
        self._stderr = open(self.stderr_path, "wb")
        listen = args is None
        self.proc = subprocess.Popen(
            ns + ["sh", "-c", script, "sh", str(workspace), str(self.cwd), binary]
            + (["--listen", "ws://127.0.0.1:0"] if listen else args),
            stdin=subprocess.DEVNULL if stdin_line is None else subprocess.PIPE,
            stdout=subprocess.PIPE if listen else subprocess.DEVNULL, stderr=self._stderr,
            env=env, cwd=str(self.cwd), start_new_session=True,
        )
        self.pid = self.proc.pid
        if stdin_line is not None:
            self.proc.stdin.write(stdin_line.encode() + b"\n")
            self.proc.stdin.close()
        self.url = self._read_url() if listen else None

    def _read_url(self) -> str:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(SERVER_START_TIMEOUT)
        url = line[0].decode(errors="replace").strip() if line else ""
        if not url.startswith("ws://127.0.0.1:"):
            self.stop()
            pytest.fail(
                f"exec-server did not print its ws:// URL within {SERVER_START_TIMEOUT}s "
                f"(exit code {self.proc.poll()}, first line {url!r}); stderr:\n{self.stderr_tail()}"
            )
        return url

    def view(self, path: Path) -> Path:
        """The server's view of an absolute path (inside its mount namespace)."""
        return Path(f"/proc/{self.pid}/root{path}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, n: int = 60) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no stderr)"
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._stderr.close()


# ---------------------------------------------------------------------------------------------
# The scripted turn


def _shell_side_script(path: str) -> str:
    """A command that writes a marker, its HOME, the E2E_SIDE variable (`server` in the server's
    environment, `client` in codex's) and its process ancestry (pids, command lines) to `path`."""
    return (
        f"echo e2e-shell-marker > {path}; "
        f'echo "home=$HOME side=$E2E_SIDE pwd=$(pwd)" >> {path}; '
        'p=$$; chain=""; '
        'while [ -n "$p" ] && [ "$p" -gt 1 ]; do chain="$chain $p"; '
        'echo "proc $p $(tr "\\0" " " < /proc/$p/cmdline | cut -c1-160)" >> ' + path + '; '
        "p=$(awk '/^PPid:/{print $2}' /proc/$p/status 2>/dev/null); done; "
        f'echo "ancestry=$chain" >> {path}; '
        f"cat {path}"
    )


TTY_CMD = (
    'if [ -t 0 ]; then t=tty; else t=notty; fi; printf "ready\\n"; '
    'IFS= read -r line; printf "%s %s\\n" "$t" "$line" > tty.txt; printf "tty-got:%s\\n" "$line"'
)
STDIN_LINE = "hello-from-stdin"
AGENTS_MARKER = "e2e-agents-md-marker-7f3a"
AGENTS_MD = f"# Instructions\n\nThis AGENTS.md exists only on the executor: {AGENTS_MARKER}\n"
CREATE_PATCH = (
    "*** Begin Patch\n*** Add File: notes.txt\n+line one\n+line two\n*** End Patch\n"
)
EDIT_PATCH = (
    "*** Begin Patch\n*** Update File: notes.txt\n@@\n line one\n-line two\n+line 2 (edited)\n"
    "*** End Patch\n"
)


class Turn:
    """Builds the mock's steps from the tools codex advertises in its first request."""

    def __init__(self, outside: Path | None):
        self.outside = outside  # under workspace-write: a path outside the writable roots
        self.tools: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, tuple[str, Any]] = {}  # call_id -> (tool name, arguments)

    # -- tool discovery ----------------------------------------------------------------------

    def _learn_tools(self, body: dict[str, Any]) -> None:
        if self.tools:
            return
        for tool in body.get("tools") or []:
            if isinstance(tool, dict) and tool.get("name"):
                self.tools[tool["name"]] = tool
        missing = [n for n in ("exec_command", "write_stdin", "apply_patch") if n not in self.tools]
        if missing:
            raise AssertionError(
                f"codex did not offer the tools {missing}; it offered {sorted(self.tools)}"
            )

    def _call(self, call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls[call_id] = (name, args)
        return mr.function_call(call_id, name, args)

    def _patch(self, call_id: str, patch: str) -> dict[str, Any]:
        tool = self.tools["apply_patch"]
        self.calls[call_id] = ("apply_patch", patch)
        if tool.get("type") == "custom":
            return mr.custom_tool_call(call_id, "apply_patch", patch)
        return mr.function_call(call_id, "apply_patch", {"input": patch})

    # -- steps -------------------------------------------------------------------------------

    def steps(self) -> list:
        def shell(body, _mock):
            self._learn_tools(body)
            return [self._call("call_shell", "exec_command",
                               {"cmd": _shell_side_script("shell.txt"), "yield_time_ms": 10000})]

        def create(body, _mock):
            return [self._patch("call_patch_create", CREATE_PATCH)]

        def edit(body, _mock):
            return [self._patch("call_patch_edit", EDIT_PATCH)]

        def tty_start(body, _mock):
            return [self._call("call_tty", "exec_command",
                               {"cmd": TTY_CMD, "tty": True, "yield_time_ms": 1500})]

        def tty_feed(body, _mock):
            out = mr.output_text(mr.tool_outputs(body).get("call_tty"))
            m = re.search(r"session ID (\d+)", out, re.IGNORECASE) or re.search(
                r"session[_ ]id\D{0,5}(\d+)", out, re.IGNORECASE)
            if not m:
                raise AssertionError(f"no session id in the tty command's output: {out!r}")
            return [self._call("call_stdin", "write_stdin",
                               {"session_id": int(m.group(1)), "chars": STDIN_LINE + "\n",
                                "yield_time_ms": 10000})]

        def read_back(body, _mock):
            cmd = "cat notes.txt tty.txt"
            if self.outside is not None:
                cmd += f"; touch {self.outside} && echo outside-write-ok || echo outside-write-denied"
            return [self._call("call_read", "exec_command", {"cmd": cmd, "yield_time_ms": 10000})]

        return [shell, create, edit, tty_start, tty_feed, read_back]


# ---------------------------------------------------------------------------------------------
# Running codex


def _write_codex_home(codex_home: Path, mock: mr.MockResponses, sandbox: str,
                      server_url: str | None) -> None:
    codex_home.mkdir(parents=True, exist_ok=True)
    config = f"""
model = "{MODEL}"
model_provider = "e2e-mock"
approval_policy = "never"
sandbox_mode = "{sandbox}"
check_for_update_on_startup = false

[analytics]
enabled = false

# Nothing that reaches out to the network at startup (curated plugin sync, apps).
[features]
plugins = false
remote_plugin = false
apps = false

[sandbox_workspace_write]
network_access = false
exclude_slash_tmp = true
exclude_tmpdir_env_var = true

[model_providers.e2e-mock]
name = "e2e mock of the Responses API"
base_url = "{mock.base_url}"
wire_api = "responses"
env_key = "E2E_MOCK_API_KEY"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 60000
"""
    (codex_home / "config.toml").write_text(config)
    if server_url is not None:
        (codex_home / "environments.toml").write_text(
            'default = "exec-server-e2e"\n'
            "include_local = false\n\n"
            "[[environments]]\n"
            'id = "exec-server-e2e"\n'
            f'url = "{server_url}"\n'
            "connect_timeout_sec = 10\n"
            "initialize_timeout_sec = 10\n"
        )


def _run_codex(codex: str, root: Path, workspace: Path, codex_home: Path, sandbox: str,
               extra_env: dict[str, str]) -> tuple[int, str, str, int]:
    client_home = root / "client-home"
    client_home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(client_home),
        "CODEX_HOME": str(codex_home),
        "E2E_MOCK_API_KEY": "e2e-dummy-key",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "E2E_SIDE": "client",
        # Loopback only: anything codex tries to reach other than 127.0.0.1 goes to a closed port.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "RUST_LOG": os.environ.get("E2E_CODEX_LOG", "warn"),
    }
    env.update(extra_env)
    args = [codex, "exec", "--skip-git-repo-check", "--sandbox", sandbox,
            "-C", str(workspace), "Run the scripted end-to-end scenario."]
    out_path, err_path = root / "codex.stdout", root / "codex.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, cwd=str(workspace), start_new_session=True)
        try:
            rc = proc.wait(CODEX_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            rc = -9
    return (rc, out_path.read_text(errors="replace"), err_path.read_text(errors="replace"),
            proc.pid)


# ---------------------------------------------------------------------------------------------
# The test


def _snapshot(directory: Path) -> dict[str, str]:
    files = {}
    for entry in sorted(os.listdir(directory)):
        try:
            files[entry] = (directory / entry).read_text(errors="replace")
        except OSError as exc:
            files[entry] = f"<unreadable: {exc}>"
    return files


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


def binaries() -> tuple[str, str]:
    """The codex and exec-server binaries (skips, or fails under E2E_REQUIRE=1, when missing)."""
    codex, server_bin = _find_codex(), _find_server()
    if not codex:
        _missing("codex binary (set CODEX_BIN or run scripts/e2e-codex.sh)")
    if not server_bin:
        _missing("exec-server binary (cargo build --release -p exec-server, or EXEC_SERVER_BIN)")
    return codex, server_bin


@pytest.mark.parametrize("sandbox", ["danger-full-access", "workspace-write"])
@pytest.mark.parametrize("wiring", ["environments.toml", "CODEX_EXEC_SERVER_URL"])
def test_codex_exec_turn_runs_on_our_server(tmp_path: Path, sandbox: str, wiring: str) -> None:
    root = tmp_path
    codex, server_bin = binaries()
    workspace = root / "workspace"
    workspace.mkdir()
    server = Server(server_bin, root, workspace)
    if wiring == "environments.toml":
        run_scripted_turn(codex, root, workspace, server, sandbox, environments_url=server.url)
    else:
        run_scripted_turn(codex, root, workspace, server, sandbox,
                          extra_env={"CODEX_EXEC_SERVER_URL": server.url})


def run_scripted_turn(codex: str, root: Path, workspace: Path, server: Server, sandbox: str,
                      environments_url: str | None = None,
                      extra_env: dict[str, str] | None = None,
                      extra_context: Any = None) -> None:
    """Runs the scripted turn with `codex exec` on the running `server` (stopped on return) and
    checks every effect happened there. codex reaches the server through `environments.toml`
    naming `environments_url`, or through `extra_env` alone (no `environments.toml`).
    `extra_context()` adds text to failure messages."""
    outside = root / "outside"
    outside.mkdir()
    outside_file = outside / "escaped.txt"
    codex_home = root / "codex-home"

    # Project instructions that exist only on the server's side: codex must read them from there.
    try:
        (server.view(workspace) / "AGENTS.md").write_text(AGENTS_MD)
    except BaseException:
        server.stop()
        raise
    turn = Turn(outside_file if sandbox == "workspace-write" else None)
    mock = mr.MockResponses(turn.steps(), log_dir=str(root / "mock-log"), final_text=FINAL_TEXT)
    mock.start()
    try:
        _write_codex_home(codex_home, mock, sandbox, environments_url)
        rc, out, err, codex_pid = _run_codex(codex, root, workspace, codex_home, sandbox,
                                             extra_env or {})
        server_alive = server.alive()
        # The server's view of the workspace (its private tmpfs), read while it still exists.
        server_files = _snapshot(server.view(workspace)) if server_alive else {}
    finally:
        mock.stop()
        server.stop()

    context = (
        f"\n--- codex exit code {rc}; stdout tail:\n{_tail(out)}\n--- codex stderr tail:\n"
        f"{_tail(err)}\n--- server stderr tail:\n{server.stderr_tail()}\n--- mock: "
        f"{len(mock.requests)} requests, other requests {mock.other_requests}, "
        f"errors {mock.errors}\n"
        + (extra_context() if extra_context else "")
        + f"--- files in {root}"
    )
    assert not mock.errors, "the mock's script failed: " + "; ".join(mock.errors) + context
    assert rc == 0, f"codex exec failed (timeout {CODEX_TIMEOUT}s)" + context
    assert server_alive, "our server died during the turn" + context
    assert FINAL_TEXT in out, "codex did not finish the scripted turn" + context

    outputs = {cid: mr.output_text(v) for cid, v in mr.tool_outputs(mock.requests[-1]).items()}
    expected = ["call_shell", "call_patch_create", "call_patch_edit", "call_tty", "call_stdin",
                "call_read"]
    missing = [c for c in expected if c not in outputs]
    assert not missing, f"no tool output for {missing}; outputs: {outputs}" + context

    # 1. The shell command ran on the server: it is a descendant of our server, not of codex.
    assert "e2e-shell-marker" in outputs["call_shell"], outputs["call_shell"] + context
    m = re.search(r"ancestry=([\d ]*)", outputs["call_shell"])
    assert m, f"no ancestry in the shell output: {outputs['call_shell']!r}" + context
    chain = [int(p) for p in m.group(1).split()]
    assert server.pid in chain, (
        f"the shell command is not a descendant of our server (pid {server.pid}): "
        f"ancestry {chain}" + context)
    assert codex_pid not in chain, f"the shell command descends from codex: {chain}" + context
    # No codex binary wraps it (a client-side sandbox helper?); the one allowed exception is an
    # upstream executor under test (test_codex_remote.py), which is the codex binary itself.
    wrappers = [line for line in outputs["call_shell"].splitlines()
                if line.startswith("proc ") and codex in line
                and line.split()[1] != str(server.pid)]
    assert not wrappers, (
        f"the command was wrapped in the codex binary: {wrappers}\n" + outputs["call_shell"]
        + context)
    # …with the server's environment (codex asks for `envPolicy.inherit = all`): its HOME.
    assert f"home={server.home} side=server pwd={workspace}" in outputs["call_shell"], (
        f"expected the server's HOME {server.home} and E2E_SIDE=server: "
        f"{outputs['call_shell']!r}" + context)

    # …and codex read the project instructions (AGENTS.md) from the server's filesystem.
    assert AGENTS_MARKER in json.dumps(mock.requests[0].get("input")), (
        "the first model request lacks the server-side AGENTS.md" + context)

    # 2. apply_patch created, then edited, notes.txt.
    for cid in ("call_patch_create", "call_patch_edit"):
        assert "notes.txt" in outputs[cid] and "error" not in outputs[cid].lower(), (
            f"{cid}: {outputs[cid]!r}" + context)

    # 3. The tty command saw a terminal and got the line written to its stdin.
    assert f"tty-got:{STDIN_LINE}" in outputs["call_stdin"], (
        f"write_stdin output: {outputs['call_stdin']!r}; tty command output "
        f"{outputs['call_tty']!r}" + context)

    # 4. Every effect is in the server's view of the workspace, none in the client's.
    assert server_files.get("notes.txt") == "line one\nline 2 (edited)\n", (
        f"server-side notes.txt: {server_files.get('notes.txt')!r}; server's workspace "
        f"{sorted(server_files)}" + context)
    assert server_files.get("tty.txt") == f"tty {STDIN_LINE}\n", (
        f"server-side tty.txt: {server_files.get('tty.txt')!r}" + context)
    shell_txt = server_files.get("shell.txt", "")
    assert shell_txt.startswith("e2e-shell-marker\n"), f"server-side shell.txt: {shell_txt!r}" + context
    assert "line 2 (edited)" in outputs["call_read"] and f"tty {STDIN_LINE}" in outputs["call_read"], (
        f"read-back output: {outputs['call_read']!r}" + context)
    assert server_files.get("AGENTS.md") == AGENTS_MD, "server-side AGENTS.md changed" + context
    client_files = sorted(os.listdir(workspace))
    assert client_files == [], (
        f"files appeared in the CLIENT's workspace {workspace}: {client_files}" + context)

    # 5. Under workspace-write the server's sandbox refused a write outside the workspace.
    if sandbox == "workspace-write":
        assert "outside-write-denied" in outputs["call_read"], (
            f"a write outside the workspace was not refused: {outputs['call_read']!r}" + context)
        assert not outside_file.exists(), f"{outside_file} was written" + context
