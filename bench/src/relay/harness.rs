//! The bench's harness side of remote mode: registry `connect`, the harness WebSocket to the
//! rendezvous, the Noise handshake and JSON-RPC through the encrypted stream, all blocking on
//! the calling thread (spec §10.4, §10.7).
//!
//! Built from the sans-I/O relay crate (`HarnessStream`, registry bodies, `StaticIdentity`)
//! over the bench's raw WebSocket ([`RawConn`]): frames are received into one reused buffer and
//! decoded in place, requests are sealed, encoded and written with one `write`. Like upstream
//! harnesses, one physical socket carries one stream, and a fresh `connect` bundle is fetched
//! per socket while the harness static identity is kept (generated once per measurement).

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use exec_server_relay::frame::{Frame, StreamId};
use exec_server_relay::harness::{new_stream_id, ConnectInfo, HarnessStream};
use exec_server_relay::noise::StaticIdentity;
use exec_server_relay::registry::{connect_path, ConnectRequest, ConnectResponse};

use crate::lean::{RawConn, Reply};

/// How long a relay socket may stay silent while the bench waits for it.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom the harness connects.
pub(crate) struct Harness {
    /// `127.0.0.1:PORT` of the rendezvous (registry API and sockets on one listener).
    pub(crate) registry: String,
    pub(crate) environment_id: String,
    pub(crate) token: String,
    pub(crate) identity: StaticIdentity,
}

/// One `connect` bundle: the socket URL and what the handshake needs.
pub(crate) struct Bundle {
    pub(crate) url: String,
    pub(crate) info: ConnectInfo,
}

/// Time spent in each step of opening a stream ([`Harness::open_timed`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OpenTimes {
    pub(crate) connect: Duration,
    pub(crate) websocket: Duration,
    pub(crate) noise: Duration,
}

impl Harness {
    /// `POST /cloud/environment/{id}/connect`: `Ok(None)` on 503 (no executor attached yet).
    pub(crate) fn try_connect(&self) -> Result<Option<Bundle>> {
        let body = serde_json::to_string(&ConnectRequest {
            harness_public_key: self.identity.public_key().clone(),
        })?;
        let (status, answer) = post(
            &self.registry,
            &connect_path(&self.environment_id),
            &self.token,
            &body,
        )?;
        if status == 503 {
            return Ok(None);
        }
        if status != 200 {
            bail!("registry connect answered {status}: {answer}");
        }
        let response: ConnectResponse =
            serde_json::from_str(&answer).context("registry connect answer")?;
        let url = response.url.clone();
        let info = response
            .into_connect_info(&self.environment_id)
            .context("registry connect answer")?;
        Ok(Some(Bundle { url, info }))
    }

    /// Opens one stream: connect bundle, harness socket, Noise handshake (no `initialize`).
    pub(crate) fn open(&self) -> Result<RelayConn> {
        Ok(self.open_timed()?.0)
    }

    /// [`Self::open`], with the time each step took.
    pub(crate) fn open_timed(&self) -> Result<(RelayConn, OpenTimes)> {
        let t0 = Instant::now();
        let bundle = self
            .try_connect()?
            .context("registry connect: executor unavailable (503)")?;
        let t1 = Instant::now();
        let mut raw = ws_connect(&bundle.url)?;
        let t2 = Instant::now();
        let stream_id = new_stream_id();
        let (mut stream, frames) = HarnessStream::start(&self.identity, &bundle.info, stream_id)
            .context("starting the Noise handshake")?;
        let mut scratch = Vec::with_capacity(64 << 10);
        send_frames(&mut raw, &frames, &mut scratch)?;
        let mut inbox = VecDeque::new();
        while !stream.is_established() {
            let frame = next_frame(&mut raw, stream.stream_id())?;
            let messages = stream
                .on_frame(frame.body)
                .context("relay handshake failed")?;
            inbox.extend(messages);
        }
        let t3 = Instant::now();
        let conn = RelayConn {
            raw,
            stream,
            inbox,
            next_id: 1,
            scratch,
        };
        let times = OpenTimes {
            connect: t1 - t0,
            websocket: t2 - t1,
            noise: t3 - t2,
        };
        Ok((conn, times))
    }
}

/// One established relay stream carrying a JSON-RPC connection.
pub(crate) struct RelayConn {
    raw: RawConn,
    stream: HarnessStream,
    /// Messages decrypted but not handed out yet.
    inbox: VecDeque<Vec<u8>>,
    next_id: i64,
    /// The outgoing frames of one message, masked (reused).
    scratch: Vec<u8>,
}

