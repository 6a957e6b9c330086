//! MCP through the executor: a real rmcp Streamable HTTP server (axum) on a loopback port that
//! only the executor is told about, driven by the rmcp client over `exec_server_mcp`'s transport.
//! The same scenario runs with the direct (reqwest) runner. Also: the executor dying mid-stream,
//! and the `exec-server mcp` command.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use exec_server_client::environment::EnvironmentHttp;
use exec_server_client::{Client, ConnectOptions, Connector, Environment, WebSocketTarget};
use exec_server_core::http::HttpHeader;
use exec_server_mcp::McpHttpOptions;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientConfig, ContentBlock, ErrorData,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ClientHandler, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::Server;

/// The bearer token the MCP server demands.
const TOKEN: &str = "sesame";

/// One HTTP exchange as the MCP server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    status: u16,
    session: Option<String>,
    marker: Option<String>,
    content_type: Option<String>,
}

/// The MCP server of the tests: `add`, `count` (log messages on the call's SSE reply, then the
/// result) and `notify_later` (tool-list-changed notifications sent after the call, so they
/// travel on the GET stream).
#[derive(Clone)]
struct Tools;

fn schema(props: Value) -> Arc<JsonObject> {
    let v = json!({"type": "object", "properties": props});
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

fn int_arg(args: &Option<JsonObject>, name: &str) -> i64 {
    args.as_ref()
        .and_then(|a| a.get(name))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn text(s: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(s.into())]).into()
}

impl ServerHandler for Tools {
    #[allow(deprecated)] // Logging still works on the session protocol versions used here.
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_logging()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let int = json!({"type": "integer"});
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("add", "Adds a and b", schema(json!({"a": int, "b": int}))),
            Tool::new(
                "count",
                "Sends n log messages, delay_ms apart, then answers",
                schema(json!({"n": int, "delay_ms": int})),
            ),
            Tool::new(
                "notify_later",
                "Announces tool list changes after answering",
                schema(json!({})),
            ),
        ]))
    }

    #[allow(deprecated)] // Logging still works on the session protocol versions used here.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
        let args = &request.arguments;
        match request.name.as_ref() {
            "add" => Ok(text((int_arg(args, "a") + int_arg(args, "b")).to_string())),
            "count" => {
                let n = int_arg(args, "n");
                let delay = Duration::from_millis(int_arg(args, "delay_ms") as u64);
                for i in 0..n {
                    let note = LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(i));
                    if context.peer.notify_logging_message(note).await.is_err() {
                        return Err(ErrorData::internal_error("client gone", None));
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
                Ok(text(format!("counted {n}")))
            }
            "notify_later" => {
                let peer = context.peer.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if peer.notify_tool_list_changed().await.is_err() {
                            break;
                        }
                    }
                });
                Ok(text("scheduled"))
            }
            other => Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        }
    }
}

/// A running MCP server.
struct McpServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    sessions: Arc<LocalSessionManager>,
    task: tokio::task::JoinHandle<()>,
}

impl McpServer {
    /// Serves on a fresh loopback port; the URL goes only to the transport under test.
    async fn start() -> McpServer {
        let sessions = Arc::new(LocalSessionManager::default());
        let mut config = StreamableHttpServerConfig::default();
        config.sse_keep_alive = Some(Duration::from_secs(1));
        let service = StreamableHttpService::new(|| Ok(Tools), sessions.clone(), config);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(seen.clone(), record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        McpServer {
            url,
            seen,
            sessions,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Forgets every session, as a restarted server would.
    async fn forget_sessions(&self) {
        let ids: Vec<_> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .cloned()
            .collect();
        assert!(!ids.is_empty(), "no session to forget");
        for id in ids {
            self.sessions.close_session(&id).await.expect("close");
        }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records each exchange and demands the bearer token.
async fn record(State(seen): State<Arc<Mutex<Vec<Seen>>>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let method = req.method().to_string();
    let session = h("mcp-session-id");
    let marker = h("x-marker");
    let authorized = h("authorization") == Some(format!("Bearer {TOKEN}"));
    let resp = if authorized {
        next.run(req).await
    } else {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer realm=\"test\"")],
        )
            .into_response()
    };
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock().expect("lock").push(Seen {
        method,
        status: resp.status().as_u16(),
        session,
        marker,
        content_type,
    });
    resp
}

/// A client handler that reports notifications on a channel.
#[derive(Clone)]
struct Recorder {
    tx: mpsc::UnboundedSender<String>,
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        let mut c = ClientConfig::default();
        c.protocol_version = ProtocolVersion::V_2025_11_25;
        c
    }

    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.tx.send(format!("log {}", params.data));
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.tx.send("tools changed".into());
    }
}

fn args(v: Value) -> JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

fn result_text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

async fn remote_client(url: &str) -> Client {
    let options = ConnectOptions {
        reconnect: false,
        ..ConnectOptions::default()
    };
    Client::connect(Connector::WebSocket(WebSocketTarget::new(url)), options)
        .await
        .expect("connect to the executor")
}

