//! [`HttpBody`]: a response body read chunk by chunk, or to the end under a size limit.

use std::fmt;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::HttpError;

/// A response body. Each chunk is read only when asked for, so a slow reader slows the sender.
pub struct HttpBody {
    chunks: Pin<Box<dyn Stream<Item = Result<Bytes, HttpError>> + Send>>,
    /// The length the response announced, when it did (and the body is not decoded).
    len_hint: Option<u64>,
}

impl fmt::Debug for HttpBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBody")
            .field("len_hint", &self.len_hint)
            .finish_non_exhaustive()
    }
}

impl HttpBody {
    /// A body from a stream of chunks; `len_hint` is the announced length, if any.
    pub fn new(
        chunks: impl Stream<Item = Result<Bytes, HttpError>> + Send + 'static,
        len_hint: Option<u64>,
    ) -> Self {
        HttpBody {
            chunks: Box::pin(chunks),
            len_hint,
        }
    }

    /// A body held in memory.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        let len = data.len() as u64;
        let chunks = futures::stream::iter((!data.is_empty()).then_some(Ok(data)));
        HttpBody::new(chunks, Some(len))
    }

    /// The next chunk; `None` at the end. After an error the body yields nothing more.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, HttpError>> {
        self.chunks.next().await
    }

    /// Reads the whole body, failing with [`HttpError::BodyTooLarge`] once it passes `limit`
    /// bytes (at once when the announced length already does). Holds at most `limit` bytes.
    pub async fn read_to_end(mut self, limit: usize) -> Result<Bytes, HttpError> {
        if let Some(len) = self.len_hint {
            if len > limit as u64 {
                return Err(HttpError::BodyTooLarge { limit });
            }
        }
        let initial = self.len_hint.map_or(0, |l| l as usize).min(limit);
        let mut buf = BytesMut::with_capacity(initial);
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(HttpError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]], len_hint: Option<u64>) -> HttpBody {
        let items: Vec<Result<Bytes, HttpError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        HttpBody::new(futures::stream::iter(items), len_hint)
    }

    #[tokio::test]
    async fn reads_chunks_in_order() {
        let mut b = chunks(&[b"ab", b"cd"], None);
        assert_eq!(b.next_chunk().await.expect("one").expect("ok"), "ab");
        assert_eq!(b.next_chunk().await.expect("two").expect("ok"), "cd");
        assert!(b.next_chunk().await.is_none());
    }

    #[tokio::test]
    async fn read_to_end_concatenates_up_to_the_limit() {
        let body = chunks(&[b"ab", b"cd"], None).read_to_end(4).await;
        assert_eq!(body.expect("fits"), "abcd");
        let body = chunks(&[b"ab", b"cde"], None).read_to_end(4).await;
        assert!(matches!(body, Err(HttpError::BodyTooLarge { limit: 4 })));
    }

    #[tokio::test]
    async fn announced_length_over_the_limit_fails_before_reading() {
        let never = futures::stream::pending::<Result<Bytes, HttpError>>();
        let body = HttpBody::new(never, Some(10)).read_to_end(4).await;
        assert!(matches!(body, Err(HttpError::BodyTooLarge { limit: 4 })));
    }

    #[tokio::test]
    async fn errors_are_passed_on() {
        let items = vec![
            Ok(Bytes::from_static(b"x")),
            Err(HttpError::Body {
                cause: ": closed".into(),
            }),
        ];
        let body = HttpBody::new(futures::stream::iter(items), None)
            .read_to_end(100)
            .await;
        assert_eq!(
            body.expect_err("fails").to_string(),
            "http/request failed: error reading response body: closed"
        );
    }

    #[tokio::test]
    async fn from_bytes_round_trips() {
        let body = HttpBody::from_bytes(&b"hello"[..]).read_to_end(5).await;
        assert_eq!(body.expect("fits"), "hello");
    }
}
