"""The `shell` tool of an MCP server, driven by the official MCP Python SDK client over stdio.

The expectations are those of `exec-server mcp-serve` (our contract). The same file can be run
against upstream's @openai/codex-shell-tool-mcp for the record, where some of them fail.

Environment:
  SHELL_TOOL_MCP_FLAVOR   `ours` (default) or `upstream`. `upstream` writes the rules into
                          $CODEX_HOME/rules/policy.rules of a fresh CODEX_HOME (the only place
                          upstream reads rules from) and, after `initialize`, sends upstream's
                          Codex-only `codex/sandbox-state/update` request, without which
                          upstream refuses every call on Linux ("codex-linux-sandbox was
                          required but not provided").
  SHELL_TOOL_MCP_CMD      the server's command line, split like a shell would (shlex) after
                          $VAR expansion; `{rules}` in any word is replaced by the rules file's
                          path. Default for `ours`: `$EXEC_SERVER_BIN mcp-serve --stdio --rules
                          {rules}`; for `upstream`: `node $SHELL_TOOL_MCP_DIR/node_modules/
                          @openai/codex-shell-tool-mcp/bin/mcp-server.js`.
  EXEC_SERVER_BIN         our binary (default: target/release/exec-server of this repo).
  SHELL_TOOL_MCP_DIR      where scripts/install-shell-tool-mcp.sh installed upstream
                          (default /tmp/shell-tool-mcp-0.97.0).
  SHELL_TOOL_MCP_SANDBOX_POLICY
                          upstream only: the `sandboxPolicy` JSON sent in the sandbox-state
                          request (default {"type": "danger-full-access"}, so that the rules
                          are the only thing deciding; the package ships no Linux sandbox);
                          `null` sends no such request.

The server gets this process's environment with HOME replaced by a fresh empty directory, so
that login shells (the tool's default) do not run the user's profile.

Run with scripts/mcp-python.sh, which makes the venv with the pinned SDK and pytest.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

if sys.version_info < (3, 11):  # the SDK supports 3.10, where anyio brings the backport
    from exceptiongroup import BaseExceptionGroup

import anyio
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

REPO = Path(__file__).resolve().parents[2]
FLAVOR = os.environ.get("SHELL_TOOL_MCP_FLAVOR", "ours")
if FLAVOR not in ("ours", "upstream"):
    raise RuntimeError(f"SHELL_TOOL_MCP_FLAVOR must be `ours` or `upstream`, not {FLAVOR!r}")
UPSTREAM_DIR = os.environ.get("SHELL_TOOL_MCP_DIR", "/tmp/shell-tool-mcp-0.97.0")
DEFAULT_CMD = {
    "ours": "$EXEC_SERVER_BIN mcp-serve --stdio --rules {rules}",
    "upstream": "node "
    + shlex.quote(f"{UPSTREAM_DIR}/node_modules/@openai/codex-shell-tool-mcp/bin/mcp-server.js"),
}[FLAVOR]
CMD_TEMPLATE = os.environ.get("SHELL_TOOL_MCP_CMD") or DEFAULT_CMD
SANDBOX_POLICY = json.loads(
    os.environ.get("SHELL_TOOL_MCP_SANDBOX_POLICY") or '{"type": "danger-full-access"}'
)

# Limits (seconds) on every await, so that a stuck server fails a test instead of hanging it.
START_LIMIT = 30
CALL_LIMIT = 60

RULES = """\
prefix_rule(pattern=["rm"], decision="forbidden")
prefix_rule(pattern=["touch"], decision="prompt")
"""
# A missing comma between the two arguments: a syntax error at line 2.
BAD_RULES = """\
prefix_rule(pattern=["rm"], decision="forbidden")
prefix_rule(pattern=["touch"] decision="prompt")
"""

Elicit = Callable[[Any, Any], Awaitable[Any]]


def server_argv(rules: Path) -> list[str]:
    env = dict(os.environ)
    env.setdefault("EXEC_SERVER_BIN", str(REPO / "target" / "release" / "exec-server"))
    expanded = re.sub(
        r"\$(\w+)|\$\{(\w+)\}",
        lambda m: env.get(m.group(1) or m.group(2), m.group(0)),
        CMD_TEMPLATE,
    )
    argv = [word.replace("{rules}", str(rules)) for word in shlex.split(expanded)]
    if not argv:
        raise RuntimeError("SHELL_TOOL_MCP_CMD is empty")
    if shutil.which(argv[0]) is None:
        pytest.fail(f"server command {argv[0]!r} not found (SHELL_TOOL_MCP_CMD={CMD_TEMPLATE!r})")
    return argv


def server_env(tmp: Path, rules: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A fresh, empty HOME: login shells (the default) must not run the user's profile, which
    # makes timings unpredictable and can leave state behind when a timeout kills it midway
    # (root's ~/.bashrc here runs `pyenv rehash`; killed, it leaves a lock that stalls every
    # later login shell of the machine for 60 s).
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    if FLAVOR == "upstream":
        home = tmp / "codex-home"
        (home / "rules").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rules, home / "rules" / "policy.rules")
        env["CODEX_HOME"] = str(home)
    return env


def write_rules(tmp: Path, text: str = RULES) -> Path:
    rules = tmp / "policy.rules"
    rules.write_text(text)
    return rules


def run(fn: Callable[[], Awaitable[None]], limit: float = 120) -> None:
    """Runs one async test body under an overall limit."""

    async def bounded() -> None:
        with anyio.fail_after(limit):
            await fn()

    try:
        anyio.run(bounded)
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap a test's failure in layers of groups: surface the leaf.
        leaves = leaf_exceptions(group)
        failures = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
        if len(failures) == 1:
            raise failures[0] from None
        raise


def leaf_exceptions(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in leaf_exceptions(sub)]
    return [error]


class Server:
    """One connected MCP session with the server under test."""

    def __init__(self, session: ClientSession, stderr_path: Path):
        self.session = session
        self.stderr_path = stderr_path

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    async def call_raw(self, arguments: dict[str, Any], limit: float = CALL_LIMIT) -> Any:
        try:
            with anyio.fail_after(limit):
                return await self.session.call_tool("shell", arguments)
        except MCPError as error:
            pytest.fail(
                f"shell {arguments} answered a JSON-RPC error {error.error.code}: "
                f"{error.error.message}; server stderr:\n{self.stderr()}"
            )

    async def shell(
        self,
        command: str,
        workdir: Path,
        *,
        timeout_ms: int | None = None,
        login: bool | None = None,
        limit: float = CALL_LIMIT,
    ) -> dict[str, Any]:
        """Calls `shell` and returns the parsed JSON of its one text content item."""
        arguments: dict[str, Any] = {"command": command, "workdir": str(workdir)}
        if timeout_ms is not None:
            arguments["timeout_ms"] = timeout_ms
        if login is not None:
            arguments["login"] = login
        result = await self.call_raw(arguments, limit)
        return parse_result(result, f"command {command!r}; server stderr:\n{self.stderr()}")


def parse_result(result: Any, context: str) -> dict[str, Any]:
    dumped = result.model_dump(by_alias=True, exclude_none=True)
    assert not dumped.get("isError"), f"tool error {dumped}; {context}"
    content = dumped.get("content") or []
    assert len(content) == 1 and content[0].get("type") == "text", (
        f"expected one text content item, got {dumped}; {context}"
    )
    try:
        body = json.loads(content[0]["text"])
    except ValueError:
        pytest.fail(f"content is not JSON: {content[0]['text']!r}; {context}")
    for key in ("exit_code", "output", "duration", "timed_out"):
        assert key in body, f"result lacks {key!r}: {body}; {context}"
    assert isinstance(body["exit_code"], int), body
    assert isinstance(body["output"], str), body
    assert isinstance(body["timed_out"], bool), body
    return body


async def unexpected_elicitation(context: Any, params: Any) -> Any:
    # Declined rather than raised: a raising callback leaves the server waiting for an answer.
    print(f"unexpected elicitation (declined): {params}", file=sys.stderr)
    return types.ElicitResult(action="decline")


class ElicitRecorder:
    """An elicitation callback that records each request and answers with a fixed action,
    optionally after a delay."""

    def __init__(self, action: str = "accept", delay: float = 0.0):
        self.action = action
        self.delay = delay
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, context: Any, params: Any) -> Any:
        self.requests.append(params.model_dump(by_alias=True, exclude_none=True))
        if self.delay:
            await anyio.sleep(self.delay)
        if self.action == "accept":
            return types.ElicitResult(action="accept", content={"reason": "test says yes"})
        return types.ElicitResult(action=self.action)


@asynccontextmanager
async def open_server(tmp: Path, elicit: Elicit = unexpected_elicitation, rules_text: str = RULES) -> AsyncIterator[Server]:
    rules = write_rules(tmp, rules_text)
    argv = server_argv(rules)
    params = StdioServerParameters(
        command=argv[0], args=argv[1:], env=server_env(tmp, rules), cwd=str(tmp)
    )
    stderr_path = tmp / "server.stderr"
    with open(stderr_path, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(
                read, write, elicitation_callback=elicit, read_timeout_seconds=CALL_LIMIT
            ) as session:
                server = Server(session, stderr_path)
                try:
                    with anyio.fail_after(START_LIMIT):
                        await session.initialize()
                        if FLAVOR == "upstream" and SANDBOX_POLICY is not None:
                            # Upstream's Codex-only request (README "MCP Client Requirements").
                            await session.send_request(
                                types.Request[dict[str, Any], str](
                                    method="codex/sandbox-state/update",
                                    params={"sandboxPolicy": SANDBOX_POLICY, "sandboxCwd": str(tmp)},
                                ),
                                types.EmptyResult,
                            )
                except (MCPError, TimeoutError) as error:
                    pytest.fail(f"{shlex.join(argv)}: start failed: {error!r}; stderr:\n{server.stderr()}")
                yield server


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path.resolve()


@pytest.fixture
def workdir(tmp: Path) -> Path:
    wd = tmp / "wd"
    wd.mkdir()
    return wd


def schema_types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a property schema admits, ignoring null (optional is optional)."""
    found: set[str] = set()
    t = prop.get("type")
    if isinstance(t, str):
        found.add(t)
    elif isinstance(t, list):
        found.update(t)
    for alt in prop.get("anyOf", []) + prop.get("oneOf", []):
        found |= schema_types(alt)
    found.discard("null")
    return found


