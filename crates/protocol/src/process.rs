//! `process/*` methods and notifications (spec §4).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::bytes::Base64;
use crate::fs::SandboxContext;
use crate::PathUri;

/// Attribution of a process to a thread and tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecMetadata {
    /// Must be a UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<uuid::Uuid>,
    /// The tool call that started the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// Where the child's environment starts from when an `envPolicy` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvInherit {
    /// The whole server environment.
    All,
    /// A small core set (`PATH`, `HOME`, `LANG`, ...).
    Core,
    /// Nothing.
    None,
}

/// How the child environment is built (spec §4.7). All five fields are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecEnvPolicy {
    /// The starting set.
    pub inherit: EnvInherit,
    /// Keep names matching `*KEY*`, `*SECRET*`, `*TOKEN*`.
    pub ignore_default_excludes: bool,
    /// Case-insensitive glob patterns to drop.
    pub exclude: Vec<String>,
    /// Variables to set.
    pub set: HashMap<String, String>,
    /// When non-empty, keep only names matching one of these patterns.
    pub include_only: Vec<String>,
}

/// A shell the executor caches state for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotShell {
    /// Shell name.
    pub name: String,
    /// Shell path.
    pub path: String,
}

/// Restore executor-cached shell state (`shellSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShellSnapshotRequest {
    /// The cache scope.
    pub scope_id: String,
    /// The shell.
    pub shell: SnapshotShell,
}

/// Managed network settings of a sandboxed process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNetworkSandboxContext {
    /// Loopback ports the process may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopback_ports: Option<Vec<u16>>,
    /// Whether binding local ports is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_local_binding: Option<bool>,
    /// Unix socket paths allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unix_sockets: Option<Vec<String>>,
    /// Allow every Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dangerously_allow_all_unix_sockets: Option<bool>,
}

/// Params of `process/start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    /// Client-chosen id, unique within the session.
    pub process_id: String,
    /// Attribution only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ExecMetadata>,
    /// Program and arguments; must not be empty.
    pub argv: Vec<String>,
    /// Absolute working directory.
    pub cwd: PathUri,
    /// Environment policy; absent means the environment is exactly `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_policy: Option<ExecEnvPolicy>,
    /// Executor-cached shell state to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_snapshot: Option<ShellSnapshotRequest>,
    /// Variables applied last (they win over the policy).
    pub env: HashMap<String, String>,
    /// Run under a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open as a pipe for a non-tty process.
    #[serde(default)]
    pub pipe_stdin: bool,
    /// argv\[0\] as the child sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg0: Option<String>,
    /// Filesystem sandbox for the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
    /// Enforce the managed network.
    #[serde(default)]
    pub enforce_managed_network: bool,
    /// Managed network settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_network: Option<ManagedNetworkSandboxContext>,
    /// Launch a managed network proxy for the process (shape not pinned; kept raw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_proxy: Option<serde_json::Value>,
    /// What to do when `processId` is taken (extension): absent, a duplicate is an error as
    /// upstream; `attach` answers the existing process when the request is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_exists: Option<IfExists>,
    /// Deadline (extension): milliseconds after the start, on the monotonic clock, at which the
    /// whole process tree gets SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Grace after the deadline's SIGTERM before SIGKILL (extension; default 5,000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
}

/// `process/start` `ifExists` (extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IfExists {
    /// The id's existing process, when argv, cwd, env, tty and sandbox are the same.
    Attach,
    /// A duplicate id is an error (the default).
    Error,
}

/// The sandbox a process runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SandboxType {
    /// Unsandboxed.
    None,
    /// macOS Seatbelt.
    MacosSeatbelt,
    /// Linux namespaces + seccomp (+ Landlock).
    LinuxSeccomp,
    /// Windows restricted token.
    WindowsRestrictedToken,
    /// Windows MXC.
    WindowsMxc,
}

/// Result of `process/start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartResult {
    /// The caller's id.
    pub process_id: String,
    /// The sandbox applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_type: Option<SandboxType>,
    /// The answer is an existing process (`ifExists: "attach"`; extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached: bool,
}

