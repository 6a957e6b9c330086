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

/// The parts of a reply the lean client (and the relay harness) looks at.
#[derive(Deserialize)]
pub(crate) struct Reply<'a> {
    pub(crate) id: Option<i64>,
    #[serde(borrow)]
    pub(crate) error: Option<&'a serde_json::value::RawValue>,
    pub(crate) method: Option<&'a str>,
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

impl LeanClient {
    /// The initialized connection as a [`RawConn`]. The server sends nothing unprompted after
    /// `initialize`, so no message is left behind in the WebSocket's buffer.
    pub(crate) fn into_raw(self) -> Result<RawConn> {
        let sock = self
            .ws
            .get_ref()
            .try_clone()
            .context("duplicating the socket")?;
        let mut raw = RawConn::new(sock);
        raw.next_id = self.next_id;
        Ok(raw)
    }
}

/// A connection read and written on its socket directly: the stream measurements' receiver.
/// Frames are received into one reused buffer and each message is handed out in place: no
/// copy into a message, no UTF-8 check, a single `read` per buffer-full. (tokio-tungstenite
/// zeroed, copied and checked every message: with the parse, half the bench's CPU in the
/// streams, taken from the server under test on a 2-vCPU machine.)
pub(crate) struct RawConn {
    sock: TcpStream,
    buf: Vec<u8>,
    /// First byte not yet handed out.
    start: usize,
    /// End of the bytes received.
    end: usize,
    /// A message split into several frames, put together.
    assembled: Vec<u8>,
    next_id: i64,
}

/// The client's masking key. RFC 6455 wants a fresh random one per frame to protect
/// intermediaries' caches; there is none between the bench and a server on loopback.
const MASK: [u8; 4] = [0x5b, 0x1d, 0xc3, 0x77];

impl RawConn {
    /// A connection on `sock`, whose WebSocket handshake is done and after which the peer sent
    /// nothing yet (nothing can be left in another reader's buffer).
    pub(crate) fn new(sock: TcpStream) -> Self {
        RawConn {
            sock,
            // Mapped before any clock starts; grown if a message is larger.
            buf: vec![0; 4 << 20],
            start: 0,
            end: 0,
            assembled: Vec::new(),
            next_id: 1,
        }
    }

    /// Sends each payload as one masked binary message, all with a single `write`. `scratch`
    /// is reused between calls (its pages stay mapped).
    pub(crate) fn send_binaries<'p>(
        &mut self,
        payloads: impl IntoIterator<Item = &'p [u8]>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        use std::io::Write;
        scratch.clear();
        for payload in payloads {
            push_masked_frame(scratch, 0x82, payload);
        }
        self.sock
            .write_all(scratch)
            .context("sending binary frames")
    }

    /// Sends a request with `params` (JSON text); returns its id.
    pub(crate) fn send_request(&mut self, method: &str, params: &str) -> Result<i64> {
        use std::io::Write;
        let id = self.next_id;
        self.next_id += 1;
        let text = format!(r#"{{"id":{id},"method":"{method}","params":{params}}}"#);
        self.sock
            .write_all(&masked_text_frame(text.as_bytes()))
            .with_context(|| format!("sending {method}"))?;
        Ok(id)
    }

    /// The payload of the next data message. Pings are skipped (not answered: a measurement
    /// lasts seconds); a close frame is an error.
    pub(crate) fn next_message(&mut self) -> Result<&[u8]> {
        let at = self.next_payload()?;
        Ok(self.payload(at))
    }

    /// The next reply, skipping notifications (told by their first bytes, unparsed). With
    /// one request in flight at a time, as the measurements send them, it is that request's.
    pub(crate) fn next_reply(&mut self) -> Result<&[u8]> {
        loop {
            let at = self.next_payload()?;
            let message = self.payload(at.clone());
            let head = &message[..message.len().min(96)];
            let notification = memchr::memmem::find(head, b"\"method\"").is_some()
                && memchr::memmem::find(head, b"\"id\"").is_none();
            if !notification {
                return Ok(self.payload(at));
            }
        }
    }

    fn payload(&self, at: Option<std::ops::Range<usize>>) -> &[u8] {
        match at {
            Some(range) => &self.buf[range],
            None => &self.assembled,
        }
    }

    /// Where the next data message's payload is: a range of `buf`, or `None` for
    /// `assembled` (a fragmented message).
    fn next_payload(&mut self) -> Result<Option<std::ops::Range<usize>>> {
        self.assembled.clear();
        let mut fragmented = false;
        loop {
            self.fill(2)?;
            let (b0, b1) = (self.buf[self.start], self.buf[self.start + 1]);
            if b1 & 0x80 != 0 {
                bail!("server sent a masked frame");
            }
            let ext = match b1 & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            self.fill(2 + ext)?;
            let at = self.start + 2;
            let len = match ext {
                0 => u64::from(b1 & 0x7f),
                2 => u64::from(u16::from_be_bytes([self.buf[at], self.buf[at + 1]])),
                _ => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.buf[at..at + 8]);
                    u64::from_be_bytes(b)
                }
            };
            let len = usize::try_from(len).context("frame too large")?;
            self.fill(2 + ext + len)?;
            let payload = self.start + 2 + ext..self.start + 2 + ext + len;
            self.start = payload.end;
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            match opcode {
                0x8 => bail!("server closed the connection"),
                0x9 | 0xa => continue,
                _ => {}
            }
            if fin && !fragmented {
                return Ok(Some(payload));
            }
            fragmented = true;
            self.assembled.extend_from_slice(&self.buf[payload]);
            if fin {
                return Ok(None);
            }
        }
    }

    /// Makes `n` bytes from `start` available, reading as much as the socket has.
    fn fill(&mut self, n: usize) -> Result<()> {
        use std::io::Read;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        while self.end - self.start < n {
            if self.start + n > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
                if n > self.buf.len() {
                    self.buf.resize(n.next_power_of_two(), 0);
                }
            }
            let got = self
                .sock
                .read(&mut self.buf[self.end..])
                .context("websocket read")?;
            if got == 0 {
                bail!("connection closed by server");
            }
            self.end += got;
        }
        Ok(())
    }
}

