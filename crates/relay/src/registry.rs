//! Registry HTTP API bodies and paths of remote mode (spec §10.1, §10.6, §10.7), serde only.
//!
//! Used by the executor (`register`, `validate`), the harness (`connect`) and our own registry
//! server. The HTTP client or server is the caller's; this module fixes the JSON shapes, the
//! paths, the header names and the checks on answers. Secrets (`url` of a connect answer and
//! `harness_key_authorization`) are redacted in Debug output, as upstream does (spec §10.7).

use std::fmt;
use std::time::Duration;

use crate::harness::ConnectInfo;
use crate::noise::PublicKey;

/// `security_profile` of the Noise transport.
pub const SECURITY_PROFILE: &str = "noise_hybrid_ik_v1";
/// Header carrying the stream id on `validate` requests.
pub const NOISE_STREAM_ID_HEADER: &str = "x-codex-noise-stream-id";
/// Header the executor sends on the rendezvous WebSocket request (`req_<32 lowercase hex>`).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header a rendezvous may set when it rejects a WebSocket upgrade.
pub const REJECTION_REASON_HEADER: &str = "x-codex-rendezvous-rejection-reason";
/// Longest environment id a registry accepts.
pub const MAX_ENVIRONMENT_ID_LEN: usize = 256;
/// Header carrying the ChatGPT account id next to a ChatGPT bearer (spec §10.1, §10.7); header
/// names are case-insensitive, upstream harnesses write it `chatgpt-account-id`.
pub const CHATGPT_ACCOUNT_ID_HEADER: &str = "ChatGPT-Account-Id";
/// Timeout of every registry request, on either side (spec §10.1, §10.7).
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a rendezvous WebSocket dial, on either side (spec §10.2, §10.7).
pub const RENDEZVOUS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest registry answer worth reading: a real one is a few kilobytes at most.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// A URL without its query and fragment, for logs and errors: rendezvous URLs carry their
/// ticket in the query (spec §10.7: WS URLs are logged without query or fragment).
pub fn url_for_logs(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// `POST {base}/cloud/environment/{id}/register`.
pub fn register_path(environment_id: &str) -> String {
    format!("/cloud/environment/{environment_id}/register")
}

/// `POST {base}/cloud/environment/{id}/connect`.
pub fn connect_path(environment_id: &str) -> String {
    format!("/cloud/environment/{environment_id}/connect")
}

/// `POST {base}/cloud/environment/{id}/validate`.
pub fn validate_path(environment_id: &str) -> String {
    format!("/cloud/environment/{environment_id}/validate")
}

/// Why an environment id is not acceptable to a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentIdError {
    /// Empty or over [`MAX_ENVIRONMENT_ID_LEN`] characters.
    #[error("environment id must be 1 to {MAX_ENVIRONMENT_ID_LEN} characters, got {0}")]
    Length(usize),
    /// A character outside `[A-Za-z0-9_-]`.
    #[error("environment id may only contain A-Z, a-z, 0-9, `_` and `-`")]
    Character,
}

/// Checks an environment id as a registry must (spec §10.1, §10.11: the upstream executor sends
/// whatever it was given, trimmed, so the registry validates).
pub fn check_environment_id(id: &str) -> Result<(), EnvironmentIdError> {
    if id.is_empty() || id.len() > MAX_ENVIRONMENT_ID_LEN {
        return Err(EnvironmentIdError::Length(id.chars().count()));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(EnvironmentIdError::Character);
    }
    Ok(())
}

/// Why a registry answer does not fit the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The answer names another environment.
    #[error("environment registry returned a different environment id")]
    EnvironmentId,
    /// The answer names another security profile.
    #[error("environment registry returned unsupported security profile `{0}`")]
    SecurityProfile(String),
}

fn check_answer(
    requested: &str,
    environment_id: &str,
    security_profile: &str,
) -> Result<(), AnswerError> {
    if environment_id != requested {
        return Err(AnswerError::EnvironmentId);
    }
    if security_profile != SECURITY_PROFILE {
        return Err(AnswerError::SecurityProfile(security_profile.to_string()));
    }
    Ok(())
}

/// Executor registration request body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegisterRequest {
    /// Always [`SECURITY_PROFILE`].
    pub security_profile: String,
    /// The executor's static key.
    pub executor_public_key: PublicKey,
}

impl RegisterRequest {
    /// The request for `key`.
    pub fn new(key: PublicKey) -> Self {
        Self {
            security_profile: SECURITY_PROFILE.to_string(),
            executor_public_key: key,
        }
    }
}

/// Registration answer (`EnvironmentRegistryRegistrationResponse`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegisterResponse {
    /// Must equal the requested id.
    pub environment_id: String,
    /// Rendezvous WebSocket URL.
    pub url: String,
    /// Must be [`SECURITY_PROFILE`].
    pub security_profile: String,
    /// Goes into every stream's prologue and into `validate` requests.
    pub executor_registration_id: String,
}

impl RegisterResponse {
    /// Checks the answer against the requested environment id.
    pub fn check(&self, requested: &str) -> Result<(), AnswerError> {
        check_answer(requested, &self.environment_id, &self.security_profile)
    }
}

/// Harness `connect` request body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectRequest {
    /// The harness static key (kept for the process lifetime).
    pub harness_public_key: PublicKey,
}

/// Harness `connect` answer (`EnvironmentRegistryConnectResponse`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectResponse {
    /// Must equal the requested id.
    pub environment_id: String,
    /// Rendezvous WebSocket URL (redacted in Debug).
    pub url: String,
    /// Must be [`SECURITY_PROFILE`].
    pub security_profile: String,
    /// Goes into the prologue.
    pub executor_registration_id: String,
    /// The executor key to pin.
    pub executor_public_key: PublicKey,
    /// Opaque, sent in msg1 (redacted in Debug).
    pub harness_key_authorization: String,
}

