//! The Environment abstraction: one capability, two faces.
//!
//! Each domain is a trait, implemented on this machine and over a [`Client`]:
//!
//! | domain | trait | local | remote |
//! |---|---|---|---|
//! | processes | [`ExecBackend`] / [`ExecProcess`] | [`LocalExec`] (core's `Session`) | [`RemoteExec`] |
//! | filesystem | core's [`FileSystem`] | core's [`LocalFileSystem`] | [`RemoteFileSystem`] |
//! | HTTP | core's [`HttpRunner`] ([`EnvironmentHttp`] owned) | core's [`LocalHttpRunner`] | [`RemoteHttp`] |
//!
//! Code written against the traits runs unchanged against either; [`Environment`] bundles the
//! three for one environment and [`crate::EnvironmentManager`] picks environments by id.
//! Errors look the same on both sides: process errors are JSON-RPC error objects with the
//! server's codes and texts, filesystem errors carry the same `io::ErrorKind` and message.

mod local;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use exec_server_core::fs::{
    CopyOptions, CreateDirectoryOptions, FileSystem, FsError, LocalFileSystem, MetadataOptions,
    ReadOptions, RemoveOptions, WriteOptions,
};
use exec_server_core::http::{HttpError, HttpRequest, HttpResponse, HttpRunner, LocalHttpRunner};
use exec_server_protocol::environment::EnvironmentInfo;
use exec_server_protocol::fs::{DirectoryEntry, Metadata, SandboxContext, WalkOptions, WalkResult};
use exec_server_protocol::process::{ProcessSignal, StartParams, WriteStatus};

pub use local::{LocalExec, LocalProcess};

use crate::client::Client;
use crate::error::ClientError;
use crate::process::{ProcessEvents, RemoteProcess};
use crate::remote_fs::RemoteFileSystem;
use crate::remote_http::RemoteHttp;

/// Starts processes.
pub trait ExecBackend: Send + Sync {
    /// The handle of a started process.
    type Process: ExecProcess;

    /// Starts a process (`process/start`). Errors are the server's: code, message and
    /// `data.kind` for spawn failures.
    fn start(
        &self,
        params: StartParams,
    ) -> impl Future<Output = Result<Self::Process, ClientError>> + Send;
}

/// A started process: its events and its controls.
pub trait ExecProcess: Send {
    /// Its id.
    fn id(&self) -> &str;

    /// Its events, in seq order, each once.
    fn events(&mut self) -> &mut ProcessEvents;

    /// Writes to stdin (exactly once, even across a reconnect).
    fn write(&self, data: &[u8]) -> impl Future<Output = Result<WriteStatus, ClientError>> + Send;

    /// Delivers a signal to the process group.
    fn signal(&self, signal: ProcessSignal)
        -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Kills the process tree; returns whether it was running.
    fn terminate(&self) -> impl Future<Output = Result<bool, ClientError>> + Send;

    /// Resizes the PTY of a tty process.
    fn resize(&self, rows: u16, cols: u16) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// Processes on the executor behind a [`Client`].
#[derive(Debug, Clone)]
pub struct RemoteExec {
    client: Client,
}

impl RemoteExec {
    /// The processes of `client`'s executor.
    pub fn new(client: Client) -> Self {
        RemoteExec { client }
    }
}

impl ExecBackend for RemoteExec {
    type Process = RemoteProcess;

    async fn start(&self, params: StartParams) -> Result<RemoteProcess, ClientError> {
        self.client.start_process(params).await
    }
}

impl ExecProcess for RemoteProcess {
    fn id(&self) -> &str {
        RemoteProcess::id(self)
    }

    fn events(&mut self) -> &mut ProcessEvents {
        RemoteProcess::events(self)
    }

    async fn write(&self, data: &[u8]) -> Result<WriteStatus, ClientError> {
        self.control().write(data).await
    }

    async fn signal(&self, signal: ProcessSignal) -> Result<(), ClientError> {
        self.control().signal(signal).await
    }