/// An output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stream {
    /// Standard output of a pipe process.
    Stdout,
    /// Standard error of a pipe process.
    Stderr,
    /// The single stream of a tty process.
    Pty,
}

impl Stream {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Pty => "pty",
        }
    }
}

/// Params of `process/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    /// The process.
    pub process_id: String,
    /// Return chunks with `seq > afterSeq` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Byte budget; whole chunks only, at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Long-poll for up to this many milliseconds when nothing is new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// One retained output chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// Its sequence number.
    pub seq: u64,
    /// Its stream.
    pub stream: Stream,
    /// The bytes.
    pub chunk: Base64,
}

/// Output the server no longer retains, reported instead of silently skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    /// First evicted seq.
    pub from_seq: u64,
    /// Last evicted seq.
    pub to_seq: u64,
    /// Output bytes the evicted events held.
    pub bytes: u64,
}

/// Result of `process/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    /// Retained chunks after the cursor, ascending.
    pub chunks: Vec<OutputChunk>,
    /// The cursor to continue from (`afterSeq = nextSeq - 1`).
    pub next_seq: u64,
    /// The process has exited.
    pub exited: bool,
    /// Its exit code once known.
    pub exit_code: Option<i32>,
    /// Exited and every output stream reached EOF.
    pub closed: bool,
    /// A failure description (never set by this server so far).
    pub failure: Option<String>,
    /// The executor classified the failure as a sandbox denial.
    #[serde(default)]
    pub sandbox_denied: bool,
    /// Extension: output between the cursor and the first chunk was evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
}

/// Params of `process/write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    /// The process.
    pub process_id: String,
    /// Bytes for stdin.
    pub chunk: Base64,
    /// Idempotency key: a repeated id is acknowledged but not written again.
    pub write_id: String,
}

/// Outcome of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    /// Written (or a repeat of a written id).
    Accepted,
    /// No such process in this session.
    UnknownProcess,
    /// Stdin is not a pipe, or is gone.
    StdinClosed,
    /// The process is still starting.
    Starting,
}

/// Result of `process/write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The outcome.
    pub status: WriteStatus,
}

/// A signal `process/signal` can deliver.
///
/// `interrupt` is upstream's only variant. The others are our extension. `kill` is not
/// accepted (the wire contract pins it as invalid params); `process/terminate` kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessSignal {
    /// SIGINT.
    Interrupt,
    /// SIGTERM (extension).
    Terminate,
    /// SIGHUP (extension).
    Hangup,
    /// SIGQUIT (extension).
    Quit,
    /// SIGUSR1 (extension).
    User1,
    /// SIGUSR2 (extension).
    User2,
}

/// Params of `process/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalParams {
    /// The process.
    pub process_id: String,
    /// The signal.
    pub signal: ProcessSignal,
    /// Operation id (extension): a retried id is answered as the first time and never
    /// applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
}

/// Params of `process/terminate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateParams {
    /// The process.
    pub process_id: String,
    /// Operation id (extension), as for `process/signal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_id: Option<String>,
}

/// Result of `process/terminate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateResult {
    /// The process was running and termination was requested.
    pub running: bool,
}

/// Params of `process/resize` (our extension; PTY processes only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResizeParams {
    /// The process.
    pub process_id: String,
    /// Terminal rows (1..=u16::MAX).
    pub rows: u16,
    /// Terminal columns (1..=u16::MAX).
    pub cols: u16,
}

/// Params of `process/closeStdin` (our extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseStdinParams {
    /// The process.
    pub process_id: String,
}

/// `process/output` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputNotification {
    /// The process.
    pub process_id: String,
    /// The shared per-process sequence number.
    pub seq: u64,
    /// The stream.
    pub stream: Stream,
    /// The bytes.
    pub chunk: Base64,
}

/// `process/exited` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitedNotification {
    /// The process.
    pub process_id: String,
    /// The shared per-process sequence number.
    pub seq: u64,
    /// Exit status, or 128 + signal number.
    pub exit_code: i32,
    /// The failure was a sandbox denial.
    #[serde(default)]
    pub sandbox_denied: bool,
    /// Killed by its `timeoutMs` deadline (extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

/// `process/closed` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosedNotification {
    /// The process.
    pub process_id: String,
    /// The shared per-process sequence number (the highest).
    pub seq: u64,
}

