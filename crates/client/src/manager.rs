//! [`EnvironmentManager`]: which environments exist (`CODEX_HOME/environments.toml`, or the
//! `CODEX_EXEC_SERVER_URL` variable when there is no file) and a connected [`Environment`]
//! for each id, created on first use and cached.
//!
//! The file format and its validation follow spec §11.1 exactly:
//! top-level keys `default`, `include_local`, `environments`; entry keys `id`, `skills`, `url`,
//! `auth_bearer_token`, `program`, `args`, `env`, `cwd`, `connect_timeout_sec`,
//! `initialize_timeout_sec` (anything else is an error); ids are 1..=64 characters of
//! `[A-Za-z0-9_-]`, unique, and not `local` or `none`; exactly one of `url` (ws:// or wss://)
//! and `program`; `args`/`env`/`cwd` only with `program`; `auth_bearer_token` and
//! `connect_timeout_sec` only with `url`; `default` names a configured id or `local`, or is
//! `none` (any case) for no default.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::client::{Client, ConnectOptions};
use crate::environment::Environment;
use crate::error::ClientError;
use crate::transport::{Connector, StdioCommand, WebSocketTarget};

/// The id of the built-in environment of this machine.
pub const LOCAL_ID: &str = "local";
/// The id `CODEX_EXEC_SERVER_URL` creates.
pub const REMOTE_ID: &str = "remote";
/// The variable naming a single remote executor.
pub const URL_VAR: &str = "CODEX_EXEC_SERVER_URL";

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("exec-server protocol error: failed to parse environment config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's text.
        message: String,
    },
    /// A rule of the format was broken.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    default: Option<String>,
    include_local: Option<bool>,
    #[serde(default)]
    environments: Vec<EntryConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryConfig {
    id: String,
    #[allow(dead_code)] // Accepted for compatibility; skills are not an executor concern.
    skills: Option<toml::Value>,
    url: Option<String>,
    auth_bearer_token: Option<String>,
    program: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<String>,
    connect_timeout_sec: Option<f64>,
    initialize_timeout_sec: Option<f64>,
}

/// One configured environment.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    /// Its id.
    pub id: String,
    /// How to reach it; `None` for `local`.
    pub connector: Option<Connector>,
    /// Deadline of the `initialize` reply.
    pub initialize_timeout: Duration,
}

/// The environments that exist and the default one.
#[derive(Debug, Clone, Default)]
pub struct EnvironmentsConfig {
    /// Every environment, `local` included when it is.
    pub environments: Vec<EnvironmentSpec>,
    /// The default id, if any.
    pub default: Option<String>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn local_spec() -> EnvironmentSpec {
    EnvironmentSpec {
        id: LOCAL_ID.into(),
        connector: None,
        initialize_timeout: DEFAULT_TIMEOUT,
    }
}

fn seconds(field: &str, id: &str, v: Option<f64>) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(DEFAULT_TIMEOUT),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(ConfigError::Invalid(format!(
            "environment `{id}`: {field} must be a positive number of seconds, got {s}"
        ))),
    }
}

fn check_id(id: &str) -> Result<(), ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid(format!("environment id `{id}` {why}"));
    if id.is_empty() {
        return Err(ConfigError::Invalid(
            "environment id must not be empty".into(),
        ));
    }
    if id.trim() != id {
        return Err(invalid("must not have surrounding whitespace"));
    }
    if id.chars().count() > 64 {
        return Err(invalid("must be at most 64 characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(
            "may only contain ASCII letters, digits, `_` and `-`",
        ));
    }
    if id.eq_ignore_ascii_case(LOCAL_ID) || id.eq_ignore_ascii_case("none") {
        return Err(invalid("is reserved"));
    }
    Ok(())
}

