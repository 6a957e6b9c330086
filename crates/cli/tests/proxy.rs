//! A fault-injecting TCP proxy for the durability tests, on loopback between a client and the
//! server. It follows the WebSocket frames both ways (after the HTTP upgrade: client frames
//! are masked, server frames are not) and can
//! * cut a connection, both directions, once N more server→client bytes have passed (the cut
//!   lands wherever the count ends, mid-frame as a rule);
//! * swallow the server's reply to the next request of a given method, then cut (the request
//!   was carried out, its answer is lost);
//! * swallow the next request of a given method before the server sees it, then cut.
//!
//! Rules are queued and used up one by one. It counts server→client bytes, connections and
//! cuts, and logs the client's requests (method, params, and the reply when one came back).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A fault the proxy injects.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Cut the connection once this many more server→client bytes have passed.
    CutAfter(u64),
    /// Swallow the server's reply to the next client request with this method, then cut.
    DropReply(String),
    /// Swallow the next client request with this method (the server never sees it), then cut.
    DropRequest(String),
}

/// A request the client sent through the proxy.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Which connection (1 = the first).
    pub connection: u64,
    pub method: String,
    pub params: Value,
    /// The reply, when it came back through the proxy.
    pub reply: Option<Value>,
    /// The proxy swallowed the request or its reply.
    pub dropped: bool,
}

/// Frames up to this size are held whole, so they can be read and dropped; longer ones stream.
const HOLD_MAX: u64 = 256 << 10;

