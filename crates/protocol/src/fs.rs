//! `fs/*` methods (spec §5) and the sandbox object (§5.12).

use serde::{Deserialize, Serialize};

use crate::bytes::{Base64, Base64Data};
use crate::PathUri;

fn yes() -> bool {
    true
}

/// Params of `fs/readFile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileParams {
    /// The file.
    pub path: PathUri,
    /// Follow a final symlink (default true).
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Result of `fs/readFile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileResult {
    /// The whole file.
    pub data_base64: Base64,
}

/// Params of `fs/writeFile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileParams {
    /// The file (created or truncated; the parent must exist).
    pub path: PathUri,
    /// The content.
    pub data_base64: Base64Data,
    /// Follow a final symlink (default true).
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Params of `fs/createDirectory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDirectoryParams {
    /// The directory.
    pub path: PathUri,
    /// Create parents too (default true).
    #[serde(default = "yes")]
    pub recursive: bool,
    /// Follow symlinks (default true).
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Params of `fs/getMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMetadataParams {
    /// The path.
    pub path: PathUri,
    /// Follow symlinks (default true).
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Result of `fs/getMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// A directory (the target's type for a followed symlink).
    pub is_directory: bool,
    /// A regular file.
    pub is_file: bool,
    /// The path itself is a symlink.
    pub is_symlink: bool,
    /// Size in bytes.
    pub size: u64,
    /// Birth time in ms since the epoch, 0 when unknown.
    pub created_at_ms: i64,
    /// Modification time in ms since the epoch.
    pub modified_at_ms: i64,
}

/// Params of `fs/canonicalize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanonicalizeParams {
    /// The path.
    pub path: PathUri,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Result of `fs/canonicalize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalizeResult {
    /// Symlinks resolved, no trailing slash.
    pub path: PathUri,
}

/// Params of `fs/readDirectory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadDirectoryParams {
    /// The directory.
    pub path: PathUri,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryEntry {
    /// The name.
    pub file_name: String,
    /// A directory (symlinks typed by target).
    pub is_directory: bool,
    /// A regular file (symlinks typed by target).
    pub is_file: bool,
}

/// Result of `fs/readDirectory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDirectoryResult {
    /// Entries in iteration order.
    pub entries: Vec<DirectoryEntry>,
}

/// Limits of `fs/walk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkOptions {
    /// At most 64.
    pub max_depth: usize,
    /// At most 10000.
    pub max_directories: usize,
    /// At most 50000.
    pub max_entries: usize,
    /// Descend into symlinked directories.
    pub follow_directory_symlinks: bool,
    /// List dot-directories but do not descend.
    #[serde(default)]
    pub prune_hidden_directories: bool,
}

/// Params of `fs/walk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkParams {
    /// The root.
    pub path: PathUri,
    /// Limits.
    pub options: WalkOptions,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Kind of a walked entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WalkEntryKind {
    /// A file.
    File,
    /// A directory.
    Directory,
}

/// A walked entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkEntry {
    /// Its path.
    pub path: PathUri,
    /// Its kind.
    pub kind: WalkEntryKind,
}

/// A path the walk could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkError {
    /// The path.
    pub path: PathUri,
    /// The OS error text.
    pub message: String,
}

/// Result of `fs/walk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkResult {
    /// Entries, breadth-first, name-sorted per directory.
    pub entries: Vec<WalkEntry>,
    /// Errors met on the way.
    pub errors: Vec<WalkError>,
    /// A limit stopped the walk.
    pub truncated: bool,
}

