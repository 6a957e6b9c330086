//! [`ClientError`]: every way a client call can fail, and [`io_error`], the one place where a
//! JSON-RPC error code becomes an `io::ErrorKind` again.

use std::io;
use std::sync::Arc;

use exec_server_protocol::{codes, ErrorObject};

use crate::transport::NoiseConnectError;

/// A failed client operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not be reached (connect, TLS, WebSocket handshake, spawning the stdio
    /// program).
    #[error("cannot connect to {target}: {reason}; check that the server is running and the address and token are right")]
    Connect {
        /// The URL or program.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// An executor in remote mode could not be reached through its registry and rendezvous
    /// (spec §10.7): the registry refused the token or has no executor, the rendezvous or the
    /// Noise handshake failed, or the executor's key changed.
    #[error("cannot connect to {target}: {error}")]
    Noise {
        /// The environment and registry.
        target: String,
        /// What went wrong.
        error: NoiseConnectError,
    },
    /// The server answered the request with an error.
    #[error("{}", .0.message)]
    Rpc(ErrorObject),
    /// The connection dropped before the reply arrived; the request may or may not have run.
    #[error("the connection to the server was lost")]
    Disconnected,
    /// The session could not be resumed after a disconnect (expired, or the server
    /// restarted); its processes are gone.
    #[error("the session could not be resumed: {0}")]
    SessionLost(String),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// No reply within the deadline.
    #[error("{what} timed out after {ms} ms")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The deadline in milliseconds.
        ms: u128,
    },
    /// A reply or notification did not have the expected shape.
    #[error("unexpected message from the server: {0}")]
    Protocol(String),
    /// Output of a process was evicted by the server before this client could read it again
    /// (after a long disconnect); the events after it are still delivered.
    #[error("process events {from_seq}..={to_seq} ({bytes} output bytes) are no longer retained by the server")]
    OutputLost {
        /// First lost seq.
        from_seq: u64,
        /// Last lost seq.
        to_seq: u64,
        /// Output bytes lost.
        bytes: u64,
    },
    /// The connection dropped before the reply to `process/start`, and the server could not
    /// tell afterwards whether the process ran (`process/status` kept answering `unknown`: the
    /// id was forgotten after its retention). The start was not sent again.
    #[error("cannot tell whether process {process_id} started: the server no longer knows the id, so it was not started again")]
    StartOutcomeUnknown {
        /// The process id.
        process_id: String,
    },
    /// A local I/O failure (reading a local file, the terminal, ...).
    #[error("{0}")]
    Io(Arc<io::Error>),
}

impl ClientError {
    /// The JSON-RPC error object when the server answered with an error.
    pub fn rpc(&self) -> Option<&ErrorObject> {
        match self {
            ClientError::Rpc(e) => Some(e),
            _ => None,
        }
    }

    /// The `io::ErrorKind` this error stands for (see [`io_error`]).
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            ClientError::Rpc(e) => io_error(e).kind(),
            ClientError::Connect { .. } => io::ErrorKind::ConnectionRefused,
            ClientError::Noise { error, .. } => match error {
                NoiseConnectError::Unauthorized { .. } => io::ErrorKind::PermissionDenied,
                NoiseConnectError::KeyChanged => io::ErrorKind::InvalidData,
                _ => io::ErrorKind::ConnectionRefused,
            },
            ClientError::Disconnected | ClientError::SessionLost(_) => {
                io::ErrorKind::ConnectionAborted
            }
            ClientError::Closed => io::ErrorKind::NotConnected,
            ClientError::Timeout { .. } => io::ErrorKind::TimedOut,
            ClientError::Protocol(_) | ClientError::OutputLost { .. } => io::ErrorKind::InvalidData,
            ClientError::StartOutcomeUnknown { .. } => io::ErrorKind::Other,
            ClientError::Io(e) => e.kind(),
        }
    }

    /// The error as an `io::Error` with the same kind and message.
    pub fn into_io(self) -> io::Error {
        match self {
            ClientError::Rpc(e) => io_error(&e),
            ClientError::Io(e) => io::Error::new(e.kind(), e.to_string()),
            other => io::Error::new(other.io_kind(), other.to_string()),
        }
    }

    /// True when retrying after a reconnect may succeed.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, ClientError::Disconnected)
    }

    /// True for a connect failure that trying again cannot fix (a refused token, a changed
    /// executor key, ...): the client stops recovering its session on it.
    pub fn is_permanent_connect_failure(&self) -> bool {
        matches!(self, ClientError::Noise { error, .. } if error.is_permanent())
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}

/// Turns a JSON-RPC error back into the `io::Error` the server started from, so code written
/// against the filesystem trait sees the same kind locally and remotely. This is the reverse of
/// the server's rule (spec §1.5) and the only place codes are mapped back:
/// * `-32004` → `NotFound`;
/// * a message ending in `(os error N)` → the kind of OS error `N` (so `-32603 File exists
///   (os error 17)` is `AlreadyExists`, `-32600 Permission denied (os error 13)` is
///   `PermissionDenied`);
/// * other `-32600` / `-32602` → `InvalidInput`;
/// * anything else → `Other`.
///
/// The message is kept as the error's text.
pub fn io_error(e: &ErrorObject) -> io::Error {
    let kind = match (e.code, os_error_number(&e.message)) {
        (codes::NOT_FOUND, _) => io::ErrorKind::NotFound,
        (_, Some(errno)) => io::Error::from_raw_os_error(errno).kind(),
        (codes::INVALID_REQUEST | codes::INVALID_PARAMS, None) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.message.clone())
}

/// `N` from a message ending in `(os error N)`.
fn os_error_number(message: &str) -> Option<i32> {
    let rest = message.strip_suffix(')')?;
    let at = rest.rfind("(os error ")?;
    rest[at + "(os error ".len()..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_back_to_io_kinds() {
        let kind = |code, msg: &str| io_error(&ErrorObject::new(code, msg)).kind();
        assert_eq!(
            kind(-32004, "No such file or directory (os error 2)"),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(-32004, "unknown file handle `h`"),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(-32603, "File exists (os error 17)"),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(-32600, "Permission denied (os error 13)"),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(-32600, "path `/tmp` is not a file"),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(kind(-32603, "boom"), io::ErrorKind::Other);
        let e = io_error(&ErrorObject::new(-32603, "Not a directory (os error 20)"));
        assert_eq!(e.to_string(), "Not a directory (os error 20)");
    }
}
