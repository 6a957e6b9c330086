"""A small scripted mock of the OpenAI Responses API (streaming, SSE) for end-to-end tests.

Standard library only. It listens on 127.0.0.1, answers `POST …/responses` with a server-sent
event stream, and logs every request body (JSON, one file per request) so a test can inspect
what the client sent — notably the `tools` array of the first request and the tool outputs
(`function_call_output` / `custom_tool_call_output`) of the later ones.

The script is a list of *steps*. A step is a callable `step(request_body, mock) -> list[item]`
(or a plain list of output items). Which step answers a request is decided by the request
itself, not by a counter, so a client retry of the same request gets the same answer: the
step index is the number of tool outputs already present in the request's `input`, mapped
through the number of calls each previous step issued. Past the last step the mock answers
with a final assistant message, which ends the turn.

Run standalone (for development) with:
    python3 mock_responses.py --log-dir /tmp/mock-log
which serves a script of zero steps (every request gets a final message) and prints its URL.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

OUTPUT_TYPES = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")
CALL_TYPES = ("function_call", "custom_tool_call", "local_shell_call")


# ---------------------------------------------------------------------------------------------
# Output items (the shapes a Responses stream carries in `response.output_item.done`)


def function_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def custom_tool_call(call_id: str, name: str, tool_input: str) -> dict[str, Any]:
    return {
        "type": "custom_tool_call",
        "id": f"ctc_{call_id}",
        "call_id": call_id,
        "name": name,
        "input": tool_input,
        "status": "completed",
    }


def assistant_message(text: str, msg_id: str = "msg_final") -> dict[str, Any]:
    return {
        "type": "message",
        "id": msg_id,
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def sse_body(response_id: str, items: list[dict[str, Any]]) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}}
    ]
    for index, item in enumerate(items):
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append(
        {
            "type": "response.completed",
            "response": {
                "id": response_id,
                "status": "completed",
                "output": items,
                "usage": {
                    "input_tokens": 10,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 10,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 20,
                },
            },
        }
    )
    out = []
    for ev in events:
        out.append(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n")
    return "".join(out).encode()


# ---------------------------------------------------------------------------------------------
# Request inspection helpers


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = body.get("input")
    return items if isinstance(items, list) else []


def tool_outputs(body: dict[str, Any]) -> dict[str, Any]:
    """call_id -> output (string, or the raw output value) for every tool output in the input."""
    outs: dict[str, Any] = {}
    for item in input_items(body):
        if item.get("type") in OUTPUT_TYPES:
            outs[item.get("call_id", "")] = item.get("output")
    return outs


def output_text(value: Any) -> str:
    """Flattens a tool output (a string, or a list of content items) to text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part.get("text", "") for part in value if isinstance(part, dict)
        )
    if isinstance(value, dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            names.append(tool.get("name") or tool.get("type") or "?")
    return names


# ---------------------------------------------------------------------------------------------
# Server


Step = Callable[[dict[str, Any], "MockResponses"], list[dict[str, Any]]]


class MockResponses:
    """A scripted Responses API server on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, steps: list[Step | list[dict[str, Any]]], log_dir: str | None = None,
                 final_text: str = "All done."):
        self.steps = steps
        self.log_dir = log_dir
        self.final_text = final_text
        self.requests: list[dict[str, Any]] = []  # parsed bodies of POST …/responses, in order
        self.other_requests: list[str] = []  # "METHOD path" of anything else
        self.errors: list[str] = []  # exceptions raised by steps (the test reports them)
        # Number of calls each answered step issued, so step boundaries can be found from the
        # number of outputs in a later request.
        self.calls_per_step: dict[int, int] = {}
        self._lock = threading.Lock()
        self._seq = 0
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, ctype: str, payload: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802
                mock._note_other(f"GET {self.path}")
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, "application/json", json.dumps({"models": []}).encode())
                else:
                    self._send(404, "application/json", b'{"error":{"message":"not found"}}')

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not self.path.rstrip("/").endswith("/responses"):
                    mock._note_other(f"POST {self.path}")
                    self._send(404, "application/json", b'{"error":{"message":"not found"}}')
                    return
                encoding = (self.headers.get("Content-Encoding") or "identity").lower()
                try:
                    if encoding == "gzip":
                        raw = gzip.decompress(raw)
                    elif encoding == "deflate":
                        raw = zlib.decompress(raw)
                    elif encoding != "identity":
                        raise ValueError(f"unsupported Content-Encoding {encoding!r}")
                    body = json.loads(raw or b"{}")
                except ValueError as exc:
                    mock._note_other(f"POST {self.path} (unreadable body: {exc})")
                    mock.errors.append(f"unreadable request body: {exc}")
                    self._send(400, "application/json", json.dumps(
                        {"error": {"message": f"mock: unreadable request body: {exc}"}}).encode())
                    return
                payload = mock._answer(body, dict(self.headers))
                self._send(200, "text/event-stream", payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MockResponses":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _note_other(self, line: str) -> None:
        with self._lock:
            self.other_requests.append(line)
            if self.log_dir:
                with open(os.path.join(self.log_dir, "other-requests.txt"), "a") as f:
                    f.write(line + "\n")

    # -- step selection ----------------------------------------------------------------------

    def _step_index(self, n_outputs: int) -> int:
        index, consumed = 0, 0
        while index in self.calls_per_step and consumed + self.calls_per_step[index] <= n_outputs:
            consumed += self.calls_per_step[index]
            index += 1
            if self.calls_per_step[index - 1] == 0:
                break
        return index

    def _answer(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        with self._lock:
            self._seq += 1
            seq = self._seq
            self.requests.append(body)
            if self.log_dir:
                with open(os.path.join(self.log_dir, f"request-{seq:03d}.json"), "w") as f:
                    json.dump({"headers": headers, "body": body}, f, indent=2)
            n_outputs = len(tool_outputs(body))
            index = self._step_index(n_outputs)
            items: list[dict[str, Any]]
            if index < len(self.steps):
                step = self.steps[index]
                try:
                    items = step(body, self) if callable(step) else list(step)
                except Exception as exc:  # reported by the test, answered with a final message
                    self.errors.append(f"step {index}: {type(exc).__name__}: {exc}")
                    items = [assistant_message(f"mock error in step {index}: {exc}")]
                self.calls_per_step[index] = sum(1 for i in items if i.get("type") in CALL_TYPES)
            else:
                items = [assistant_message(self.final_text)]
            if self.log_dir:
                with open(os.path.join(self.log_dir, f"response-{seq:03d}.json"), "w") as f:
                    json.dump({"step": index, "items": items}, f, indent=2)
        return sse_body(f"resp_{seq}", items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default=None)
    args = parser.parse_args()
    mock = MockResponses([], log_dir=args.log_dir)
    mock.start()
    print(mock.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
