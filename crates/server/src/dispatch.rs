//! Routing: a method name to its params type, lifecycle family and handler.
//!
//! For every request the order is fixed (spec §1.4): unknown method → `-32601`; params that do
//! not decode → `-32602` with the serde text; then the lifecycle gate → `-32600`; then the
//! handler. Each method string appears once, through its [`Method`] type.

use std::future::Future;
use std::sync::Arc;

use exec_server_core::fs::{HandleTable, MissingWatches};
use exec_server_core::Session;
use exec_server_protocol::{codes, environment, fs, http, jsonrpc, process, ErrorObject};
use exec_server_protocol::{Method, RequestId};
use futures::future::BoxFuture;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::connection::OutMsg;
use crate::handlers;
use crate::rpc_error::RpcError;
use crate::ServerState;

/// Where a connection is in its handshake.
pub(crate) enum Lifecycle {
    /// Before a successful `initialize`.
    New,
    /// `initialize` succeeded; `initialized` not yet received.
    Initializing(Arc<Session>),
    /// Ready for every method.
    Ready(Arc<Session>),
}

/// Params at least this long, of a method that allows it, are decoded on the worker pool
/// ([`Route::call_deferred`]).
pub(crate) const DEFER_PARAMS_BYTES: usize = 256 << 10;

/// What the reader lends to `prepare`.
pub(crate) struct Ctx<'a> {
    pub(crate) lifecycle: &'a Lifecycle,
    pub(crate) state: &'a Arc<ServerState>,
    pub(crate) handles: &'a Arc<HandleTable>,
    pub(crate) http: &'a Arc<handlers::http::Streams>,
    pub(crate) watches: &'a Arc<MissingWatches>,
    pub(crate) out: &'a mpsc::Sender<OutMsg>,
    /// The text frame the request came in (its params are a slice of it), if it was one.
    pub(crate) frame: Option<&'a crate::connection::Utf8Bytes>,
}

/// What a handler gets: the session and the connection's resources.
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) session: Arc<Session>,
    pub(crate) state: Arc<ServerState>,
    pub(crate) handles: Arc<HandleTable>,
    /// The connection's streamed HTTP bodies.
    #[allow(dead_code)] // used by the http handlers
    pub(crate) http: Arc<handlers::http::Streams>,
    /// The connection's `fs/watchMissing` watches.
    pub(crate) watches: Arc<MissingWatches>,
    /// The connection's outgoing messages (for connection-scoped notifications).
    pub(crate) out: mpsc::Sender<OutMsg>,
    /// Tells the handler when its reply has been queued on `out`.
    pub(crate) on_reply: OnReply,
}

/// A running request: resolves to the encoded reply.
pub(crate) type Reply = BoxFuture<'static, Replied>;

/// An encoded reply, and the signal to fire once it is queued if its handler asked for one.
pub(crate) struct Replied {
    pub(crate) msg: OutMsg,
    pub(crate) queued: Option<oneshot::Sender<()>>,
}

/// Lets a handler learn when its reply is in the connection's outgoing queue, so that what it
/// sends on `out` afterwards follows the reply (a streamed `http/request` sends its body deltas
/// only after its response, spec §6.3).
#[derive(Clone, Default)]
pub(crate) struct OnReply(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);

