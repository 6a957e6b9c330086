//! The rendezvous configuration file: which environments exist and which bearers may register
//! an executor for each (`executor_tokens`) or connect a harness to it (`harness_tokens`).
//!
//! ```toml
//! [environments.e2e]                  # one table per environment id
//! executor_tokens = ["exec-secret"]   # bearers that may register this environment
//! harness_tokens = ["harness-secret"] # bearers that may connect to it
//! ```
//!
//! A token written `sha256:<64 hex digits>` stands for the bearer whose SHA-256 is that digest,
//! so the file need not hold secrets. Every token, plain or hashed, is kept only as its SHA-256
//! digest, and a presented bearer is hashed once and compared with every digest of the list in
//! constant time (`subtle`), without stopping at the first match: the time taken depends on
//! the number of tokens, never on how much of one matched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use exec_server_relay::registry::{check_environment_id, EnvironmentIdError};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Prefix of a token given by its SHA-256 digest.
pub const SHA256_PREFIX: &str = "sha256:";
/// Longest token (or bearer) accepted, in bytes: the spec's stdin bearer limit (§10.1).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the rendezvous config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML of the expected shape (unknown keys included).
    #[error("invalid rendezvous config: {0}")]
    Parse(#[from] toml::de::Error),
    /// An environment id is not 1-256 characters of `[A-Za-z0-9_-]`.
    #[error("invalid environment id `{id}` in the rendezvous config")]
    EnvironmentId {
        /// The id as written.
        id: String,
        /// What is wrong with it.
        #[source]
        source: EnvironmentIdError,
    },
    /// A token is empty, too long, has surrounding whitespace, or is a malformed `sha256:`.
    #[error("environment `{environment}`: {field} entry {index} is not a valid token: {reason}")]
    Token {
        /// The environment.
        environment: String,
        /// `executor_tokens` or `harness_tokens`.
        field: &'static str,
        /// Index of the token in its list.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// No environment is configured.
    #[error("the rendezvous config names no environment")]
    Empty,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    environments: HashMap<String, RawEnvironment>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    executor_tokens: Vec<String>,
    harness_tokens: Vec<String>,
}

/// A set of accepted bearers, kept as SHA-256 digests.
#[derive(Clone, Default)]
pub struct TokenSet {
    digests: Vec<[u8; 32]>,
}

impl TokenSet {
    /// Parses a list of configured tokens (plain or `sha256:<hex>`).
    fn parse(
        environment: &str,
        field: &'static str,
        tokens: &[String],
    ) -> Result<Self, ConfigError> {
        let mut digests = Vec::with_capacity(tokens.len());
        for (index, token) in tokens.iter().enumerate() {
            let bad = |reason| ConfigError::Token {
                environment: environment.to_string(),
                field,
                index,
                reason,
            };
            if token.is_empty() {
                return Err(bad("empty"));
            }
            if token.len() > MAX_TOKEN_LEN {
                return Err(bad("longer than 16 KiB"));
            }
            if token.trim() != token {
                return Err(bad("surrounding whitespace"));
            }
            let digest = match token.strip_prefix(SHA256_PREFIX) {
                Some(hex) => {
                    parse_hex_digest(hex).ok_or_else(|| bad("`sha256:` needs 64 hex digits"))?
                }
                None => sha256(token.as_bytes()),
            };
            digests.push(digest);
        }
        Ok(Self { digests })
    }

    /// True when `bearer` is one of the tokens. Hashes `bearer` once and compares the digest
    /// with every configured digest in constant time, without an early exit.
    pub fn accepts(&self, bearer: &str) -> bool {
        if bearer.is_empty() || bearer.len() > MAX_TOKEN_LEN {
            return false;
        }
        let presented = sha256(bearer.as_bytes());
        let mut found = subtle::Choice::from(0);
        for digest in &self.digests {
            found |= digest.ct_eq(&presented);
        }
        found.into()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True when no token is configured (nobody is accepted).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.digests.len())
    }
}

