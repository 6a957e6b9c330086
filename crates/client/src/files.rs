//! Streaming file transfer over `fs/open`, `fs/readBlock`, `fs/writeBlock` and `fs/close`, with
//! several blocks in flight.
//!
//! [`ReadStream`] is a `Stream` of blocks in file order. It survives a reconnect: file handles
//! belong to a connection, so after a drop the stream opens the file again and continues from
//! the block it was reading. Its handle is closed when the stream ends or is dropped.
//! [`Client::write_stream`] uploads from any `AsyncRead`; a write handle cannot be reopened
//! without truncating the file, so an upload fails on a connection loss.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use exec_server_protocol::bytes::encode_into;
use exec_server_protocol::fs::{self as wire, CloseParams, OpenMode, OpenParams, ReadBlockParams};
use exec_server_protocol::{codes, Method as _, PathUri};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::client::Client;
use crate::error::ClientError;

/// Largest block the protocol allows (1 MiB).
pub const MAX_BLOCK: usize = 1 << 20;

/// Block size and parallelism of a transfer.
#[derive(Debug, Clone, Copy)]
pub struct TransferOptions {
    /// Bytes per block, 1..=1 MiB.
    pub block_size: usize,
    /// Blocks requested at once.
    pub in_flight: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            block_size: MAX_BLOCK,
            in_flight: 8,
        }
    }
}

impl TransferOptions {
    fn checked(self) -> Self {
        TransferOptions {
            block_size: self.block_size.clamp(1, MAX_BLOCK),
            in_flight: self.in_flight.max(1),
        }
    }
}

/// An open handle; reopened (read mode only) after the connection that held it went away.
struct Handle {
    client: Client,
    path: PathUri,
    /// The current handle id and a generation that changes on every reopen.
    current: tokio::sync::Mutex<(String, u64)>,
}

impl Handle {
    async fn open(client: &Client, path: &PathUri, mode: OpenMode) -> Result<String, ClientError> {
        let id = client.unique("h");
        client
            .call::<wire::Open>(OpenParams {
                handle_id: id.clone(),
                path: path.clone(),
                mode,
                sandbox: None,
            })
            .await?;
        Ok(id)
    }

    async fn read_block(&self, offset: u64, len: usize) -> Result<(Bytes, bool), ClientError> {
        let mut reopened = 0;
        loop {
            let (id, generation) = self.current.lock().await.clone();
            let params = ReadBlockParams {
                handle_id: id,
                offset,
                len,
            };
            let reply = self
                .client
                .call_decoded::<wire::ReadBlock, _>(params, decode_read_block)
                .await;
            let lost = match reply {
                Ok((data, eof)) => return Ok((Bytes::from(data), eof)),
                Err(ClientError::Disconnected) => true,
                // After a resume the old connection's handle is unknown on the new one.
                Err(ClientError::Rpc(e))
                    if e.code == codes::NOT_FOUND
                        && e.message.starts_with("unknown file handle") =>
                {
                    true
                }
                Err(e) => return Err(e),
            };
            reopened += 1;
            if lost && reopened > 5 {
                return Err(ClientError::Disconnected);
            }
            if lost {
                let mut cur = self.current.lock().await;
                if cur.1 == generation {
                    match Handle::open(&self.client, &self.path, OpenMode::Read).await {
                        Ok(id) => *cur = (id, generation + 1),
                        // The reopen itself raced the connection loss (it went out on the
                        // dying connection): another attempt, once reconnected.
                        Err(ClientError::Disconnected) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn close_later(self: &Arc<Self>) {
        let this = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let id = this.current.lock().await.0.clone();
                let _ = this
                    .client
                    .call::<wire::Close>(CloseParams { handle_id: id })
                    .await;
            });
        }
    }
}

/// A file read as a stream of blocks, in order; see the module docs.
pub struct ReadStream {
    blocks: BoxStream<'static, Result<Bytes, ClientError>>,
    handle: Arc<Handle>,
}

impl std::fmt::Debug for ReadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadStream")
            .field("path", &self.handle.path)
            .finish_non_exhaustive()
    }
}

impl futures::Stream for ReadStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.blocks.poll_next_unpin(cx)
    }
}

impl Drop for ReadStream {
    fn drop(&mut self) {
        self.handle.close_later();
    }
}

