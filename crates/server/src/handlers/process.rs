//! `process/*` handlers.

use std::future::Future;
use std::time::Duration;

use exec_server_core::process::ReadOutcome;
use exec_server_core::session::StartError;
use exec_server_protocol::process::{
    CloseStdinParams, ListParams, ListResult, ProcessEntry, ProcessState, ReadParams, ResizeParams,
    SeqRange, SignalParams, StartParams, StartResult, StatusParams, StatusResult, TerminateParams,
    TerminateResult, WriteParams, WriteResult, WriteStatus,
};
use exec_server_protocol::{codes, Empty};

use crate::dispatch::Call;
use crate::rpc_error::RpcError;

/// Longest long-poll a `process/read` may ask for (5 minutes).
const MAX_WAIT_MS: u64 = 300_000;

pub(crate) async fn start(call: Call, p: StartParams) -> Result<StartResult, RpcError> {
    let started = call.session.start(&p).map_err(start_error)?;
    Ok(StartResult {
        process_id: p.process_id,
        sandbox_type: Some(started.sandbox_type),
        attached: started.attached,
    })
}

fn start_error(e: StartError) -> RpcError {
    let err = RpcError::new(e.code(), e.to_string());
    match e.kind() {
        Some(kind) => err.with_data(serde_json::json!({ "kind": kind })),
        None => err,
    }
}

fn unknown(call: &Call, id: &str) -> RpcError {
    if call.session.is_starting(id) {
        RpcError::invalid_request(format!("process id {id} is starting"))
    } else {
        RpcError::invalid_request(format!("unknown process id {id}"))
    }
}

/// `process/read`: the core's outcome, encoded by [`crate::encode::read_result`] (the base64 of
/// megabytes of output is written straight into the reply).
pub(crate) async fn read(call: Call, p: ReadParams) -> Result<ReadOutcome, RpcError> {
    let proc = call
        .session
        .process(&p.process_id)
        .ok_or_else(|| unknown(&call, &p.process_id))?;
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    Ok(proc.read(p.after_seq.unwrap_or(0), p.max_bytes, wait).await)
}

/// Takes the stdin ticket now (arrival order, with the queue reservation), writes when the
/// ticket's turn comes.
pub(crate) fn write(
    call: Call,
    p: WriteParams,
) -> impl Future<Output = Result<WriteResult, RpcError>> + Send + 'static {
    // Decoded size of the chunk, known without decoding it.
    let size = p.chunk.0.len() / 4 * 3;
    let ticket = call
        .session
        .process(&p.process_id)
        .map(|proc| proc.stdin_ticket(size));
    let starting = ticket.is_none() && call.session.is_starting(&p.process_id);
    async move {
        if p.write_id.is_empty() {
            return Err(RpcError::invalid_params("writeId must not be empty"));
        }
        let data = p.chunk.decode().map_err(RpcError::invalid_params)?;
        let status = match ticket {
            Some(Ok(t)) => t.write(p.write_id, data).await,
            Some(Err(full)) => return Err(RpcError::invalid_request(full.to_string())),
            None if starting => WriteStatus::Starting,
            None => WriteStatus::UnknownProcess,
        };
        Ok(WriteResult { status })
    }
}

/// `process/closeStdin` (extension): takes its place in the stdin order now, closes when its
/// turn comes. Answers the write status (`accepted`, `stdinClosed`, `unknownProcess`).
pub(crate) fn close_stdin(
    call: Call,
    p: CloseStdinParams,
) -> impl Future<Output = Result<WriteResult, RpcError>> + Send + 'static {
    let ticket = call
        .session
        .process(&p.process_id)
        .map(|proc| proc.stdin_ticket(0));
    async move {
        let status = match ticket {
            Some(Ok(t)) => t.close().await,
            Some(Err(full)) => return Err(RpcError::invalid_request(full.to_string())),
            None => WriteStatus::UnknownProcess,
        };
        Ok(WriteResult { status })
    }
}

pub(crate) async fn signal(call: Call, p: SignalParams) -> Result<Empty, RpcError> {
    if let Some(proc) = call.session.process(&p.process_id) {
        proc.signal(p.signal, p.op_id.as_deref());
    }
    Ok(Empty {})
}

