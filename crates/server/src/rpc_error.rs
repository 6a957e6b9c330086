//! The one place where handler outcomes become JSON-RPC error objects.

use exec_server_protocol::codes;
use exec_server_protocol::ErrorObject;

/// An error reply: code, message and optional data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError(pub(crate) ErrorObject);

impl RpcError {
    /// An error with a code and message.
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError(ErrorObject::new(code, message))
    }

    /// `-32600`.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_REQUEST, message)
    }

    /// `-32602`.
    pub(crate) fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }

    /// `-32603`.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL_ERROR, message)
    }

    /// Attaches `data`.
    pub(crate) fn with_data(mut self, data: serde_json::Value) -> Self {
        self.0.data = Some(data);
        self
    }
}

impl From<exec_server_protocol::PathUriError> for RpcError {
    fn from(e: exec_server_protocol::PathUriError) -> Self {
        RpcError::new(e.code(), e.to_string())
    }
}

/// The fs rule of spec §1.5: an OS error's kind picks the code (`NotFound` → `-32004`,
/// `InvalidInput`/`PermissionDenied` → `-32600`, anything else → `-32603`) and its display
/// text is the message; the protocol's own failures carry their spec text.
pub(crate) fn fs_error(e: exec_server_core::fs::FsError) -> RpcError {
    use exec_server_core::fs::FsError;
    use std::io::ErrorKind;
    let code = match &e {
        FsError::Io(io) => match io.kind() {
            ErrorKind::NotFound => codes::NOT_FOUND,
            ErrorKind::InvalidInput | ErrorKind::PermissionDenied => codes::INVALID_REQUEST,
            _ => codes::INTERNAL_ERROR,
        },
        FsError::UnknownHandle(_) => codes::NOT_FOUND,
        FsError::SandboxNeedsCwd | FsError::SandboxPolicy(_) => codes::INVALID_PARAMS,
        FsError::NotAFile(_)
        | FsError::CopyNeedsRecursive
        | FsError::CopyIntoItself
        | FsError::SymlinkInPath
        | FsError::FileTooLarge { .. }
        | FsError::WalkLimits
        | FsError::HandleExists(_)
        | FsError::TooManyHandles
        | FsError::HandleIdEmpty
        | FsError::HandleIdTooLong
        | FsError::ReadBlockLength
        | FsError::WriteBlockLength => codes::INVALID_REQUEST,
        _ => codes::INTERNAL_ERROR,
    };
    RpcError::new(code, e.to_string())
}

/// Spec §6: a request the caller got wrong (method, URL, headers, environment variables) is
/// `-32602`; a failure while carrying it out (connect, DNS, TLS, timeout, body) is `-32603`.
pub(crate) fn http_error(e: exec_server_core::http::HttpError) -> RpcError {
    let code = if e.is_invalid_request() {
        codes::INVALID_PARAMS
    } else {
        codes::INTERNAL_ERROR
    };
    RpcError::new(code, e.to_string())
}

#[cfg(test)]
mod http_error_tests {
    use super::*;
    use exec_server_core::http::HttpError;

    #[test]
    fn caller_mistakes_are_invalid_params_and_failures_internal() {
        let r = http_error(HttpError::UnsupportedScheme("ftp".into()));
        assert_eq!(r.0.code, -32602);
        assert_eq!(
            r.0.message,
            "http/request only supports http and https URLs, got ftp"
        );
        assert_eq!(
            http_error(HttpError::BodyTooLarge { limit: 1 }).0.code,
            -32603
        );
    }
}

#[cfg(test)]
mod fs_error_tests {
    use super::*;
    use exec_server_core::fs::FsError;

    fn code(e: FsError) -> (i64, String) {
        let r = fs_error(e);
        (r.0.code, r.0.message)
    }

    #[test]
    fn os_errors_map_by_kind() {
        let os = |n| FsError::Io(std::io::Error::from_raw_os_error(n));
        assert_eq!(
            code(os(2)),
            (-32004, "No such file or directory (os error 2)".into())
        );
        assert_eq!(code(os(13)).0, -32600);
        assert_eq!(code(os(30)).0, -32603);
        assert_eq!(code(os(17)).0, -32603);
    }

    #[test]
    fn protocol_failures_have_their_codes() {
        assert_eq!(
            code(FsError::UnknownHandle("h".into())),
            (-32004, "unknown file handle `h`".into())
        );
        assert_eq!(code(FsError::TooManyHandles).0, -32600);
        assert_eq!(code(FsError::SandboxNeedsCwd).0, -32602);
        assert_eq!(code(FsError::SandboxUnavailable("x".into())).0, -32603);
    }
}
