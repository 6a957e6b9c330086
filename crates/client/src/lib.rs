//! A typed async client for exec-server, and the Environment abstraction that lets the same
//! harness code run against this machine or a remote executor.
//!
//! * [`Client`] speaks JSON-RPC over a WebSocket ([`transport::WebSocketTarget`], optional
//!   bearer token, `wss://` with the system roots) or a spawned program's stdin/stdout
//!   ([`transport::StdioCommand`]). Every method is one generic call, [`Client::call`], typed by
//!   the protocol crate's [`Method`](exec_server_protocol::Method) types.
//! * When the connection drops the client reconnects, resumes its session and re-reads every
//!   live process from the last seq it delivered: process output reaches the caller once, in
//!   order, with nothing lost (within the server's retention). Writes to stdin are retried
//!   with the same `writeId`, so they take effect once.
//! * [`RemoteProcess`] gives a process's events as a `Stream`; [`files::ReadStream`] reads a
//!   file as a `Stream` of blocks with several reads in flight.
//! * [`environment`]: traits for processes, the filesystem and HTTP with a local and a remote
//!   implementation, and [`EnvironmentManager`], which reads `environments.toml`.
//!
//! Errors are [`ClientError`]; [`io_error`] maps a JSON-RPC error back to an `io::Error`.
#![deny(missing_docs)]

mod client;
pub mod error;
pub mod process;
pub mod transport;

pub use client::{Client, ConnectOptions};
pub use error::{io_error, ClientError};
pub use process::{ProcessControl, ProcessEvent, ProcessEvents, RemoteProcess};
pub use transport::{Connector, StdioCommand, WebSocketTarget};
pub mod environment;
pub mod files;
pub mod manager;
pub mod remote_fs;
pub mod remote_http;

pub use environment::Environment;
pub use manager::EnvironmentManager;
