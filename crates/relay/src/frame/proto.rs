//! The `codex.exec_server.relay.v1` protobuf messages (spec §10.3), written by hand with prost's
//! derive so the crate needs no `build.rs` or `protoc`.
//!
//! Field names, numbers and types are exactly the spec's, so an encoded frame is byte for byte
//! what upstream produces. These are raw wire types: nothing here is validated; use
//! [`crate::frame::Frame`] to decode and encode checked frames.

/// One relay frame; each WebSocket binary message carries exactly one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RelayMessageFrame {
    /// Frame schema version; must be 1.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The virtual stream this frame belongs to.
    #[prost(string, tag = "2")]
    pub stream_id: String,
    /// Cumulative acknowledgement (always 0 in 0.169.0).
    #[prost(uint32, tag = "3")]
    pub ack: u32,
    /// Selective acknowledgement bitmap (always 0 in 0.169.0).
    #[prost(uint32, tag = "4")]
    pub ack_bits: u32,
    /// What the frame carries.
    #[prost(oneof = "relay_message_frame::Body", tags = "5, 6, 7, 8, 9, 10")]
    pub body: Option<relay_message_frame::Body>,
}

/// Nested types of [`RelayMessageFrame`].
pub mod relay_message_frame {
    /// The `body` oneof of a relay frame.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        /// A record of stream data.
        #[prost(message, tag = "5")]
        Data(super::RelayData),
        /// A bare acknowledgement.
        #[prost(message, tag = "6")]
        AckFrame(super::RelayAck),
        /// Stream (re)start: the next sequence number the sender expects.
        #[prost(message, tag = "7")]
        Resume(super::RelayResume),
        /// Stream teardown with a reason.
        #[prost(message, tag = "8")]
        Reset(super::RelayReset),
        /// Keepalive (never sent by 0.169.0).
        #[prost(message, tag = "9")]
        Heartbeat(super::RelayHeartbeat),
        /// A Noise handshake message.
        #[prost(message, tag = "10")]
        Handshake(super::RelayHandshake),
    }
}

/// A data record of a virtual stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RelayData {
    /// Per-direction record sequence number, starting at 0.
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    /// Segment index; must be 0.
    #[prost(uint32, tag = "2")]
    pub segment_index: u32,
    /// Segment count; must be 1.
    #[prost(uint32, tag = "3")]
    pub segment_count: u32,
    /// The record (Noise ciphertext).
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
}

/// A bare acknowledgement (no fields).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RelayAck {}

/// Stream (re)start.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RelayResume {
    /// The next sequence number the sender expects to receive.
    #[prost(uint32, tag = "1")]
    pub next_seq: u32,
}

/// Stream teardown.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RelayReset {
    /// Why the stream ends, e.g. `noise_relay_protocol_error`.
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// Keepalive (no fields).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RelayHeartbeat {}

/// A Noise handshake message.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RelayHandshake {
    /// The handshake message bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
}
