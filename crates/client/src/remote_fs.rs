//! [`RemoteFileSystem`]: core's `FileSystem` trait spoken over JSON-RPC, so code written against
//! the trait runs unchanged on a remote executor. Errors come back through [`io_error`]
//! (`-32004` is `NotFound` again, `(os error N)` keeps its kind) with the server's text.

use std::path::{Path, PathBuf};

use exec_server_core::fs::{
    CopyOptions, CreateDirectoryOptions, FileSystem, FsError, MetadataOptions, ReadOptions,
    RemoveOptions, WriteOptions,
};
use exec_server_protocol::bytes::Base64Data;
use exec_server_protocol::fs::{self as wire, DirectoryEntry, Metadata, SandboxContext};
use exec_server_protocol::fs::{WalkOptions, WalkResult};
use exec_server_protocol::PathUri;

use crate::client::Client;
use crate::error::{io_error, ClientError};

/// The filesystem of the executor behind a [`Client`].
#[derive(Debug, Clone)]
pub struct RemoteFileSystem {
    client: Client,
}

impl RemoteFileSystem {
    /// The filesystem of `client`'s executor.
    pub fn new(client: Client) -> Self {
        RemoteFileSystem { client }
    }
}

/// A native path as a `PathUri`; relative paths are refused as the server would.
pub fn uri(path: &Path) -> Result<PathUri, FsError> {
    PathUri::from_path(path).ok_or_else(|| {
        FsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("path `{}` is not absolute", path.display()),
        ))
    })
}

/// A client error as the `FsError` a local call would have given.
fn fs_err(e: ClientError) -> FsError {
    match e {
        ClientError::Rpc(obj) => FsError::Io(io_error(&obj)),
        other => FsError::Io(other.into_io()),
    }
}

fn native(u: &PathUri) -> Result<PathBuf, FsError> {
    u.to_path().map_err(|e| {
        FsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        ))
    })
}

impl FileSystem for RemoteFileSystem {
    async fn read_file(
        &self,
        path: &Path,
        opts: ReadOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Vec<u8>, FsError> {
        let p = wire::ReadFileParams {
            path: uri(path)?,
            follow_symlinks: opts.follow_symlinks,
            sandbox: sandbox.cloned(),
        };
        let r = self
            .client
            .call_retrying::<wire::ReadFile>(p)
            .await
            .map_err(fs_err)?;
        r.data_base64
            .decode()
            .map_err(|e| FsError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    async fn write_file(
        &self,
        path: &Path,
        data: Vec<u8>,
        opts: WriteOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let p = wire::WriteFileParams {
            path: uri(path)?,
            data_base64: Base64Data::new(data),
            follow_symlinks: opts.follow_symlinks,
            sandbox: sandbox.cloned(),
        };
        // Writing the same whole content again is harmless.
        self.client
            .call_retrying::<wire::WriteFile>(p)
            .await
            .map_err(fs_err)?;
        Ok(())
    }

    async fn create_directory(
        &self,
        path: &Path,
        opts: CreateDirectoryOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let p = wire::CreateDirectoryParams {
            path: uri(path)?,
            recursive: opts.recursive,
            follow_symlinks: opts.follow_symlinks,
            sandbox: sandbox.cloned(),
        };
        self.client
            .call::<wire::CreateDirectory>(p)
            .await
            .map_err(fs_err)?;
        Ok(())
    }

    async fn get_metadata(
        &self,
        path: &Path,
        opts: MetadataOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Metadata, FsError> {
        let p = wire::GetMetadataParams {
            path: uri(path)?,
            follow_symlinks: opts.follow_symlinks,
            sandbox: sandbox.cloned(),
        };
        self.client
            .call_retrying::<wire::GetMetadata>(p)
            .await
            .map_err(fs_err)
    }

    async fn canonicalize(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> Result<PathBuf, FsError> {
        let p = wire::CanonicalizeParams {
            path: uri(path)?,
            sandbox: sandbox.cloned(),
        };
        let r = self
            .client
            .call_retrying::<wire::Canonicalize>(p)
            .await
            .map_err(fs_err)?;
        native(&r.path)
    }

    async fn read_directory(
        &self,
        path: &Path,
        sandbox: Option<&SandboxContext>,
    ) -> Result<Vec<DirectoryEntry>, FsError> {
        let p = wire::ReadDirectoryParams {
            path: uri(path)?,
            sandbox: sandbox.cloned(),
        };
        let r = self
            .client
            .call_retrying::<wire::ReadDirectory>(p)
            .await
            .map_err(fs_err)?;
        Ok(r.entries)
    }

    async fn walk(
        &self,
        path: &Path,
        opts: WalkOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<WalkResult, FsError> {
        let p = wire::WalkParams {
            path: uri(path)?,
            options: opts,
            sandbox: sandbox.cloned(),
        };
        self.client
            .call_retrying::<wire::Walk>(p)
            .await
            .map_err(fs_err)
    }

    async fn remove(
        &self,
        path: &Path,
        opts: RemoveOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let p = wire::RemoveParams {
            path: uri(path)?,
            recursive: opts.recursive,
            force: opts.force,
            follow_symlinks: opts.follow_symlinks,
            sandbox: sandbox.cloned(),
        };
        self.client.call::<wire::Remove>(p).await.map_err(fs_err)?;
        Ok(())
    }

    async fn copy(
        &self,
        source: &Path,
        destination: &Path,
        opts: CopyOptions,
        sandbox: Option<&SandboxContext>,
    ) -> Result<(), FsError> {
        let p = wire::CopyParams {
            source_path: uri(source)?,
            destination_path: uri(destination)?,
            recursive: opts.recursive,
            sandbox: sandbox.cloned(),
        };
        self.client.call::<wire::Copy>(p).await.map_err(fs_err)?;
        Ok(())
    }
}
