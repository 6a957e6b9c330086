//! WebSocket transport served by an HTTP upgrade on `/` (axum), plus `GET /readyz`.
//!
//! Upgrade requests that carry an `Origin` header are refused with 403: a browser page must
//! not be able to drive an executor on a developer's machine. Accepted sockets get
//! `TCP_NODELAY`; a message over the size limit is answered with close code 1009.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;

use crate::connection::{self, InFrame, OutFrame, TransportInfo};
use crate::ServerState;

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
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%e, "failed to set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn upgrade(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if headers.contains_key(axum::http::header::ORIGIN) {
        return (
            StatusCode::FORBIDDEN,
            "websocket upgrade requests with an Origin header are not allowed",
        )
            .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = state.config.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run_socket(socket, state, peer))
}

async fn run_socket(socket: WebSocket, state: Arc<ServerState>, peer: SocketAddr) {
    tracing::debug!(%peer, "websocket connected");
    let (sink, stream) = socket.split();
    let reader = stream
        .take_while(|m| futures::future::ready(!matches!(m, Ok(Message::Close(_)))))
        .filter_map(|m| {
            futures::future::ready(match m {
                Ok(Message::Text(t)) => Some(Some(InFrame::Message(bytes::Bytes::from(t)))),
                Ok(Message::Binary(b)) => Some(Some(InFrame::Message(b))),
                Ok(_) => None,
                Err(e) => {
                    let too_big = is_capacity_error(&e);
                    tracing::debug!(%peer, %e, "websocket read failed");
                    Some(too_big.then_some(InFrame::TooLarge))
                }
            })
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
    };
    connection::run(reader, Box::pin(writer), state, info).await;
    tracing::debug!(%peer, "websocket disconnected");
}

/// A read error that means "message too big" (tungstenite's capacity error).
fn is_capacity_error(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("too big")
}
