//! stdio transport: newline-delimited JSON, one message per line, with a bounded line length.
//! stdout carries only protocol; logs go to stderr.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec, LinesCodecError};

use crate::connection::{self, InFrame, OutFrame, TransportInfo};
use crate::ServerState;

/// Serves one connection over `input`/`output` until `input` ends; requests already read are
/// answered before it returns.
pub async fn serve<I, O>(input: I, output: O, state: Arc<ServerState>)
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let max = state.config.max_message_bytes;
    let lines = FramedRead::new(input, LinesCodec::new_with_max_length(max));
    let reader = lines
        .filter_map(|line| {
            futures::future::ready(match line {
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some(Some(InFrame::Text(l.into()))),
                Err(LinesCodecError::MaxLineLengthExceeded) => Some(Some(InFrame::TooLarge)),
                Err(LinesCodecError::Io(e)) => {
                    tracing::debug!(%e, "stdin read failed");
                    Some(None)
                }
            })
        })
        .take_while(|f| futures::future::ready(f.is_some()))
        .filter_map(futures::future::ready)
        .boxed();
    let writer = FramedWrite::new(output, LinesCodec::new()).with_flat_map(|f: OutFrame| {
        let items: Vec<Result<String, LinesCodecError>> = match f {
            OutFrame::Text(t) => vec![Ok(t)],
            OutFrame::Base64(b) => vec![Ok(b.into_string())],
            OutFrame::Ping | OutFrame::Close { .. } => vec![],
        };
        futures::stream::iter(items)
    });
    let info = TransportInfo {
        parse_error_prefix: "failed to parse JSON-RPC message from exec-server stdio".into(),
        drain_on_end: true,
        keepalive: false,
        initialize_deadline: false,
        work: None,
        transport_writes: None,
    };
    connection::run(reader, Box::pin(writer), state, info).await;
}
