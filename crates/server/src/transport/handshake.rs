//! The server side of the WebSocket opening handshake (RFC 6455 §4.2): which upgrade
//! requests are valid, and the `101 Switching Protocols` answer.
//!
//! The upgrade is ours rather than axum's `WebSocketUpgrade` so that the connection gets its
//! socket back from hyper and writes its own frames (`ws_frames`).

use axum::http::header::SEC_WEBSOCKET_VERSION;
use axum::http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Whether one of `name`'s comma-separated values is `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: axum::http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Why an upgrade request is refused: its status and a short text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) StatusCode, pub(crate) &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // What a client needs to retry right: the protocol and version we speak.
        (
            self.0,
            [(UPGRADE, "websocket"), (SEC_WEBSOCKET_VERSION, "13")],
            self.1,
        )
            .into_response()
    }
}

/// The `Sec-WebSocket-Accept` value for a valid upgrade request, or the refusal: `405` for a
/// method other than GET, `426` without `Connection: upgrade` and `Upgrade: websocket`,
/// `400` for another version than 13 or a missing key.
pub(crate) fn accept_key(method: &Method, headers: &HeaderMap) -> Result<String, Refusal> {
    if method != Method::GET {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "websocket upgrades use GET",
        ));
    }
    if !has_token(headers, CONNECTION, "upgrade") || !has_token(headers, UPGRADE, "websocket") {
        return Err(Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "expected a websocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version (13 is required)",
        ));
    }
    match headers.get(SEC_WEBSOCKET_KEY) {
        Some(key) => Ok(derive_accept_key(key.as_bytes())),
        None => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        )),
    }
}

/// The `101` answer that completes the handshake.
pub(crate) fn switching_protocols(accept: String) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    #[test]
    fn the_rfc_example_key_gets_its_accept_value() {
        let accept = accept_key(&Method::GET, &upgrade_headers()).expect("valid");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn invalid_upgrades_are_refused_with_their_status() {
        let status = |m: &Method, h: &HeaderMap| accept_key(m, h).unwrap_err().0;
        assert_eq!(
            status(&Method::POST, &upgrade_headers()),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let mut h = upgrade_headers();
        h.remove(UPGRADE);
        assert_eq!(status(&Method::GET, &h), StatusCode::UPGRADE_REQUIRED);
        let mut h = upgrade_headers();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(status(&Method::GET, &h), StatusCode::UPGRADE_REQUIRED);
        let mut h = upgrade_headers();
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(status(&Method::GET, &h), StatusCode::BAD_REQUEST);
        let mut h = upgrade_headers();
        h.remove(SEC_WEBSOCKET_KEY);
        assert_eq!(status(&Method::GET, &h), StatusCode::BAD_REQUEST);
    }
}