#[derive(Default)]
struct Shared {
    target: String,
    rules: Mutex<VecDeque<Rule>>,
    s2c_bytes: AtomicU64,
    connections: AtomicU64,
    cuts: AtomicU64,
    cut_notify: Notify,
    log: Mutex<Vec<Exchange>>,
    live: Mutex<Vec<CancellationToken>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One proxied connection.
struct Conn {
    number: u64,
    cancel: CancellationToken,
    /// Request id → index in the log, for the replies.
    ids: Mutex<HashMap<i64, usize>>,
    /// The request whose reply is to be swallowed.
    swallow: Mutex<Option<i64>>,
}

/// The proxy; stops accepting and cuts everything when dropped.
pub struct Proxy {
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to the server at `server_url` (`ws://`).
    pub async fn start(server_url: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            target: server_url.trim_start_matches("ws://").to_string(),
            ..Shared::default()
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&s.target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let number = s.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let conn = Arc::new(Conn {
                    number,
                    cancel: CancellationToken::new(),
                    ids: Mutex::default(),
                    swallow: Mutex::default(),
                });
                lock(&s.live).push(conn.cancel.clone());
                let (cr, cw) = inbound.into_split();
                let (sr, sw) = outbound.into_split();
                tokio::spawn(pump(cr, sw, true, conn.clone(), s.clone()));
                tokio::spawn(pump(sr, cw, false, conn, s.clone()));
            }
        });
        Proxy {
            url,
            shared,
            accept,
        }
    }

    /// Queues a fault; faults apply one after the other.
    pub fn push(&self, rule: Rule) {
        lock(&self.shared.rules).push_back(rule);
    }

    /// Cuts every open connection now.
    pub fn cut(&self) {
        for c in lock(&self.shared.live).drain(..) {
            c.cancel();
        }
    }

    /// Server→client bytes forwarded so far.
    pub fn s2c_bytes(&self) -> u64 {
        self.shared.s2c_bytes.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Cuts made by rules so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Rules not used yet.
    pub fn pending_rules(&self) -> usize {
        lock(&self.shared.rules).len()
    }

    /// Waits until rules have made `n` cuts.
    pub async fn wait_cuts(&self, n: u64) {
        loop {
            let notified = self.shared.cut_notify.notified();
            if self.cuts() >= n {
                return;
            }
            notified.await;
        }
    }

    /// The client's requests of `method`, in the order sent.
    pub fn requests(&self, method: &str) -> Vec<Exchange> {
        lock(&self.shared.log)
            .iter()
            .filter(|e| e.method == method)
            .cloned()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Shared {
    fn cut(&self, conn: &Conn) {
        conn.cancel.cancel();
        self.cuts.fetch_add(1, Ordering::SeqCst);
        self.cut_notify.notify_waiters();
    }

    /// How many of `len` server→client bytes may pass, and whether to cut after them.
    fn budget(&self, len: usize) -> (usize, bool) {
        let mut rules = lock(&self.rules);
        if let Some(Rule::CutAfter(left)) = rules.front_mut() {
            if (len as u64) >= *left {
                let pass = *left as usize;
                rules.pop_front();
                return (pass, true);
            }
            *left -= len as u64;
        }
        (len, false)
    }

    /// Looks at a whole text frame's payload; true to swallow it (and cut).
    fn inspect(&self, c2s: bool, conn: &Conn, payload: &[u8]) -> bool {
        if !c2s && payload.starts_with(br#"{"method""#) {
            return false; // A notification (how this server writes them): not parsed.
        }
        let Ok(msg) = serde_json::from_slice::<Value>(payload) else {
            return false;
        };
        let id = msg.get("id").and_then(Value::as_i64);
        if c2s {
            let (Some(method), Some(id)) = (msg.get("method").and_then(Value::as_str), id) else {
                return false;
            };
            let mut rules = lock(&self.rules);
            let mut drop_request = false;
            match rules.front() {
                Some(Rule::DropRequest(m)) if m == method => {
                    rules.pop_front();
                    drop_request = true;
                }
                Some(Rule::DropReply(m)) if m == method => {
                    rules.pop_front();
                    *lock(&conn.swallow) = Some(id);
                }
                _ => {}
            }
            drop(rules);
            let mut log = lock(&self.log);
            log.push(Exchange {
                connection: conn.number,
                method: method.to_string(),
                params: msg.get("params").cloned().unwrap_or(Value::Null),
                reply: None,
                dropped: drop_request,
            });
            lock(&conn.ids).insert(id, log.len() - 1);
            drop_request
        } else {
            let Some(id) = id else { return false };
            if msg.get("method").is_some() {
                return false;
            }
            let swallow = *lock(&conn.swallow) == Some(id);
            if let Some(i) = lock(&conn.ids).remove(&id) {
                let mut log = lock(&self.log);
                log[i].reply = Some(msg);
                log[i].dropped = swallow;
            }
            swallow
        }
    }
}

/// Forwards one direction until EOF or the cut; the end of either direction ends both.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    c2s: bool,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut framer = Framer::new(c2s);
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = conn.cancel.cancelled() => return,
        };
        out.clear();
        let mut cut = framer.feed(&buf[..n], &mut out, |p| shared.inspect(c2s, &conn, p));
        if !c2s {
            let (pass, budget_cut) = shared.budget(out.len());
            out.truncate(pass);
            cut |= budget_cut;
            shared
                .s2c_bytes
                .fetch_add(out.len() as u64, Ordering::SeqCst);
        }
        let written = tokio::select! {
            r = to.write_all(&out) => r.is_ok(),
            _ = conn.cancel.cancelled() => return,
        };
        if cut {
            shared.cut(&conn);
            return;
        }
        if !written {
            break;
        }
    }
    conn.cancel.cancel();
}

/// Where a direction's byte stream is.
enum Phase {
    /// In the HTTP upgrade's head; the count of `\r\n\r\n` bytes matched so far.
    Http(usize),
    /// Collecting a frame header.
    Header,
    /// Forwarding this many more payload bytes as they come.
    Stream(u64),
    /// Holding a whole frame (header and payload) until it is this long.
    Hold(usize),
}

/// Splits one direction into WebSocket frames.
struct Framer {
    masked: bool,
    phase: Phase,
    pending: Vec<u8>,
}

impl Framer {
    fn new(masked: bool) -> Framer {
        Framer {
            masked,
            phase: Phase::Http(0),
            pending: Vec::new(),
        }
    }

