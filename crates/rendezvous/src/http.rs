//! The HTTP face: the registry API (spec §10.1 `register`, §10.7 `connect`, §10.6
//! `validate`) and the two WebSocket upgrades of the rendezvous, on one axum router.
//!
//! Registry calls are checked in this order, each failure answered with the registry error
//! body `{"error":{"code","message"}}`: environment id syntax (400 `invalid_environment_id`),
//! a configured environment (404 `unknown_environment`), the bearer (401 `unauthorized`), the
//! request body (400 `invalid_request`). `connect` answers 503 `executor_unavailable` while no
//! executor socket is attached (upstream harnesses retry a 503, not a 401). `validate` answers
//! `{"valid": false}` for any authorization that is not accepted; the reason is only logged.
//!
//! Socket URLs handed out: `{base}/rendezvous/{env}/executor?ticket=…` (reusable by the
//! registered executor, which redials it without re-registering) and
//! `{base}/rendezvous/{env}/harness?ticket=…` (single use, expires with the authorization).
//! `{base}` is `--public-url` with `http`→`ws`, `https`→`wss`, or else `ws://` + the request's
//! `Host`. A refused upgrade gets a status and `x-codex-rendezvous-rejection-reason`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use exec_server_relay::frame::{StreamId, MAX_ENCODED_FRAME_LEN, SOCKET_READ_BUFFER};
use exec_server_relay::registry::{
    check_environment_id, ConnectRequest, ConnectResponse, ErrorBody, ErrorDetail, RegisterRequest,
    RegisterResponse, ValidateRequest, ValidateResponse, NOISE_STREAM_ID_HEADER,
    REJECTION_REASON_HEADER, SECURITY_PROFILE,
};
use tokio::time::Instant;

use crate::config::EnvironmentConfig;
use crate::hub::{Hub, HubError, Reject};
use crate::socket;

/// Largest registry request body, in bytes. A request holds one public key (about 1.7 KB of
/// JSON) and at most a 4 KiB authorization.
pub(crate) const MAX_REQUEST_BODY: usize = 64 * 1024;

/// A registry error: a status and the error body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: Some(self.code.to_string()),
                message: Some(self.message),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::ExecutorUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "executor_unavailable",
                e.to_string(),
            ),
            HubError::TooManyPending => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_pending_connections",
                e.to_string(),
            ),
            HubError::Random(_) => {
                tracing::error!(error = %e, "cannot generate a secret");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// The shared state handlers see.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) hub: Arc<Hub>,
    /// `ws://` or `wss://` base of handed-out socket URLs, without a trailing `/`; `None` to
    /// use the request's `Host`.
    pub(crate) public_base: Option<String>,
}

/// The router of the whole rendezvous.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/cloud/environment/{env}/register", post(register))
        .route("/cloud/environment/{env}/connect", post(connect))
        .route("/cloud/environment/{env}/validate", post(validate))
        .route("/rendezvous/{env}/executor", get(executor_socket))
        .route("/rendezvous/{env}/harness", get(harness_socket))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such registry endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(state)
}

/// The configured environment `env`, after checking its id.
fn environment<'a>(hub: &'a Hub, env: &str) -> Result<&'a EnvironmentConfig, ApiError> {
    check_environment_id(env).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_environment_id",
            e.to_string(),
        )
    })?;
    hub.config.environments.get(env).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_environment",
            format!("unknown environment `{env}`"),
        )
    })
}

/// Checks the `Authorization: Bearer` header against `tokens`.
fn authorize(headers: &HeaderMap, tokens: &crate::config::TokenSet) -> Result<(), ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match bearer {
        Some(token) if tokens.accepts(token) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))
}

/// The `ws(s)://` base for URLs handed out in answer to a request with `headers`.
fn public_base(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(base) = &state.public_base {
        return Ok(base.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a Host header is needed when the rendezvous has no public URL",
            )
        })?;
    Ok(format!("ws://{host}"))
}

async fn register(
    State(state): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<RegisterResponse>, ApiError> {
    let config = environment(&state.hub, &env)?;
    authorize(&headers, &config.executor_tokens)?;
    let request: RegisterRequest = parse_body(&body)?;
    if request.security_profile != SECURITY_PROFILE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_security_profile",
            format!(
                "unsupported security profile `{}`",
                request.security_profile
            ),
        ));
    }
    let base = public_base(&state, &headers)?;
    let registered = state.hub.register(&env, request.executor_public_key)?;
    tracing::info!(environment = %env, registration = %registered.registration_id, "executor registered");
    Ok(axum::Json(RegisterResponse {
        url: format!(
            "{base}/rendezvous/{env}/executor?ticket={}",
            registered.executor_ticket
        ),
        environment_id: env,
        security_profile: SECURITY_PROFILE.to_string(),
        executor_registration_id: registered.registration_id,
    }))
}