/// Params of `fs/remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveParams {
    /// The path.
    pub path: PathUri,
    /// Remove directory trees (default true).
    #[serde(default = "yes")]
    pub recursive: bool,
    /// A missing path is not an error (default true).
    #[serde(default = "yes")]
    pub force: bool,
    /// Follow symlinks (default true).
    #[serde(default = "yes")]
    pub follow_symlinks: bool,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Params of `fs/copy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyParams {
    /// The source.
    pub source_path: PathUri,
    /// The destination.
    pub destination_path: PathUri,
    /// Required; must be true for a directory source.
    pub recursive: bool,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Mode of a streaming handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpenMode {
    /// Read an existing regular file.
    #[default]
    Read,
    /// Create or truncate for writing.
    Replace,
}

/// Params of `fs/open`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenParams {
    /// Client-chosen id, 1..=32 bytes, unique per connection.
    pub handle_id: String,
    /// The file.
    pub path: PathUri,
    /// `read` (default) or `replace`.
    #[serde(default)]
    pub mode: OpenMode,
    /// Run the operation under this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxContext>,
}

/// Result of `fs/open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenResult {
    /// The same id.
    pub handle_id: String,
}

/// Params of `fs/readBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadBlockParams {
    /// The handle.
    pub handle_id: String,
    /// Byte offset.
    pub offset: u64,
    /// 1..=1048576.
    pub len: usize,
}

/// Result of `fs/readBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBlockResult {
    /// The bytes read.
    pub chunk: Base64,
    /// Fewer than `len` bytes were returned.
    pub eof: bool,
}

/// Params of `fs/writeBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteBlockParams {
    /// The handle.
    pub handle_id: String,
    /// Byte offset.
    pub offset: u64,
    /// 1..=1048576 decoded bytes.
    pub chunk: Base64Data,
}

/// Params of `fs/close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseParams {
    /// The handle.
    pub handle_id: String,
}

/// Params of `fs/watchMissing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchMissingParams {
    /// Client-chosen id.
    pub watch_id: u64,
    /// Paths expected to be missing.
    pub missing: Vec<String>,
}

/// Result of `fs/watchMissing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchMissingResult {
    /// The watch was installed.
    pub watching: bool,
}

/// `fs/missingChanged` params: a watched missing path came into existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingChangedNotification {
    /// The watch that fired.
    pub watch_id: u64,
}

/// A filesystem sandbox (`WireFileSystemSandboxContext`, spec §5.12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxContext {
    /// The permission profile (snake_case inside).
    pub permissions: PermissionProfile,
    /// Windows sandbox level (ignored on Linux).
    pub windows_sandbox_level: WindowsSandboxLevel,
    /// Windows proxy settings mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_sandbox_proxy_settings_mode: Option<WindowsProxySettingsMode>,
    /// Use the legacy Landlock implementation.
    #[serde(default)]
    pub use_legacy_landlock: bool,
    /// Directories used to interpret relative and special entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_context: Option<PolicyContext>,
    /// Legacy flat form of `policyContext.cwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathUri>,
    /// Legacy flat form of `policyContext.workspaceRoots`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_roots: Option<Vec<PathUri>>,
    /// Resolves home-relative entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_home_dir: Option<PathUri>,
    /// Resolves `tmpdir` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_directories: Option<Vec<PathUri>>,
}

/// Windows sandbox level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowsSandboxLevel {
    /// No Windows sandbox.
    Disabled,
    /// Restricted token.
    RestrictedToken,
    /// Elevated.
    Elevated,
    /// MXC.
    Mxc,
}

/// Windows proxy settings mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WindowsProxySettingsMode {
    /// Reconcile.
    Reconcile,
    /// Preserve.
    Preserve,
}

/// `policyContext`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyContext {
    /// The policy cwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathUri>,
    /// Project roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_roots: Option<Vec<PathUri>>,
}

/// The permission profile, internally tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PermissionProfile {
    /// No sandbox.
    Disabled,
    /// An outer sandbox the executor does not manage.
    External {
        /// Network access.
        network: NetworkAccess,
    },
    /// A sandbox the executor enforces.
    Managed {
        /// Filesystem rules.
        file_system: FileSystemPolicy,
        /// Network access.
        network: NetworkAccess,
    },
}

/// Network access of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkAccess {
    /// No network.
    Restricted,
    /// Full network.
    Enabled,
}