/// One environment's bearers.
#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    /// Bearers that may register an executor for the environment (and call `validate`).
    pub executor_tokens: TokenSet,
    /// Bearers that may `connect` a harness to it.
    pub harness_tokens: TokenSet,
}

/// The whole configuration: environment id → bearers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Configured environments. Only these can be registered or connected to.
    pub environments: HashMap<String, EnvironmentConfig>,
}

impl Config {
    /// Parses the TOML text of a configuration.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        if raw.environments.is_empty() {
            return Err(ConfigError::Empty);
        }
        let mut environments = HashMap::with_capacity(raw.environments.len());
        for (id, env) in raw.environments {
            check_environment_id(&id).map_err(|source| ConfigError::EnvironmentId {
                id: id.clone(),
                source,
            })?;
            let config = EnvironmentConfig {
                executor_tokens: TokenSet::parse(&id, "executor_tokens", &env.executor_tokens)?,
                harness_tokens: TokenSet::parse(&id, "harness_tokens", &env.harness_tokens)?,
            };
            environments.insert(id, config);
        }
        Ok(Self { environments })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_documented_shape_parses_and_checks_bearers() {
        let config = Config::parse(
            r#"
            [environments.e2e]
            executor_tokens = ["exec-secret"]
            harness_tokens = ["harness-secret", "second"]
            "#,
        )
        .unwrap();
        let env = &config.environments["e2e"];
        assert!(env.executor_tokens.accepts("exec-secret"));
        assert!(!env.executor_tokens.accepts("harness-secret"));
        assert!(!env.executor_tokens.accepts("exec-secre"));
        assert!(!env.executor_tokens.accepts(""));
        assert!(env.harness_tokens.accepts("second"));
        assert_eq!(env.harness_tokens.len(), 2);
    }

    #[test]
    fn sha256_tokens_match_the_bearer_they_hash() {
        let digest = hex(&sha256(b"hidden"));
        let config = Config::parse(&format!(
            "[environments.a]\nexecutor_tokens = [\"sha256:{digest}\"]\n\
             harness_tokens = [\"sha256:{}\"]\n",
            digest.to_uppercase()
        ))
        .unwrap();
        let env = &config.environments["a"];
        assert!(env.executor_tokens.accepts("hidden"));
        assert!(env.harness_tokens.accepts("hidden"));
        // The digest text itself is not a bearer.
        assert!(!env.executor_tokens.accepts(&format!("sha256:{digest}")));
        assert!(!env.executor_tokens.accepts(&digest));
    }

    #[test]
    fn malformed_configs_are_refused_with_a_reason() {
        let cases = [
            ("[environments.a]\nexecutor_tokens = []\n", "missing field"),
            (
                "[environments.a]\nexecutor_tokens = []\nharness_tokens = []\nextra = 1\n",
                "unknown field",
            ),
            (
                "other = 1\n[environments.a]\nexecutor_tokens = []\nharness_tokens = []\n",
                "unknown field",
            ),
            ("environments = {}\n", "names no environment"),
            (
                "[environments.\"bad id\"]\nexecutor_tokens = []\nharness_tokens = []\n",
                "invalid environment id",
            ),
            (
                "[environments.a]\nexecutor_tokens = [\"\"]\nharness_tokens = []\n",
                "empty",
            ),
            (
                "[environments.a]\nexecutor_tokens = [\" x\"]\nharness_tokens = []\n",
                "whitespace",
            ),
            (
                "[environments.a]\nexecutor_tokens = []\nharness_tokens = [\"sha256:abc\"]\n",
                "64 hex digits",
            ),
        ];
        for (text, want) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn debug_output_holds_no_token() {
        let config = Config::parse(
            "[environments.a]\nexecutor_tokens = [\"s3cr3t\"]\nharness_tokens = []\n",
        )
        .unwrap();
        let text = format!("{config:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(config.environments["a"].harness_tokens.is_empty());
    }
}