impl ConnectResponse {
    /// Checks the answer and returns what the handshake needs.
    pub fn into_connect_info(self, requested: &str) -> Result<ConnectInfo, AnswerError> {
        check_answer(requested, &self.environment_id, &self.security_profile)?;
        Ok(ConnectInfo {
            environment_id: self.environment_id,
            executor_registration_id: self.executor_registration_id,
            executor_public_key: self.executor_public_key,
            harness_key_authorization: self.harness_key_authorization,
        })
    }
}

impl fmt::Debug for ConnectResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectResponse")
            .field("environment_id", &self.environment_id)
            .field("url", &"<redacted>")
            .field("security_profile", &self.security_profile)
            .field("executor_registration_id", &self.executor_registration_id)
            .field("executor_public_key", &self.executor_public_key)
            .field("harness_key_authorization", &"<redacted>")
            .finish()
    }
}

/// Executor `validate` request body (sent with [`NOISE_STREAM_ID_HEADER`]).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidateRequest {
    /// The executor's registration.
    pub executor_registration_id: String,
    /// The harness key learnt from msg1.
    pub harness_public_key: PublicKey,
    /// The msg1 payload (redacted in Debug).
    pub harness_key_authorization: String,
}

impl fmt::Debug for ValidateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateRequest")
            .field("executor_registration_id", &self.executor_registration_id)
            .field("harness_public_key", &self.harness_public_key)
            .field("harness_key_authorization", &"<redacted>")
            .finish()
    }
}

/// `validate` answer; only `{"valid": true}` with status 200 accepts the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidateResponse {
    /// Whether the harness key is authorised.
    pub valid: bool,
}

/// Registry error body: `{"error":{"code"?:string,"message"?:string}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::StaticIdentity;
    use serde_json::json;

    #[test]
    fn register_request_has_the_spec_shape() {
        let id = StaticIdentity::generate().unwrap();
        let v = serde_json::to_value(RegisterRequest::new(id.public_key().clone())).unwrap();
        assert_eq!(v["security_profile"], "noise_hybrid_ik_v1");
        assert_eq!(
            v["executor_public_key"]["suite"],
            "Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256"
        );
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn answers_are_checked_against_the_request() {
        let ok: RegisterResponse = serde_json::from_value(json!({
            "environment_id": "e2e", "url": "ws://x/rv",
            "security_profile": "noise_hybrid_ik_v1", "executor_registration_id": "r"
        }))
        .unwrap();
        assert_eq!(ok.check("e2e"), Ok(()));
        assert_eq!(ok.check("other"), Err(AnswerError::EnvironmentId));
        assert_eq!(
            AnswerError::EnvironmentId.to_string(),
            "environment registry returned a different environment id"
        );
        let mut bad = ok;
        bad.security_profile = "direct_jsonrpc_v1".into();
        assert!(matches!(
            bad.check("e2e"),
            Err(AnswerError::SecurityProfile(_))
        ));
    }

    #[test]
    fn connect_response_becomes_connect_info_and_hides_secrets() {
        let id = StaticIdentity::generate().unwrap();
        let resp: ConnectResponse = serde_json::from_value(json!({
            "environment_id": "e2e", "url": "ws://host/rv?token=zzz",
            "security_profile": "noise_hybrid_ik_v1", "executor_registration_id": "r",
            "executor_public_key": id.public_key(), "harness_key_authorization": "topsecret"
        }))
        .unwrap();
        let text = format!("{resp:?}");
        assert!(
            !text.contains("topsecret") && !text.contains("zzz"),
            "{text}"
        );
        let info = resp.into_connect_info("e2e").unwrap();
        assert_eq!(&info.executor_public_key, id.public_key());
        assert_eq!(info.harness_key_authorization, "topsecret");
    }

    #[test]
    fn environment_ids_are_checked_as_a_registry_must() {
        assert_eq!(check_environment_id("e2e_A-1"), Ok(()));
        assert_eq!(check_environment_id(&"a".repeat(256)), Ok(()));
        assert_eq!(
            check_environment_id(&"a".repeat(257)),
            Err(EnvironmentIdError::Length(257))
        );
        assert_eq!(check_environment_id(""), Err(EnvironmentIdError::Length(0)));
        for bad in ["bad id", "a/b", " e", "é"] {
            assert!(check_environment_id(bad).is_err(), "{bad}");
        }
        assert_eq!(register_path("e2e"), "/cloud/environment/e2e/register");
    }

    #[test]
    fn urls_are_logged_without_query_or_fragment() {
        assert_eq!(
            url_for_logs("wss://rv.example/s/1?ticket=abc"),
            "wss://rv.example/s/1"
        );
        assert_eq!(url_for_logs("ws://h/x#frag"), "ws://h/x");
        assert_eq!(url_for_logs("ws://h/x"), "ws://h/x");
    }

    #[test]
    fn error_body_fields_are_optional() {
        let body: ErrorBody = serde_json::from_str(r#"{"error":{}}"#).unwrap();
        assert_eq!(body.error.code, None);
        assert_eq!(
            serde_json::to_string(&ErrorBody {
                error: ErrorDetail {
                    code: Some("unauthorized".into()),
                    message: None
                }
            })
            .unwrap(),
            r#"{"error":{"code":"unauthorized"}}"#
        );
        let v: ValidateResponse = serde_json::from_str(r#"{"valid":true}"#).unwrap();
        assert!(v.valid);
    }
}
