//! An in-memory transport: the engine on one end of a pair of bounded channels, the test (or
//! an embedding) on the other. Used to test the connection engine without a socket.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream_shim::ReceiverStream;

use crate::connection::{self, InFrame, OutFrame, TransportInfo};
use crate::ServerState;

/// The client's end of an in-memory connection.
#[derive(Debug)]
pub struct Peer {
    /// Sends whole messages to the server.
    pub tx: mpsc::Sender<InFrame>,
    /// Receives whole messages from the server.
    pub rx: mpsc::Receiver<OutFrame>,
}

/// Starts a connection over bounded channels of `cap` messages and returns the client's end.
pub fn connect(state: Arc<ServerState>, cap: usize) -> Peer {
    let (in_tx, in_rx) = mpsc::channel(cap);
    let (out_tx, out_rx) = mpsc::channel(cap);
    // The client end gets whole texts (a file reply's base64 encoded here).
    let writer =
        futures::SinkExt::with(tokio_util::sync::PollSender::new(out_tx), |f: OutFrame| {
            futures::future::ready(Ok::<_, tokio_util::sync::PollSendError<OutFrame>>(
                match f {
                    OutFrame::Base64(b) => OutFrame::Text(b.into_string()),
                    f => f,
                },
            ))
        });
    let info = TransportInfo {
        parse_error_prefix: "failed to parse JSON-RPC message from exec-server memory".into(),
        drain_on_end: true,
        keepalive: false,
        initialize_deadline: false,
        work: None,
        transport_writes: None,
    };
    tokio::spawn(connection::run(
        ReceiverStream::new(in_rx),
        Box::pin(writer),
        state,
        info,
    ));
    Peer {
        tx: in_tx,
        rx: out_rx,
    }
}

/// A `Stream` over an mpsc receiver.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc;

    pub(super) struct ReceiverStream<T>(mpsc::Receiver<T>);

    impl<T> ReceiverStream<T> {
        pub(super) fn new(rx: mpsc::Receiver<T>) -> Self {
            ReceiverStream(rx)
        }
    }

    impl<T> futures::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