    async fn terminate(&self) -> Result<bool, ClientError> {
        self.control().terminate().await
    }

    async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.control().resize(rows, cols).await
    }
}

/// One environment: processes, filesystem and HTTP, all local or all remote.
#[derive(Debug, Clone)]
pub enum Environment {
    /// This machine.
    Local(LocalEnvironment),
    /// An executor behind a client.
    Remote(RemoteEnvironment),
}

/// This machine's environment.
#[derive(Debug, Clone)]
pub struct LocalEnvironment {
    /// Processes (one session of core's).
    pub exec: LocalExec,
    /// The filesystem.
    pub fs: LocalFileSystem,
    /// HTTP from this machine.
    pub http: Arc<LocalHttpRunner>,
}

/// A remote environment.
#[derive(Debug, Clone)]
pub struct RemoteEnvironment {
    /// The client all three speak through.
    pub client: Client,
    /// Processes.
    pub exec: RemoteExec,
    /// The filesystem.
    pub fs: RemoteFileSystem,
    /// HTTP from the executor.
    pub http: RemoteHttp,
}

impl Environment {
    /// This machine.
    pub fn local() -> Result<Environment, HttpError> {
        Ok(Environment::Local(LocalEnvironment {
            exec: LocalExec::new(),
            fs: LocalFileSystem::default(),
            http: Arc::new(LocalHttpRunner::new(Default::default())?),
        }))
    }

    /// The executor behind `client`.
    pub fn remote(client: Client) -> Environment {
        Environment::Remote(RemoteEnvironment {
            exec: RemoteExec::new(client.clone()),
            fs: RemoteFileSystem::new(client.clone()),
            http: RemoteHttp::new(client.clone()),
            client,
        })
    }

    /// What the environment reports about itself (`environment/info`).
    pub fn info(&self) -> EnvironmentInfo {
        match self {
            Environment::Local(_) => exec_server_core::environment::detect(),
            Environment::Remote(r) => r.client.environment_info(),
        }
    }

    /// Its processes.
    pub fn exec(&self) -> AnyExec<'_> {
        match self {
            Environment::Local(l) => AnyExec::Local(&l.exec),
            Environment::Remote(r) => AnyExec::Remote(&r.exec),
        }
    }

    /// Its filesystem.
    pub fn fs(&self) -> AnyFileSystem<'_> {
        match self {
            Environment::Local(l) => AnyFileSystem::Local(&l.fs),
            Environment::Remote(r) => AnyFileSystem::Remote(&r.fs),
        }
    }

    /// Its HTTP runner.
    pub fn http(&self) -> AnyHttp<'_> {
        match self {
            Environment::Local(l) => AnyHttp::Local(&l.http),
            Environment::Remote(r) => AnyHttp::Remote(&r.http),
        }
    }

    /// Its HTTP runner as an owned handle, for code that keeps it beyond a borrow (an MCP
    /// transport's background tasks): direct from this machine or through the executor.
    pub fn http_runner(&self) -> EnvironmentHttp {
        match self {
            Environment::Local(l) => EnvironmentHttp::Local(l.http.clone()),
            Environment::Remote(r) => EnvironmentHttp::Remote(r.http.clone()),
        }
    }
}

/// The processes of either kind of environment.
#[derive(Debug, Clone, Copy)]
pub enum AnyExec<'a> {
    /// Local.
    Local(&'a LocalExec),
    /// Remote.
    Remote(&'a RemoteExec),
}

/// A process of either kind of environment.
#[derive(Debug)]
pub enum AnyProcess {
    /// Local.
    Local(LocalProcess),
    /// Remote.
    Remote(RemoteProcess),
}

impl ExecBackend for AnyExec<'_> {
    type Process = AnyProcess;

    async fn start(&self, params: StartParams) -> Result<AnyProcess, ClientError> {
        match self {
            AnyExec::Local(l) => l.start(params).await.map(AnyProcess::Local),
            AnyExec::Remote(r) => r.start(params).await.map(AnyProcess::Remote),
        }
    }
}