impl RelayConn {
    /// Seals one JSON-RPC message and sends its frames.
    pub(crate) fn send(&mut self, message: &[u8]) -> Result<()> {
        let frames = self.stream.send(message).context("sealing a message")?;
        send_frames(&mut self.raw, &frames, &mut self.scratch)
    }

    /// Sends a request with `params` (JSON text); returns its id.
    pub(crate) fn send_request(&mut self, method: &str, params: &str) -> Result<i64> {
        let id = self.next_id;
        self.next_id += 1;
        let text = format!(r#"{{"id":{id},"method":"{method}","params":{params}}}"#);
        self.send(text.as_bytes())?;
        Ok(id)
    }

    /// The next JSON-RPC message of the stream.
    pub(crate) fn next_message(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(message) = self.inbox.pop_front() {
                return Ok(message);
            }
            let frame = next_frame(&mut self.raw, self.stream.stream_id())?;
            let messages = self
                .stream
                .on_frame(frame.body)
                .context("relay stream failed")?;
            self.inbox.extend(messages);
        }
    }

    /// Sends a request and waits for its reply (notifications in between are dropped). An
    /// error reply is an error.
    pub(crate) fn call(&mut self, method: &str, params: &str) -> Result<Vec<u8>> {
        let id = self.send_request(method, params)?;
        loop {
            let message = self.next_message()?;
            let head: Reply = serde_json::from_slice(&message).context("reply is not JSON-RPC")?;
            if head.method.is_some() || head.id != Some(id) {
                continue;
            }
            if let Some(error) = head.error {
                bail!("{method}: error reply {}", error.get());
            }
            return Ok(message);
        }
    }

    /// `initialize` + `initialized`.
    pub(crate) fn initialize(&mut self) -> Result<()> {
        self.call("initialize", r#"{"clientName":"bench"}"#)?;
        self.send(br#"{"method":"initialized","params":{}}"#)
    }

    /// Resets the stream (the executor ends its connection) and drops the socket.
    pub(crate) fn close(mut self) {
        let reset = self.stream.reset_frame();
        let _ = send_frames(&mut self.raw, &[reset], &mut self.scratch);
    }
}

/// Encodes `frames` and writes them as binary messages with one `write`.
fn send_frames(raw: &mut RawConn, frames: &[Frame], scratch: &mut Vec<u8>) -> Result<()> {
    let encoded = frames
        .iter()
        .map(Frame::encode)
        .collect::<Result<Vec<_>, _>>()
        .context("encoding a relay frame")?;
    raw.send_binaries(encoded.iter().map(Vec::as_slice), scratch)
}

/// The next valid frame of stream `id` (others, and invalid frames, are skipped as an
/// endpoint would drop them).
fn next_frame(raw: &mut RawConn, id: &StreamId) -> Result<Frame> {
    loop {
        let bytes = raw.next_message()?;
        match Frame::decode(bytes) {
            Ok(frame) if frame.stream_id == *id => return Ok(frame),
            Ok(_) => {}
            Err(e) => eprintln!("    relay: dropping an invalid frame: {e}"),
        }
    }
}

/// `host:port` of a `ws://` or `http://` URL.
fn host_port(url: &str) -> Result<&str> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("only ws:// and http:// URLs: {url}"))?;
    Ok(rest.split(['/', '?']).next().unwrap_or(rest))
}

/// Opens the harness socket at `url` (WebSocket handshake done, Nagle off).
fn ws_connect(url: &str) -> Result<RawConn> {
    let hostport = host_port(url)?;
    let sock = TcpStream::connect(hostport).with_context(|| format!("connecting to {hostport}"))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(READ_TIMEOUT))?;
    let (ws, _) = tungstenite::client(url, sock.try_clone()?)
        .map_err(|e| anyhow::anyhow!("harness websocket handshake: {e}"))?;
    // The rendezvous sends nothing before the harness's first frame, so tungstenite has no
    // bytes buffered: the socket is used directly from here on.
    drop(ws);
    Ok(RawConn::new(sock))
}

/// A registry call on a fresh connection (`connection: close`): `(status, body)`.
fn post(hostport: &str, path: &str, bearer: &str, body: &str) -> Result<(u16, String)> {
    let mut sock =
        TcpStream::connect(hostport).with_context(|| format!("connecting to {hostport}"))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(READ_TIMEOUT))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {hostport}\r\nauthorization: Bearer {bearer}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to {path}"))?;
    let text = String::from_utf8(raw).context("registry answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP answer to {path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in the answer to {path}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_of_socket_and_registry_urls() {
        assert_eq!(
            host_port("ws://127.0.0.1:9/rendezvous/b/harness?ticket=t").unwrap(),
            "127.0.0.1:9"
        );
        assert_eq!(host_port("http://127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert!(host_port("wss://x").is_err());
    }
}
