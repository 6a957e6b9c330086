//! [`EnvironmentManager`]: which environments exist (`CODEX_HOME/environments.toml`, or the
//! `CODEX_EXEC_SERVER_URL` / `CODEX_EXEC_SERVER_NOISE_*` variables when there is no file) and a
//! connected [`Environment`] for each id, created on first use and cached.
//!
//! The file format and its validation follow spec §11.1 exactly:
//! top-level keys `default`, `include_local`, `environments`; entry keys `id`, `skills`, `url`,
//! `auth_bearer_token`, `program`, `args`, `env`, `cwd`, `connect_timeout_sec`,
//! `initialize_timeout_sec` (anything else is an error); ids are 1..=64 characters of
//! `[A-Za-z0-9_-]`, unique, and not `local` or `none`; exactly one of `url` (ws:// or wss://)
//! and `program`; `args`/`env`/`cwd` only with `program`; `auth_bearer_token` and
//! `connect_timeout_sec` only with `url`; `default` names a configured id or `local`, or is
//! `none` (any case) for no default.
//!
//! One extension (upstream has no file form of its Noise variables): an entry with
//! `registry_url` (http:// or https://) instead of `url`/`program` is an executor in remote mode
//! behind that registry and its rendezvous ([`NoiseTarget`]). Its keys: `environment_id` (the
//! id the executor registered; default: the entry's `id`), the bearer as `auth_token_env` (the
//! name of a variable holding it, read at each connect) or `auth_bearer_token`, exactly one of
//! the two, optional `chatgpt_account_id`, and `connect_timeout_sec` (registry request and
//! rendezvous dial). `environment_id`, `auth_token_env` and `chatgpt_account_id` are errors on
//! other entries.
//!
//! Without the file, the variables decide ([`EnvVars`]): `CODEX_EXEC_SERVER_URL=none` → no
//! environment; a `ws://` URL → `remote` over WebSocket; the `CODEX_EXEC_SERVER_NOISE_*`
//! variables → `remote` through the rendezvous; the URL and the Noise variables together are an
//! error; nothing → `local`. With the file, the variables are ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::client::{Client, ConnectOptions};
use crate::environment::Environment;
use crate::error::ClientError;
use crate::transport::{AuthToken, Connector, NoiseTarget, StdioCommand, WebSocketTarget};

/// The id of the built-in environment of this machine.
pub const LOCAL_ID: &str = "local";
/// The id `CODEX_EXEC_SERVER_URL` creates.
pub const REMOTE_ID: &str = "remote";
/// The variable naming a single remote executor.
pub const URL_VAR: &str = "CODEX_EXEC_SERVER_URL";
/// The registry of a remote executor in remote mode (spec §10.7).
pub const NOISE_REGISTRY_URL_VAR: &str = "CODEX_EXEC_SERVER_NOISE_REGISTRY_URL";
/// The environment id it registered.
pub const NOISE_ENVIRONMENT_ID_VAR: &str = "CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID";
/// The bearer of the registry's `connect` call.
pub const NOISE_AUTH_TOKEN_VAR: &str = "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN";
/// Optional: sent as `chatgpt-account-id` with it.
pub const NOISE_CHATGPT_ACCOUNT_ID_VAR: &str = "CODEX_EXEC_SERVER_NOISE_CHATGPT_ACCOUNT_ID";

/// The client's environment variables (spec §11.2), each trimmed, empty counted as unset.
#[derive(Clone, Default)]
pub struct EnvVars {
    /// `CODEX_EXEC_SERVER_URL`.
    pub url: Option<String>,
    /// `CODEX_EXEC_SERVER_NOISE_REGISTRY_URL`.
    pub noise_registry_url: Option<String>,
    /// `CODEX_EXEC_SERVER_NOISE_ENVIRONMENT_ID`.
    pub noise_environment_id: Option<String>,
    /// `CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN` (redacted in Debug output).
    pub noise_auth_token: Option<String>,
    /// `CODEX_EXEC_SERVER_NOISE_CHATGPT_ACCOUNT_ID`.
    pub noise_chatgpt_account_id: Option<String>,
}