macro_rules! either {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            AnyProcess::Local($p) => $e,
            AnyProcess::Remote($p) => $e,
        }
    };
}

impl ExecProcess for AnyProcess {
    fn id(&self) -> &str {
        either!(self, p => p.id())
    }

    fn events(&mut self) -> &mut ProcessEvents {
        either!(self, p => p.events())
    }

    async fn write(&self, data: &[u8]) -> Result<WriteStatus, ClientError> {
        either!(self, p => ExecProcess::write(p, data).await)
    }

    async fn signal(&self, signal: ProcessSignal) -> Result<(), ClientError> {
        either!(self, p => ExecProcess::signal(p, signal).await)
    }

    async fn terminate(&self) -> Result<bool, ClientError> {
        either!(self, p => ExecProcess::terminate(p).await)
    }

    async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        either!(self, p => ExecProcess::resize(p, rows, cols).await)
    }
}

/// The filesystem of either kind of environment.
#[derive(Debug, Clone, Copy)]
pub enum AnyFileSystem<'a> {
    /// Local.
    Local(&'a LocalFileSystem),
    /// Remote.
    Remote(&'a RemoteFileSystem),
}

macro_rules! fs_either {
    ($self:expr, $f:ident => $e:expr) => {
        match $self {
            AnyFileSystem::Local($f) => $e,
            AnyFileSystem::Remote($f) => $e,
        }
    };
}

impl FileSystem for AnyFileSystem<'_> {
    async fn read_file(
        &self,
        path: &Path,
        opts: ReadOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Vec<u8>, FsError> {
        fs_either!(self, f => f.read_file(path, opts, sandbox).await)
    }

    async fn write_file(
        &self,
        path: &Path,
        data: Vec<u8>,
        opts: WriteOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        fs_either!(self, f => f.write_file(path, data, opts, sandbox).await)
    }

    async fn create_directory(
        &self,
        path: &Path,
        opts: CreateDirectoryOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        fs_either!(self, f => f.create_directory(path, opts, sandbox).await)
    }

    async fn get_metadata(
        &self,
        path: &Path,
        opts: MetadataOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Metadata, FsError> {
        fs_either!(self, f => f.get_metadata(path, opts, sandbox).await)
    }

    async fn canonicalize(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> Result<PathBuf, FsError> {
        fs_either!(self, f => f.canonicalize(path, sandbox).await)
    }

    async fn read_directory(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Vec<DirectoryEntry>, FsError> {
        fs_either!(self, f => f.read_directory(path, sandbox).await)
    }

    async fn walk(
        &self,
        path: &Path,
        opts: WalkOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<WalkResult, FsError> {
        fs_either!(self, f => f.walk(path, opts, sandbox).await)
    }

    async fn remove(
        &self,
        path: &Path,
        opts: RemoveOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        fs_either!(self, f => f.remove(path, opts, sandbox).await)
    }

    async fn copy(
        &self,
        source: &Path,
        destination: &Path,
        opts: CopyOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        fs_either!(self, f => f.copy(source, destination, opts, sandbox).await)
    }
}

/// The HTTP runner of either kind of environment.
#[derive(Debug, Clone, Copy)]
pub enum AnyHttp<'a> {
    /// Local.
    Local(&'a LocalHttpRunner),
    /// Remote.
    Remote(&'a RemoteHttp),
}

impl HttpRunner for AnyHttp<'_> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        match self {
            AnyHttp::Local(h) => h.send(request).await,
            AnyHttp::Remote(h) => h.send(request).await,
        }
    }
}

/// The HTTP runner of either kind of environment, owned; cheap to clone.
#[derive(Debug, Clone)]
pub enum EnvironmentHttp {
    /// From this machine (reqwest).
    Local(Arc<LocalHttpRunner>),
    /// From the executor (`http/request`, streamed).
    Remote(RemoteHttp),
}

impl HttpRunner for EnvironmentHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        match self {
            EnvironmentHttp::Local(h) => h.send(request).await,
            EnvironmentHttp::Remote(h) => h.send(request).await,
        }
    }
}
