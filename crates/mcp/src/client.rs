//! [`McpHttpClient`]: rmcp's [`StreamableHttpClient`] over any [`HttpRunner`], so the MCP
//! Streamable HTTP transport's requests are sent from wherever the runner sends them (this
//! machine, or the executor through `http/request`).
//!
//! What each call sends and how replies are read:
//! * `post_message`: `POST` with the JSON-RPC message, `Accept: application/json,
//!   text/event-stream`; a `text/event-stream` reply is parsed as it arrives
//!   ([`crate::sse`]), a JSON reply is read whole under `max_json_response_size`, 202/204 is
//!   "accepted";
//! * `get_stream`: `GET` with `Accept: text/event-stream` (and `Last-Event-Id` when resuming),
//!   405 means the server offers no stream;
//! * `delete_session`: `DELETE` (405 means the server keeps sessions itself);
//! * every request carries `Mcp-Session-Id` once the server gave one, the bearer token
//!   (`Authorization: Bearer …`), the transport's custom headers and this client's own
//!   [`HttpHeader`]s, whose `valueEnvVar` the sending runner resolves (on the executor, from the
//!   executor's environment);
//! * a 404 on a request that carried a session id is [`StreamableHttpError::SessionExpired`]:
//!   rmcp then re-initializes (when `reinit_on_expired_session` is on, the default) and retries
//!   the request once, as the MCP specification asks;
//! * 401/403 with `WWW-Authenticate` become `AuthRequired`/`InsufficientScope` for rmcp's
//!   OAuth flow; 429 and 5xx without a JSON-RPC error become `HttpStatus`.
//!
//! Redirects are not followed (a session id or token is never replayed to another URL); a 3xx
//! is an "unexpected server response" naming the status.
//!
//! Bounds: a JSON reply or JSON error is held whole up to `max_json_response_size` (rmcp's
//! default 16 MiB); a non-JSON error body is read only up to `max_error_response_size` (64 KiB)
//! for the message; an SSE reply holds at most one event (`max_sse_event_size`, 16 MiB) plus one
//! body chunk of parsed events.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use exec_server_core::http::{
    HttpBody, HttpError, HttpHeader, HttpRequest, HttpResponse, HttpRunner, RedirectPolicy,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use http::{HeaderName, HeaderValue};
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, ErrorData, JsonRpcMessage, ServerJsonRpcMessage,
};
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_LAST_EVENT_ID, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, InsufficientScopeError, SseError, StreamableHttpClient,
    StreamableHttpClientTransportConfig, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use rmcp::transport::StreamableHttpClientTransport;
use sse_stream::Sse;

use crate::sse::sse_events;

/// rmcp's default bound on one SSE event, used by the calls that give none.
pub const DEFAULT_MAX_SSE_EVENT_SIZE: usize = 16 << 20;

/// Why a request of [`McpHttpClient`] failed below the MCP layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpHttpError {
    /// The runner failed: the request was refused, could not be sent, or its body broke off
    /// (including the executor connection ending mid-stream).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A header given to the transport is not valid UTF-8 (the runner takes text).
    #[error("header {name} has a value that is not UTF-8")]
    HeaderNotUtf8 {
        /// The header's name.
        name: String,
    },
}

type Error = StreamableHttpError<McpHttpError>;

/// Options of an [`McpHttpClient`].
#[derive(Debug, Clone, Default)]
pub struct McpHttpOptions {
    /// Headers added to every request. A header with `value_env_var` is sent as `value` followed
    /// by that variable of the sending side's environment: with an executor-backed runner, a
    /// token the executor holds (`Authorization: Bearer ` + `$MCP_TOKEN`) that the client never
    /// sees.
    pub headers: Vec<HttpHeader>,
    /// Deadline of each POST and DELETE exchange, headers and body (the runner's default when
    /// `None`). The long-lived `GET` stream has none.
    pub request_timeout: Option<Duration>,
}