/// The whole session, against either runner. `marker` is the `x-marker` header to send and
/// what the server must see.
async fn scenario(runner: EnvironmentHttp, marker: HttpHeader, expected_marker: &str) {
    let server = McpServer::start().await;
    let config = exec_server_mcp::config(server.url.clone()).auth_header(TOKEN);
    let options = McpHttpOptions {
        headers: vec![marker],
        ..McpHttpOptions::default()
    };
    let transport = exec_server_mcp::transport_with_config(runner, config, options);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mcp = Recorder { tx }.serve(transport).await.expect("initialize");

    // tools/list
    let tools = mcp.list_all_tools().await.expect("tools/list");
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["add", "count", "notify_later"]);

    // tools/call, plain
    let add = CallToolRequestParams::new("add").with_arguments(args(json!({"a": 2, "b": 3})));
    let r = mcp.call_tool(add.clone()).await.expect("add");
    assert_eq!(result_text(&r), "5");

    // tools/call with a streamed (SSE) reply: 200 log messages, then the result.
    let count = CallToolRequestParams::new("count").with_arguments(args(json!({"n": 200})));
    let r = mcp.call_tool(count).await.expect("count");
    assert_eq!(result_text(&r), "counted 200");
    for i in 0..200 {
        let note = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("log message in time")
            .expect("open");
        assert_eq!(note, format!("log {i}"));
    }
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.method == "POST" && s.content_type.as_deref() == Some("text/event-stream")),
        "an SSE reply: {:?}",
        server.seen()
    );

    // Server-initiated notifications arrive over the GET stream.
    let r = mcp
        .call_tool(CallToolRequestParams::new("notify_later"))
        .await
        .expect("notify_later");
    assert_eq!(result_text(&r), "scheduled");
    let note = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification in time")
        .expect("open");
    assert_eq!(note, "tools changed");
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.method == "GET" && s.status == 200 && s.session.is_some()),
        "a GET stream: {:?}",
        server.seen()
    );

    // Session expiry: the server forgets the session, the next call gets 404, the transport
    // initializes again and the call succeeds.
    let first_session = server
        .seen()
        .iter()
        .find_map(|s| s.session.clone())
        .expect("a session id was carried");
    server.forget_sessions().await;
    let r = mcp.call_tool(add).await.expect("add after expiry");
    assert_eq!(result_text(&r), "5");
    let seen = server.seen();
    assert!(
        seen.iter()
            .any(|s| s.status == 404 && s.session.as_deref() == Some(&first_session)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.session.is_some() && s.session.as_deref() != Some(&first_session)),
        "a new session: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.marker.as_deref() == Some(expected_marker)),
        "every request carried the marker: {seen:?}"
    );

    // Closing ends the session with DELETE.
    mcp.cancel().await.expect("close");
    let deleted = crate::support::wait_until(
        || server.seen().iter().any(|s| s.method == "DELETE"),
        Duration::from_secs(10),
    )
    .await;
    assert!(deleted, "DELETE sent: {:?}", server.seen());
}

#[tokio::test]
async fn rmcp_client_through_the_executor() {
    let executor = Server::start(&[]);
    let client = remote_client(&executor.url).await;
    // The executor resolves the header from its own environment (the test binary sets
    // ES_TEST_MARKER for the server only), which also proves the request left from there.
    let marker = HttpHeader {
        name: "x-marker".into(),
        value: "m=".into(),
        value_env_var: Some("ES_TEST_MARKER".into()),
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        scenario(
            Environment::remote(client).http_runner(),
            marker,
            "m=visible",
        ),
    )
    .await
    .expect("no hang");
}