    /// Appends to `out` what `input` lets through. Whole text frames up to [`HOLD_MAX`] are
    /// shown (unmasked) to `inspect`; when it says so the frame is dropped, the rest of the
    /// input too, and `true` is returned: cut now, after `out`.
    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        mut inspect: impl FnMut(&[u8]) -> bool,
    ) -> bool {
        while !input.is_empty() {
            match self.phase {
                Phase::Http(matched) => {
                    const END: &[u8] = b"\r\n\r\n";
                    let mut m = matched;
                    let mut used = 0;
                    for &b in input {
                        used += 1;
                        m = if b == END[m] {
                            m + 1
                        } else if b == END[0] {
                            1
                        } else {
                            0
                        };
                        if m == END.len() {
                            break;
                        }
                    }
                    out.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    self.phase = if m == END.len() {
                        Phase::Header
                    } else {
                        Phase::Http(m)
                    };
                }
                Phase::Header => {
                    let need = |p: &[u8]| -> usize {
                        if p.len() < 2 {
                            return 2;
                        }
                        let ext = match p[1] & 0x7f {
                            126 => 2,
                            127 => 8,
                            _ => 0,
                        };
                        2 + ext + if p[1] & 0x80 != 0 { 4 } else { 0 }
                    };
                    while self.pending.len() < need(&self.pending) && !input.is_empty() {
                        self.pending.push(input[0]);
                        input = &input[1..];
                    }
                    let h = &self.pending;
                    if h.len() < need(h) {
                        continue;
                    }
                    let len = match h[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                        127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                        n => u64::from(n),
                    };
                    let text_whole = h[0] & 0x80 != 0 && h[0] & 0x0f == 1;
                    if text_whole && len <= HOLD_MAX {
                        self.phase = Phase::Hold(h.len() + len as usize);
                    } else {
                        out.append(&mut self.pending);
                        self.phase = if len == 0 {
                            Phase::Header
                        } else {
                            Phase::Stream(len)
                        };
                    }
                }
                Phase::Stream(left) => {
                    let take = (left.min(input.len() as u64)) as usize;
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.phase = if take as u64 == left {
                        Phase::Header
                    } else {
                        Phase::Stream(left - take as u64)
                    };
                }
                Phase::Hold(total) => {
                    let take = (total - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.pending.len() < total {
                        continue;
                    }
                    let frame = std::mem::take(&mut self.pending);
                    self.phase = Phase::Header;
                    let header = total - self.payload_len(&frame);
                    let mut payload = frame[header..].to_vec();
                    if self.masked {
                        let key = &frame[header - 4..header];
                        for (i, b) in payload.iter_mut().enumerate() {
                            *b ^= key[i % 4];
                        }
                    }
                    if inspect(&payload) {
                        return true;
                    }
                    out.extend_from_slice(&frame);
                }
            }
        }
        false
    }

    /// The payload length of a whole held frame (its header is complete).
    fn payload_len(&self, frame: &[u8]) -> usize {
        let len = match frame[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([frame[2], frame[3]])),
            127 => u64::from_be_bytes(frame[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![0x81];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    #[test]
    fn framer_passes_everything_and_drops_the_chosen_frame() {
        let mut input = b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let a = frame(br#"{"id":1,"result":{}}"#, None);
        let big = frame(&vec![b'x'; 300 << 10], None);
        let b = frame(br#"{"id":2,"result":{}}"#, None);
        input.extend_from_slice(&a);
        input.extend_from_slice(&big);
        input.extend_from_slice(&b);
        // Fed one byte at a time, then whole: the same bytes come out.
        for step in [1, input.len()] {
            let mut f = Framer::new(false);
            let mut out = Vec::new();
            let mut seen = Vec::new();
            for chunk in input.chunks(step) {
                assert!(!f.feed(chunk, &mut out, |p| {
                    seen.push(p.len());
                    false
                }));
            }
            assert!(out == input, "step {step}");
            assert_eq!(seen, [20, 20]);
        }
        let mut f = Framer::new(false);
        let mut out = Vec::new();
        let cut = f.feed(&input, &mut out, |p| p.starts_with(br#"{"id":2"#));
        assert!(cut);
        assert_eq!(out.len(), input.len() - b.len());
        // Client frames are masked: the inspector sees them unmasked.
        let mut f = Framer::new(true);
        let mut out = Vec::new();
        let mut head = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        head.extend_from_slice(&frame(br#"{"id":3,"method":"m"}"#, Some([1, 2, 3, 4])));
        let mut seen = Vec::new();
        f.feed(&head, &mut out, |p| {
            seen.push(p.to_vec());
            false
        });
        assert_eq!(seen, [br#"{"id":3,"method":"m"}"#.to_vec()]);
        assert!(out == head);
    }
}