impl EnvironmentsConfig {
    /// Parses and validates the text of `environments.toml`; relative `cwd`s resolve against
    /// `codex_home`.
    pub fn parse(text: &str, path: &Path, codex_home: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let include_local = file.include_local.unwrap_or(true);
        let mut out = EnvironmentsConfig::default();
        if include_local {
            out.environments.push(local_spec());
        }
        let mut seen = std::collections::HashSet::new();
        for e in file.environments {
            check_id(&e.id)?;
            if !seen.insert(e.id.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "environment id `{}` is defined more than once",
                    e.id
                )));
            }
            let id = e.id.clone();
            let err = |m: String| ConfigError::Invalid(format!("environment `{id}`: {m}"));
            let initialize_timeout =
                seconds("initialize_timeout_sec", &id, e.initialize_timeout_sec)?;
            let connector = match (e.url, e.program) {
                (Some(_), Some(_)) => {
                    return Err(err("set either `url` or `program`, not both".into()))
                }
                (None, None) => return Err(err("set `url` or `program`".into())),
                (Some(url), None) => {
                    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                        return Err(ConfigError::Invalid(format!(
                            "environment url `{url}` must use ws:// or wss://"
                        )));
                    }
                    if e.args.is_some() || e.env.is_some() || e.cwd.is_some() {
                        return Err(err("`args`, `env` and `cwd` require `program`".into()));
                    }
                    let mut t = WebSocketTarget::new(url);
                    t.bearer_token = e.auth_bearer_token;
                    t.connect_timeout = seconds("connect_timeout_sec", &id, e.connect_timeout_sec)?;
                    Connector::WebSocket(t)
                }
                (None, Some(program)) => {
                    if e.auth_bearer_token.is_some() || e.connect_timeout_sec.is_some() {
                        return Err(err(
                            "`auth_bearer_token` and `connect_timeout_sec` require `url`".into(),
                        ));
                    }
                    if program.trim().is_empty() {
                        return Err(err("`program` must not be empty".into()));
                    }
                    Connector::Stdio(StdioCommand {
                        program,
                        args: e.args.unwrap_or_default(),
                        env: e.env.unwrap_or_default().into_iter().collect(),
                        cwd: e.cwd.map(|c| codex_home.join(c)),
                    })
                }
            };
            out.environments.push(EnvironmentSpec {
                id: e.id,
                connector: Some(connector),
                initialize_timeout,
            });
        }
        out.default = match file.default {
            Some(d) if d.eq_ignore_ascii_case("none") => None,
            Some(d) => {
                if !out.environments.iter().any(|e| e.id == d) {
                    return Err(ConfigError::Invalid(format!(
                        "default environment `{d}` is not configured"
                    )));
                }
                Some(d)
            }
            None if include_local => Some(LOCAL_ID.into()),
            None => None,
        };
        Ok(out)
    }

    /// The configuration from the environment variables alone: `CODEX_EXEC_SERVER_URL` unset
    /// → `local` only; `none` → nothing; a URL → `remote` only.
    pub fn from_url_var(value: Option<&str>) -> Result<Self, ConfigError> {
        match value.map(str::trim) {
            None | Some("") => Ok(EnvironmentsConfig {
                environments: vec![local_spec()],
                default: Some(LOCAL_ID.into()),
            }),
            Some(v) if v.eq_ignore_ascii_case("none") => Ok(EnvironmentsConfig::default()),
            Some(url) => {
                if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                    return Err(ConfigError::Invalid(format!(
                        "{URL_VAR} `{url}` must use ws:// or wss://"
                    )));
                }
                Ok(EnvironmentsConfig {
                    environments: vec![EnvironmentSpec {
                        id: REMOTE_ID.into(),
                        connector: Some(Connector::WebSocket(WebSocketTarget::new(url))),
                        initialize_timeout: DEFAULT_TIMEOUT,
                    }],
                    default: Some(REMOTE_ID.into()),
                })
            }
        }
    }

    /// `CODEX_HOME/environments.toml` when it exists, the variables otherwise.
    pub fn load(codex_home: &Path, url_var: Option<&str>) -> Result<Self, ConfigError> {
        let path = codex_home.join("environments.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => EnvironmentsConfig::parse(&text, &path, codex_home),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                EnvironmentsConfig::from_url_var(url_var)
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

/// `CODEX_HOME`, or `~/.codex`.
pub fn codex_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CODEX_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".codex")
}

/// Resolves environment ids to connected environments, connecting lazily and caching.
#[derive(Debug)]
pub struct EnvironmentManager {
    config: EnvironmentsConfig,
    client_name: String,
    cache: Mutex<HashMap<String, Environment>>,
}

impl EnvironmentManager {
    /// A manager over an explicit configuration.
    pub fn new(config: EnvironmentsConfig) -> Self {
        EnvironmentManager {
            config,
            client_name: "exec-server-client".into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The manager of this process: `CODEX_HOME/environments.toml`, else
    /// `CODEX_EXEC_SERVER_URL`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = std::env::var(URL_VAR).ok();
        Ok(EnvironmentManager::new(EnvironmentsConfig::load(
            &codex_home(),
            var.as_deref(),
        )?))
    }

    /// The configuration in force.
    pub fn config(&self) -> &EnvironmentsConfig {
        &self.config
    }

    /// The ids of every environment.
    pub fn ids(&self) -> Vec<String> {
        self.config
            .environments
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }

    /// The default id.
    pub fn default_id(&self) -> Option<&str> {
        self.config.default.as_deref()
    }

    /// The environment `id`, connected on first use.
    pub async fn get(&self, id: &str) -> Result<Environment, ClientError> {
        let mut cache = self.cache.lock().await;
        if let Some(env) = cache.get(id) {
            return Ok(env.clone());
        }
        let spec = self
            .config
            .environments
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| ClientError::Protocol(format!("unknown environment id `{id}`")))?;
        let env = match &spec.connector {
            None => Environment::local().map_err(|e| {
                ClientError::Io(std::sync::Arc::new(std::io::Error::other(e.to_string())))
            })?,
            Some(connector) => {
                let options = ConnectOptions {
                    client_name: self.client_name.clone(),
                    initialize_timeout: spec.initialize_timeout,
                    ..ConnectOptions::default()
                };
                Environment::remote(Client::connect(connector.clone(), options).await?)
            }
        };
        cache.insert(id.to_string(), env.clone());
        Ok(env)
    }

