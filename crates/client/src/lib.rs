//! A typed async client for exec-server, and the Environment abstraction that lets the same
//! harness code run against this machine or a remote executor.
//!
//! * [`Client`] speaks JSON-RPC over a WebSocket ([`transport::WebSocketTarget`], optional
//!   bearer token, `wss://` with the system roots), a spawned program's stdin/stdout
//!   ([`transport::StdioCommand`]), or a Noise-encrypted relay stream to an executor in remote
//!   mode, through its registry and rendezvous ([`transport::NoiseTarget`]). Every method is one
//!   generic call, [`Client::call`], typed by the protocol crate's
//!   [`Method`](exec_server_protocol::Method) types.
//! * When the connection drops the client reconnects, resumes its session and re-reads every
//!   live process from the last seq it delivered: process output reaches the caller once, in
//!   order, with nothing lost (within the server's retention). Writes to stdin are retried
//!   with the same `writeId`, signals with the same `opId`, so they take effect once; a
//!   `process/start` whose reply was lost is settled with `process/status` and
//!   `ifExists: "attach"`, so the command runs once ([`Client::start_process`]).
//! * [`RemoteProcess`] gives a process's events as a `Stream`; [`files::ReadStream`] reads a
//!   file as a `Stream` of blocks with several reads in flight.
//! * [`environment`]: traits for processes, the filesystem and HTTP with a local and a remote
//!   implementation, and [`EnvironmentManager`], which reads `environments.toml`.
//!
//! Errors are [`ClientError`]; [`io_error`] maps a JSON-RPC error back to an `io::Error`.
//!
//! # Example
//!
//! ```no_run
//! use exec_server_client::{Client, ProcessEvent};
//! use exec_server_protocol::process::{StartParams, Stream};
//! use exec_server_protocol::PathUri;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), exec_server_client::ClientError> {
//!     // WebSocket with an optional bearer token; `Connector::Stdio` spawns a program instead.
//!     let client = Client::connect_ws("ws://127.0.0.1:8765", None).await?;
//!
//!     // Every method is one generic call, typed by the protocol crate.
//!     let info = client.call::<exec_server_protocol::environment::Info>(()).await?;
//!     println!("executor {} on {:?}", info.executor_version, info.platform_os);
//!
//!     // A process: its events arrive in seq order, each once, even across reconnects.
//!     let mut process = client
//!         .start_process(StartParams {
//!             process_id: client.new_process_id(),
//!             metadata: None,
//!             argv: vec!["sh".into(), "-c".into(), "echo hi; echo oops >&2; exit 3".into()],
//!             cwd: PathUri::parse("file:///tmp").expect("a valid URI"),
//!             env_policy: None,
//!             shell_snapshot: None,
//!             env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
//!             tty: false,
//!             pipe_stdin: false,
//!             arg0: None,
//!             sandbox: None,
//!             enforce_managed_network: false,
//!             managed_network: None,
//!             network_proxy: None,
//!             if_exists: None,
//!             timeout_ms: None,
//!             kill_grace_ms: None,
//!         })
//!         .await?;
//!     while let Some(event) = process.events().next_event().await {
//!         match event? {
//!             ProcessEvent::Output { stream: Stream::Stderr, data, .. } => eprint!("{}", String::from_utf8_lossy(&data)),
//!             ProcessEvent::Output { data, .. } => print!("{}", String::from_utf8_lossy(&data)),
//!             ProcessEvent::Exited { exit_code, .. } => println!("exit {exit_code}"),
//!             ProcessEvent::Closed { .. } => break,
//!         }
//!     }
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]

mod client;
pub mod environment;
pub mod error;
pub mod files;
pub mod manager;
pub mod process;
pub mod remote_fs;
pub mod remote_http;
pub mod trace;
pub mod transport;

pub use client::{Client, ConnectOptions};
pub use environment::Environment;
pub use error::{io_error, ClientError};
pub use manager::EnvironmentManager;
pub use process::{ProcessControl, ProcessEvent, ProcessEvents, RemoteProcess};
pub use transport::{AuthToken, Connector, NoiseTarget, StdioCommand, WebSocketTarget};