def test_list_tools(tmp: Path) -> None:
    async def body() -> None:
        async with open_server(tmp) as server:
            with anyio.fail_after(CALL_LIMIT):
                listed = await server.session.list_tools()
            tools = {t.name: t for t in listed.tools}
            assert "shell" in tools, f"tools: {sorted(tools)}"
            schema = tools["shell"].model_dump(by_alias=True, exclude_none=True)["inputSchema"]
            assert schema.get("type") == "object", schema
            props = schema.get("properties", {})
            assert schema_types(props.get("command", {})) == {"string"}, schema
            assert schema_types(props.get("workdir", {})) == {"string"}, schema
            assert schema_types(props.get("timeout_ms", {})) == {"integer"}, schema
            assert schema_types(props.get("login", {})) == {"boolean"}, schema
            assert set(schema.get("required", [])) == {"command", "workdir"}, schema

    run(body)


def test_allowed_command_runs(tmp: Path, workdir: Path) -> None:
    async def body() -> None:
        async with open_server(tmp) as server:
            r = await server.shell("echo to-stdout; echo to-stderr >&2; mkdir made; exit 3", workdir)
            assert r["exit_code"] == 3, r
            assert "to-stdout" in r["output"] and "to-stderr" in r["output"], r
            assert r["timed_out"] is False, r
            assert (workdir / "made").is_dir(), r
            r = await server.shell("pwd", workdir)
            assert r["exit_code"] == 0 and r["output"].strip() == str(workdir), r

    run(body)


