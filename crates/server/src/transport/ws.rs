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

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connection::{self, InFrame, TransportInfo};
use crate::transport::handshake;
use crate::transport::threads::ConnectionThreads;
use crate::transport::ws_frames::{Control, ControlIo, FrameSink};
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
        .serve_connection(TokioIo::new(tcp), svc)
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
    mut req: Request,
) -> Response {
    let headers = req.headers();
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
    if let Err(reason) = state.config.auth.check(headers, SystemTime::now()) {
        tracing::warn!(%peer, reason, "upgrade refused: authentication failed");
        return (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            reason,
        )
            .into_response();
    }
    let accept = match handshake::accept_key(req.method(), headers) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::UPGRADE_REQUIRED, "connection is not upgradable").into_response();
    };
    let Ok(slot) = state.connections.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "upgrade refused: too many connections");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run_socket(upgraded, state, peer).await,
            Err(e) => tracing::debug!(%peer, %e, "websocket upgrade failed"),
        }
        drop(slot);
    });
    handshake::switching_protocols(accept)
}

async fn run_socket(upgraded: hyper::upgrade::Upgraded, state: Arc<ServerState>, peer: SocketAddr) {
    // Our own socket, back from hyper, with whatever the peer sent after its request.
    let parts = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            tracing::warn!(%peer, "upgraded connection is not a TCP stream");
            return;
        }
    };
    tracing::debug!(%peer, "websocket connected");
    let (read, write) = parts.io.into_inner().into_split();
    let control = Arc::new(Control::default());
    let limit = state.config.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .read_buffer_size(READ_BUFFER);
    let stream = tokio_tungstenite::WebSocketStream::from_partially_read(
        ControlIo::new(read, control.clone()),
        parts.read_buf.to_vec(),
        Role::Server,
        Some(config),
    )
    .await;
    let reader = stream
        .take_while(|m| futures::future::ready(!matches!(m, Ok(Message::Close(_)))))
        .map(move |m| match m {
            Ok(Message::Text(t)) => Some(InFrame::Text(t)),
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
    let info = TransportInfo {
        parse_error_prefix: format!(
            "failed to parse websocket JSON-RPC message from exec-server websocket {peer}"
        ),
        drain_on_end: false,
        keepalive: true,
        initialize_deadline: true,
        work: state.work_runtime.get().cloned(),
        transport_writes: Some(control.wake.clone()),
    };
    let writer = FrameSink::new(write, control);
    connection::run(reader, Box::pin(writer), state, info).await;
    tracing::debug!(%peer, "websocket disconnected");
}

/// What a read error means for the peer: too big (1009), bad UTF-8 (1007), a protocol
/// violation (1002), or a broken connection (no close frame possible).
fn classify_error(e: &WsError) -> Option<InFrame> {
    match e {
        WsError::Capacity(_) => Some(InFrame::TooLarge),
        WsError::Utf8(_) => Some(InFrame::Violation {
            code: 1007,
            reason: "invalid UTF-8 in a text frame",
        }),
        WsError::Protocol(_) => Some(InFrame::Violation {
            code: 1002,
            reason: "websocket protocol error",
        }),
        _ => None,
    }
}
