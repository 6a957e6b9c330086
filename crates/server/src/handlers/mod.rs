//! Thin request handlers: decode, call core, encode. One module per domain.

pub(crate) mod environment;
pub(crate) mod fs;
pub(crate) mod http;
pub(crate) mod process;
