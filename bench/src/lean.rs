//! The leanest client the bench can be for latency figures: a blocking WebSocket on its own
//! OS thread (no async runtime, no task hops), requests written from a prepared template and
//! replies matched by id with a small parse.
//!
//! A round trip measured from a client is the client's own cost plus the server's. With the
//! async [`crate::rpc::Client`] the client's share was about 55 µs per call on the 2-vCPU
//! bench machine (a multi-thread runtime's wake-ups, `serde_json::Value` building), as much
//! as a whole fast server round trip: it hid most of the difference between servers. This
//! client costs two system calls and a few microseconds per call, so what remains is the
//! server (and the kernel's loopback TCP, the same for every server).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tungstenite::{Message, WebSocket};

/// One blocking JSON-RPC connection, initialized.
pub(crate) struct LeanClient {
    ws: WebSocket<TcpStream>,
    next_id: i64,
}

/// The parts of a reply the lean client looks at.
#[derive(Deserialize)]
struct Reply<'a> {
    id: Option<i64>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
    method: Option<&'a str>,
}

impl LeanClient {
    /// Connects to `url` (`ws://HOST:PORT`), Nagle off, and does `initialize` + `initialized`.
    pub(crate) fn connect_initialized(url: &str) -> Result<Self> {
        let hostport = url
            .strip_prefix("ws://")
            .context("lean client: only ws:// URLs")?
            .trim_end_matches('/');
        let stream =
            TcpStream::connect(hostport).with_context(|| format!("connecting to {hostport}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let (ws, _) = tungstenite::client(url, stream)
            .map_err(|e| anyhow::anyhow!("websocket handshake with {url}: {e}"))?;
        let mut client = LeanClient { ws, next_id: 1 };
        client.call("initialize", r#"{"clientName":"bench"}"#)?;
        client
            .ws
            .send(Message::text(r#"{"method":"initialized","params":{}}"#))?;
        Ok(client)
    }

    /// Sends a request with `params` (JSON text) and waits for its reply; notifications
    /// in between are skipped. An error reply is an error.
    pub(crate) fn call(&mut self, method: &str, params: &str) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let text = format!(r#"{{"id":{id},"method":"{method}","params":{params}}}"#);
        self.ws.send(Message::text(text))?;
        loop {
            let message = self.ws.read().context("websocket read")?;
            let data = match &message {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                Message::Close(f) => bail!("connection closed by server: {f:?}"),
                _ => continue,
            };
            let reply: Reply = serde_json::from_slice(data).context("reply is not JSON-RPC")?;
            if reply.method.is_some() || reply.id != Some(id) {
                continue;
            }
            if let Some(error) = reply.error {
                bail!("{method}: error reply {}", error.get());
            }
            return Ok(());
        }
    }
}

impl LeanClient {
    /// Sends a request and reads the reply's frames straight from the socket into `buf`
    /// (resized to the reply's length): no frame assembly, no UTF-8 check, no parse, so the
    /// clock around it measures the server delivering the bytes plus one copy from the kernel.
    /// Reuse `buf` (its pages are then already mapped). Only for a connection that receives
    /// nothing but this reply (no notifications in flight).
    pub(crate) fn call_raw(&mut self, method: &str, params: &str, buf: &mut Vec<u8>) -> Result<()> {
        use std::io::Read;
        let id = self.next_id;
        self.next_id += 1;
        let text = format!(r#"{{"id":{id},"method":"{method}","params":{params}}}"#);
        self.ws.send(Message::text(text))?;
        let sock = self.ws.get_mut();
        let mut len = 0usize;
        loop {
            let mut head = [0u8; 2];
            sock.read_exact(&mut head)
                .context("reading a frame header")?;
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            if head[1] & 0x80 != 0 {
                bail!("server sent a masked frame");
            }
            let n = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    sock.read_exact(&mut b)?;
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    sock.read_exact(&mut b)?;
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let n = usize::try_from(n).context("frame too large")?;
            if opcode >= 0x8 {
                // A control frame (a keepalive ping): skip its payload.
                let mut skip = vec![0u8; n];
                sock.read_exact(&mut skip)?;
                if opcode == 0x8 {
                    bail!("server closed the connection");
                }
                continue;
            }
            if buf.len() < len + n {
                buf.resize(len + n, 0);
            }
            sock.read_exact(&mut buf[len..len + n])
                .context("reading a frame payload")?;
            len += n;
            if fin {
                buf.truncate(len);
                return Ok(());
            }
        }
    }
}

/// `calls` sequential `environment/info` round trips after 100 warm-up calls, sorted.
pub(crate) fn rpc_samples(url: &str, calls: usize) -> Result<Vec<Duration>> {
    let mut client = LeanClient::connect_initialized(url)?;
    for _ in 0..calls.min(100) {
        client.call("environment/info", "null")?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        client.call("environment/info", "null")?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples)
}
