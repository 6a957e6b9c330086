//! Filesystem operations under a sandbox: deciding when one is needed and running the
//! operation in the sandbox helper process (spec §5.13).
//!
//! The helper is this binary re-executed as `<exe> --exec-server-fs-helper` (the binary's
//! `main` calls `maybe_run_helper` first). Its stdin and stdout are one end of a Unix socket
//! pair. The server writes one JSON header line (`Header`: the resolved policy, the
//! operation and the length of the raw payload that follows, e.g. `fs/writeFile` data); the
//! helper confines itself with `exec_server_sandbox::confine` before reading anything from
//! disk, runs the operation with the same functions `LocalFileSystem` uses, and answers with
//! one JSON line (`Reply`) and its raw payload (e.g. `fs/readFile` bytes). For `open` it first
//! sends the opened descriptor with `SCM_RIGHTS`. If the helper cannot confine itself it
//! answers with an error and does nothing else: the operation fails closed.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;

use exec_server_sandbox::{Plan, Policy, PolicyError};

use exec_server_protocol::fs::{
    DirectoryEntry, FileSystemPolicy, Metadata, OpenMode, PermissionProfile, SandboxContext,
    WalkOptions, WalkResult,
};
use serde::{Deserialize, Serialize};

use super::{
    CopyOptions, CreateDirectoryOptions, FsError, MetadataOptions, ReadOptions, RemoveOptions,
    WriteOptions,
};

/// The hidden first argument that selects the fs helper.
pub const FS_HELPER_ARG: &str = "--exec-server-fs-helper";

/// A resolved policy that restricts the filesystem, so the operation must run in the helper.
#[derive(Debug, Clone)]
pub struct Confinement {
    policy: Policy,
}

/// Whether `sandbox` restricts the filesystem: `None` means the operation may run here
/// (no sandbox, `disabled`, `external`, or an unrestricted managed filesystem).
pub fn confinement(sandbox: Option<&SandboxContext>) -> Result<Option<Confinement>, FsError> {
    let Some(ctx) = sandbox else { return Ok(None) };
    if matches!(
        ctx.permissions,
        PermissionProfile::Disabled
            | PermissionProfile::External { .. }
            | PermissionProfile::Managed {
                file_system: FileSystemPolicy::Unrestricted,
                ..
            }
    ) {
        return Ok(None);
    }
    match Policy::from_context(ctx, None) {
        Ok(Some(policy)) if policy.restricts_filesystem() => Ok(Some(Confinement { policy })),
        Ok(_) => Ok(None),
        Err(PolicyError::NeedsCwd) => Err(FsError::SandboxNeedsCwd),
        Err(e @ PolicyError::BadPath(_)) => Err(FsError::SandboxPolicy(e.to_string())),
    }
}

/// Like [`confinement`], for an operation that only reads: a policy that lets every path be
/// read (`/` readable, nothing denied) needs no helper for it.
pub fn read_confinement(sandbox: Option<&SandboxContext>) -> Result<Option<Confinement>, FsError> {
    Ok(confinement(sandbox)?.filter(|c| !c.policy.reads_everything()))
}

/// Runs the sandbox helpers when this process was started as one: call it first thing in
/// `main`, and exit with the returned status when it is `Some`.
pub fn maybe_run_helper() -> Option<i32> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(FS_HELPER_ARG) => Some(helper_main()),
        Some(exec_server_sandbox::EXEC_HELPER_ARG) => {
            Some(exec_server_sandbox::exec_main(&args[2..]))
        }
        _ => None,
    }
}

