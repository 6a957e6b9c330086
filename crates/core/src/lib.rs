//! The executor: sessions, processes, filesystem and environment info.
//!
//! **Architecture invariant:** this crate knows nothing about sockets or JSON-RPC framing. It
//! takes decoded params (protocol types where the shapes agree) and returns typed results and
//! typed errors; the server crate turns those into replies.

pub mod env_policy;
pub mod environment;
pub mod fs;
pub mod http;
pub mod limits;
pub mod managed_network;
pub mod process;
pub mod pty;
pub mod session;
pub mod spawn;

pub use limits::Limits;
pub use session::{Session, Sessions};
