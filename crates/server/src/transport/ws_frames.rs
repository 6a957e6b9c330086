//! The WebSocket's write side: our frames written straight from the messages' own memory.
//!
//! tungstenite still reads the peer's frames (unmasking, fragments, limits, UTF-8 checks);
//! writing is ours because tungstenite copies every payload into its output buffer and, after
//! each partial socket write, moves the unsent rest of that buffer forward (quadratic in the
//! message size: 27 % of the server's CPU on a 64 MiB `fs/readFile` reply before we worked
//! around it). A server's frames are unmasked, so a frame is a 2-10 byte header and the
//! payload as it is: [`FrameSink`] copies small messages into one buffer (so a burst of
//! notifications leaves in one system call), writes a large one from its own `String` with
//! the header in the same vectored write, and encodes a [`Base64Text`] (a file reply) part by
//! part into the buffer as the socket takes it, so the reply's text never exists whole.
//!
//! tungstenite also writes: replies to the peer's pings and closes. Its stream is a
//! [`ControlIo`]: reads come from the socket, writes are held in [`Control`] and written by
//! the [`FrameSink`] between two of our frames (the writer task is woken for them).
//!
//! Bounds: the buffer holds at most [`BUFFERED_MAX`] of small frames before `poll_ready`
//! waits for the socket, plus one part ([`PART`]) of a file reply; tungstenite's writes are
//! held up to [`CONTROL_MAX`] bytes, then its reader waits.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use futures::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::base64_text::{Base64Text, Cursor};
use crate::connection::OutFrame;

/// A text payload up to this long is copied into the buffer; a longer one is written from
/// its own memory.
const COPY_MAX: usize = 16 << 10;
/// Bytes of a file reply encoded per part.
pub(crate) const PART: usize = 1 << 20;
/// Buffered bytes of small frames before `poll_ready` waits for the socket.
pub(crate) const BUFFERED_MAX: usize = 256 << 10;
/// Most bytes of tungstenite's own frames held for the writer.
pub(crate) const CONTROL_MAX: usize = 64 << 10;
/// Capacity the buffer keeps between bursts.
const KEEP: usize = 2 * PART;