/// One operation for the helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// `fs/readFile`.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Options.
        opts: ReadOptions,
        /// Size cap.
        limit: u64,
    },
    /// `fs/writeFile`; the data travels after the header.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Options.
        opts: WriteOptions,
        /// The content.
        #[serde(skip)]
        data: Payload,
    },
    /// `fs/createDirectory`.
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Options.
        opts: CreateDirectoryOptions,
    },
    /// `fs/getMetadata`.
    GetMetadata {
        /// The path.
        path: PathBuf,
        /// Options.
        opts: MetadataOptions,
    },
    /// `fs/canonicalize`.
    Canonicalize {
        /// The path.
        path: PathBuf,
    },
    /// `fs/readDirectory`.
    ReadDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// `fs/walk`.
    Walk {
        /// The root.
        path: PathBuf,
        /// Limits.
        opts: WalkOptions,
    },
    /// `fs/remove`.
    Remove {
        /// The path.
        path: PathBuf,
        /// Options.
        opts: RemoveOptions,
    },
    /// `fs/copy`.
    Copy {
        /// The source.
        source: PathBuf,
        /// The destination.
        destination: PathBuf,
        /// Options.
        opts: CopyOptions,
    },
    /// `fs/open`; the descriptor comes back over the socket.
    Open {
        /// The file.
        path: PathBuf,
        /// Read or replace.
        mode: OpenMode,
    },
}

/// Raw bytes that travel after a JSON header.
#[derive(Debug, Clone, Default)]
pub struct Payload(pub Vec<u8>);

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v)
    }
}

/// The helper's successful answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum Response {
    /// No value.
    Unit,
    /// Bytes; they travel after the header.
    Bytes {
        /// The bytes.
        #[serde(skip)]
        data: Payload,
    },
    /// Metadata.
    Metadata(Metadata),
    /// A path.
    Path(PathBuf),
    /// Directory entries.
    Entries(Vec<DirectoryEntry>),
    /// A walk.
    Walk(WalkResult),
}

fn unexpected(r: &Response) -> FsError {
    FsError::SandboxHelper(format!("unexpected helper response {r:?}"))
}

impl Response {
    /// The unit value.
    pub fn into_unit(self) -> Result<(), FsError> {
        match self {
            Response::Unit => Ok(()),
            r => Err(unexpected(&r)),
        }
    }
    /// The bytes.
    pub fn into_bytes(self) -> Result<Vec<u8>, FsError> {
        match self {
            Response::Bytes { data } => Ok(data.0),
            r => Err(unexpected(&r)),
        }
    }
    /// The metadata.
    pub fn into_metadata(self) -> Result<Metadata, FsError> {
        match self {
            Response::Metadata(m) => Ok(m),
            r => Err(unexpected(&r)),
        }
    }
    /// The path.
    pub fn into_path(self) -> Result<PathBuf, FsError> {
        match self {
            Response::Path(p) => Ok(p),
            r => Err(unexpected(&r)),
        }
    }
    /// The entries.
    pub fn into_entries(self) -> Result<Vec<DirectoryEntry>, FsError> {
        match self {
            Response::Entries(e) => Ok(e),
            r => Err(unexpected(&r)),
        }
    }
    /// The walk.
    pub fn into_walk(self) -> Result<WalkResult, FsError> {
        match self {
            Response::Walk(w) => Ok(w),
            r => Err(unexpected(&r)),
        }
    }
}

/// The header the server sends to the helper.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    policy: Policy,
    request: Request,
    payload_len: usize,
}

/// The helper's answer line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    result: Result<Response, WireError>,
    payload_len: usize,
}

/// An `FsError` as it crosses the helper socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum WireError {
    Os(i32),
    NotAFile(PathBuf),
    CopyNeedsRecursive,
    CopyIntoItself,
    SymlinkInPath,
    FileTooLarge { size: u64, limit: u64 },
    WalkLimits,
    Unavailable(String),
    Other(String),
}

