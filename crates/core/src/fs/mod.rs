//! The filesystem capability: the `FileSystem` trait and its local implementation.
//!
//! `FileSystem` is the face every caller programs against (spec §5); `LocalFileSystem` does
//! the work on this machine, the client crate speaks the same trait over JSON-RPC, and the
//! server's handlers decode a request, call `LocalFileSystem` and encode the reply.
//!
//! Paths are native here: the wire's `PathUri` is decoded by the caller. Every operation
//! runs on tokio's blocking pool, so a slow disk or a FIFO never stalls the runtime. An
//! operation with a sandbox whose policy restricts the filesystem runs in the sandbox helper
//! process instead (see `sandboxed`); if that cannot be done, the operation fails and
//! nothing runs unconfined.
//!
//! Streaming handles (`fs/open` and friends) are per connection: see `HandleTable`; so are
//! `fs/watchMissing` watches: see `MissingWatches`.

mod copy;
mod error;
mod handles;
mod ops;
pub mod sandboxed;
mod walk;
mod watch;

use std::future::Future;
use std::path::{Path, PathBuf};

use exec_server_protocol::fs::{DirectoryEntry, Metadata, SandboxContext, WalkOptions, WalkResult};
use serde::{Deserialize, Serialize};

pub use copy::copy;
pub use error::FsError;
pub use handles::MAX_HANDLE_ID_BYTES;
pub use handles::{open_for_handle, HandleTable, Reservation, MAX_BLOCK_LEN, MAX_HANDLES};
pub use ops::{
    canonicalize, check_no_symlinks, create_directory, metadata, read_directory, read_file, remove,
    write_file,
};
pub use walk::{walk, MAX_WALK_DEPTH, MAX_WALK_DIRECTORIES, MAX_WALK_ENTRIES};
pub use watch::{
    MissingWatches, OnFire, WatchError, MAX_WATCHED_PATHS, MAX_WATCHES, POLL_INTERVAL,
};

/// Default cap on `fs/readFile`: 48 MiB raw, so the base64 reply fits a 64 MiB message.
/// Larger files are read with `fs/open` + `fs/readBlock`.
pub const DEFAULT_READ_FILE_LIMIT: u64 = 48 * 1024 * 1024;

/// Options of `read_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOptions {
    /// Follow a final symlink.
    pub follow_symlinks: bool,
}

/// Options of `write_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    /// Follow a final symlink.
    pub follow_symlinks: bool,
}

/// Options of `create_directory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDirectoryOptions {
    /// Create missing parents; an existing directory is then not an error.
    pub recursive: bool,
    /// Allow symlinks in the path.
    pub follow_symlinks: bool,
}

/// Options of `get_metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataOptions {
    /// Describe a symlink's target (the path must then contain no symlink when false).
    pub follow_symlinks: bool,
}

/// Options of `remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveOptions {
    /// Remove a directory with its content.
    pub recursive: bool,
    /// A missing path is not an error.
    pub force: bool,
    /// Allow symlinks among the parent directories.
    pub follow_symlinks: bool,
}

/// Options of `copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOptions {
    /// Required for a directory source.
    pub recursive: bool,
}

