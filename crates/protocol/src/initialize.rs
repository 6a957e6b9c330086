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
    /// With `resumeSessionId` (extension): for each process, the last seq the client has; the
    /// resumed session pushes that process's notifications again from the next one (a
    /// `process/gap` first when some were evicted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_after: Option<std::collections::HashMap<String, u64>>,
    /// Opt in to `process/heartbeat` every this many milliseconds (extension; 100 to
    /// 3,600,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
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