    /// The default environment, if there is one.
    pub async fn default_environment(&self) -> Result<Option<Environment>, ClientError> {
        match self.config.default.clone() {
            None => Ok(None),
            Some(id) => self.get(&id).await.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EnvironmentsConfig, ConfigError> {
        EnvironmentsConfig::parse(text, Path::new("/h/environments.toml"), Path::new("/h"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("invalid").to_string()
    }

    #[test]
    fn parses_url_and_program_entries() {
        let c = parse(
            r#"
            default = "devbox"
            [[environments]]
            id = "devbox"
            url = "ws://127.0.0.1:8765"
            auth_bearer_token = "t"
            connect_timeout_sec = 2.5
            [[environments]]
            id = "ssh-dev"
            program = "ssh"
            args = ["dev", "exec-server --listen stdio"]
            env = { A = "1" }
            cwd = "rel"
            "#,
        )
        .expect("valid");
        assert_eq!(c.default.as_deref(), Some("devbox"));
        let ids: Vec<_> = c.environments.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["local", "devbox", "ssh-dev"]);
        match &c.environments[1].connector {
            Some(Connector::WebSocket(t)) => {
                assert_eq!(t.bearer_token.as_deref(), Some("t"));
                assert_eq!(t.connect_timeout, Duration::from_millis(2500));
            }
            other => panic!("{other:?}"),
        }
        match &c.environments[2].connector {
            Some(Connector::Stdio(s)) => assert_eq!(s.cwd.as_deref(), Some(Path::new("/h/rel"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_follow_include_local() {
        assert_eq!(parse("").expect("empty").default.as_deref(), Some("local"));
        let c = parse("include_local = false").expect("valid");
        assert!(c.environments.is_empty());
        assert_eq!(c.default, None);
        let c = parse("default = \"NONE\"").expect("valid");
        assert_eq!(c.default, None);
    }

    #[test]
    fn validation_errors() {
        assert!(
            err("zzz = 1").contains("unknown field `zzz`"),
            "{}",
            err("zzz = 1")
        );
        assert!(
            err("[[environments]]\nid = \"a\"\nurl = \"ws://x\"\nzzz = 1")
                .contains("unknown field `zzz`")
        );
        assert_eq!(
            err("[[environments]]\nid = \"local\"\nurl = \"ws://x\""),
            "environment id `local` is reserved"
        );
        assert_eq!(
            err("[[environments]]\nid = \"none\"\nurl = \"ws://x\""),
            "environment id `none` is reserved"
        );
        assert_eq!(
            err("[[environments]]\nid = \"a\"\nurl = \"http://x\""),
            "environment url `http://x` must use ws:// or wss://"
        );
        assert!(
            err("[[environments]]\nid = \"a b\"\nurl = \"ws://x\"").contains("may only contain")
        );
        assert!(err("[[environments]]\nid = \"a\"").contains("set `url` or `program`"));
        assert!(
            err("[[environments]]\nid = \"a\"\nurl = \"ws://x\"\nprogram = \"p\"")
                .contains("not both")
        );
        assert!(
            err("[[environments]]\nid = \"a\"\nurl = \"ws://x\"\nargs = []")
                .contains("require `program`")
        );
        assert!(
            err("[[environments]]\nid = \"a\"\nprogram = \"p\"\nauth_bearer_token = \"t\"")
                .contains("require `url`")
        );
        assert!(err("default = \"nope\"").contains("not configured"));
        assert!(err(
            "[[environments]]\nid = \"a\"\nurl = \"ws://x\"\n[[environments]]\nid = \"a\"\nurl = \"ws://y\""
        )
        .contains("more than once"));
        assert!(err("default = 3").starts_with("exec-server protocol error: failed to parse"));
        assert!(err(&format!(
            "[[environments]]\nid = \"{}\"\nurl = \"ws://x\"",
            "a".repeat(65)
        ))
        .contains("at most 64"));
    }

    #[test]
    fn url_variable() {
        let c = EnvironmentsConfig::from_url_var(None).expect("unset");
        assert_eq!(c.default.as_deref(), Some("local"));
        let c = EnvironmentsConfig::from_url_var(Some("none")).expect("none");
        assert!(c.environments.is_empty() && c.default.is_none());
        let c = EnvironmentsConfig::from_url_var(Some("ws://127.0.0.1:1")).expect("url");
        let ids: Vec<_> = c.environments.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["remote"]);
        assert_eq!(c.default.as_deref(), Some("remote"));
        assert!(EnvironmentsConfig::from_url_var(Some("http://x")).is_err());
    }

    #[test]
    fn file_wins_over_the_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = EnvironmentsConfig::load(dir.path(), Some("ws://127.0.0.1:1")).expect("no file");
        assert_eq!(c.default.as_deref(), Some("remote"));
        std::fs::write(
            dir.path().join("environments.toml"),
            "include_local = true\n",
        )
        .expect("write");
        let c = EnvironmentsConfig::load(dir.path(), Some("ws://127.0.0.1:1")).expect("file");
        assert_eq!(c.default.as_deref(), Some("local"));
    }
}