async fn connect(
    State(state): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<ConnectResponse>, ApiError> {
    let config = environment(&state.hub, &env)?;
    authorize(&headers, &config.harness_tokens)?;
    let request: ConnectRequest = parse_body(&body)?;
    let base = public_base(&state, &headers)?;
    let bundle = state
        .hub
        .connect(&env, request.harness_public_key, Instant::now())?;
    tracing::debug!(environment = %env, "connect bundle issued");
    Ok(axum::Json(ConnectResponse {
        url: format!("{base}/rendezvous/{env}/harness?ticket={}", bundle.ticket),
        environment_id: env,
        security_profile: SECURITY_PROFILE.to_string(),
        executor_registration_id: bundle.registration_id,
        executor_public_key: bundle.executor_key,
        harness_key_authorization: bundle.authorization,
    }))
}

async fn validate(
    State(state): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<ValidateResponse>, ApiError> {
    let config = environment(&state.hub, &env)?;
    authorize(&headers, &config.executor_tokens)?;
    let stream_id = headers
        .get(NOISE_STREAM_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| StreamId::new(v).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("missing or invalid {NOISE_STREAM_ID_HEADER} header"),
            )
        })?;
    let request: ValidateRequest = parse_body(&body)?;
    let outcome = state.hub.validate(
        &env,
        &request.executor_registration_id,
        &stream_id,
        &request.harness_public_key,
        &request.harness_key_authorization,
        Instant::now(),
    );
    match outcome {
        Ok(()) => tracing::info!(environment = %env, %stream_id, "harness key accepted"),
        Err(reason) => {
            tracing::warn!(environment = %env, %stream_id, %reason, "harness key refused")
        }
    }
    Ok(axum::Json(ValidateResponse {
        valid: outcome.is_ok(),
    }))
}

/// `?ticket=` of a socket URL.
#[derive(serde::Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
}

fn rejection(status: StatusCode, reason: Reject) -> Response {
    let mut response =
        ApiError::new(status, "rendezvous_rejected", reason.to_string()).into_response();
    if let Ok(value) = HeaderValue::from_str(&reason.to_string()) {
        response
            .headers_mut()
            .insert(REJECTION_REASON_HEADER, value);
    }
    response
}

fn reject_status(reason: Reject) -> StatusCode {
    match reason {
        Reject::InvalidTicket => StatusCode::UNAUTHORIZED,
        Reject::ExecutorUnavailable | Reject::TooManySockets => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn executor_socket(
    State(state): State<AppState>,
    Path(env): Path<String>,
    Query(query): Query<TicketQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ticket = query.ticket.unwrap_or_default();
    let registration_id = match state.hub.check_executor_ticket(&env, &ticket) {
        Ok(id) => id,
        Err(reason) => {
            tracing::info!(environment = %env, %reason, "executor socket refused");
            return rejection(reject_status(reason), reason);
        }
    };
    let hub = state.hub.clone();
    ws.read_buffer_size(SOCKET_READ_BUFFER)
        .max_message_size(MAX_ENCODED_FRAME_LEN)
        .max_frame_size(MAX_ENCODED_FRAME_LEN)
        .on_upgrade(move |socket| socket::run_executor(hub, socket, env, registration_id))
}

async fn harness_socket(
    State(state): State<AppState>,
    Path(env): Path<String>,
    Query(query): Query<TicketQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ticket = query.ticket.unwrap_or_default();
    let (registration_id, key) = match state.hub.take_harness_ticket(&env, &ticket, Instant::now())
    {
        Ok(x) => x,
        Err(reason) => {
            tracing::info!(environment = %env, %reason, "harness socket refused");
            return rejection(reject_status(reason), reason);
        }
    };
    let hub = state.hub.clone();
    ws.read_buffer_size(SOCKET_READ_BUFFER)
        .max_message_size(MAX_ENCODED_FRAME_LEN)
        .max_frame_size(MAX_ENCODED_FRAME_LEN)
        .on_upgrade(move |socket| socket::run_harness(hub, socket, env, registration_id, key))
}
