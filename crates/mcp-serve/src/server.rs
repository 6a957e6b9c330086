//! The MCP face: an rmcp `ServerHandler` with the `shell` tool (shaped as upstream's
//! `codex-shell-tool-mcp`, so clients written for it work) and three file tools, and an
//! [`Approver`] that asks through an MCP elicitation. Usable by any MCP client: no request
//! beyond the MCP handshake is needed.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use exec_server_core::fs::{FileSystem, LocalFileSystem, ReadOptions, WriteOptions};
use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotification,
    CancelledNotificationParam, ClientResult, ContentBlock, ElicitRequest, ElicitRequestParams,
    ElicitationAction, ElicitationSchema, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, RequestId, ServerCapabilities, ServerConfig, ServerRequest, Tool,
};
use rmcp::service::{ElicitationMode, PeerRequestOptions, RequestContext};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::shell::{Approval, Approver, Shell, ShellRequest};

/// Shell calls that may run at once; more wait for a slot.
pub const MAX_CONCURRENT_CALLS: usize = 16;
/// The default `timeout_ms` of the shell tool (10 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest `timeout_ms` accepted (24 hours).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The largest file `read_file` returns (its text goes into one MCP message).
pub const READ_LIMIT: u64 = 16 << 20;

/// The server: cheap to clone (one per MCP session under Streamable HTTP).
#[derive(Clone)]
pub struct ShellServer {
    shell: Arc<Shell>,
    slots: Arc<Semaphore>,
    fs: LocalFileSystem,
}

impl ShellServer {
    /// A server running calls with `shell`.
    pub fn new(shell: Shell) -> Self {
        ShellServer {
            shell: Arc::new(shell),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
            fs: LocalFileSystem::with_read_limit(READ_LIMIT),
        }
    }
}

fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The tools, as listed.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "shell",
            "Runs a shell command (bash -lc by default) in `workdir` and returns its exit code and \
             output. Every program the command executes, nested ones included, is checked \
             against the server's rules: a forbidden one fails with \"Execution denied\", a \
             prompted one waits for the user's approval (which does not count against the \
             timeout).",
            schema(json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The shell command to run."},
                    "workdir": {"type": "string", "description": "Absolute path of the working directory."},
                    "timeout_ms": {"type": "integer", "minimum": 1, "description": "Time limit in milliseconds, not counting time spent waiting for approvals (default 600000)."},
                    "login": {"type": "boolean", "description": "Run as a login shell (bash -lc); default true."}
                },
                "required": ["command", "workdir"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "read_file",
            "Reads a UTF-8 text file (up to 16 MiB).",
            schema(json!({
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Absolute path."}},
                "required": ["path"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "write_file",
            "Creates or replaces a file atomically with the given text (the parent directory must exist).",
            schema(json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Absolute path."},
                    "content": {"type": "string", "description": "The new content."}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "list_directory",
            "Lists a directory: each entry's name and whether it is a file or a directory.",
            schema(json!({
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Absolute path."}},
                "required": ["path"],
                "additionalProperties": false
            })),
        ),
    ]
}

fn arg_str<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, McpError> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| {
        McpError::invalid_params(format!("`{name}` is required and must be a string"), None)
    })
}

fn arg_path(args: &JsonObject, name: &str) -> Result<PathBuf, McpError> {
    let p = arg_str(args, name)?;
    if !Path::new(p).is_absolute() {
        return Err(McpError::invalid_params(
            format!("`{name}` must be an absolute path, got {p:?}"),
            None,
        ));
    }
    Ok(PathBuf::from(p))
}

fn text_result(text: String, is_error: bool) -> CallToolResponse {
    let content = vec![ContentBlock::text(text)];
    if is_error {
        CallToolResult::error(content).into()
    } else {
        CallToolResult::success(content).into()
    }
}

/// Asks the MCP client.
struct Elicit(Peer<RoleServer>);

impl Approver for Elicit {
    fn approve(&self, message: String) -> BoxFuture<'static, Approval> {
        let peer = self.0.clone();
        Box::pin(async move {
            // A client that did not declare form elicitation might never answer (and the call's
            // timeout waits while a prompt is open): refuse at once instead.
            if !peer
                .supported_elicitation_modes()
                .contains(&ElicitationMode::Form)
            {
                return Approval::Denied(
                    "approval needed, but the client cannot be asked (no form elicitation)".into(),
                );
            }
            let schema = ElicitationSchema::from_json_schema(
                json!({
                    "type": "object",
                    "title": "Execution Permission Request",
                    "properties": {
                        "reason": {"type": "string", "description": "Optional: why you allow or refuse it."}
                    }
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            );
            let Ok(requested_schema) = schema else {
                return Approval::Denied("the approval request could not be built".into());
            };
            let request = ServerRequest::ElicitRequest(ElicitRequest::new(
                ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message,
                    requested_schema,
                },
            ));
            let handle = match peer
                .send_cancellable_request(request, PeerRequestOptions::no_options())
                .await
            {
                Ok(h) => h,
                Err(e) => {
                    return Approval::Denied(format!(
                        "approval needed, but the client could not be asked: {e}"
                    ))
                }
            };
            // Dropped unanswered (the call ended, timed out or was cancelled): the client is
            // told to withdraw the prompt.
            let mut withdraw = Withdraw(Some((peer, handle.id.clone())));
            let answer = handle.await_response().await;
            withdraw.0 = None;
            let answer = match answer {
                Ok(ClientResult::ElicitResult(r)) => Ok(r),
                Ok(_) => Err("the client answered with something else".to_string()),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(r) => match r.action {
                    ElicitationAction::Accept => Approval::Approved,
                    ElicitationAction::Decline => {
                        Approval::Denied(reason("declined by the user", &r.content))
                    }
                    ElicitationAction::Cancel => {
                        Approval::Denied(reason("cancelled by the user", &r.content))
                    }
                    _ => Approval::Denied("the client answered with an unknown action".into()),
                },
                Err(e) => Approval::Denied(format!(
                    "approval needed, but the client could not be asked: {e}"
                )),
            }
        })
    }
}

/// Sends `notifications/cancelled` for an elicitation dropped before its answer.
struct Withdraw(Option<(Peer<RoleServer>, RequestId)>);

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some((peer, id)) = self.0.take() else {
            return;
        };
        let notification = CancelledNotification::new(CancelledNotificationParam::new(
            Some(id),
            Some("the command no longer waits for this approval".into()),
        ));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = peer.send_notification(notification.into()).await;
            });
        }
    }
}

