//! The executor's registry client (spec §10.1, §10.6): `register` once per process, `validate`
//! once per relay stream. One pooled reqwest client (the registry connection is kept alive
//! across calls, as upstream does), a 10 s timeout per request, no redirects, and answers read
//! up to [`MAX_ANSWER_BYTES`].

use std::time::Duration;

use exec_server_relay::frame::StreamId;
use exec_server_relay::noise::PublicKey;
use exec_server_relay::registry::{
    register_path, validate_path, RegisterRequest, RegisterResponse, ValidateRequest,
    ValidateResponse, NOISE_STREAM_ID_HEADER,
};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use super::{Credentials, RemoteError};

/// Timeout of every registry request (spec §10.1).
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest registry answer read; a registry answer is a few hundred bytes.
pub(super) const MAX_ANSWER_BYTES: usize = 64 << 10;
/// Header carrying the ChatGPT account id with a ChatGPT token (spec §10.1).
pub const CHATGPT_ACCOUNT_ID_HEADER: &str = "ChatGPT-Account-Id";

/// Talks to one registry for one environment.
#[derive(Debug)]
pub(super) struct RegistryClient {
    http: reqwest::Client,
    /// `--remote` with trailing `/` trimmed.
    base: String,
    environment_id: String,
    credentials: Credentials,
}

impl RegistryClient {
    pub(super) fn new(
        base: &str,
        environment_id: &str,
        credentials: Credentials,
    ) -> Result<Self, RemoteError> {
        super::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(REGISTRY_TIMEOUT)
            .connect_timeout(REGISTRY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RemoteError::Registry(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            environment_id: environment_id.to_string(),
            credentials,
        })
    }

    /// A POST to `path` with the JSON `body` and the registration credential.
    fn post(&self, path: &str, body: Vec<u8>) -> Result<reqwest::RequestBuilder, RemoteError> {
        let mut bearer = HeaderValue::try_from(format!("Bearer {}", self.credentials.bearer))
            .map_err(|_| {
                RemoteError::Registry("the registration bearer is not a valid header value".into())
            })?;
        bearer.set_sensitive(true);
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, bearer)
            .body(body);
        if let Some(account) = &self.credentials.chatgpt_account_id {
            req = req.header(CHATGPT_ACCOUNT_ID_HEADER, account);
        }
        Ok(req)
    }

    /// Registers the executor key (spec §10.1). Every failure is fatal: no retry with a static
    /// credential, as upstream.
    pub(super) async fn register(&self, key: &PublicKey) -> Result<RegisterResponse, RemoteError> {
        let body = serde_json::to_vec(&RegisterRequest::new(key.clone()))
            .map_err(|e| RemoteError::Registry(format!("cannot encode the request: {e}")))?;
        let resp = self
            .post(&register_path(&self.environment_id), body)?
            .send()
            .await
            .map_err(request_failed)?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RemoteError::Registry(format!(
                "environment registry authentication failed ({status}): response body omitted"
            )));
        }
        if !status.is_success() {
            return Err(RemoteError::Registry(format!(
                "environment registry request failed ({status}): environment registry executor registration failed"
            )));
        }
        let bytes = read_bounded(resp).await.map_err(request_failed)?;
        let answer: RegisterResponse = serde_json::from_slice(&bytes).map_err(|e| {
            RemoteError::Registry(format!(
                "environment registry returned an invalid registration response: {e}"
            ))
        })?;
        answer
            .check(&self.environment_id)
            .map_err(|e| RemoteError::Registry(e.to_string()))?;
        Ok(answer)
    }

    /// Asks the registry whether the harness key of `stream_id` is authorised (spec §10.6).
    /// `Ok(true)` only for a 200 `{"valid": true}`.
    pub(super) async fn validate(
        &self,
        registration_id: &str,
        stream_id: &StreamId,
        harness_public_key: PublicKey,
        authorization: String,
    ) -> Result<bool, String> {
        let body = serde_json::to_vec(&ValidateRequest {
            executor_registration_id: registration_id.to_string(),
            harness_public_key,
            harness_key_authorization: authorization,
        })
        .map_err(|e| e.to_string())?;
        let resp = self
            .post(&validate_path(&self.environment_id), body)
            .map_err(|e| e.to_string())?
            .header(NOISE_STREAM_ID_HEADER, stream_id.as_str())
            .send()
            .await
            .map_err(|e| format!("validate request failed: {e}"))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(format!("registry answered {status}"));
        }
        let bytes = read_bounded(resp)
            .await
            .map_err(|e| format!("validate answer unreadable: {e}"))?;
        let answer: ValidateResponse =
            serde_json::from_slice(&bytes).map_err(|e| format!("validate answer invalid: {e}"))?;
        Ok(answer.valid)
    }
}

fn request_failed(e: reqwest::Error) -> RemoteError {
    if e.is_timeout() {
        RemoteError::Registry("environment registry request timed out".into())
    } else {
        RemoteError::Registry(format!("environment registry request failed: {e}"))
    }
}

/// The answer body, refusing one over [`MAX_ANSWER_BYTES`].
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            // Cut: the JSON will not parse, which the caller reports.
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
