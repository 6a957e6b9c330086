//! `initialize` / `initialized` (spec §2).

use serde::{Deserialize, Serialize};

use crate::environment::EnvironmentInfo;

/// Params of `initialize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// Free text naming the client.
    pub client_name: String,
    /// Resume this detached session instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
}

/// Result of `initialize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    /// The session id (unguessable; the same id when resuming).
    pub session_id: String,
    /// The executor's environment, as `environment/info` reports it.
    pub environment_info: EnvironmentInfo,
}

crate::method!(
    /// `initialize`: opens or resumes a session.
    Initialize,
    "initialize",
    InitializeParams,
    InitializeResult
);

/// The `initialized` notification name (client to server).
pub const INITIALIZED: &str = "initialized";
