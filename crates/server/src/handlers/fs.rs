//! `fs/*` handlers: decode the params, call core's `LocalFileSystem` or the connection's
//! `HandleTable` or `MissingWatches`, encode the result. Error codes come from `rpc_error::fs_error`.

use std::path::PathBuf;

use exec_server_core::fs::{
    CopyOptions, CreateDirectoryOptions, FileSystem, HandleTable, LocalFileSystem, MetadataOptions,
    ReadOptions, RemoveOptions, WriteOptions,
};
use exec_server_protocol::fs::{
    CanonicalizeParams, CanonicalizeResult, CloseParams, CopyParams, CreateDirectoryParams,
    GetMetadataParams, Metadata, OpenParams, OpenResult, ReadBlockParams, ReadDirectoryParams,
    ReadDirectoryResult, ReadFileParams, RemoveParams, WalkParams, WalkResult, WatchMissingParams,
    WatchMissingResult, WriteBlockParams, WriteFileParams,
};
use exec_server_protocol::{jsonrpc, Empty, Notification, PathUri};

use crate::connection::OutMsg;
use crate::dispatch::Call;
use crate::rpc_error::{fs_error, RpcError};

fn native(uri: &PathUri) -> Result<PathBuf, RpcError> {
    Ok(uri.to_path()?)
}

fn local() -> LocalFileSystem {
    LocalFileSystem::default()
}

