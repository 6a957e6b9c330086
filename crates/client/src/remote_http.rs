//! [`RemoteHttp`]: core's `HttpRunner` trait spoken over JSON-RPC. Requests are always sent with
//! `streamResponse: true`, so the reply comes back with the headers and the body follows as
//! `http/request/bodyDelta` notifications routed to this request's [`HttpBody`].
//!
//! A body holds at most 32 undelivered deltas; past that the connection waits for its reader
//! (back-pressure to the executor), so read a body to its end or drop it.

use bytes::Bytes;
use exec_server_core::http::{HttpBody, HttpError, HttpRequest, HttpResponse, HttpRunner};
use exec_server_protocol::bytes::Base64;
use exec_server_protocol::http::{self as wire, HttpRequestParams};

use crate::client::Client;
use crate::error::ClientError;

/// The HTTP runner of the executor behind a [`Client`].
#[derive(Debug, Clone)]
pub struct RemoteHttp {
    client: Client,
}

impl RemoteHttp {
    /// The HTTP runner of `client`'s executor.
    pub fn new(client: Client) -> Self {
        RemoteHttp { client }
    }
}

impl HttpRunner for RemoteHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request_id = self.client.unique("r");
        let url = request.url.clone();
        let deltas = self.client.http_route(&request_id);
        let params = HttpRequestParams {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body_base64: request.body.as_deref().map(Base64::encode),
            timeout_ms: request.timeout.map(|t| Some(t.as_millis() as u64)),
            redirect_policy: Some(request.redirect),
            request_id: request_id.clone(),
            stream_response: true,
        };
        let result = match self.client.call::<wire::Request>(params).await {
            Ok(r) => r,
            Err(e) => {
                self.client.drop_http_route(&request_id);
                return Err(http_error(&url, e));
            }
        };
        // `finished` is set by the terminal delta: a route that ends without one lost deltas.
        let body = futures::stream::unfold((deltas, false), |(mut deltas, finished)| async move {
            if finished {
                return None;
            }
            let Some(d) = deltas.recv().await else {
                let cause = ": the body ended without its terminal delta".to_string();
                return Some((Err(HttpError::Body { cause }), (deltas, true)));
            };
            let done = d.done;
            let item = if let Some(err) = d.error {
                Err(HttpError::Body {
                    cause: format!(": {err}"),
                })
            } else {
                match d.delta_base64.decode() {
                    Ok(bytes) if bytes.is_empty() && done => return None,
                    Ok(bytes) => Ok(Bytes::from(bytes)),
                    Err(e) => Err(HttpError::Body {
                        cause: format!(": bad base64 in a body delta: {e}"),
                    }),
                }
            };
            let finished = done || item.is_err();
            Some((item, (deltas, finished)))
        });
        let client = self.client.clone();
        let guard = RouteGuard { client, request_id };
        let body = futures::StreamExt::map(body, move |item| {
            let _keep = &guard;
            item
        });
        Ok(HttpResponse {
            status: result.status,
            headers: result.headers,
            body: HttpBody::new(body, None),
        })
    }
}

/// Removes the body route when the body is dropped.
struct RouteGuard {
    client: Client,
    request_id: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.client.drop_http_route(&self.request_id);
    }
}

/// A client error as the `HttpError` a local runner would have given: the server's messages
/// are the runner's `Display` texts, so they are recognised by their fixed prefixes.
fn http_error(url: &str, e: ClientError) -> HttpError {
    let message = match e {
        ClientError::Rpc(obj) => obj.message,
        other => {
            return HttpError::Send {
                url: url.to_string(),
                cause: format!(": {other}"),
            }
        }
    };
    let rest = |prefix: &str| message.strip_prefix(prefix).map(str::to_string);
    if let Some(r) = rest("http/request method is invalid: ") {
        return HttpError::InvalidMethod(r);
    }
    if let Some(r) = rest("http/request url is invalid: ") {
        return HttpError::InvalidUrl(r);
    }
    if let Some(r) = rest("http/request only supports http and https URLs, got ") {
        return HttpError::UnsupportedScheme(r);
    }
    if let Some(r) = rest("http/request header name is invalid: ") {
        return HttpError::InvalidHeaderName(r);
    }
    let send_prefix = format!("http/request failed: error sending request for url ({url})");
    if let Some(r) = rest(&send_prefix) {
        return HttpError::Send {
            url: url.to_string(),
            cause: r,
        };
    }
    if let Some(r) = rest("http/request failed: error reading response body") {
        return HttpError::Body { cause: r };
    }
    HttpError::Send {
        url: url.to_string(),
        cause: format!(": {message}"),
    }
}