impl EnvVars {
    /// The variables of this process.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        EnvVars {
            url: var(URL_VAR),
            noise_registry_url: var(NOISE_REGISTRY_URL_VAR),
            noise_environment_id: var(NOISE_ENVIRONMENT_ID_VAR),
            noise_auth_token: var(NOISE_AUTH_TOKEN_VAR),
            noise_chatgpt_account_id: var(NOISE_CHATGPT_ACCOUNT_ID_VAR),
        }
    }
}

impl std::fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVars")
            .field("url", &self.url)
            .field("noise_registry_url", &self.noise_registry_url)
            .field("noise_environment_id", &self.noise_environment_id)
            .field(
                "noise_auth_token",
                &self.noise_auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("noise_chatgpt_account_id", &self.noise_chatgpt_account_id)
            .finish()
    }
}

/// A variable's value, trimmed, when set and not empty.
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

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
    // Extensions (module docs): an executor in remote mode behind a registry.
    registry_url: Option<String>,
    environment_id: Option<String>,
    auth_token_env: Option<String>,
    chatgpt_account_id: Option<String>,
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
            let kinds = [
                e.url.is_some(),
                e.program.is_some(),
                e.registry_url.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() > 1 {
                return Err(err(
                    "set only one of `url`, `program` and `registry_url`".into()
                ));
            }
            if e.registry_url.is_none()
                && (e.environment_id.is_some()
                    || e.auth_token_env.is_some()
                    || e.chatgpt_account_id.is_some())
            {
                return Err(err(
                    "`environment_id`, `auth_token_env` and `chatgpt_account_id` require `registry_url`"
                        .into(),
                ));
            }
            if let Some(registry_url) = e.registry_url {
                if e.args.is_some() || e.env.is_some() || e.cwd.is_some() {
                    return Err(err("`args`, `env` and `cwd` require `program`".into()));
                }
                let mut t = noise_target(
                    &id,
                    registry_url,
                    e.environment_id,
                    e.auth_bearer_token,
                    e.auth_token_env,
                )?;
                t.chatgpt_account_id = e.chatgpt_account_id;
                if e.connect_timeout_sec.is_some() {
                    let d = seconds("connect_timeout_sec", &id, e.connect_timeout_sec)?;
                    t.timeouts.registry = d;
                    t.timeouts.connect = d;
                }
                out.environments.push(EnvironmentSpec {
                    id: e.id,
                    connector: Some(Connector::Noise(t)),
                    initialize_timeout,
                });
                continue;
            }
            let connector = match (e.url, e.program) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "set only one of `url`, `program` and `registry_url`".into()
                    ))
                }
                (None, None) => return Err(err("set `url`, `program` or `registry_url`".into())),
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
                            "`auth_bearer_token` and `connect_timeout_sec` require `url` or `registry_url`"
                                .into(),
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

    /// The configuration from `CODEX_EXEC_SERVER_URL` alone: unset → `local` only; `none` →
    /// nothing; a URL → `remote` only.
    pub fn from_url_var(value: Option<&str>) -> Result<Self, ConfigError> {
        EnvironmentsConfig::from_vars(&EnvVars {
            url: value.map(str::to_string),
            ..EnvVars::default()
        })
    }

    /// The configuration from the environment variables alone: `CODEX_EXEC_SERVER_URL=none` →
    /// nothing (whatever else is set); a URL → `remote` over WebSocket; the
    /// `CODEX_EXEC_SERVER_NOISE_*` variables → `remote` through a rendezvous (registry URL,
    /// environment id and token all required, account id optional); both a URL and Noise
    /// variables → an error; neither → `local` only.
    pub fn from_vars(vars: &EnvVars) -> Result<Self, ConfigError> {
        let noise = [
            &vars.noise_registry_url,
            &vars.noise_environment_id,
            &vars.noise_auth_token,
        ]
        .into_iter()
        .any(|v| set(v).is_some());
        let remote = |connector| EnvironmentsConfig {
            environments: vec![EnvironmentSpec {
                id: REMOTE_ID.into(),
                connector: Some(connector),
                initialize_timeout: DEFAULT_TIMEOUT,
            }],
            default: Some(REMOTE_ID.into()),
        };
        match set(&vars.url) {
            None if noise => Ok(remote(Connector::Noise(noise_from_vars(vars)?))),
            None => Ok(EnvironmentsConfig {
                environments: vec![local_spec()],
                default: Some(LOCAL_ID.into()),
            }),
            Some(v) if v.eq_ignore_ascii_case("none") => Ok(EnvironmentsConfig::default()),
            Some(_) if noise => Err(ConfigError::Invalid(format!(
                "set either {URL_VAR} or the CODEX_EXEC_SERVER_NOISE_* variables, not both"
            ))),
            Some(url) => {
                if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                    return Err(ConfigError::Invalid(format!(
                        "{URL_VAR} `{url}` must use ws:// or wss://"
                    )));
                }
                Ok(remote(Connector::WebSocket(WebSocketTarget::new(url))))
            }
        }
    }

    /// `CODEX_HOME/environments.toml` when it exists, `CODEX_EXEC_SERVER_URL` otherwise.
    pub fn load(codex_home: &Path, url_var: Option<&str>) -> Result<Self, ConfigError> {
        EnvironmentsConfig::load_with_vars(
            codex_home,
            &EnvVars {
                url: url_var.map(str::to_string),
                ..EnvVars::default()
            },
        )
    }

    /// `CODEX_HOME/environments.toml` when it exists, the variables otherwise
    /// ([`EnvironmentsConfig::from_vars`]).
    pub fn load_with_vars(codex_home: &Path, vars: &EnvVars) -> Result<Self, ConfigError> {
        let path = codex_home.join("environments.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => EnvironmentsConfig::parse(&text, &path, codex_home),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                EnvironmentsConfig::from_vars(vars)
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

/// The Noise target of a `registry_url` entry of environments.toml.
fn noise_target(
    id: &str,
    registry_url: String,
    environment_id: Option<String>,
    auth_bearer_token: Option<String>,
    auth_token_env: Option<String>,
) -> Result<NoiseTarget, ConfigError> {
    let err = |m: String| ConfigError::Invalid(format!("environment `{id}`: {m}"));
    check_registry_url(&registry_url)
        .map_err(|m| ConfigError::Invalid(format!("environment registry_url {m}")))?;
    let environment_id = environment_id.unwrap_or_else(|| id.to_string());
    exec_server_relay::registry::check_environment_id(&environment_id)
        .map_err(|e| err(format!("environment_id `{environment_id}`: {e}")))?;
    let auth = match (auth_bearer_token, auth_token_env) {
        (Some(_), Some(_)) => {
            return Err(err(
                "set either `auth_token_env` or `auth_bearer_token`, not both".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "`registry_url` needs `auth_token_env` (or `auth_bearer_token`)".into(),
            ))
        }
        (Some(token), None) => AuthToken::Value(token),
        (None, Some(var)) => {
            if var.trim().is_empty() || var.contains('=') || var.contains('\0') {
                return Err(err(format!(
                    "`auth_token_env` must name an environment variable, not `{var}`"
                )));
            }
            AuthToken::Env(var)
        }
    };
    Ok(NoiseTarget::new(registry_url, environment_id, auth))
}

/// The Noise target of the `CODEX_EXEC_SERVER_NOISE_*` variables.
fn noise_from_vars(vars: &EnvVars) -> Result<NoiseTarget, ConfigError> {
    let (Some(url), Some(environment_id), Some(token)) = (
        set(&vars.noise_registry_url),
        set(&vars.noise_environment_id),
        set(&vars.noise_auth_token),
    ) else {
        let missing: Vec<&str> = [
            (NOISE_REGISTRY_URL_VAR, &vars.noise_registry_url),
            (NOISE_ENVIRONMENT_ID_VAR, &vars.noise_environment_id),
            (NOISE_AUTH_TOKEN_VAR, &vars.noise_auth_token),
        ]
        .into_iter()
        .filter(|(_, v)| set(v).is_none())
        .map(|(name, _)| name)
        .collect();
        return Err(ConfigError::Invalid(format!(
            "a Noise rendezvous environment also needs {}",
            missing.join(" and ")
        )));
    };
    check_registry_url(url)
        .map_err(|m| ConfigError::Invalid(format!("{NOISE_REGISTRY_URL_VAR} {m}")))?;
    exec_server_relay::registry::check_environment_id(environment_id)
        .map_err(|e| ConfigError::Invalid(format!("{NOISE_ENVIRONMENT_ID_VAR}: {e}")))?;
    let mut t = NoiseTarget::new(url, environment_id, AuthToken::Value(token.to_string()));
    t.chatgpt_account_id = set(&vars.noise_chatgpt_account_id).map(str::to_string);
    Ok(t)
}

/// `Err(" `URL` must use http:// or https://")` unless it does.
fn check_registry_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "`{}` must use http:// or https://",
            exec_server_relay::registry::url_for_logs(url)
        ))
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

    /// The manager of this process: `CODEX_HOME/environments.toml`, else the variables
    /// (`CODEX_EXEC_SERVER_URL`, `CODEX_EXEC_SERVER_NOISE_*`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(EnvironmentManager::new(EnvironmentsConfig::load_with_vars(
            &codex_home(),
            &EnvVars::from_process(),
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
        assert!(
            err("[[environments]]\nid = \"a\"").contains("set `url`, `program` or `registry_url`")
        );
        assert!(
            err("[[environments]]\nid = \"a\"\nurl = \"ws://x\"\nprogram = \"p\"")
                .contains("only one of")
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

    fn noise(c: &EnvironmentsConfig, id: &str) -> NoiseTarget {
        match &c
            .environments
            .iter()
            .find(|e| e.id == id)
            .expect("entry")
            .connector
        {
            Some(Connector::Noise(t)) => t.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_registry_url_entries() {
        let c = parse(
            r#"
            default = "rv"
            [[environments]]
            id = "rv"
            registry_url = "https://relay.example.com/"
            auth_token_env = "RV_TOKEN"
            connect_timeout_sec = 3
            initialize_timeout_sec = 4
            [[environments]]
            id = "rv2"
            registry_url = "http://127.0.0.1:8700"
            environment_id = "ci-runner-7"
            auth_bearer_token = "inline"
            chatgpt_account_id = "acct"
            "#,
        )
        .expect("valid");
        let rv = noise(&c, "rv");
        assert_eq!(rv.registry_url, "https://relay.example.com/");
        assert_eq!(rv.environment_id, "rv", "defaults to the entry id");
        assert_eq!(rv.auth_token, AuthToken::Env("RV_TOKEN".into()));
        assert_eq!(rv.timeouts.registry, Duration::from_secs(3));
        assert_eq!(rv.timeouts.connect, Duration::from_secs(3));
        assert_eq!(c.environments[1].initialize_timeout, Duration::from_secs(4));
        let rv2 = noise(&c, "rv2");
        assert_eq!(rv2.environment_id, "ci-runner-7");
        assert_eq!(rv2.auth_token, AuthToken::Value("inline".into()));
        assert_eq!(rv2.chatgpt_account_id.as_deref(), Some("acct"));
        assert_eq!(rv2.timeouts, crate::transport::NoiseTimeouts::default());
        assert!(!format!("{:?}", c.environments).contains("inline"));
    }

    #[test]
    fn registry_url_entry_errors() {
        let entry = |extra: &str| format!("[[environments]]\nid = \"rv\"\n{extra}");
        let rv = "registry_url = \"http://127.0.0.1:1\"\n";
        assert!(err(&entry(&format!(
            "{rv}url = \"ws://x\"\nauth_token_env = \"T\""
        )))
        .contains("only one of `url`, `program` and `registry_url`"));
        assert_eq!(
            err(&entry("registry_url = \"ws://x\"\nauth_token_env = \"T\"")),
            "environment registry_url `ws://x` must use http:// or https://"
        );
        assert!(err(&entry(rv)).contains("needs `auth_token_env` (or `auth_bearer_token`)"));
        assert!(err(&entry(&format!(
            "{rv}auth_token_env = \"T\"\nauth_bearer_token = \"t\""
        )))
        .contains("not both"));
        assert!(err(&entry(&format!("{rv}auth_token_env = \"\""))).contains("must name"));
        assert!(err(&entry(&format!(
            "{rv}auth_token_env = \"T\"\nenvironment_id = \"a b\""
        )))
        .contains("environment_id `a b`"));
        assert!(
            err(&entry(&format!("{rv}auth_token_env = \"T\"\nargs = []")))
                .contains("require `program`")
        );
        for key in [
            "environment_id = \"e\"",
            "auth_token_env = \"T\"",
            "chatgpt_account_id = \"a\"",
        ] {
            assert!(
                err(&entry(&format!("url = \"ws://x\"\n{key}"))).contains("require `registry_url`"),
                "{key}"
            );
        }
        assert!(err(&entry(&format!("{rv}auth_token_env = \"T\"\nzzz = 1")))
            .contains("unknown field `zzz`"));
    }

    fn noise_vars() -> EnvVars {
        EnvVars {
            noise_registry_url: Some("http://127.0.0.1:8700".into()),
            noise_environment_id: Some("e2e".into()),
            noise_auth_token: Some("harness-secret".into()),
            ..EnvVars::default()
        }
    }

    #[test]
    fn noise_variables() {
        let c = EnvironmentsConfig::from_vars(&noise_vars()).expect("noise");
        let ids: Vec<_> = c.environments.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["remote"], "no local environment, as with the URL");
        assert_eq!(c.default.as_deref(), Some("remote"));
        let t = noise(&c, "remote");
        assert_eq!(t.environment_id, "e2e");
        assert_eq!(t.auth_token, AuthToken::Value("harness-secret".into()));
        assert_eq!(t.chatgpt_account_id, None);
        let mut vars = noise_vars();
        vars.noise_chatgpt_account_id = Some(" acct ".into());
        let t = noise(
            &EnvironmentsConfig::from_vars(&vars).expect("noise"),
            "remote",
        );
        assert_eq!(t.chatgpt_account_id.as_deref(), Some("acct"));
        assert!(!format!("{vars:?}").contains("harness-secret"));
        // Every one of the three is needed once one is set.
        let mut vars = noise_vars();
        vars.noise_auth_token = Some("  ".into());
        let e = EnvironmentsConfig::from_vars(&vars)
            .expect_err("no token")
            .to_string();
        assert_eq!(
            e,
            "a Noise rendezvous environment also needs CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN"
        );
        // The account id alone changes nothing.
        let vars = EnvVars {
            noise_chatgpt_account_id: Some("acct".into()),
            ..EnvVars::default()
        };
        let c = EnvironmentsConfig::from_vars(&vars).expect("local");
        assert_eq!(c.default.as_deref(), Some("local"));
        let mut vars = noise_vars();
        vars.noise_registry_url = Some("ftp://x".into());
        assert!(EnvironmentsConfig::from_vars(&vars).is_err());
        let mut vars = noise_vars();
        vars.noise_environment_id = Some("a/b".into());
        assert!(EnvironmentsConfig::from_vars(&vars).is_err());
    }

    #[test]
    fn url_and_noise_variables_do_not_mix() {
        let mut vars = noise_vars();
        vars.url = Some("ws://127.0.0.1:1".into());
        assert_eq!(
            EnvironmentsConfig::from_vars(&vars)
                .expect_err("both")
                .to_string(),
            "set either CODEX_EXEC_SERVER_URL or the CODEX_EXEC_SERVER_NOISE_* variables, not both"
        );
        vars.url = Some("none".into());
        let c = EnvironmentsConfig::from_vars(&vars).expect("none wins");
        assert!(c.environments.is_empty() && c.default.is_none());
        // The file wins over every variable.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("environments.toml"), "").expect("write");
        let c = EnvironmentsConfig::load_with_vars(dir.path(), &noise_vars()).expect("file");
        assert_eq!(c.default.as_deref(), Some("local"));
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