impl From<FsError> for WireError {
    fn from(e: FsError) -> Self {
        match e {
            FsError::Io(io) => match io.raw_os_error() {
                Some(n) => WireError::Os(n),
                None => WireError::Other(io.to_string()),
            },
            FsError::NotAFile(p) => WireError::NotAFile(p),
            FsError::CopyNeedsRecursive => WireError::CopyNeedsRecursive,
            FsError::CopyIntoItself => WireError::CopyIntoItself,
            FsError::SymlinkInPath => WireError::SymlinkInPath,
            FsError::FileTooLarge { size, limit } => WireError::FileTooLarge { size, limit },
            FsError::WalkLimits => WireError::WalkLimits,
            FsError::SandboxUnavailable(m) => WireError::Unavailable(m),
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for FsError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Os(n) => FsError::Io(io::Error::from_raw_os_error(n)),
            WireError::NotAFile(p) => FsError::NotAFile(p),
            WireError::CopyNeedsRecursive => FsError::CopyNeedsRecursive,
            WireError::CopyIntoItself => FsError::CopyIntoItself,
            WireError::SymlinkInPath => FsError::SymlinkInPath,
            WireError::FileTooLarge { size, limit } => FsError::FileTooLarge { size, limit },
            WireError::WalkLimits => FsError::WalkLimits,
            WireError::Unavailable(m) => FsError::SandboxUnavailable(m),
            WireError::Other(m) => FsError::SandboxHelper(m),
        }
    }
}

fn helper_err(context: &str, e: impl std::fmt::Display) -> FsError {
    FsError::SandboxHelper(format!("{context}: {e}"))
}

/// Runs `request` in the sandbox helper under `policy`.
pub async fn run_in_helper(policy: Confinement, request: Request) -> Result<Response, FsError> {
    super::blocking(move || {
        let (response, _) = converse(&policy.policy, request, false)?;
        Ok(response)
    })
    .await
}

/// Opens a file in the sandbox helper and returns the descriptor it passed back.
pub async fn open_in_helper(
    policy: Confinement,
    path: PathBuf,
    mode: OpenMode,
) -> Result<File, FsError> {
    super::blocking(move || {
        let (response, fd) = converse(&policy.policy, Request::Open { path, mode }, true)?;
        response.into_unit()?;
        fd.map(File::from).ok_or_else(|| {
            FsError::SandboxHelper(
                "fs sandbox helper did not transfer its opened file descriptor".into(),
            )
        })
    })
    .await
}

/// Starts the helper, sends the request and reads the reply (blocking).
fn converse(
    policy: &Policy,
    mut request: Request,
    want_fd: bool,
) -> Result<(Response, Option<OwnedFd>), FsError> {
    let payload = match &mut request {
        Request::WriteFile { data, .. } => std::mem::take(&mut data.0),
        _ => Vec::new(),
    };
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| helper_err("creating the helper socket", e))?;
    let theirs_out = theirs
        .try_clone()
        .map_err(|e| helper_err("creating the helper socket", e))?;
    #[allow(clippy::disallowed_methods)] // the helper is our own binary, not a user process
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg(FS_HELPER_ARG)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            FsError::SandboxUnavailable(format!("cannot start the sandbox helper: {e}"))
        })?;
    let result = exchange(&ours, policy, request, &payload, want_fd);
    drop(ours);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait();
    match result {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => {
            let detail = stderr.trim();
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            Err(helper_err(&format!("{e} (helper {status})"), detail))
        }
    }
}

fn exchange(
    sock: &UnixStream,
    policy: &Policy,
    request: Request,
    payload: &[u8],
    want_fd: bool,
) -> io::Result<Result<(Response, Option<OwnedFd>), WireError>> {
    let header = Header {
        policy: policy.clone(),
        request,
        payload_len: payload.len(),
    };
    let mut line = serde_json::to_vec(&header)?;
    line.push(b'\n');
    let mut w = sock;
    w.write_all(&line)?;
    w.write_all(payload)?;
    let fd = if want_fd {
        exec_server_sandbox::fdpass::recv_fd(sock.as_raw_fd())?
    } else {
        None
    };
    let mut reader = BufReader::new(sock);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the helper exited without answering",
        ));
    }
    let reply: Reply = serde_json::from_str(&line)?;
    let mut data = vec![0u8; reply.payload_len];
    reader.read_exact(&mut data)?;
    let response = match reply.result {
        Ok(Response::Bytes { .. }) => Response::Bytes {
            data: Payload(data),
        },
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok((response, fd)))
}

