//! Over-the-wire integration tests: the real `exec-server` binary on a real socket.
#![allow(unreachable_pub, dead_code)]

mod support;

mod auth;
mod cli;
mod client;
mod client_cli;
mod durable;
mod engine;
mod harness;
mod http;
mod limits;
mod mcp;
mod mcp_serve;
mod observability;
mod process;
mod proxy;
mod remote;
mod remote_bad;
mod retention;
mod retry;
mod sandbox;
mod sessions;
mod transport;
mod watch;