/// The filesystem operations of the protocol, local or remote.
///
/// `sandbox` is the request's sandbox context; `None` means unsandboxed.
pub trait FileSystem: Send + Sync {
    /// The whole content of a regular file.
    fn read_file(
        &self,
        path: &Path,
        opts: ReadOptions,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<Vec<u8>, FsError>> + Send;

    /// Creates or replaces a file (the parent must exist).
    fn write_file(
        &self,
        path: &Path,
        data: Vec<u8>,
        opts: WriteOptions,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<(), FsError>> + Send;

    /// Creates a directory.
    fn create_directory(
        &self,
        path: &Path,
        opts: CreateDirectoryOptions,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<(), FsError>> + Send;

    /// Type, size and times of a path.
    fn get_metadata(
        &self,
        path: &Path,
        opts: MetadataOptions,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<Metadata, FsError>> + Send;

    /// The path with symlinks and dot segments resolved.
    fn canonicalize(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<PathBuf, FsError>> + Send;

    /// The entries of a directory.
    fn read_directory(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<Vec<DirectoryEntry>, FsError>> + Send;

    /// A bounded breadth-first walk.
    fn walk(
        &self,
        path: &Path,
        opts: WalkOptions,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<WalkResult, FsError>> + Send;

    /// Removes a file, link or directory.
    fn remove(
        &self,
        path: &Path,
        opts: RemoveOptions,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<(), FsError>> + Send;

    /// Copies a file, link or directory tree.
    fn copy(
        &self,
        source: &Path,
        destination: &Path,
        opts: CopyOptions,
        sandbox: Option<&SandboxContext>,
    ) -> impl Future<Output = Result<(), FsError>> + Send;
}

/// The filesystem of this machine.
#[derive(Debug, Clone)]
pub struct LocalFileSystem {
    read_limit: u64,
}

impl Default for LocalFileSystem {
    fn default() -> Self {
        LocalFileSystem {
            read_limit: DEFAULT_READ_FILE_LIMIT,
        }
    }
}

impl LocalFileSystem {
    /// A local filesystem whose `read_file` refuses files over `limit` bytes.
    pub fn with_read_limit(limit: u64) -> Self {
        LocalFileSystem { read_limit: limit }
    }

    /// The `read_file` cap in bytes.
    pub fn read_limit(&self) -> u64 {
        self.read_limit
    }
}

/// Runs blocking filesystem work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, FsError>
where
    F: FnOnce() -> Result<T, FsError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FsError::TaskFailed(e.to_string()))?
}

/// Runs `op` in-process when there is no `confinement` ([`sandboxed::confinement`], or
/// [`sandboxed::read_confinement`] for an operation that only reads: a policy that lets every
/// path be read needs no helper for it, which saves a few milliseconds of fork, namespaces
/// and Landlock), otherwise in the sandbox helper.
async fn run<T>(
    confinement: Option<sandboxed::Confinement>,
    request: impl FnOnce() -> sandboxed::Request,
    decode: impl FnOnce(sandboxed::Response) -> Result<T, FsError>,
    op: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, FsError>
where
    T: Send + 'static,
{
    match confinement {
        None => blocking(op).await,
        Some(policy) => decode(sandboxed::run_in_helper(policy, request()).await?),
    }
}

impl FileSystem for LocalFileSystem {
    async fn read_file(
        &self,
        path: &Path,
        opts: ReadOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Vec<u8>, FsError> {
        let (p, limit) = (path.to_path_buf(), self.read_limit);
        let req = || sandboxed::Request::ReadFile {
            path: p.clone(),
            opts,
            limit,
        };
        run(
            sandboxed::read_confinement(sandbox)?,
            req,
            sandboxed::Response::into_bytes,
            {
                let p = path.to_path_buf();
                move || read_file(&p, opts.follow_symlinks, limit)
            },
        )
        .await
    }

    async fn write_file(
        &self,
        path: &Path,
        data: Vec<u8>,
        opts: WriteOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let p = path.to_path_buf();
        match sandboxed::confinement(sandbox)? {
            None => blocking(move || write_file(&p, &data, opts.follow_symlinks)).await,
            Some(policy) => sandboxed::run_in_helper(
                policy,
                sandboxed::Request::WriteFile {
                    path: p,
                    opts,
                    data: data.into(),
                },
            )
            .await?
            .into_unit(),
        }
    }

    async fn create_directory(
        &self,
        path: &Path,
        opts: CreateDirectoryOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let p = path.to_path_buf();
        let req = {
            let p = p.clone();
            move || sandboxed::Request::CreateDirectory { path: p, opts }
        };
        run(
            sandboxed::confinement(sandbox)?,
            req,
            sandboxed::Response::into_unit,
            move || create_directory(&p, opts),
        )
        .await
    }

    async fn get_metadata(
        &self,
        path: &Path,
        opts: MetadataOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Metadata, FsError> {
        let p = path.to_path_buf();
        let req = {
            let p = p.clone();
            move || sandboxed::Request::GetMetadata { path: p, opts }
        };
        run(
            sandboxed::read_confinement(sandbox)?,
            req,
            sandboxed::Response::into_metadata,
            move || metadata(&p, opts.follow_symlinks),
        )
        .await
    }

    async fn canonicalize(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> Result<PathBuf, FsError> {
        let p = path.to_path_buf();
        let req = {
            let p = p.clone();
            move || sandboxed::Request::Canonicalize { path: p }
        };
        run(
            sandboxed::read_confinement(sandbox)?,
            req,
            sandboxed::Response::into_path,
            move || canonicalize(&p),
        )
        .await
    }

    async fn read_directory(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Vec<DirectoryEntry>, FsError> {
        let p = path.to_path_buf();
        let req = {
            let p = p.clone();
            move || sandboxed::Request::ReadDirectory { path: p }
        };
        run(
            sandboxed::read_confinement(sandbox)?,
            req,
            sandboxed::Response::into_entries,
            move || read_directory(&p),
        )
        .await
    }

    async fn walk(
        &self,
        path: &Path,
        opts: WalkOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<WalkResult, FsError> {
        let p = path.to_path_buf();
        let req = {
            let (p, opts) = (p.clone(), opts.clone());
            move || sandboxed::Request::Walk { path: p, opts }
        };
        run(
            sandboxed::read_confinement(sandbox)?,
            req,
            sandboxed::Response::into_walk,
            move || walk(&p, &opts),
        )
        .await
    }

    async fn remove(
        &self,
        path: &Path,
        opts: RemoveOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let p = path.to_path_buf();
        let req = {
            let p = p.clone();
            move || sandboxed::Request::Remove { path: p, opts }
        };
        run(
            sandboxed::confinement(sandbox)?,
            req,
            sandboxed::Response::into_unit,
            move || remove(&p, opts),
        )
        .await
    }

    async fn copy(
        &self,
        source: &Path,
        destination: &Path,
        opts: CopyOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let (s, d) = (source.to_path_buf(), destination.to_path_buf());
        let req = {
            let (s, d) = (s.clone(), d.clone());
            move || sandboxed::Request::Copy {
                source: s,
                destination: d,
                opts,
            }
        };
        run(
            sandboxed::confinement(sandbox)?,
            req,
            sandboxed::Response::into_unit,
            move || copy(&s, &d, opts.recursive),
        )
        .await
    }
}

impl HandleTable {
    /// Opens `path` under `id`, inside the sandbox helper when the policy restricts the
    /// filesystem (the helper passes the opened descriptor back).
    pub async fn open_sandboxed(
        &self,
        id: &str,
        path: &Path,
        mode: exec_server_protocol::fs::OpenMode,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let confinement = match mode {
            exec_server_protocol::fs::OpenMode::Read => sandboxed::read_confinement(sandbox)?,
            exec_server_protocol::fs::OpenMode::Replace => sandboxed::confinement(sandbox)?,
        };
        match confinement {
            None => self.open(id, path, mode).await,
            Some(policy) => {
                let reservation = self.reserve(id)?;
                let file = sandboxed::open_in_helper(policy, path.to_path_buf(), mode).await?;
                reservation.fill(file);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_file_system_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let fs = LocalFileSystem::default();
        let p = d.path().join("f");
        fs.write_file(
            &p,
            b"hello".to_vec(),
            WriteOptions {
                follow_symlinks: true,
            },
            None,
        )
        .await
        .unwrap();
        let data = fs
            .read_file(
                &p,
                ReadOptions {
                    follow_symlinks: true,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(data, b"hello");
        let m = fs
            .get_metadata(
                &p,
                MetadataOptions {
                    follow_symlinks: true,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(m.size, 5);
    }

    #[tokio::test]
    async fn read_limit_is_configurable() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let fs = LocalFileSystem::with_read_limit(4);
        let e = fs
            .read_file(
                &p,
                ReadOptions {
                    follow_symlinks: true,
                },
                None,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("fs/open and fs/readBlock"));
    }
}
