//! Minimal single-owner JSON-RPC client over WebSocket (Codex dialect: no `"jsonrpc"` member).
//!
//! The client is deliberately task-free: the caller owns the socket and every read happens
//! inside `call`/`wait_response`/`next_notification`, so a round trip costs exactly one write
//! and one read on the caller's task (no channel hops that would blur latency figures).
//! Notifications that arrive while waiting for a response are queued in arrival order;
//! responses to other pipelined requests are parked by id.

use std::collections::{HashMap, VecDeque};

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Largest WebSocket message the bench accepts (a `process/read` reply can be big).
const MAX_MESSAGE: usize = 512 << 20;

/// One WebSocket JSON-RPC connection.
pub(crate) struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: i64,
    notifications: VecDeque<Value>,
    responses: HashMap<i64, Result<Value, String>>,
    /// Replies kept as received text (see `wait_raw`).
    raw_responses: HashMap<i64, Utf8Bytes>,
    /// Ids whose replies `wait_raw` will want as text.
    raw_wanted: std::collections::HashSet<i64>,
}

impl Client {
    /// Opens the WebSocket (Nagle disabled) without any JSON-RPC handshake.
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .with_context(|| format!("websocket connect to {url}"))?;
        Ok(Self {
            ws,
            next_id: 1,
            notifications: VecDeque::new(),
            responses: HashMap::new(),
            raw_responses: HashMap::new(),
            raw_wanted: std::collections::HashSet::new(),
        })
    }

    /// Connects and performs `initialize` + `initialized`.
    pub(crate) async fn connect_initialized(url: &str) -> Result<Self> {
        let mut client = Self::connect(url).await?;
        let result = client
            .call("initialize", json!({"clientName": "bench"}))
            .await
            .context("initialize")?;
        if result.get("sessionId").and_then(Value::as_str).is_none() {
            bail!("initialize result has no sessionId: {result}");
        }
        client.notify("initialized", json!({})).await?;
        Ok(client)
    }

    /// Sends a request without waiting; returns its id.
    pub(crate) async fn send_request(&mut self, method: &str, params: Value) -> Result<i64> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .with_context(|| format!("sending {method}"))?;
        Ok(id)
    }

    /// Takes the next request id, for a request text built ahead of time ([`Self::send_text`]).
    pub(crate) fn reserve_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a request text built ahead of time with an id from [`Self::reserve_id`].
    pub(crate) async fn send_text(&mut self, text: String) -> Result<()> {
        self.ws
            .send(Message::text(text))
            .await
            .context("sending a prepared request")
    }

    /// Sends a notification.
    pub(crate) async fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        let frame = json!({"method": method, "params": params});
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .with_context(|| format!("sending {method}"))
    }

    /// Sends a request and waits for its response.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.send_request(method, params).await?;
        self.wait_response(id)
            .await
            .with_context(|| format!("{method} (id {id})"))
    }

    /// Waits for the response to request `id`; an error response becomes `Err`.
    pub(crate) async fn wait_response(&mut self, id: i64) -> Result<Value> {
        loop {
            if let Some(response) = self.responses.remove(&id) {
                return response.map_err(|e| anyhow!(e));
            }
            self.pump().await?;
        }
    }

    /// Sends a request whose reply `wait_raw` will return as text.
    pub(crate) async fn send_request_raw(&mut self, method: &str, params: Value) -> Result<i64> {
        let id = self.send_request(method, params).await?;
        self.raw_wanted.insert(id);
        Ok(id)
    }

    /// Waits for the reply to a request sent with `send_request_raw` and returns its text,
    /// unparsed, so that a measurement can stop its clock before the client-side JSON scan
    /// of a multi-megabyte reply (the same for every server, it would only compress ratios).
    /// Parse it with [`parse_reply`].
    pub(crate) async fn wait_raw(&mut self, id: i64) -> Result<Utf8Bytes> {
        loop {
            if let Some(text) = self.raw_responses.remove(&id) {
                self.raw_wanted.remove(&id);
                return Ok(text);
            }
            // Replies not shaped `{"id":N,…` (e.g. errors written `{"error":…,"id":N}`).
            if let Some(response) = self.responses.remove(&id) {
                self.raw_wanted.remove(&id);
                return response
                    .map(|result| {
                        serde_json::json!({"id": id, "result": result})
                            .to_string()
                            .into()
                    })
                    .map_err(|e| anyhow!(e));
            }
            self.pump().await?;
        }
    }

    /// Returns the next server notification (queued or freshly read).
    pub(crate) async fn next_notification(&mut self) -> Result<Value> {
        loop {
            if let Some(notification) = self.notifications.pop_front() {
                return Ok(notification);
            }
            self.pump().await?;
        }
    }

    /// Reads one WebSocket message and files it.
    async fn pump(&mut self) -> Result<()> {
        loop {
            let message = match self.ws.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(anyhow!(e).context("websocket read")),
                None => bail!("connection closed by server"),
            };
            match message {
                Message::Text(text) => {
                    // Kept as received (no copy) when wanted raw.
                    if let Some(id) =
                        reply_id(text.as_str()).filter(|id| self.raw_wanted.contains(id))
                    {
                        self.raw_responses.insert(id, text);
                        return Ok(());
                    }
                    return self.file(text.as_str());
                }
                Message::Binary(bytes) => {
                    let text = std::str::from_utf8(&bytes).context("binary frame not UTF-8")?;
                    return self.file(text);
                }
                Message::Close(frame) => bail!("connection closed by server: {frame:?}"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    fn file(&mut self, text: &str) -> Result<()> {
        if !self.raw_wanted.is_empty() {
            if let Some(id) = reply_id(text).filter(|id| self.raw_wanted.contains(id)) {
                self.raw_responses.insert(id, text.to_string().into());
                return Ok(());
            }
        }
        let value: Value = serde_json::from_str(text)
            .with_context(|| format!("server sent invalid JSON: {}", truncate(text, 200)))?;
        match (value.get("id"), value.get("method")) {
            (Some(id), None) => {
                let id = id.as_i64().ok_or_else(|| {
                    anyhow!("response with unexpected id: {}", truncate(text, 200))
                })?;
                let outcome = if let Some(error) = value.get("error") {
                    Err(format!("server error: {error}"))
                } else {
                    Ok(value.get("result").cloned().unwrap_or(Value::Null))
                };
                if id == -1 {
                    bail!("server reported a malformed frame: {}", truncate(text, 300));
                }
                self.responses.insert(id, outcome);
            }
            (None, Some(_)) => self.notifications.push_back(value),
            (Some(_), Some(method)) => bail!("unexpected server->client request {method}"),
            (None, None) => bail!("unrecognised message: {}", truncate(text, 200)),
        }
        Ok(())
    }
}

/// The id of a reply that starts `{"id":N,` (how both servers write replies), else `None`.
fn reply_id(text: &str) -> Option<i64> {
    let rest = text.strip_prefix(r#"{"id":"#)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[end..]
        .starts_with(',')
        .then(|| rest[..end].parse().ok())?
}

/// The result of a reply's text; an error reply becomes `Err`.
pub(crate) fn parse_reply(text: &str) -> Result<Value> {
    let mut value: Value = serde_json::from_str(text)
        .with_context(|| format!("server sent invalid JSON: {}", truncate(text, 200)))?;
    if let Some(error) = value.get("error") {
        bail!("server error: {error}");
    }
    Ok(value
        .get_mut("result")
        .map(Value::take)
        .unwrap_or(Value::Null))
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Method name of a notification (empty if absent).
pub(crate) fn method(notification: &Value) -> &str {
    notification
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `params.processId` of a notification (empty if absent).
pub(crate) fn process_id(notification: &Value) -> &str {
    notification
        .pointer("/params/processId")
        .and_then(Value::as_str)
        .unwrap_or("")
}
