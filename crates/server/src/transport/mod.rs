//! Transports: adapters that move whole messages between a byte channel and the connection
//! engine. Nothing protocol-specific lives here.

pub(crate) mod handshake;
pub mod memory;
pub mod relay;
pub mod stdio;
pub mod threads;
pub mod ws;
pub(crate) mod ws_frames;
