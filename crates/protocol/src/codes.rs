//! JSON-RPC error codes used on the wire (spec §1.5).

/// Invalid request: lifecycle errors, unknown ids, semantic errors, malformed frames.
pub const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Params that fail to decode or validate.
pub const INVALID_PARAMS: i64 = -32602;
/// OS errors not mapped elsewhere, spawn failures, HTTP failures.
pub const INTERNAL_ERROR: i64 = -32603;
/// Filesystem "not found" and unknown file handles.
pub const NOT_FOUND: i64 = -32004;
/// A session is already attached to another connection.
pub const SESSION_ALREADY_ATTACHED: i64 = -32010;