def test_login_flag(tmp: Path, workdir: Path) -> None:
    probe = "shopt -q login_shell && echo LOGIN=yes || echo LOGIN=no"

    async def body() -> None:
        async with open_server(tmp) as server:
            default = await server.shell(probe, workdir)
            assert "LOGIN=yes" in default["output"], default
            explicit = await server.shell(probe, workdir, login=True)
            assert "LOGIN=yes" in explicit["output"], explicit
            plain = await server.shell(probe, workdir, login=False)
            assert "LOGIN=no" in plain["output"], plain

    run(body)


def test_forbidden_command(tmp: Path, workdir: Path) -> None:
    victim = workdir / "x"
    victim.write_text("keep me")

    async def body() -> None:
        async with open_server(tmp) as server:
            r = await server.shell("rm x", workdir)
            assert victim.exists(), f"rm ran: {r}"
            assert r["exit_code"] != 0, r
            assert "Execution denied" in r["output"], r
            r = await server.shell("rm x; echo after", workdir)
            assert victim.exists(), f"rm ran: {r}"
            assert "Execution denied" in r["output"], r
            assert "after" in r["output"], r
            assert r["exit_code"] == 0, r

    run(body)


SEMANTICS_RULES = """\
prefix_rule(pattern=["rm"], decision="forbidden")
prefix_rule(pattern=["touch"], decision="allow")
prefix_rule(pattern=["touch", "a"], decision="forbidden")
prefix_rule(pattern=[["mkdir", "rmdir"], "zz"], decision="forbidden")
"""