/// `process/gap` params (extension): a replay after a resume started before what is retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GapNotification {
    /// The process.
    pub process_id: String,
    /// The evicted seq range and the output bytes it held.
    #[serde(flatten)]
    pub gap: Gap,
}

/// One process of a `process/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatEntry {
    /// The process.
    pub process_id: String,
    /// The last sequence number given out.
    pub last_seq: u64,
}

/// `process/heartbeat` params (extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatNotification {
    /// Every running process of the session.
    pub processes: Vec<HeartbeatEntry>,
}

/// `process/status` params (extension): what became of a process id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusParams {
    /// The process.
    pub process_id: String,
}

/// What a session knows of a process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessState {
    /// This session never started it.
    NotStarted,
    /// Started and not exited.
    Running,
    /// Exited (`exitCode` says how).
    Exited,
    /// The server cannot know: the id was forgotten after its retention, or its start is
    /// still in flight.
    Unknown,
}

/// A range of sequence numbers, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeqRange {
    /// The first.
    pub from_seq: u64,
    /// The last.
    pub to_seq: u64,
}

/// `process/status` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResult {
    /// The state.
    pub state: ProcessState,
    /// Exit status, or 128 + signal number (when exited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The number of the signal that killed it (when one did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The last sequence number given out (0 before any).
    pub last_seq: u64,
    /// The events still retained for `process/read` (absent when none are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<SeqRange>,
    /// Killed by its `timeoutMs` deadline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

/// One process of `process/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessEntry {
    /// The process.
    pub process_id: String,
    /// Its argv.
    pub argv: Vec<String>,
    /// The child's pid.
    pub pid: i32,
    /// Whether it has a PTY.
    pub tty: bool,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at: u64,
    /// `running` or `exited`.
    pub state: ProcessState,
    /// The events still retained for `process/read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<SeqRange>,
    /// The session it belongs to (only in an `allSessions` list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// `process/list` params (extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// Every session's processes, not only this one's (needs `adminToken`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_sessions: bool,
    /// The operator's admin token (`--admin-token-file` / `--admin-token-sha256`), required
    /// with `allSessions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

/// `process/list` result (extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResult {
    /// Every running or retained process of the session, oldest first.
    pub processes: Vec<ProcessEntry>,
}

crate::method!(
    /// `process/start`.
    Start,
    "process/start",
    StartParams,
    StartResult
);
crate::method!(
    /// `process/read`.
    Read,
    "process/read",
    ReadParams,
    ReadResult
);
crate::method!(
    /// `process/write`.
    Write,
    "process/write",
    WriteParams,
    WriteResult
);
crate::method!(
    /// `process/signal`.
    Signal,
    "process/signal",
    SignalParams,
    crate::Empty
);
crate::method!(
    /// `process/terminate`.
    Terminate,
    "process/terminate",
    TerminateParams,
    TerminateResult
);
crate::method!(
    /// `process/resize` (extension).
    Resize,
    "process/resize",
    ResizeParams,
    crate::Empty
);
crate::method!(
    /// `process/closeStdin` (extension): end of input, after every earlier write.
    CloseStdin,
    "process/closeStdin",
    CloseStdinParams,
    WriteResult
);
crate::method!(
    /// `process/status` (extension): what became of a process id.
    Status,
    "process/status",
    StatusParams,
    StatusResult
);
crate::method!(
    /// `process/list` (extension): the session's processes.
    List,
    "process/list",
    ListParams,
    ListResult
);
crate::notification!(
    /// `process/output`.
    Output,
    "process/output",
    OutputNotification
);
crate::notification!(
    /// `process/exited`.
    Exited,
    "process/exited",
    ExitedNotification
);
crate::notification!(
    /// `process/gap` (extension): events of a replay that were evicted.
    GapNote,
    "process/gap",
    GapNotification
);
crate::notification!(
    /// `process/heartbeat` (extension): the last seq of each running process.
    Heartbeat,
    "process/heartbeat",
    HeartbeatNotification
);
crate::notification!(
    /// `process/closed`.
    Closed,
    "process/closed",
    ClosedNotification
);