/// rmcp's Streamable HTTP client over an [`HttpRunner`]. Cheap to clone.
pub struct McpHttpClient<R> {
    inner: Arc<Inner<R>>,
}

struct Inner<R> {
    runner: R,
    options: McpHttpOptions,
    /// The last failure below the MCP layer, for callers that only get rmcp's
    /// "transport closed" (see [`McpHttpClient::last_error`]).
    last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl<R> Clone for McpHttpClient<R> {
    fn clone(&self) -> Self {
        McpHttpClient {
            inner: self.inner.clone(),
        }
    }
}

impl<R> std::fmt::Debug for McpHttpClient<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpHttpClient")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<R: HttpRunner + 'static> McpHttpClient<R> {
    /// A client that sends through `runner`.
    pub fn new(runner: R, options: McpHttpOptions) -> Self {
        McpHttpClient {
            inner: Arc::new(Inner {
                runner,
                options,
                last_error: Arc::default(),
            }),
        }
    }

    /// The last error of a request or of a response body (an event stream that broke off), as
    /// text. rmcp ends its requests with a bare "transport closed" once it gives up on a broken
    /// stream; this says why (e.g. "the connection to the server was lost").
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }

    /// rmcp's transport over this client (a clone of it), configured by `config`; start from
    /// [`crate::config`].
    pub fn transport(&self, config: StreamableHttpClientTransportConfig) -> crate::Transport<R> {
        StreamableHttpClientTransport::with_client(self.clone(), config)
    }

    fn note_error(&self, e: &dyn std::fmt::Display) {
        *lock(&self.inner.last_error) = Some(e.to_string());
    }

    /// The events of `body`, noting a body error.
    fn events(&self, body: HttpBody, max: usize) -> BoxStream<'static, Result<Sse, SseError>> {
        let slot = self.inner.last_error.clone();
        Box::pin(sse_events(body, max).inspect(move |item| {
            if let Err(e) = item {
                *lock(&slot) = Some(e.to_string());
            }
        }))
    }

    /// The runner requests go through.
    pub fn runner(&self) -> &R {
        &self.inner.runner
    }

    /// Sends one request with the common headers.
    async fn send(&self, req: Request<'_>) -> Result<HttpResponse, Error> {
        let mut headers =
            Vec::with_capacity(8 + req.custom.len() + self.inner.options.headers.len());
        if let Some(accept) = req.accept {
            headers.push(header("accept", accept));
        }
        if req.body.is_some() {
            headers.push(header("content-type", JSON_MIME_TYPE));
        }
        if let Some(session) = req.session_id {
            headers.push(header(HEADER_SESSION_ID, session));
        }
        if let Some(id) = req.last_event_id {
            headers.push(header(HEADER_LAST_EVENT_ID, id));
        }
        if let Some(token) = req.auth {
            headers.push(header("authorization", &format!("Bearer {token}")));
        }
        for (name, value) in req.custom {
            if is_reserved(name.as_str()) {
                return Err(StreamableHttpError::ReservedHeaderConflict(
                    name.to_string(),
                ));
            }
            let value = value.to_str().map_err(|_| {
                StreamableHttpError::Client(McpHttpError::HeaderNotUtf8 {
                    name: name.to_string(),
                })
            })?;
            headers.push(header(name.as_str(), value));
        }
        headers.extend(self.inner.options.headers.iter().cloned());
        let request = HttpRequest {
            method: req.method.to_string(),
            url: req.uri.to_string(),
            headers,
            body: req.body,
            timeout: req.timeout,
            redirect: RedirectPolicy::Stop,
        };
        tracing::debug!(method = req.method, url = %req.uri, "mcp http request");
        self.inner.runner.send(request).await.map_err(|e| {
            self.note_error(&e);
            StreamableHttpError::Client(McpHttpError::Http(e))
        })
    }
}