def test_rule_semantics(tmp: Path, workdir: Path) -> None:
    """The program's basename is matched however it was named; a list is alternatives; the
    strictest matching rule wins."""
    victim = workdir / "x"

    async def body() -> None:
        async with open_server(tmp, rules_text=SEMANTICS_RULES) as server:
            for command in ("/bin/rm x", "/usr/bin/rm x", "command rm x", "exec rm x"):
                victim.write_text("keep me")
                r = await server.shell(command, workdir)
                assert victim.exists(), f"{command!r} ran: {r}"
                assert "Execution denied" in r["output"], (command, r)
            r = await server.shell("touch b", workdir)
            assert (workdir / "b").exists() and r["exit_code"] == 0, r
            r = await server.shell("touch a c", workdir)
            assert not (workdir / "a").exists() and not (workdir / "c").exists(), r
            assert "Execution denied" in r["output"], r
            r = await server.shell("mkdir yy", workdir)
            assert (workdir / "yy").is_dir(), r
            r = await server.shell("mkdir zz", workdir)
            assert not (workdir / "zz").exists() and "Execution denied" in r["output"], r
            (workdir / "zz").mkdir()
            r = await server.shell("rmdir zz", workdir)
            assert (workdir / "zz").is_dir() and "Execution denied" in r["output"], r

    run(body)


def program_named(message: str, name: str) -> bool:
    """True if `message` names an absolute path to the `name` that this machine would run."""
    wanted = shutil.which(name)
    assert wanted, f"no {name} on PATH"
    for path in re.findall(rf"(/[^\s`'\"]*/{re.escape(name)})(?![\w.-])", message):
        if os.path.realpath(path) == os.path.realpath(wanted):
            return True
    return False


@pytest.mark.parametrize("action", ["accept", "decline", "cancel"])
def test_prompted_command(tmp: Path, workdir: Path, action: str) -> None:
    target = workdir / f"prompted-{action}"
    elicit = ElicitRecorder(action)

    async def body() -> None:
        async with open_server(tmp, elicit) as server:
            r = await server.shell(f"touch {target.name}; echo after", workdir)
            assert len(elicit.requests) == 1, (elicit.requests, r)
            request = elicit.requests[0]
            message = request.get("message", "")
            assert program_named(message, "touch"), f"program path not in {message!r}"
            assert target.name in message, message
            assert str(workdir) in message, message
            schema = request.get("requestedSchema", {})
            assert schema.get("type") == "object", schema
            assert "reason" in schema.get("properties", {}), schema
            assert "reason" not in schema.get("required", []), schema
            assert "after" in r["output"], r
            if action == "accept":
                assert target.exists(), f"accepted but not run: {r}"
                assert "Execution denied" not in r["output"], r
            else:
                assert not target.exists(), f"{action}d but ran: {r}"
                assert "Execution denied" in r["output"], r

    run(body)


NESTED = {
    "sh-c": "sh -c 'rm x'",
    "bash-lc": "bash -lc 'rm x'",
    "script": "./script.sh",
    "env": "env rm x",
    "xargs": "echo x | xargs rm",
    "find-exec": "find . -name x -exec rm {} \\;",
}


@pytest.mark.parametrize("case", list(NESTED))
def test_nested_exec_checked(tmp: Path, workdir: Path, case: str) -> None:
    victim = workdir / "x"
    victim.write_text("keep me")
    script = workdir / "script.sh"
    script.write_text("#!/bin/sh\nrm x\n")
    script.chmod(0o755)

    async def body() -> None:
        async with open_server(tmp) as server:
            r = await server.shell(NESTED[case], workdir)
            assert victim.exists(), f"nested rm ran ({case}): {r}"
            assert "Execution denied" in r["output"], r

    run(body)


