//! [`WholeWrites`]: a socket wrapper that takes every write whole.
//!
//! tungstenite keeps a message's encoded frame in one `Vec` and, after each partial socket
//! write, drains the written front of it (`Vec::drain(0..n)`), which moves the whole rest of
//! the message forward. A socket takes a few MiB per write, so sending a 85 MiB message (a
//! 64 MiB `fs/readFile` reply in base64) moved about 1.4 GB: the largest cost of the reply
//! (27 % of the server's CPU, `memmove`). This wrapper writes what the socket takes and keeps
//! the rest itself (one copy, written from a cursor), so tungstenite always sees the whole
//! write accepted. The next write, flush or shutdown first finishes the kept bytes, so at most
//! one write's remainder (bounded by the largest message) is ever held; a buffer of over
//! 1 MiB is released once written.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Capacity kept for the next remainder once one has been written.
const KEEP_CAPACITY: usize = 1 << 20;

/// Takes every write whole (see the module docs).
#[derive(Debug)]
pub struct WholeWrites<T> {
    inner: T,
    pending: Vec<u8>,
    written: usize,
}

impl<T> WholeWrites<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        WholeWrites {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> WholeWrites<T> {
    /// Writes the kept remainder, if any.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WholeWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WholeWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 && n < buf.len() {
            this.pending.extend_from_slice(&buf[n..]);
            return Poll::Ready(Ok(buf.len()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn big_writes_arrive_whole_and_in_order_through_a_small_pipe() {
        // A 4 KiB duplex pipe: every big write is partial at first.
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = WholeWrites::new(a);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        for part in data.chunks(70_000) {
            let n = w.write(part).await.expect("write");
            assert_eq!(n, part.len(), "a write is taken whole");
            assert!(
                w.pending.len() <= part.len(),
                "at most one remainder is kept"
            );
        }
        w.shutdown().await.expect("shutdown flushes what is kept");
        assert!(w.pending.is_empty());
        drop(w);
        let got = reader.await.expect("reader").expect("read");
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_closed_peer_is_an_error_not_a_hang() {
        let (a, b) = tokio::io::duplex(1024);
        let mut w = WholeWrites::new(a);
        let n = w.write(&[1u8; 10_000]).await.expect("first write is taken");
        assert_eq!(n, 10_000);
        drop(b);
        assert!(w.flush().await.is_err());
    }
}