impl Client {
    /// Opens `path` for reading and returns its blocks as a stream, `opts.in_flight` blocks
    /// requested at once.
    pub async fn read_stream(
        &self,
        path: &PathUri,
        opts: TransferOptions,
    ) -> Result<ReadStream, ClientError> {
        let opts = opts.checked();
        let id = Handle::open(self, path, OpenMode::Read).await?;
        let handle = Arc::new(Handle {
            client: self.clone(),
            path: path.clone(),
            current: tokio::sync::Mutex::new((id, 0)),
        });
        let h = handle.clone();
        let block = opts.block_size;
        let blocks = futures::stream::iter(0u64..)
            .map(move |i| {
                let h = h.clone();
                async move { h.read_block(i * block as u64, block).await }
            })
            .buffered(opts.in_flight)
            .scan(false, |ended, r| {
                if *ended {
                    return futures::future::ready(None);
                }
                let item = match r {
                    Ok((data, eof)) => {
                        *ended = eof;
                        Some(Ok(data))
                    }
                    Err(e) => {
                        *ended = true;
                        Some(Err(e))
                    }
                };
                futures::future::ready(item)
            })
            .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())))
            .boxed();
        Ok(ReadStream { blocks, handle })
    }

    /// Creates or truncates `path` (`fs/open` mode `replace`) and writes everything `reader`
    /// yields, `opts.in_flight` blocks at once. `progress` is called with each block's length
    /// once the server has written it. Returns the bytes written.
    pub async fn write_stream<R: AsyncRead + Unpin>(
        &self,
        path: &PathUri,
        mut reader: R,
        opts: TransferOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ClientError> {
        let opts = opts.checked();
        let id = Handle::open(self, path, OpenMode::Replace).await?;
        let mut offset = 0u64;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut eof = false;
        // The handle id as a JSON string, written into every block's request.
        let id_json = serde_json::to_string(&id)
            .map_err(|e| ClientError::Protocol(format!("cannot encode handle id: {e}")))?;
        let mut buf = vec![0u8; opts.block_size];
        let result: Result<(), ClientError> = async {
            loop {
                while !eof && in_flight.len() < opts.in_flight {
                    let n = read_full(&mut reader, &mut buf).await?;
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    // `WriteBlockParams` written by hand: the base64 goes straight into the
                    // request text instead of through serde_json's string escaping.
                    let block_offset = offset;
                    let request = self.call_prebuilt::<wire::WriteBlock>(
                        id_json.len() + n.div_ceil(3) * 4 + 64,
                        |s| {
                            s.push_str(r#"{"handleId":"#);
                            s.push_str(&id_json);
                            s.push_str(&format!(r#","offset":{block_offset},"chunk":""#));
                            encode_into(&buf[..n], s);
                            s.push_str("\"}");
                        },
                    );
                    offset += n as u64;
                    in_flight.push(async move { request.await.map(|_| n as u64) });
                    if n < opts.block_size {
                        eof = true;
                    }
                }
                match in_flight.next().await {
                    Some(r) => progress(r?),
                    None => return Ok(()),
                }
            }
        }
        .await;
        let closed = self
            .call::<wire::Close>(CloseParams { handle_id: id })
            .await;
        result?;
        closed?;
        Ok(offset)
    }
}

/// Decodes an `fs/readBlock` result. The usual shape, `{"chunk":"<base64>","eof":<bool>}` as
/// our server and upstream write it, is decoded straight from the reply text (no JSON string
/// scan, no copy); anything else, and any chunk that is not plain base64, goes through serde
/// and gets its usual result.
fn decode_read_block(text: &str) -> Result<(Vec<u8>, bool), ClientError> {
    let fast = text.strip_prefix(r#"{"chunk":""#).and_then(|rest| {
        let (chunk, eof) = match rest.strip_suffix(r#"","eof":false}"#) {
            Some(chunk) => (chunk, false),
            None => (rest.strip_suffix(r#"","eof":true}"#)?, true),
        };
        // Plain base64 has no `"`, `\`, control or non-ASCII character, so when `chunk`
        // decodes, it is exactly the JSON string's content and the text is that object.
        exec_server_protocol::bytes::decode(chunk.as_bytes())
            .ok()
            .map(|data| (data, eof))
    });
    if let Some(decoded) = fast {
        return Ok(decoded);
    }
    let r: wire::ReadBlockResult = serde_json::from_str(text)
        .map_err(|e| ClientError::Protocol(format!("{} result: {e}", wire::ReadBlock::NAME)))?;
    let data = r
        .chunk
        .decode()
        .map_err(|e| ClientError::Protocol(format!("fs/readBlock chunk is not base64: {e}")))?;
    Ok((data, r.eof))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize, ClientError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_block_results_decode_as_serde_would() {
        for text in [
            r#"{"chunk":"AP8B","eof":false}"#,
            r#"{"chunk":"","eof":true}"#,
            r#"{"eof":true,"chunk":"AP8B"}"#,
            r#"{"chunk":"AP\/B","eof":false}"#,
            r#"{"chunk": "AP8B", "eof": true}"#,
            r#"{"chunk":"AP8=","eof":true,"extra":1}"#,
        ] {
            let r: wire::ReadBlockResult = serde_json::from_str(text).unwrap();
            let want = (r.chunk.decode().unwrap(), r.eof);
            assert_eq!(decode_read_block(text).unwrap(), want, "{text}");
        }
        for text in [
            r#"{"chunk":"AP8","eof":false}"#,
            r#"{"chunk":"AP8B","eof":1}"#,
            r#"{"chunk":"AP8B\"","eof":false}"#,
            r#"{"chunk":"AP8B"#,
        ] {
            assert!(decode_read_block(text).is_err(), "{text}");
        }
    }
}