#[tokio::test]
async fn rmcp_client_direct() {
    let env = Environment::local().expect("local environment");
    let marker = HttpHeader {
        name: "x-marker".into(),
        value: "m=direct".into(),
        value_env_var: None,
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        scenario(env.http_runner(), marker, "m=direct"),
    )
    .await
    .expect("no hang");
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error() {
    let executor = Server::start(&[]);
    let client = remote_client(&executor.url).await;
    let server = McpServer::start().await;
    let config = exec_server_mcp::config(server.url.clone()).auth_header("wrong");
    let transport = exec_server_mcp::transport_with_config(
        Environment::remote(client).http_runner(),
        config,
        McpHttpOptions::default(),
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = tokio::time::timeout(Duration::from_secs(30), Recorder { tx }.serve(transport))
        .await
        .expect("no hang")
        .err()
        .expect("refused");
    let text = format!("{err:?}");
    assert!(text.contains("Auth"), "{text}");
}

#[tokio::test]
async fn the_executor_dying_mid_stream_is_a_clear_error() {
    let executor = Server::start(&[]);
    let client = remote_client(&executor.url).await;
    let server = McpServer::start().await;
    let config = exec_server_mcp::config(server.url.clone()).auth_header(TOKEN);
    let http = exec_server_mcp::McpHttpClient::new(
        Environment::remote(client).http_runner(),
        McpHttpOptions::default(),
    );
    let transport = http.transport(config);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mcp = Recorder { tx }.serve(transport).await.expect("initialize");
    let slow = CallToolRequestParams::new("count")
        .with_arguments(args(json!({"n": 10000, "delay_ms": 10})));
    let call = tokio::spawn(async move { mcp.call_tool(slow).await.map(|r| result_text(&r)) });
    // The stream is flowing...
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("streaming")
            .expect("open");
    }
    // ...when the executor goes away.
    drop(executor);
    let result = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends instead of hanging")
        .expect("join");
    let err = result.expect_err("the call fails");
    assert_eq!(err.to_string(), "Transport closed");
    // rmcp says only that; the client says why.
    let why = http.last_error().expect("a cause");
    assert!(
        why.contains("the connection to the server was lost"),
        "{why}"
    );
}

/// Runs the binary with `args` off the runtime (the MCP server lives on it).
async fn exec(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        #[allow(clippy::disallowed_methods)] // the binary under test
        std::process::Command::new(crate::support::BIN)
            .args(&args)
            .env("RUST_LOG", "warn")
            .env_remove("ES_TEST_MARKER")
            .output()
            .expect("run exec-server")
    })
    .await
    .expect("join")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_command_lists_and_calls_tools_through_the_executor() {
    let executor = Server::start(&[]);
    let server = McpServer::start().await;
    let base = [
        "mcp",
        &executor.url,
        "--server",
        &server.url,
        "--bearer-token",
        TOKEN,
        "--env-header",
        "x-marker=ES_TEST_MARKER",
    ];

    let out = exec(strings(&base)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout,
        "add\tAdds a and b\n\
         count\tSends n log messages, delay_ms apart, then answers\n\
         notify_later\tAnnounces tool list changes after answering\n"
    );

    let mut call = strings(&base);
    call.extend(strings(&["--call", "add", "--args", r#"{"a":40,"b":2}"#]));
    let out = exec(call.clone()).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");

    call.push("--json".into());
    let out = exec(call).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["content"][0]["text"], "42");

    // The header's value came from the executor's environment: the requests left from there.
    let seen = server.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.marker.as_deref() == Some("visible")),
        "{seen:?}"
    );
    // Each run ended its session.
    assert_eq!(
        seen.iter().filter(|s| s.method == "DELETE").count(),
        3,
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_command_reports_failures_clearly() {
    let executor = Server::start(&[]);
    let server = McpServer::start().await;

    // A bad tool name: the server's error.
    let out = exec(strings(&[
        "mcp",
        &executor.url,
        "--server",
        &server.url,
        "--bearer-token",
        TOKEN,
        "--call",
        "nope",
    ]))
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tools/call nope failed"), "{stderr}");

    // A variable the executor lacks: the executor's http/request error, named.
    let out = exec(strings(&[
        "mcp",
        &executor.url,
        "--server",
        &server.url,
        "--bearer-token-env-var",
        "NO_SUCH_VARIABLE_HERE",
    ]))
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NO_SUCH_VARIABLE_HERE"), "{stderr}");

    // --direct sends from here: the marker variable is not set in this process's child.
    let out = exec(strings(&[
        "mcp",
        "--direct",
        "--server",
        &server.url,
        "--bearer-token",
        TOKEN,
        "--call",
        "add",
        "--args",
        r#"{"a":1,"b":1}"#,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
}

/// Serves `len` bytes of body (pattern `i % 251`) to every request, in 64 KiB writes.
async fn big_origin(len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/big", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
                let mut sent = 0;
                while sent < len {
                    let n = block.len().min(len - sent);
                    if s.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    url
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// A body whose reader pauses does not pile up in the client: the connection waits for it
/// (back-pressure to the executor), and then every byte arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_body_reader_keeps_client_memory_bounded() {
    use exec_server_core::http::{HttpRequest, HttpRunner};
    let len = 256 << 20;
    let url = big_origin(len).await;
    let executor = Server::start(&[]);
    let runner = Environment::remote(remote_client(&executor.url).await).http_runner();
    let before = rss_bytes();
    let req = HttpRequest {
        method: "GET".into(),
        url,
        ..HttpRequest::default()
    };
    let mut body = runner.send(req).await.expect("headers").body;
    let first = body.next_chunk().await.expect("chunk").expect("ok");
    // Long enough for the executor to push the whole body if nothing held it back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused = rss_bytes();
    let mut got = first.len();
    let mut ok = first
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i % (64 * 1024) % 251) as u8);
    while let Some(chunk) = body.next_chunk().await {
        let chunk = chunk.expect("chunk");
        ok &= chunk
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((got + i) % (64 * 1024) % 251) as u8);
        got += chunk.len();
    }
    assert_eq!(got, len);
    assert!(ok, "the bytes arrived in order");
    let grown = paused.saturating_sub(before);
    assert!(
        grown < 96 << 20,
        "client RSS grew {grown} bytes while the reader paused"
    );
}
