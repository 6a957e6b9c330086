//! Transports: adapters that move whole messages between a byte channel and the connection
//! engine. Nothing protocol-specific lives here.

pub mod memory;
pub mod stdio;
pub mod threads;
pub mod whole_writes;
pub mod ws;
