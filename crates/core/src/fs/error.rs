//! `FsError`: every way a filesystem operation can fail.
//!
//! OS failures keep their `io::Error` so the server can pick the JSON-RPC code from its kind
//! (spec §1.5); the other variants are the distinct failures the protocol names, and their
//! `Display` text is the exact wire message.

use std::io;
use std::path::PathBuf;

use super::handles::{MAX_BLOCK_LEN, MAX_HANDLES, MAX_HANDLE_ID_BYTES};
use super::walk::{MAX_WALK_DEPTH, MAX_WALK_DIRECTORIES, MAX_WALK_ENTRIES};

/// A failed filesystem operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The operating system refused; the message is the OS text (`… (os error N)`).
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The path names something other than a regular file (a directory, a FIFO, …).
    #[error("path `{}` is not a file", .0.display())]
    NotAFile(PathBuf),
    /// `fs/copy` of a directory without `recursive: true`.
    #[error("fs/copy requires recursive: true when sourcePath is a directory")]
    CopyNeedsRecursive,
    /// `fs/copy` of a directory into itself or one of its descendants.
    #[error("fs/copy cannot copy a directory to itself or one of its descendants")]
    CopyIntoItself,
    /// `followSymlinks: false` and a component of the path is a symlink.
    #[error("path contains a symbolic link")]
    SymlinkInPath,
    /// `fs/readFile` of a file larger than the configured cap.
    #[error(
        "file is {size} bytes, over the fs/readFile limit of {limit} bytes; \
         read it with fs/open and fs/readBlock"
    )]
    FileTooLarge {
        /// The file's size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// `fs/walk` limits above the maximums.
    #[error(
        "filesystem walk limits exceed maximums: depth={MAX_WALK_DEPTH}, \
         directories={MAX_WALK_DIRECTORIES}, entries={MAX_WALK_ENTRIES}"
    )]
    WalkLimits,
    /// `fs/open` with an id that is already open on this connection.
    #[error("file handle `{0}` already exists")]
    HandleExists(String),
    /// A handle id this connection does not hold.
    #[error("unknown file handle `{0}`")]
    UnknownHandle(String),
    /// The connection already holds the maximum number of handles.
    #[error("at most {MAX_HANDLES} file handles may be open per connection")]
    TooManyHandles,
    /// An empty handle id.
    #[error("file handle ID must not be empty")]
    HandleIdEmpty,
    /// A handle id longer than the maximum.
    #[error("file handle ID must not exceed {MAX_HANDLE_ID_BYTES} bytes")]
    HandleIdTooLong,
    /// `fs/readBlock` length outside 1..=1 MiB.
    #[error("file read block length must be between 1 and {MAX_BLOCK_LEN}")]
    ReadBlockLength,
    /// `fs/writeBlock` chunk outside 1..=1 MiB.
    #[error("file write block length must be between 1 and {MAX_BLOCK_LEN}")]
    WriteBlockLength,
    /// A sandbox policy that needs a cwd came without one.
    #[error("file system sandbox context with dynamic permissions requires cwd")]
    SandboxNeedsCwd,
    /// The sandbox context names paths this host cannot use.
    #[error("invalid filesystem sandbox: {0}")]
    SandboxPolicy(String),
    /// The sandbox cannot be applied here; the operation did not run.
    #[error("filesystem sandbox cannot be enforced on this executor: {0}")]
    SandboxUnavailable(String),
    /// The sandbox helper process failed before answering; the operation may not have run.
    #[error("filesystem sandbox helper failed: {0}")]
    SandboxHelper(String),
    /// The blocking task running the operation panicked or was cancelled.
    #[error("filesystem task failed: {0}")]
    TaskFailed(String),
}

impl FsError {
    /// The `io::ErrorKind` this error stands for, as a remote client should surface it.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            FsError::Io(e) => e.kind(),
            FsError::UnknownHandle(_) => io::ErrorKind::NotFound,
            FsError::SandboxUnavailable(_) | FsError::SandboxHelper(_) | FsError::TaskFailed(_) => {
                io::ErrorKind::Other
            }
            _ => io::ErrorKind::InvalidInput,
        }
    }
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        FsError::Io(e)
    }
}

impl From<nix::Error> for FsError {
    fn from(e: nix::Error) -> Self {
        FsError::Io(io::Error::from_raw_os_error(e as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_display_the_os_text() {
        let e = FsError::from(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.to_string(), "No such file or directory (os error 2)");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn protocol_messages_are_exact() {
        assert_eq!(
            FsError::WalkLimits.to_string(),
            "filesystem walk limits exceed maximums: depth=64, directories=10000, entries=50000"
        );
        assert_eq!(
            FsError::TooManyHandles.to_string(),
            "at most 128 file handles may be open per connection"
        );
        assert_eq!(
            FsError::ReadBlockLength.to_string(),
            "file read block length must be between 1 and 1048576"
        );
        assert_eq!(
            FsError::NotAFile("/tmp".into()).to_string(),
            "path `/tmp` is not a file"
        );
    }
}