/// Bytes tungstenite wrote (its pongs and close replies), waiting for the frame writer.
#[derive(Debug, Default)]
pub(crate) struct Control {
    state: Mutex<ControlState>,
    /// Notified when bytes arrive, so the writer task flushes the sink.
    pub(crate) wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct ControlState {
    bytes: Vec<u8>,
    /// tungstenite's reader, waiting for room.
    blocked: Option<Waker>,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the held bytes (whole frames) to the end of `out`.
    fn take_into(&self, out: &mut Vec<u8>) {
        let mut st = self.lock();
        if st.bytes.is_empty() {
            return;
        }
        out.extend_from_slice(&st.bytes);
        st.bytes.clear();
        if let Some(w) = st.blocked.take() {
            w.wake();
        }
    }
}

/// tungstenite's stream: reads from the socket's read half, writes into [`Control`].
#[derive(Debug)]
pub(crate) struct ControlIo<R> {
    read: R,
    control: Arc<Control>,
}

impl<R> ControlIo<R> {
    pub(crate) fn new(read: R, control: Arc<Control>) -> Self {
        ControlIo { read, control }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ControlIo<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for ControlIo<R> {
    /// Takes the whole write (tungstenite writes whole frames), unless bytes are already held
    /// and this would pass [`CONTROL_MAX`]: then it waits until the writer takes them.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.control.lock();
        if !st.bytes.is_empty() && st.bytes.len() + buf.len() > CONTROL_MAX {
            st.blocked = Some(cx.waker().clone());
            return Poll::Pending;
        }
        st.bytes.extend_from_slice(buf);
        drop(st);
        self.control.wake.notify_one();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A payload written from its own memory after the buffer.
#[derive(Debug)]
enum Big {
    /// A long text, written from this offset.
    Text(String, usize),
    /// A file reply, encoded part by part into the buffer.
    Base64(Base64Text, Cursor),
}

/// Writes [`OutFrame`]s as WebSocket frames to `io` (see the module docs).
#[derive(Debug)]
pub(crate) struct FrameSink<W> {
    io: W,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    big: Option<Big>,
    control: Arc<Control>,
    /// A close frame has been queued: closing the sink does not add one.
    close_sent: bool,
}

/// Appends a final frame's header: FIN, `opcode`, unmasked, `len`.
fn header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

impl<W: AsyncWrite + Unpin> FrameSink<W> {
    pub(crate) fn new(io: W, control: Arc<Control>) -> Self {
        FrameSink {
            io,
            buf: Vec::new(),
            pos: 0,
            big: None,
            control,
            close_sent: false,
        }
    }

    /// Queues a close frame with `code` and as much of `reason` as fits (a control frame's
    /// payload is at most 125 bytes: the code and 123 bytes of reason, cut at a character).
    fn queue_close(&mut self, code: u16, reason: &str) {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        header(&mut self.buf, CLOSE, 2 + end);
        self.buf.extend_from_slice(&code.to_be_bytes());
        self.buf.extend_from_slice(&reason.as_bytes()[..end]);
        self.close_sent = true;
    }

    /// Writes everything queued: the buffer (with the start of a long text in the same
    /// vectored write), the rest of the long text or the file reply's parts, then what
    /// tungstenite left in [`Control`].
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.buf.len() {
                let pending = &self.buf[self.pos..];
                let n = match &self.big {
                    Some(Big::Text(t, at)) => {
                        let bufs = [IoSlice::new(pending), IoSlice::new(&t.as_bytes()[*at..])];
                        ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &bufs))?
                    }
                    _ => ready!(Pin::new(&mut self.io).poll_write(cx, pending))?,
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                let from_buf = n.min(pending.len());
                self.pos += from_buf;
                if let Some(Big::Text(_, at)) = &mut self.big {
                    *at += n - from_buf;
                }
                continue;
            }
            self.buf.clear();
            self.pos = 0;
            match &mut self.big {
                Some(Big::Text(t, at)) if *at < t.len() => {
                    let n = ready!(Pin::new(&mut self.io).poll_write(cx, &t.as_bytes()[*at..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *at += n;
                    continue;
                }
                Some(Big::Base64(text, cursor)) => {
                    let buf = &mut self.buf;
                    while buf.len() < PART && text.fill(cursor, buf, PART - buf.len()) {}
                    if !self.buf.is_empty() {
                        continue;
                    }
                    self.big = None;
                }
                Some(Big::Text(..)) => self.big = None,
                None => {}
            }
            self.control.take_into(&mut self.buf);
            if self.buf.is_empty() {
                if self.buf.capacity() > KEEP {
                    self.buf = Vec::new();
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> Sink<OutFrame> for FrameSink<W> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.big.is_some() || self.buf.len() - self.pos >= BUFFERED_MAX {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, frame: OutFrame) -> io::Result<()> {
        let this = &mut *self;
        // `poll_ready` left no long payload pending: the buffer ends on a frame boundary,
        // where tungstenite's frames may go.
        this.control.take_into(&mut this.buf);
        match frame {
            OutFrame::Text(t) => {
                header(&mut this.buf, TEXT, t.len());
                if t.len() <= COPY_MAX {
                    this.buf.extend_from_slice(t.as_bytes());
                } else {
                    this.big = Some(Big::Text(t, 0));
                }
            }
            OutFrame::Base64(b) => {
                header(&mut this.buf, TEXT, b.len());
                if b.len() <= COPY_MAX {
                    // Small (a short output chunk): encoded now, coalesced with its neighbours.
                    let mut cursor = Cursor::default();
                    while b.fill(&mut cursor, &mut this.buf, COPY_MAX) {}
                } else {
                    this.big = Some(Big::Base64(b, Cursor::default()));
                }
            }
            OutFrame::Ping => header(&mut this.buf, PING, 0),
            OutFrame::Close { code, reason } => this.queue_close(code, &reason),
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Ends the connection with a close frame: the server's own (sent before), or `1000` (the
    /// answer to the peer's close, or the end of a connection whose input ended).
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_sent && self.big.is_none() {
            self.queue_close(1000, "");
        }
        ready!(self.poll_drain(cx))?;
        if !self.close_sent {
            // A long payload was still pending: the close follows it.
            self.queue_close(1000, "");
            ready!(self.poll_drain(cx))?;
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    /// Frames written through a small pipe, read back by tungstenite as a client would.
    #[tokio::test]
    async fn a_client_reads_back_every_frame_whole_and_in_order() {
        let (server, client) = tokio::io::duplex(4096);
        let control = Arc::new(Control::default());
        let mut sink = FrameSink::new(server, control.clone());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let long = "x".repeat(100_000);
        let reader = tokio::spawn(async move {
            use futures::StreamExt;
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None)
                    .await;
            let mut got = Vec::new();
            while let Some(m) = ws.next().await {
                match m {
                    Ok(m) => got.push(m),
                    Err(_) => break,
                }
            }
            got
        });
        sink.feed(OutFrame::Text("small".into())).await.unwrap();
        sink.feed(OutFrame::Text(long.clone())).await.unwrap();
        sink.feed(OutFrame::Base64(Base64Text::new(
            "{\"d\":\"".into(),
            data.clone(),
            "\"}",
        )))
        .await
        .unwrap();
        // tungstenite's own bytes (here a pong) go between two frames.
        control.lock().bytes.extend_from_slice(&[0x8A, 0x01, b'p']);
        sink.feed(OutFrame::Ping).await.unwrap();
        sink.feed(OutFrame::Text("é".repeat(200))).await.unwrap();
        sink.feed(OutFrame::Base64(Base64Text::new(
            "[\"".into(),
            b"small".to_vec(),
            "\"]",
        )))
        .await
        .unwrap();
        sink.feed(OutFrame::Close {
            code: 1008,
            reason: "é".repeat(100),
        })
        .await
        .unwrap();
        sink.close().await.unwrap();
        let got = reader.await.unwrap();
        let b64 = Base64Text::new("{\"d\":\"".into(), data, "\"}").into_string();
        assert_eq!(got[0], Message::text("small"));
        assert_eq!(got[1], Message::text(long));
        assert_eq!(got[2], Message::text(b64));
        assert_eq!(got[3], Message::Pong(b"p".to_vec().into()));
        assert_eq!(got[4], Message::Ping(Vec::new().into()));
        assert_eq!(got[5], Message::text("é".repeat(200)));
        assert_eq!(got[6], Message::text(r#"["c21hbGw="]"#));
        match &got[7] {
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1008);
                assert_eq!(f.reason.len(), 122, "cut at a char boundary");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn tungstenite_writes_wait_when_the_writer_holds_too_much() {
        let control = Arc::new(Control::default());
        let (r, mut w) = tokio::io::duplex(64);
        let mut io = ControlIo::new(r, control.clone());
        let big = vec![1u8; CONTROL_MAX];
        use tokio::io::AsyncWriteExt;
        io.write_all(&big).await.unwrap();
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(50), io.write_all(b"x")).await;
        assert!(blocked.is_err(), "a write past the bound waits");
        let mut out = Vec::new();
        control.take_into(&mut out);
        assert_eq!(out.len(), CONTROL_MAX);
        io.write_all(b"x").await.unwrap();
        // Reads come from the socket.
        w.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