impl OnReply {
    /// Resolves once the reply is queued; fails if it never will be (cancelled or panicked).
    pub(crate) fn queued(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn take(&self) -> Option<oneshot::Sender<()>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Decodes and gates a request and returns the future that answers it. Synchronous work done
/// by a handler's preparation (before its `async` block) happens here, in arrival order.
pub(crate) fn prepare(
    method: &str,
    params: Option<&RawValue>,
    id: &RequestId,
    ctx: &Ctx<'_>,
) -> Result<Reply, ErrorObject> {
    use handlers::{environment as env, fs as hfs, process as proc};
    let r = Route { params, id, ctx };
    match method {
        process::Start::NAME => r.call::<process::Start, _, _>("exec", proc::start),
        process::Read::NAME => {
            r.call_encoded::<process::Read, _, _, _>("exec", proc::read, crate::encode::read_result)
        }
        process::Write::NAME => r.call::<process::Write, _, _>("exec", proc::write),
        process::Signal::NAME => r.call::<process::Signal, _, _>("exec", proc::signal),
        process::Terminate::NAME => r.call::<process::Terminate, _, _>("exec", proc::terminate),
        process::Resize::NAME => r.call::<process::Resize, _, _>("exec", proc::resize),
        process::Status::NAME => r.call::<process::Status, _, _>("exec", proc::status),
        process::List::NAME => r.call::<process::List, _, _>("exec", proc::list),
        process::CloseStdin::NAME => r.call::<process::CloseStdin, _, _>("exec", proc::close_stdin),
        environment::Info::NAME => r.call_encoded::<environment::Info, _, _, _>(
            "environment info",
            env::info,
            |id, info| OutMsg::Text(jsonrpc::encode_result::<Box<RawValue>>(id, &info)),
        ),
        environment::Status::NAME => {
            r.call::<environment::Status, _, _>("environment status", env::status)
        }
        fs::ReadFile::NAME => r.call_encoded::<fs::ReadFile, _, _, _>(
            "filesystem",
            |c, p| hfs::read_file(c.state.config.read_file_limit, p),
            crate::encode::read_file_result,
        ),
        fs::WriteFile::NAME => {
            r.call_deferred::<fs::WriteFile, _, _>("filesystem", |_, p| hfs::write_file(p))
        }
        fs::CreateDirectory::NAME => {
            r.call::<fs::CreateDirectory, _, _>("filesystem", |_, p| hfs::create_directory(p))
        }
        fs::GetMetadata::NAME => {
            r.call::<fs::GetMetadata, _, _>("filesystem", |_, p| hfs::get_metadata(p))
        }
        fs::Canonicalize::NAME => {
            r.call::<fs::Canonicalize, _, _>("filesystem", |_, p| hfs::canonicalize(p))
        }
        fs::ReadDirectory::NAME => {
            r.call::<fs::ReadDirectory, _, _>("filesystem", |_, p| hfs::read_directory(p))
        }
        fs::Walk::NAME => r.call::<fs::Walk, _, _>("filesystem", |_, p| hfs::walk(p)),
        fs::Remove::NAME => r.call::<fs::Remove, _, _>("filesystem", |_, p| hfs::remove(p)),
        fs::Copy::NAME => r.call::<fs::Copy, _, _>("filesystem", |_, p| hfs::copy(p)),
        fs::Open::NAME => r.call::<fs::Open, _, _>("filesystem", |c, p| async move {
            hfs::open(&c.handles, p).await
        }),
        fs::ReadBlock::NAME => r.call_encoded::<fs::ReadBlock, _, _, _>(
            "filesystem",
            |c, p| async move { hfs::read_block(&c.handles, p).await },
            crate::encode::read_block_result,
        ),
        fs::WriteBlock::NAME => r
            .call_deferred::<fs::WriteBlock, _, _>("filesystem", |c, p| async move {
                hfs::write_block(&c.handles, p).await
            }),
        fs::Close::NAME => r.call::<fs::Close, _, _>("filesystem", |c, p| async move {
            hfs::close(&c.handles, p).await
        }),
        fs::WatchMissing::NAME => {
            r.call::<fs::WatchMissing, _, _>("filesystem", hfs::watch_missing)
        }
        http::Request::NAME => r.call::<http::Request, _, _>("http", handlers::http::request),
        _ => Err(ErrorObject::new(
            codes::METHOD_NOT_FOUND,
            format!("exec-server stub does not implement `{method}` yet"),
        )),
    }
}

struct Route<'a, 'b> {
    params: Option<&'a RawValue>,
    id: &'a RequestId,
    ctx: &'a Ctx<'b>,
}

impl Route<'_, '_> {
    /// Decodes `M`'s params, checks the lifecycle for `family`, and runs `handler`.
    fn call<M, F, Fut>(self, family: &str, handler: F) -> Result<Reply, ErrorObject>
    where
        M: Method,
        F: FnOnce(Call, M::Params) -> Fut,
        Fut: Future<Output = Result<M::Result, RpcError>> + Send + 'static,
    {
        self.call_encoded::<M, M::Result, F, Fut>(family, handler, |id, result| {
            OutMsg::Text(jsonrpc::encode_result(id, &result))
        })
    }

    /// Like [`Route::call`] for a method whose params may carry megabytes (a write) and whose
    /// handler needs nothing done in arrival order: params of at least [`DEFER_PARAMS_BYTES`]
    /// in a text frame are decoded inside the request's task, on the worker pool, so the
    /// reader goes on to the next frame meanwhile. Errors keep their order of precedence:
    /// params (`-32602`), then the lifecycle (`-32600`).
    fn call_deferred<M, F, Fut>(self, family: &str, handler: F) -> Result<Reply, ErrorObject>
    where
        M: Method,
        M::Params: Send + 'static,
        F: FnOnce(Call, M::Params) -> Fut + Send + 'static,
        Fut: Future<Output = Result<M::Result, RpcError>> + Send + 'static,
    {
        let Some((frame, range)) = self.deferrable() else {
            return self.call::<M, F, Fut>(family, handler);
        };
        let gate = self.gate(family);
        let call = gate.map(|session| self.call_for(session));
        let id = self.id.clone();
        Ok(Box::pin(async move {
            let text = frame.as_str().get(range).unwrap_or("null");
            let outcome = match jsonrpc::decode_params_text::<M::Params>(text) {
                Err(e) => Err(ErrorObject::new(codes::INVALID_PARAMS, e)),
                Ok(params) => match call {
                    Err(e) => Err(e),
                    Ok(call) => handler(call, params).await.map_err(|RpcError(e)| e),
                },
            };
            let msg = OutMsg::Text(match outcome {
                Ok(result) => jsonrpc::encode_result(&id, &result),
                Err(e) => jsonrpc::encode_error(&id, &e),
            });
            Replied { msg, queued: None }
        }))
    }

    /// The frame and the byte range of params big enough to decode off the reader.
    fn deferrable(&self) -> Option<(crate::connection::Utf8Bytes, std::ops::Range<usize>)> {
        let (params, frame) = (self.params?, self.ctx.frame?);
        let text = params.get();
        if text.len() < DEFER_PARAMS_BYTES {
            return None;
        }
        let start = (text.as_ptr() as usize).checked_sub(frame.as_str().as_ptr() as usize)?;
        let range = start..start + text.len();
        // The params are a slice of the frame (serde_json borrows them from it): the same
        // address, not merely equal text (comparing would read megabytes).
        let slice = frame.as_str().get(range.clone())?;
        std::ptr::eq(slice.as_ptr(), text.as_ptr()).then(|| (frame.clone(), range))
    }

    /// The session if the lifecycle lets `family`'s methods run, else the error.
    fn gate(&self, family: &str) -> Result<Arc<Session>, ErrorObject> {
        match self.ctx.lifecycle {
            Lifecycle::New => Err(ErrorObject::new(
                codes::INVALID_REQUEST,
                format!("client must call initialize before using {family} methods"),
            )),
            Lifecycle::Initializing(_) => Err(ErrorObject::new(
                codes::INVALID_REQUEST,
                format!("client must send initialized before using {family} methods"),
            )),
            Lifecycle::Ready(s) => Ok(s.clone()),
        }
    }

    /// What a handler of this request gets.
    fn call_for(&self, session: Arc<Session>) -> Call {
        Call {
            session,
            state: self.ctx.state.clone(),
            handles: self.ctx.handles.clone(),
            http: self.ctx.http.clone(),
            watches: self.ctx.watches.clone(),
            out: self.ctx.out.clone(),
            on_reply: OnReply::default(),
        }
    }

    /// Like [`Route::call`], with the handler's outcome `R` turned into the success reply by
    /// `encode` (hand-written encoders for the replies that carry megabytes of base64; the
    /// text is the same as `encode_result` of `M::Result` would give, see `crate::encode`).
    fn call_encoded<M, R, F, Fut>(
        self,
        family: &str,
        handler: F,
        encode: fn(&RequestId, R) -> OutMsg,
    ) -> Result<Reply, ErrorObject>
    where
        M: Method,
        F: FnOnce(Call, M::Params) -> Fut,
        R: 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        let params: M::Params = jsonrpc::decode_params(self.params)
            .map_err(|e| ErrorObject::new(codes::INVALID_PARAMS, e))?;
        let call = self.call_for(self.gate(family)?);
        let on_reply = call.on_reply.clone();
        let fut = handler(call, params);
        let id = self.id.clone();
        Ok(Box::pin(async move {
            let msg = match fut.await {
                Ok(result) => encode(&id, result),
                Err(RpcError(e)) => OutMsg::Text(jsonrpc::encode_error(&id, &e)),
            };
            Replied {
                msg,
                queued: on_reply.take(),
            }
        }))
    }
}