/// Filesystem rules of a managed profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileSystemPolicy {
    /// Everything allowed.
    Unrestricted,
    /// Only what the entries allow.
    Restricted {
        /// The rules.
        entries: Vec<FileSystemEntry>,
        /// Depth bound for glob scans.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        glob_scan_max_depth: Option<std::num::NonZeroU32>,
    },
}

/// One filesystem rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSystemEntry {
    /// What it applies to.
    pub path: EntryPath,
    /// The access granted.
    pub access: Access,
    /// What to do when the path is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_path_behavior: Option<MissingPathBehavior>,
}

/// Access of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read only.
    Read,
    /// Read and write.
    Write,
    /// Denied.
    Deny,
    /// No access.
    None,
}

/// Missing-path behaviour of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPathBehavior {
    /// Skip the rule.
    Skip,
}

/// The target of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryPath {
    /// An absolute path.
    Path {
        /// The path.
        path: PathUri,
    },
    /// A glob pattern.
    GlobPattern {
        /// The pattern.
        pattern: String,
    },
    /// A special location.
    Special {
        /// Which one.
        value: SpecialPath,
    },
}

/// A special location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecialPath {
    /// Its kind.
    pub kind: SpecialKind,
    /// Optional sub-path (for `project_roots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// Kinds of special locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialKind {
    /// `/`.
    Root,
    /// A minimal set of system paths.
    Minimal,
    /// The policy cwd.
    CurrentWorkingDirectory,
    /// The project roots.
    ProjectRoots,
    /// `$TMPDIR`.
    Tmpdir,
    /// `/tmp`.
    SlashTmp,
    /// Unknown.
    Unknown,
}

crate::method!(
    /// `fs/readFile`.
    ReadFile,
    "fs/readFile",
    ReadFileParams,
    ReadFileResult
);
crate::method!(
    /// `fs/writeFile`.
    WriteFile,
    "fs/writeFile",
    WriteFileParams,
    crate::Empty
);
crate::method!(
    /// `fs/createDirectory`.
    CreateDirectory,
    "fs/createDirectory",
    CreateDirectoryParams,
    crate::Empty
);
crate::method!(
    /// `fs/getMetadata`.
    GetMetadata,
    "fs/getMetadata",
    GetMetadataParams,
    Metadata
);
crate::method!(
    /// `fs/canonicalize`.
    Canonicalize,
    "fs/canonicalize",
    CanonicalizeParams,
    CanonicalizeResult
);
crate::method!(
    /// `fs/readDirectory`.
    ReadDirectory,
    "fs/readDirectory",
    ReadDirectoryParams,
    ReadDirectoryResult
);
crate::method!(
    /// `fs/walk`.
    Walk,
    "fs/walk",
    WalkParams,
    WalkResult
);
crate::method!(
    /// `fs/remove`.
    Remove,
    "fs/remove",
    RemoveParams,
    crate::Empty
);
crate::method!(
    /// `fs/copy`.
    Copy,
    "fs/copy",
    CopyParams,
    crate::Empty
);
crate::method!(
    /// `fs/open`.
    Open,
    "fs/open",
    OpenParams,
    OpenResult
);
crate::method!(
    /// `fs/readBlock`.
    ReadBlock,
    "fs/readBlock",
    ReadBlockParams,
    ReadBlockResult
);
crate::method!(
    /// `fs/writeBlock`.
    WriteBlock,
    "fs/writeBlock",
    WriteBlockParams,
    crate::Empty
);
crate::method!(
    /// `fs/close`.
    Close,
    "fs/close",
    CloseParams,
    crate::Empty
);
crate::method!(
    /// `fs/watchMissing`.
    WatchMissing,
    "fs/watchMissing",
    WatchMissingParams,
    WatchMissingResult
);
crate::notification!(
    /// `fs/missingChanged`.
    MissingChanged,
    "fs/missingChanged",
    MissingChangedNotification
);
