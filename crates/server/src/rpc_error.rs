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