/// What one call sends.
struct Request<'a> {
    method: &'static str,
    uri: &'a str,
    accept: Option<&'static str>,
    session_id: Option<&'a str>,
    last_event_id: Option<&'a str>,
    auth: Option<String>,
    custom: &'a HashMap<HeaderName, HeaderValue>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

fn header(name: &str, value: &str) -> HttpHeader {
    HttpHeader {
        name: name.to_string(),
        value: value.to_string(),
        value_env_var: None,
    }
}

/// Headers the transport sets itself; `MCP-Protocol-Version` comes from rmcp's worker.
fn is_reserved(name: &str) -> bool {
    ["accept", HEADER_SESSION_ID, HEADER_LAST_EVENT_ID]
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r))
}

/// The first value of header `name` (response names are lower-case).
fn response_header<'a>(resp: &'a HttpResponse, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Whether a `Content-Type` value's media type is `expected` (parameters and case ignored).
fn media_type_is(value: &str, expected: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

/// 401/403 with a challenge, as rmcp's OAuth flow expects them.
fn auth_error(resp: &HttpResponse) -> Option<Error> {
    let challenge = response_header(resp, "www-authenticate")?.to_string();
    match resp.status {
        401 => Some(StreamableHttpError::AuthRequired(AuthRequiredError::new(
            challenge,
        ))),
        403 => {
            let scope = scope_of(&challenge);
            Some(StreamableHttpError::InsufficientScope(
                InsufficientScopeError::new(challenge, scope),
            ))
        }
        _ => None,
    }
}

/// The `scope=` parameter of a `WWW-Authenticate` value, quoted or not.
fn scope_of(challenge: &str) -> Option<String> {
    let at = challenge.to_ascii_lowercase().find("scope=")? + "scope=".len();
    let rest = &challenge[at..];
    let value = match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?,
        None => rest.split([',', ' ']).next()?,
    };
    (!value.is_empty()).then(|| value.to_string())
}

/// 429 and 5xx as status metadata.
fn status_error(resp: &HttpResponse) -> Option<HttpStatusError> {
    if resp.status != 429 && !(500..600).contains(&resp.status) {
        return None;
    }
    let retry_after = response_header(resp, "retry-after").map(str::to_string);
    Some(HttpStatusError::new(resp.status, retry_after))
}

/// Reads a whole body of at most `limit` bytes.
async fn read_bounded(body: HttpBody, limit: usize) -> Result<Bytes, Error> {
    body.read_to_end(limit).await.map_err(|e| match e {
        HttpError::BodyTooLarge { .. } => {
            StreamableHttpError::ResponseBodyTooLarge { max_size: limit }
        }
        e => StreamableHttpError::Client(McpHttpError::Http(e)),
    })
}