fn reason(what: &str, content: &Option<Value>) -> String {
    match content
        .as_ref()
        .and_then(|c| c.get("reason"))
        .and_then(Value::as_str)
    {
        Some(r) if !r.is_empty() => format!("{what}: {r}"),
        _ => what.to_string(),
    }
}

impl ShellServer {
    async fn shell_tool(
        &self,
        args: &JsonObject,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let command = arg_str(args, "command")?.to_string();
        let workdir = arg_path(args, "workdir")?;
        let timeout = match args.get("timeout_ms") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(v) => match v.as_u64() {
                Some(ms) if ms > 0 && Duration::from_millis(ms) <= MAX_TIMEOUT => {
                    Duration::from_millis(ms)
                }
                _ => {
                    return Err(McpError::invalid_params(
                        format!(
                            "`timeout_ms` must be an integer from 1 to {}",
                            MAX_TIMEOUT.as_millis()
                        ),
                        None,
                    ))
                }
            },
        };
        let login = match args.get("login") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(McpError::invalid_params("`login` must be a boolean", None)),
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| McpError::internal_error("server shutting down", None))?;
        let req = ShellRequest {
            command,
            workdir,
            timeout,
            login,
        };
        match self.shell.run(req, Arc::new(Elicit(peer))).await {
            Ok(out) => {
                let body = json!({
                    "exit_code": out.exit_code,
                    "output": out.output,
                    // Upstream's shape (a serialized Rust Duration), so its clients parse it.
                    "duration": {
                        "secs": out.duration.as_secs(),
                        "nanos": out.duration.subsec_nanos(),
                    },
                    "timed_out": out.timed_out,
                });
                Ok(text_result(body.to_string(), false))
            }
            Err(e) => Ok(text_result(e.to_string(), true)),
        }
    }

    async fn file_tool(&self, name: &str, args: &JsonObject) -> Result<CallToolResponse, McpError> {
        let path = arg_path(args, "path")?;
        let sandbox = self.shell.sandbox.as_ref();
        let r = match name {
            "read_file" => self
                .fs
                .read_file(
                    &path,
                    ReadOptions {
                        follow_symlinks: true,
                    },
                    sandbox,
                )
                .await
                .map(|data| String::from_utf8_lossy(&data).into_owned()),
            "write_file" => {
                let content = arg_str(args, "content")?.as_bytes().to_vec();
                let n = content.len();
                self.fs
                    .write_file(
                        &path,
                        content,
                        WriteOptions {
                            follow_symlinks: true,
                        },
                        sandbox,
                    )
                    .await
                    .map(|()| format!("wrote {n} bytes to {}", path.display()))
            }
            _ => self.fs.read_directory(&path, sandbox).await.map(|entries| {
                let list: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        let kind = if e.is_directory {
                            "directory"
                        } else if e.is_file {
                            "file"
                        } else {
                            "other"
                        };
                        json!({"name": e.file_name, "type": kind})
                    })
                    .collect();
                Value::Array(list).to_string()
            }),
        };
        Ok(match r {
            Ok(text) => text_result(text, false),
            Err(e) => text_result(format!("{}: {e}", path.display()), true),
        })
    }
}

impl ServerHandler for ShellServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("exec-server", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let empty = JsonObject::new();
        let args = request.arguments.as_ref().unwrap_or(&empty);
        let name: &str = &request.name;
        match name {
            "shell" => {
                let ct = context.ct.clone();
                tokio::select! {
                    r = self.shell_tool(args, context.peer.clone()) => r,
                    // A cancelled call drops the run, which kills its tree.
                    _ = ct.cancelled() => Err(McpError::internal_error("cancelled", None)),
                }
            }
            "read_file" | "write_file" | "list_directory" => self.file_tool(name, args).await,
            other => Err(McpError::invalid_params(
                Cow::Owned(format!("unknown tool `{other}`")),
                None,
            )),
        }
    }
}