/// The fs helper: reads one request, confines itself, runs it, answers. Returns the exit
/// status.
fn helper_main() -> i32 {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    let header: Header = match input
        .read_line(&mut line)
        .map(|_| serde_json::from_str(&line))
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return helper_fail(&format!("bad request: {e}")),
        Err(e) => return helper_fail(&format!("reading the request: {e}")),
    };
    let mut payload = vec![0u8; header.payload_len];
    if let Err(e) = input.read_exact(&mut payload) {
        return helper_fail(&format!("reading the request payload: {e}"));
    }
    let mut request = header.request;
    if let Request::WriteFile { data, .. } = &mut request {
        data.0 = payload;
    }
    let is_open = matches!(request, Request::Open { .. });
    let result = match exec_server_sandbox::confine(&Plan::new(&header.policy)) {
        Err(e) => Err(WireError::Unavailable(e.to_string())),
        Ok(()) => execute(request).map_err(WireError::from),
    };
    let (result, fd) = match result {
        Ok(Executed::Opened(file)) => (Ok(Response::Unit), Some(OwnedFd::from(file))),
        Ok(Executed::Done(r)) => (Ok(r), None),
        Err(e) => (Err(e), None),
    };
    if is_open {
        if let Err(e) = exec_server_sandbox::fdpass::send_fd(1, fd.as_ref()) {
            return helper_fail(&format!("sending the descriptor: {e}"));
        }
    }
    let (result, payload) = match result {
        Ok(Response::Bytes { data }) => (
            Ok(Response::Bytes {
                data: Payload::default(),
            }),
            data.0,
        ),
        other => (other, Vec::new()),
    };
    let reply = Reply {
        result,
        payload_len: payload.len(),
    };
    let mut out = io::stdout().lock();
    let written = serde_json::to_vec(&reply)
        .map_err(io::Error::from)
        .and_then(|mut line| {
            line.push(b'\n');
            out.write_all(&line)?;
            out.write_all(&payload)?;
            out.flush()
        });
    match written {
        Ok(()) => 0,
        Err(e) => helper_fail(&format!("writing the reply: {e}")),
    }
}

fn helper_fail(msg: &str) -> i32 {
    eprintln!("exec-server fs helper: {msg}");
    exec_server_sandbox::EXIT_SANDBOX_FAILED
}

enum Executed {
    Done(Response),
    Opened(File),
}

fn execute(request: Request) -> Result<Executed, FsError> {
    use super::ops;
    let done = |r| Ok(Executed::Done(r));
    match request {
        Request::ReadFile { path, opts, limit } => {
            let data = ops::read_file(&path, opts.follow_symlinks, limit)?;
            done(Response::Bytes {
                data: Payload(data),
            })
        }
        Request::WriteFile { path, opts, data } => {
            ops::write_file(&path, &data.0, opts.follow_symlinks)?;
            done(Response::Unit)
        }
        Request::CreateDirectory { path, opts } => {
            ops::create_directory(&path, opts)?;
            done(Response::Unit)
        }
        Request::GetMetadata { path, opts } => done(Response::Metadata(ops::metadata(
            &path,
            opts.follow_symlinks,
        )?)),
        Request::Canonicalize { path } => done(Response::Path(ops::canonicalize(&path)?)),
        Request::ReadDirectory { path } => done(Response::Entries(ops::read_directory(&path)?)),
        Request::Walk { path, opts } => done(Response::Walk(super::walk(&path, &opts)?)),
        Request::Remove { path, opts } => {
            ops::remove(&path, opts)?;
            done(Response::Unit)
        }
        Request::Copy {
            source,
            destination,
            opts,
        } => {
            super::copy(&source, &destination, opts.recursive)?;
            done(Response::Unit)
        }
        Request::Open { path, mode } => Ok(Executed::Opened(super::open_for_handle(&path, mode)?)),
    }
}
