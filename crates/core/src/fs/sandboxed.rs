//! Filesystem operations under a sandbox: deciding when one is needed and running the
//! operation in the sandbox helper process.
//!
//! Phase 1: restricted policies fail closed (`SandboxUnavailable`).

use std::fs::File;
use std::path::PathBuf;

use exec_server_protocol::fs::{
    DirectoryEntry, FileSystemPolicy, Metadata, OpenMode, PermissionProfile, SandboxContext,
    WalkOptions, WalkResult,
};
use serde::{Deserialize, Serialize};

use super::{
    CopyOptions, CreateDirectoryOptions, FsError, MetadataOptions, ReadOptions, RemoveOptions,
    WriteOptions,
};

/// A policy the helper must enforce.
#[derive(Debug, Clone)]
pub struct Confinement {
    context: SandboxContext,
}

/// Whether `sandbox` restricts the filesystem: `None` means the operation may run here.
pub fn confinement(sandbox: Option<&SandboxContext>) -> Result<Option<Confinement>, FsError> {
    let Some(ctx) = sandbox else { return Ok(None) };
    match &ctx.permissions {
        PermissionProfile::Disabled | PermissionProfile::External { .. } => Ok(None),
        PermissionProfile::Managed {
            file_system: FileSystemPolicy::Unrestricted,
            ..
        } => Ok(None),
        PermissionProfile::Managed { .. } => Ok(Some(Confinement {
            context: ctx.clone(),
        })),
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

/// Runs `request` in the sandbox helper under `policy`.
pub async fn run_in_helper(policy: Confinement, request: Request) -> Result<Response, FsError> {
    let _ = (policy.context, request);
    Err(FsError::SandboxUnavailable(
        "sandbox helper not built yet".into(),
    ))
}

/// Opens a file in the sandbox helper and returns the descriptor it passed back.
pub async fn open_in_helper(
    policy: Confinement,
    path: PathBuf,
    mode: OpenMode,
) -> Result<File, FsError> {
    let _ = (policy.context, path, mode);
    Err(FsError::SandboxUnavailable(
        "sandbox helper not built yet".into(),
    ))
}