def test_timeout_excludes_approval_wait(tmp: Path, workdir: Path) -> None:
    target = workdir / "approved-late"
    elicit = ElicitRecorder("accept", delay=5.0)

    async def body() -> None:
        async with open_server(tmp, elicit) as server:
            r = await server.shell(f"touch {target.name} && echo done", workdir, timeout_ms=3000)
            assert len(elicit.requests) == 1, elicit.requests
            assert r["timed_out"] is False, r
            assert r["exit_code"] == 0, r
            assert "done" in r["output"], r
            assert target.exists(), r

    run(body)


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_timeout_kills_tree(tmp: Path, workdir: Path) -> None:
    async def body() -> None:
        async with open_server(tmp) as server:
            start = time.monotonic()
            r = await server.shell(
                "sleep 300 & echo $! > bg.pid; sleep 30", workdir, timeout_ms=1000, limit=40
            )
            elapsed = time.monotonic() - start
            assert r["timed_out"] is True, r
            assert elapsed < 8, f"took {elapsed:.1f}s for a 1 s timeout: {r}"
            pid = int((workdir / "bg.pid").read_text())
            with anyio.move_on_after(5):
                while process_alive(pid):
                    await anyio.sleep(0.1)
            alive = process_alive(pid)
            if alive:
                os.kill(pid, 9)
            assert not alive, f"background child {pid} survived the timeout: {r}"

    run(body)


def test_concurrent_elicitations(tmp: Path, workdir: Path) -> None:
    both_open: list[anyio.Event] = []  # made inside the event loop
    seen: list[str] = []
    saw_both: list[bool] = []

    async def elicit(context: Any, params: Any) -> Any:
        seen.append(params.message)
        if len(seen) == 2:
            both_open[0].set()
        # Hold the answer until the other elicitation is open too (or give up after 15 s).
        with anyio.move_on_after(15):
            await both_open[0].wait()
        saw_both.append(both_open[0].is_set())
        return types.ElicitResult(action="accept", content={})

    results: dict[str, dict[str, Any]] = {}

    async def body() -> None:
        both_open.append(anyio.Event())
        async with open_server(tmp, elicit) as server:

            async def call(name: str) -> None:
                results[name] = await server.shell(f"touch {name}", workdir)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "c1")
                tg.start_soon(call, "c2")
            assert len(seen) == 2, (seen, results)
            assert saw_both == [True, True], (
                f"the second elicitation did not arrive while the first was open: {seen}, {results}"
            )
            assert (workdir / "c1").exists() and (workdir / "c2").exists(), results

    run(body)


SETSID = {
    "setsid": "setsid sh -c 'rm x'; echo rc=$?",
    # setsid -f forks and returns at once: wait for the detached child's marker file.
    "setsid-f": "setsid -f sh -c 'rm x; echo $? > x.rc'; "
    "for i in $(seq 100); do [ -e x.rc ] && break; sleep 0.1; done; cat x.rc",
}


@pytest.mark.parametrize("case", list(SETSID))
def test_setsid_escape_checked(tmp: Path, workdir: Path, case: str) -> None:
    victim = workdir / "x"
    victim.write_text("keep me")

    async def body() -> None:
        async with open_server(tmp) as server:
            r = await server.shell(SETSID[case], workdir)
            if case == "setsid-f":
                assert (workdir / "x.rc").exists(), f"detached child never finished: {r}"
            assert victim.exists(), f"rm under {case} ran: {r}"

    run(body)


def test_rules_syntax_error(tmp: Path) -> None:
    rules = write_rules(tmp, BAD_RULES)
    argv = server_argv(rules)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(tmp, rules),
        cwd=tmp,
    )
    try:
        try:
            proc.stdin.write((json.dumps(init) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        # stdin stays open: a server that started serves on and is caught by the timeout.
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"server kept running with a bad rules file; stderr: {err.decode()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.decode(errors="replace")
    assert proc.returncode != 0, f"exit 0 with a bad rules file; stderr: {stderr}"
    assert b'"result"' not in out, f"answered initialize: {out!r}"
    # Upstream names the copy it reads ($CODEX_HOME/rules/policy.rules), ours the file given.
    named = [str(rules), str(tmp / "codex-home" / "rules" / "policy.rules")]
    assert any(re.search(re.escape(p) + r":2:\d+", stderr) for p in named), (
        f"stderr does not name {rules}:2:<column>: {stderr}"
    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