/// The first `limit` bytes of a body, for a diagnostic; the rest is not read.
async fn read_prefix(mut body: HttpBody, limit: usize) -> String {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.next_chunk().await {
            Some(Ok(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            Some(Err(_)) => break,
            None => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A session-less `server/discover` rejected with a 4xx: answered as the JSON-RPC error rmcp's
/// lifecycle classifies (it then falls back to `initialize`), as rmcp's own clients do.
fn discover_rejection(
    message: &ClientJsonRpcMessage,
    session_was_attached: bool,
    status: u16,
    body: &str,
) -> Option<StreamableHttpPostResponse> {
    if session_was_attached || !(400..500).contains(&status) || status == 401 || status == 403 {
        return None;
    }
    let ClientJsonRpcMessage::Request(request) = message else {
        return None;
    };
    if !matches!(request.request, ClientRequest::DiscoverRequest(_)) {
        return None;
    }
    let error = match serde_json::from_str::<ServerJsonRpcMessage>(body) {
        Ok(ServerJsonRpcMessage::Error(error)) => error.error,
        _ => ErrorData::invalid_request(
            format!("server/discover rejected with HTTP {status}: {body}"),
            None,
        ),
    };
    Some(StreamableHttpPostResponse::Json(
        ServerJsonRpcMessage::error(error, Some(request.id.clone())),
        None,
    ))
}

impl<R: HttpRunner + 'static> McpHttpClient<R> {
    async fn post(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth: Option<String>,
        custom: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let body = serde_json::to_vec(&message)?;
        let session_was_attached = session_id.is_some();
        let resp = self
            .send(Request {
                method: "POST",
                uri: &uri,
                accept: Some("application/json, text/event-stream"),
                session_id: session_id.as_deref(),
                last_event_id: None,
                auth,
                custom: &custom,
                body: Some(body),
                timeout: self.inner.options.request_timeout,
            })
            .await?;
        if let Some(e) = auth_error(&resp) {
            return Err(e);
        }
        let status = resp.status;
        if status == 202 || status == 204 {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == 404 && session_was_attached {
            tracing::debug!(url = %uri, "mcp session expired (404)");
            return Err(StreamableHttpError::SessionExpired);
        }
        let content_type = response_header(&resp, "content-type").map(str::to_string);
        let is_json = content_type
            .as_deref()
            .is_some_and(|ct| media_type_is(ct, JSON_MIME_TYPE));
        let status_err = status_error(&resp);
        if let Some(e) = status_err.as_ref() {
            if !is_json || status == 429 {
                return Err(HttpStatusError::new(e.status, e.retry_after.clone()).into());
            }
        }
        let new_session = response_header(&resp, HEADER_SESSION_ID).map(str::to_string);
        let awaits_no_response = !matches!(message, ClientJsonRpcMessage::Request(_));
        if !(200..300).contains(&status) {
            let is_auth = status == 401 || status == 403;
            let text = if is_json && !is_auth {
                match read_bounded(resp.body, limits.max_json_response_size).await {
                    Ok(raw) => {
                        let text = String::from_utf8_lossy(&raw).into_owned();
                        if let Ok(m @ JsonRpcMessage::Error(_)) =
                            serde_json::from_str::<ServerJsonRpcMessage>(&text)
                        {
                            if let Some(r) =
                                discover_rejection(&message, session_was_attached, status, &text)
                            {
                                return Ok(r);
                            }
                            return Ok(StreamableHttpPostResponse::Json(m, new_session));
                        }
                        truncate(text, limits.max_error_response_size)
                    }
                    Err(e @ StreamableHttpError::ResponseBodyTooLarge { .. }) => {
                        return Err(status_err.map(Error::from).unwrap_or(e));
                    }
                    Err(e) => return Err(e),
                }
            } else {
                read_prefix(resp.body, limits.max_error_response_size).await
            };
            if let Some(r) = discover_rejection(&message, session_was_attached, status, &text) {
                return Ok(r);
            }
            if let Some(e) = status_err {
                return Err(e.into());
            }
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("HTTP {status}: {text}"),
            )));
        }
        match content_type.as_deref() {
            Some(ct) if media_type_is(ct, EVENT_STREAM_MIME_TYPE) => {
                Ok(StreamableHttpPostResponse::Sse(
                    self.events(resp.body, limits.max_sse_event_size),
                    new_session,
                ))
            }
            Some(ct) if media_type_is(ct, JSON_MIME_TYPE) => {
                let raw = read_bounded(resp.body, limits.max_json_response_size).await?;
                if raw.is_empty() && awaits_no_response {
                    return Ok(StreamableHttpPostResponse::Accepted);
                }
                match serde_json::from_slice::<ServerJsonRpcMessage>(&raw) {
                    Ok(m) => Ok(StreamableHttpPostResponse::Json(m, new_session)),
                    Err(e) if awaits_no_response => {
                        tracing::warn!(
                            "unparsable JSON reply to a notification, taken as accepted: {e}"
                        );
                        Ok(StreamableHttpPostResponse::Accepted)
                    }
                    Err(e) => Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                        format!(
                            "could not parse JSON response as ServerJsonRpcMessage: {e}: {}",
                            truncate(String::from_utf8_lossy(&raw).into_owned(), 256)
                        ),
                    ))),
                }
            }
            _ if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
            _ => Err(StreamableHttpError::UnexpectedContentType(content_type)),
        }
    }

    async fn get(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth: Option<String>,
        custom: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        let resp = self
            .send(Request {
                method: "GET",
                uri: &uri,
                accept: Some("text/event-stream, application/json"),
                session_id: session_id.as_deref(),
                last_event_id: last_event_id.as_deref(),
                auth,
                custom: &custom,
                body: None,
                timeout: None,
            })
            .await?;
        if resp.status == 405 {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if let Some(e) = auth_error(&resp) {
            return Err(e);
        }
        if resp.status == 404 && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        if let Some(e) = status_error(&resp) {
            return Err(e.into());
        }
        if !(200..300).contains(&resp.status) {
            let status = resp.status;
            let text = read_prefix(resp.body, 1024).await;
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("HTTP {status}: {text}"),
            )));
        }
        match response_header(&resp, "content-type") {
            Some(ct)
                if media_type_is(ct, EVENT_STREAM_MIME_TYPE)
                    || media_type_is(ct, JSON_MIME_TYPE) =>
            {
                Ok(self.events(resp.body, max_sse_event_size))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(
                other.map(str::to_string),
            )),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl<R: HttpRunner + 'static> StreamableHttpClient for McpHttpClient<R> {
    type Error = McpHttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let limits = StreamableHttpResponseLimits::default();
        self.post(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
        self.post(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Error> {
        self.post(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Error> {
        let resp = self
            .send(Request {
                method: "DELETE",
                uri: &uri,
                accept: None,
                session_id: Some(&session_id),
                last_event_id: None,
                auth: auth_header,
                custom: &custom_headers,
                body: None,
                timeout: self.inner.options.request_timeout,
            })
            .await?;
        match resp.status {
            405 => {
                tracing::debug!("the MCP server does not support ending a session");
                Ok(())
            }
            s if (200..300).contains(&s) || s == 404 => Ok(()),
            s => {
                let text = read_prefix(resp.body, 1024).await;
                Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                    format!("DELETE: HTTP {s}: {text}"),
                )))
            }
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        self.get(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            DEFAULT_MAX_SSE_EVENT_SIZE,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        self.get(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ClientNotification, InitializedNotification, PingRequest, RequestId};
    use std::sync::Mutex;

    /// Answers every request with a canned response and records what was sent.
    struct Fake {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
        sent: Mutex<Vec<HttpRequest>>,
    }

    impl HttpRunner for Fake {
        async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
            self.sent.lock().expect("lock").push(request);
            Ok(HttpResponse {
                status: self.status,
                headers: self.headers.iter().map(|(n, v)| header(n, v)).collect(),
                body: HttpBody::from_bytes(self.body),
            })
        }
    }

    fn client(
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: &'static str,
    ) -> McpHttpClient<Fake> {
        let options = McpHttpOptions {
            headers: vec![HttpHeader {
                name: "x-key".into(),
                value: "k-".into(),
                value_env_var: Some("KEY".into()),
            }],
            request_timeout: None,
        };
        let fake = Fake {
            status,
            headers: headers.to_vec(),
            body,
            sent: Mutex::default(),
        };
        McpHttpClient::new(fake, options)
    }

    fn ping() -> ClientJsonRpcMessage {
        ClientJsonRpcMessage::request(
            ClientRequest::PingRequest(PingRequest::default()),
            RequestId::Number(1),
        )
    }

    fn initialized() -> ClientJsonRpcMessage {
        ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
            InitializedNotification::default(),
        ))
    }

    async fn post(
        c: &McpHttpClient<Fake>,
        message: ClientJsonRpcMessage,
        session: Option<&str>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        c.post_message(
            "http://h/mcp".into(),
            message,
            session.map(Into::into),
            None,
            HashMap::new(),
        )
        .await
    }

    fn sent(c: &McpHttpClient<Fake>) -> Vec<HttpRequest> {
        c.runner().sent.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn a_post_carries_the_session_token_and_headers() {
        let c = client(202, &[], "");
        let mut custom = HashMap::new();
        custom.insert(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_static("2025-11-25"),
        );
        let r = c
            .post_message(
                "http://h/mcp".into(),
                initialized(),
                Some("s1".into()),
                Some("tok".into()),
                custom,
            )
            .await
            .expect("accepted");
        assert!(matches!(r, StreamableHttpPostResponse::Accepted));
        let req = &sent(&c)[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.redirect, RedirectPolicy::Stop);
        let h: Vec<_> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.as_str(),
                    h.value.as_str(),
                    h.value_env_var.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            h,
            [
                ("accept", "application/json, text/event-stream", None),
                ("content-type", "application/json", None),
                ("Mcp-Session-Id", "s1", None),
                ("authorization", "Bearer tok", None),
                ("mcp-protocol-version", "2025-11-25", None),
                ("x-key", "k-", Some("KEY")),
            ]
        );
        let body: serde_json::Value =
            serde_json::from_slice(req.body.as_deref().expect("body")).expect("json");
        assert_eq!(body["method"], "notifications/initialized");
    }

    #[tokio::test]
    async fn reserved_custom_headers_are_refused() {
        let c = client(202, &[], "");
        let mut custom = HashMap::new();
        custom.insert(
            HeaderName::from_static("accept"),
            HeaderValue::from_static("*/*"),
        );
        let err = c
            .post_message("http://h/mcp".into(), ping(), None, None, custom)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, StreamableHttpError::ReservedHeaderConflict(_)),
            "{err}"
        );
        assert!(sent(&c).is_empty());
    }

    #[tokio::test]
    async fn not_found_with_a_session_is_session_expiry() {
        let c = client(404, &[], "Not Found: Session not found");
        let err = post(&c, ping(), Some("gone")).await.expect_err("expired");
        assert!(matches!(err, StreamableHttpError::SessionExpired), "{err}");
        // Without a session it is only an unexpected answer.
        let err = post(&c, ping(), None).await.expect_err("404");
        assert_eq!(
            err.to_string(),
            "unexpected server response: HTTP 404: Not Found: Session not found"
        );
    }

    #[tokio::test]
    async fn json_replies_carry_the_new_session_id() {
        let c = client(
            200,
            &[
                ("content-type", "application/json"),
                ("mcp-session-id", "abc"),
            ],
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        );
        match post(&c, ping(), None).await.expect("json") {
            StreamableHttpPostResponse::Json(_, session) => {
                assert_eq!(session.as_deref(), Some("abc"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn sse_replies_are_parsed_as_they_come() {
        let c = client(
            200,
            &[("content-type", "text/event-stream; charset=utf-8")],
            "id: 0\nretry: 5\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
        );
        let StreamableHttpPostResponse::Sse(stream, _) =
            post(&c, ping(), Some("s")).await.expect("sse")
        else {
            panic!("not sse");
        };
        let events: Vec<_> = stream.collect().await;
        assert_eq!(events.len(), 2);
        assert!(events[1]
            .as_ref()
            .expect("event")
            .data
            .as_deref()
            .is_some_and(|d| d.contains("result")));
    }

    #[tokio::test]
    async fn auth_challenges_and_overload_are_typed() {
        let c = client(401, &[("www-authenticate", "Bearer realm=\"x\"")], "");
        let err = post(&c, ping(), None).await.expect_err("401");
        assert!(matches!(err, StreamableHttpError::AuthRequired(_)), "{err}");
        let c = client(403, &[("www-authenticate", "Bearer scope=\"a b\"")], "");
        match post(&c, ping(), None).await.expect_err("403") {
            StreamableHttpError::InsufficientScope(e) => {
                assert_eq!(e.get_required_scope(), Some("a b"))
            }
            other => panic!("{other}"),
        }
        let c = client(
            503,
            &[("retry-after", "7"), ("content-type", "text/html")],
            "<html>",
        );
        match post(&c, ping(), None).await.expect_err("503") {
            StreamableHttpError::HttpStatus(e) => {
                assert_eq!((e.status, e.retry_after.as_deref()), (503, Some("7")))
            }
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn a_json_rpc_error_body_is_the_reply() {
        let c = client(
            400,
            &[("content-type", "application/json")],
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"bad"}}"#,
        );
        let r = post(&c, ping(), Some("s")).await.expect("reply");
        assert!(matches!(
            r,
            StreamableHttpPostResponse::Json(JsonRpcMessage::Error(_), _)
        ));
    }

    #[tokio::test]
    async fn get_and_delete() {
        let c = client(405, &[], "");
        let err = c
            .get_stream(
                "http://h/mcp".into(),
                Some("s".into()),
                Some("9".into()),
                None,
                HashMap::new(),
            )
            .await
            .err()
            .expect("no stream");
        assert!(
            matches!(err, StreamableHttpError::ServerDoesNotSupportSse),
            "{err}"
        );
        let req = &sent(&c)[0];
        assert_eq!(req.method, "GET");
        assert!(req
            .headers
            .iter()
            .any(|h| h.name == "Last-Event-Id" && h.value == "9"));
        assert!(req.timeout.is_none());
        c.delete_session("http://h/mcp".into(), "s".into(), None, HashMap::new())
            .await
            .expect("405 is fine");
        assert_eq!(sent(&c)[1].method, "DELETE");
        let c = client(500, &[], "boom");
        let err = c
            .delete_session("http://h/mcp".into(), "s".into(), None, HashMap::new())
            .await
            .expect_err("500");
        assert_eq!(
            err.to_string(),
            "unexpected server response: DELETE: HTTP 500: boom"
        );
    }

    #[tokio::test]
    async fn runner_errors_are_kept_for_last_error() {
        struct Down;
        impl HttpRunner for Down {
            async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
                Err(HttpError::Send {
                    url: request.url,
                    cause: ": the client is closed".into(),
                })
            }
        }
        let c = McpHttpClient::new(Down, McpHttpOptions::default());
        let err = c
            .post_message("http://h/mcp".into(), ping(), None, None, HashMap::new())
            .await
            .expect_err("down");
        assert!(matches!(
            err,
            StreamableHttpError::Client(McpHttpError::Http(_))
        ));
        assert_eq!(
            c.last_error().as_deref(),
            Some("http/request failed: error sending request for url (http://h/mcp): the client is closed")
        );
    }

    #[test]
    fn media_types_ignore_parameters_and_case() {
        assert!(media_type_is(
            "Text/Event-Stream; charset=utf-8",
            EVENT_STREAM_MIME_TYPE
        ));
        assert!(media_type_is("application/json", JSON_MIME_TYPE));
        assert!(!media_type_is("application/jsonx", JSON_MIME_TYPE));
        assert!(!media_type_is(
            "application/json, text/event-stream",
            JSON_MIME_TYPE
        ));
    }

    #[test]
    fn scope_is_read_quoted_or_bare() {
        assert_eq!(
            scope_of(r#"Bearer error="insufficient_scope", scope="files:read files:write""#)
                .as_deref(),
            Some("files:read files:write")
        );
        assert_eq!(
            scope_of("Bearer scope=read:data, x=1").as_deref(),
            Some("read:data")
        );
        assert_eq!(scope_of("Bearer realm=x"), None);
    }

    #[test]
    fn reserved_headers_are_recognised_in_any_case() {
        assert!(is_reserved("mcp-session-id"));
        assert!(is_reserved("Accept"));
        assert!(!is_reserved("mcp-protocol-version"));
        assert!(!is_reserved("x-api-key"));
    }

    #[test]
    fn truncate_keeps_characters_whole() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }
}
