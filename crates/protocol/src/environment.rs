//! `environment/info` and `environment/status` (spec §7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PathUri;

/// The user's shell as the executor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellInfo {
    /// Stable id: `bash`, `zsh`, `sh`, ...
    pub name: String,
    /// Native path of the executable (not a URI).
    pub path: String,
}

/// What the executor reports about its environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentInfo {
    /// The user's login shell.
    pub shell: ShellInfo,
    /// The executor's release version.
    #[serde(default = "zero_version")]
    pub executor_version: String,
    /// Opaque build identity `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The executor process's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathUri>,
    /// The user's home directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_home_dir: Option<PathUri>,
    /// `linux`, `macos`, `windows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_os: Option<String>,
    /// Directories the executor prepends to `PATH`; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prepend_path_dirs: Vec<PathUri>,
    /// From `TMPDIR`, de-duplicated; `[]` when unset.
    #[serde(default)]
    pub temporary_directories: Vec<PathUri>,
    /// The system temporary directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<PathUri>,
    /// Feature flags; readers default missing keys to false.
    #[serde(default)]
    pub capabilities: BTreeMap<String, bool>,
}

fn zero_version() -> String {
    "0.0.0".into()
}

/// Result of `environment/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentStatus {
    /// Always `ready` for a connection that can answer.
    pub status: String,
}

crate::method!(
    /// `environment/info`: the same object `initialize` returns.
    Info,
    "environment/info",
    (),
    EnvironmentInfo
);
crate::method!(
    /// `environment/status`: a cheap liveness check.
    Status,
    "environment/status",
    (),
    EnvironmentStatus
);
