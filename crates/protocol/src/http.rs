//! `http/request` and its `http/request/bodyDelta` notification (spec §6).

use serde::{Deserialize, Serialize};

use crate::bytes::Base64;

/// One header; order and repeats are preserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// The name.
    pub name: String,
    /// The value (a prefix when `valueEnvVar` is set).
    pub value: String,
    /// Append the executor's value of this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_env_var: Option<String>,
}

/// Redirect handling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RedirectPolicy {
    /// Follow redirects (default).
    #[default]
    Follow,
    /// Return the 3xx as is.
    Stop,
}

/// Params of `http/request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestParams {
    /// Any valid HTTP token, sent verbatim.
    pub method: String,
    /// Absolute http or https URL.
    pub url: String,
    /// Request headers.
    #[serde(default)]
    pub headers: Vec<HttpHeader>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<Base64>,
    /// Whole-request deadline. `null` means none (upstream's meaning); absent means the
    /// executor's default (ours: `--http-default-timeout`). Outer `None` = absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    pub timeout_ms: Option<Option<u64>>,
    /// Redirect handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_policy: Option<RedirectPolicy>,
    /// Caller-chosen id tagging body deltas.
    pub request_id: String,
    /// Stream the body as `http/request/bodyDelta` notifications.
    #[serde(default)]
    pub stream_response: bool,
}

/// Keeps `null` apart from an absent member: absent → `None`, `null` → `Some(None)`.
fn present_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// Result of `http/request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestResult {
    /// The status code.
    pub status: u16,
    /// Response headers, names lower-cased.
    pub headers: Vec<HttpHeader>,
    /// The body; `""` when streamed.
    pub body_base64: Base64,
}

/// `http/request/bodyDelta` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BodyDeltaNotification {
    /// The request's id.
    pub request_id: String,
    /// Starts at 1, +1 per frame.
    pub seq: u64,
    /// Body bytes.
    pub delta_base64: Base64,
    /// The terminal frame.
    #[serde(default)]
    pub done: bool,
    /// Set when the body stream failed.
    #[serde(default)]
    pub error: Option<String>,
}

crate::method!(
    /// `http/request`.
    Request,
    "http/request",
    HttpRequestParams,
    HttpRequestResult
);
crate::notification!(
    /// `http/request/bodyDelta`.
    BodyDelta,
    "http/request/bodyDelta",
    BodyDeltaNotification
);