/// `fs/readFile`: the file's bytes, encoded into the reply by `encode::read_file_result`
/// (as a `ReadFileResult`).
pub(crate) async fn read_file(limit: u64, p: ReadFileParams) -> Result<Vec<u8>, RpcError> {
    let path = native(&p.path)?;
    let opts = ReadOptions {
        follow_symlinks: p.follow_symlinks,
    };
    let data = LocalFileSystem::with_read_limit(limit)
        .read_file(&path, opts, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    Ok(data)
}

/// `fs/writeFile`.
pub(crate) async fn write_file(p: WriteFileParams) -> Result<Empty, RpcError> {
    let path = native(&p.path)?;
    let data = p.data_base64.into_bytes().map_err(|e| {
        RpcError::invalid_request(format!(
            "fs/writeFile requires valid base64 dataBase64: {e}"
        ))
    })?;
    let opts = WriteOptions {
        follow_symlinks: p.follow_symlinks,
    };
    local()
        .write_file(&path, data, opts, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    Ok(Empty {})
}

/// `fs/createDirectory`.
pub(crate) async fn create_directory(p: CreateDirectoryParams) -> Result<Empty, RpcError> {
    let path = native(&p.path)?;
    let opts = CreateDirectoryOptions {
        recursive: p.recursive,
        follow_symlinks: p.follow_symlinks,
    };
    local()
        .create_directory(&path, opts, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    Ok(Empty {})
}

/// `fs/getMetadata`.
pub(crate) async fn get_metadata(p: GetMetadataParams) -> Result<Metadata, RpcError> {
    let path = native(&p.path)?;
    let opts = MetadataOptions {
        follow_symlinks: p.follow_symlinks,
    };
    local()
        .get_metadata(&path, opts, p.sandbox.as_ref())
        .await
        .map_err(fs_error)
}

/// `fs/canonicalize`.
pub(crate) async fn canonicalize(p: CanonicalizeParams) -> Result<CanonicalizeResult, RpcError> {
    let path = native(&p.path)?;
    let resolved = local()
        .canonicalize(&path, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    let path = PathUri::from_path(&resolved).ok_or_else(|| {
        RpcError::internal(format!(
            "`{}` cannot be expressed as a URI",
            resolved.display()
        ))
    })?;
    Ok(CanonicalizeResult { path })
}

/// `fs/readDirectory`.
pub(crate) async fn read_directory(
    p: ReadDirectoryParams,
) -> Result<ReadDirectoryResult, RpcError> {
    let path = native(&p.path)?;
    let entries = local()
        .read_directory(&path, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    Ok(ReadDirectoryResult { entries })
}

/// `fs/walk`.
pub(crate) async fn walk(p: WalkParams) -> Result<WalkResult, RpcError> {
    let path = native(&p.path)?;
    local()
        .walk(&path, p.options, p.sandbox.as_ref())
        .await
        .map_err(fs_error)
}

/// `fs/remove`.
pub(crate) async fn remove(p: RemoveParams) -> Result<Empty, RpcError> {
    let path = native(&p.path)?;
    let opts = RemoveOptions {
        recursive: p.recursive,
        force: p.force,
        follow_symlinks: p.follow_symlinks,
    };
    local()
        .remove(&path, opts, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    Ok(Empty {})
}

/// `fs/copy`.
pub(crate) async fn copy(p: CopyParams) -> Result<Empty, RpcError> {
    let source = native(&p.source_path)?;
    let destination = native(&p.destination_path)?;
    let opts = CopyOptions {
        recursive: p.recursive,
    };
    local()
        .copy(&source, &destination, opts, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    Ok(Empty {})
}

/// `fs/open`.
pub(crate) async fn open(handles: &HandleTable, p: OpenParams) -> Result<OpenResult, RpcError> {
    let path = native(&p.path)?;
    handles
        .open_sandboxed(&p.handle_id, &path, p.mode, p.sandbox.as_ref())
        .await
        .map_err(fs_error)?;
    Ok(OpenResult {
        handle_id: p.handle_id,
    })
}

/// `fs/readBlock`: the bytes read and `eof`, encoded into the reply by
/// `encode::read_block_result` (as a `ReadBlockResult`).
pub(crate) async fn read_block(
    handles: &HandleTable,
    p: ReadBlockParams,
) -> Result<(Vec<u8>, bool), RpcError> {
    let data = handles
        .read_block(&p.handle_id, p.offset, p.len)
        .await
        .map_err(fs_error)?;
    let eof = data.len() < p.len;
    Ok((data, eof))
}

/// `fs/writeBlock`.
pub(crate) async fn write_block(
    handles: &HandleTable,
    p: WriteBlockParams,
) -> Result<Empty, RpcError> {
    let data = p.chunk.into_bytes().map_err(|e| {
        RpcError::invalid_request(format!("fs/writeBlock requires valid base64 chunk: {e}"))
    })?;
    handles
        .write_block(&p.handle_id, p.offset, data)
        .await
        .map_err(fs_error)?;
    Ok(Empty {})
}

/// `fs/close`.
pub(crate) async fn close(handles: &HandleTable, p: CloseParams) -> Result<Empty, RpcError> {
    handles.close(&p.handle_id);
    Ok(Empty {})
}

/// `fs/watchMissing`: watches belong to the connection. When one of the paths exists,
/// `fs/missingChanged` is sent once, after this request's reply, and the watch ends.
pub(crate) async fn watch_missing(
    call: Call,
    p: WatchMissingParams,
) -> Result<WatchMissingResult, RpcError> {
    use exec_server_protocol::fs::{MissingChanged, MissingChangedNotification};
    let paths = p
        .missing
        .iter()
        .map(|m| native(&PathUri::parse(m)?))
        .collect::<Result<Vec<_>, _>>()?;
    let replied = call.on_reply.queued();
    let out = call.out.clone();
    let watch_id = p.watch_id;
    let on_fire = Box::pin(async move {
        // The notification follows the reply even when a path exists already.
        let _ = replied.await;
        let note = MissingChangedNotification { watch_id };
        let text = jsonrpc::encode_notification(MissingChanged::NAME, &note);
        let _ = out.send(OutMsg::Text(text)).await;
    });
    let watching = call
        .watches
        .add(watch_id, paths, on_fire)
        .map_err(|e| RpcError::invalid_request(e.to_string()))?;
    Ok(WatchMissingResult { watching })
}