/// A client text frame (FIN, masked) carrying `payload`.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    push_masked_frame(&mut frame, 0x81, payload);
    frame
}

/// Appends a client frame (first byte `head`: FIN and opcode; masked) carrying `payload`.
fn push_masked_frame(out: &mut Vec<u8>, head: u8, payload: &[u8]) {
    out.reserve(payload.len() + 14);
    out.push(head);
    push_len(out, 0x80, payload.len());
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
}

/// A frame's second byte (`mask_bit` with the 7-bit length) and its extended length.
fn push_len(frame: &mut Vec<u8>, mask_bit: u8, len: usize) {
    match len {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server frame (unmasked) of `opcode` carrying `payload`.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | opcode];
        push_len(&mut f, 0, payload.len());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn raw_conn_reads_messages_in_place_and_sends_masked_frames() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut server_side = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, _) = listener.accept().unwrap();
        let mut conn = RawConn {
            sock,
            buf: vec![0; 64],
            start: 0,
            end: 0,
            assembled: Vec::new(),
            next_id: 5,
        };
        let big = vec![b'x'; 70_000];
        let writer = std::thread::spawn({
            let big = big.clone();
            move || {
                let mut out = frame(true, 1, br#"{"method":"process/output","params":{}}"#);
                out.extend(frame(true, 9, b"ping"));
                out.extend(frame(true, 1, &big));
                out.extend(frame(false, 1, b"{\"id\":"));
                out.extend(frame(true, 0, b"5}"));
                server_side.write_all(&out).unwrap();
                let mut request = [0u8; 128];
                let n = server_side.read(&mut request).unwrap();
                request[..n].to_vec()
            }
        });
        assert_eq!(
            conn.next_message().unwrap(),
            br#"{"method":"process/output","params":{}}"#
        );
        assert_eq!(
            conn.next_message().unwrap(),
            &big[..],
            "grown past the buffer"
        );
        assert_eq!(
            conn.next_reply().unwrap(),
            br#"{"id":5}"#,
            "fragments put together"
        );
        let id = conn.send_request("m", "{}").unwrap();
        assert_eq!(id, 5);
        let sent = writer.join().unwrap();
        let text = br#"{"id":5,"method":"m","params":{}}"#;
        assert_eq!(sent[0], 0x81);
        assert_eq!(sent[1], 0x80 | text.len() as u8);
        let key = &sent[2..6];
        let unmasked: Vec<u8> = sent[6..]
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(unmasked, text);
    }
}