pub(crate) async fn terminate(call: Call, p: TerminateParams) -> Result<TerminateResult, RpcError> {
    let running = match call.session.process(&p.process_id) {
        Some(proc) => proc.terminate(p.op_id.as_deref()),
        None => false,
    };
    Ok(TerminateResult { running })
}

/// `process/status` (extension).
pub(crate) async fn status(call: Call, p: StatusParams) -> Result<StatusResult, RpcError> {
    use exec_server_core::session::Lookup;
    let unknown_as = |state| StatusResult {
        state,
        exit_code: None,
        signal: None,
        last_seq: 0,
        retained: None,
        timed_out: false,
    };
    Ok(match call.session.lookup(&p.process_id) {
        Lookup::Known(proc) => {
            let (last_seq, retained) = proc.seq_info();
            let exit_code = proc.exit_code();
            StatusResult {
                state: state_of(exit_code),
                exit_code,
                // Read after the exit code: the child may exit in between.
                signal: exit_code.and_then(|_| proc.exit_signal()),
                last_seq,
                retained: retained.map(seq_range),
                timed_out: proc.timed_out(),
            }
        }
        Lookup::Starting | Lookup::Forgotten => unknown_as(ProcessState::Unknown),
        Lookup::Never => unknown_as(ProcessState::NotStarted),
    })
}

/// `process/list` (extension).
pub(crate) async fn list(call: Call, p: ListParams) -> Result<ListResult, RpcError> {
    let sessions = if p.all_sessions {
        let Some(sha256) = &call.state.config.admin_token_sha256 else {
            return Err(RpcError::invalid_request(
                "allSessions is off: the server was started without --admin-token-file or --admin-token-sha256",
            ));
        };
        match &p.admin_token {
            Some(token) if crate::auth::token_matches(token, sha256) => {}
            Some(_) => return Err(RpcError::invalid_request("invalid adminToken")),
            None => {
                return Err(RpcError::invalid_request(
                    "allSessions needs the server's admin token in adminToken",
                ))
            }
        }
        call.state.sessions.all()
    } else {
        if p.admin_token.is_some() {
            return Err(RpcError::invalid_params(
                "adminToken is only used with allSessions",
            ));
        }
        vec![call.session.clone()]
    };
    let mut processes: Vec<ProcessEntry> = sessions
        .iter()
        .flat_map(|s| {
            let sid = p.all_sessions.then(|| s.id().to_string());
            s.processes()
                .into_iter()
                .map(move |proc| (sid.clone(), proc))
        })
        .map(|(session_id, proc)| ProcessEntry {
            process_id: proc.id().to_string(),
            argv: proc.argv().to_vec(),
            pid: proc.pid(),
            tty: proc.is_tty(),
            started_at: proc
                .started_at()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            state: state_of(proc.exit_code()),
            retained: proc.seq_info().1.map(seq_range),
            session_id,
        })
        .collect();
    processes.sort_by(|a, b| {
        (a.started_at, &a.session_id, &a.process_id).cmp(&(
            b.started_at,
            &b.session_id,
            &b.process_id,
        ))
    });
    Ok(ListResult { processes })
}

fn state_of(exit_code: Option<i32>) -> ProcessState {
    match exit_code {
        Some(_) => ProcessState::Exited,
        None => ProcessState::Running,
    }
}

fn seq_range((from_seq, to_seq): (u64, u64)) -> SeqRange {
    SeqRange { from_seq, to_seq }
}

pub(crate) async fn resize(call: Call, p: ResizeParams) -> Result<Empty, RpcError> {
    if p.rows == 0 || p.cols == 0 {
        return Err(RpcError::invalid_params("rows and cols must be at least 1"));
    }
    let proc = call
        .session
        .process(&p.process_id)
        .ok_or_else(|| unknown(&call, &p.process_id))?;
    proc.resize(p.rows, p.cols)
        .map_err(|e| RpcError::new(codes::INVALID_REQUEST, e.to_string()))?;
    Ok(Empty {})
}
