//! WebSocket transport served by an HTTP upgrade on `/` (axum), plus `GET /readyz`.
//!
//! The accept loop is ours (hyper directly) so it can bound what a peer may hold before it is
//! known: at most `max_pending_connections` connections that have not finished their upgrade,
//! a header read timeout, and `TCP_NODELAY`. Upgrades are checked in this order: `Host`
//! (DNS-rebinding protection), `Origin` (a browser page may not drive an executor), then the
//! bearer token; `/readyz` needs none of them. A message over the size limit is answered with
//! close code 1009.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::connection::{self, InFrame, OutFrame, TransportInfo};
use crate::transport::threads::ConnectionThreads;
use crate::transport::whole_writes::WholeWrites;
use crate::ServerState;

/// Most bytes one socket read takes. tungstenite zeroes this much of its input buffer before
/// every read: at its default (128 KiB) that memset was 6-7 % of the server's CPU per small
/// request; a big message just takes more reads.
const READ_BUFFER: usize = 16 << 10;

/// The HTTP routes: `/` (WebSocket upgrade) and `/readyz`.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/", any(upgrade))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state)
}

/// Serves WebSocket connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(state.clone());
    let _ = state.work_runtime.set(tokio::runtime::Handle::current());
    let threads = match state.config.connection_threads {
        0 => None,
        n => Some(ConnectionThreads::start(n)?),
    };
    let pending = Arc::new(Semaphore::new(state.config.max_pending_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or a transient error: keep accepting after a pause.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections before upgrade; refusing");
            drop(tcp);
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%e, "failed to set TCP_NODELAY");
        }
        let router = router.clone();
        let timeout = state.config.header_read_timeout;
        let Some(threads) = &threads else {
            tokio::spawn(serve_http(tcp, peer, router, timeout, permit));
            continue;
        };
        // Moves the socket to a connection thread's runtime (its own epoll).
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%peer, %e, "cannot hand the connection to a connection thread");
                continue;
            }
        };
        threads.pick().spawn(async move {
            match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => serve_http(tcp, peer, router, timeout, permit).await,
                Err(e) => tracing::warn!(%peer, %e, "connection thread cannot take the socket"),
            }
        });
    }
}

/// Serves one HTTP connection: `/readyz`, or the upgrade and then the WebSocket connection.
async fn serve_http(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    timeout: Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            use tower_service::Service;
            router.call(req).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(WholeWrites::new(tcp)), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, %e, "http connection ended with an error");
    }
    // The upgraded socket (if any) lives on in its own task.
    drop(permit);
}

async fn upgrade(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if !state.config.hosts.allows(host) {
        tracing::warn!(%peer, ?host, "upgrade refused: Host not allowed");
        return (StatusCode::FORBIDDEN, "host not allowed").into_response();
    }
    if headers.contains_key(axum::http::header::ORIGIN) {
        return (
            StatusCode::FORBIDDEN,
            "websocket upgrade requests with an Origin header are not allowed",
        )
            .into_response();
    }
    if let Err(reason) = state.config.auth.check(&headers, SystemTime::now()) {
        tracing::warn!(%peer, reason, "upgrade refused: authentication failed");
        return (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            reason,
        )
            .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(slot) = state.connections.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "upgrade refused: too many connections");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    let limit = state.config.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            run_socket(socket, state, peer).await;
            drop(slot);
        })
}

async fn run_socket(socket: WebSocket, state: Arc<ServerState>, peer: SocketAddr) {
    tracing::debug!(%peer, "websocket connected");
    let (sink, stream) = socket.split();
    let reader = stream
        .take_while(|m| futures::future::ready(!matches!(m, Ok(Message::Close(_)))))
        .map(move |m| match m {
            Ok(Message::Text(t)) => Some(InFrame::Message(bytes::Bytes::from(t))),
            Ok(Message::Binary(b)) => Some(InFrame::Message(b)),
            Ok(_) => Some(InFrame::Alive),
            Err(e) => {
                tracing::debug!(%peer, %e, "websocket read failed");
                classify_error(&e)
            }
        })
        .take_while(|f| futures::future::ready(f.is_some()))
        .filter_map(futures::future::ready)
        .boxed();
    let writer = sink.with(|f: OutFrame| {
        futures::future::ready(Ok::<_, axum::Error>(match f {
            OutFrame::Text(t) => Message::Text(t.into()),
            OutFrame::Ping => Message::Ping(bytes::Bytes::new()),
            OutFrame::Close { code, reason } => Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })),
        }))
    });
    let info = TransportInfo {
        parse_error_prefix: format!(
            "failed to parse websocket JSON-RPC message from exec-server websocket {peer}"
        ),
        drain_on_end: false,
        keepalive: true,
        work: state.work_runtime.get().cloned(),
    };
    connection::run(reader, Box::pin(writer), state, info).await;
    tracing::debug!(%peer, "websocket disconnected");
}

/// What a read error means for the peer: too big (1009), bad UTF-8 (1007), a protocol
/// violation (1002), or a broken connection (no close frame possible).
fn classify_error(e: &axum::Error) -> Option<InFrame> {
    let text = e.to_string();
    if text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("too big")
    {
        Some(InFrame::TooLarge)
    } else if text.contains("UTF-8") || text.contains("utf-8") {
        Some(InFrame::Violation {
            code: 1007,
            reason: "invalid UTF-8 in a text frame",
        })
    } else if text.contains("protocol error") {
        Some(InFrame::Violation {
            code: 1002,
            reason: "websocket protocol error",
        })
    } else {
        None
    }
}
