//! Harness side of one relay stream (spec §10.4, §10.7), sans-I/O.
//!
//! [`HarnessStream::start`] picks nothing itself: the caller passes a stream id (a fresh UUID v4
//! from [`new_stream_id`]) and the registry `connect` answer ([`ConnectInfo`]); it returns the
//! two opening frames, `resume{next_seq:0}` and `handshake{msg1}`. The executor's msg2 completes
//! the handshake against the pinned executor key; after that, [`HarnessStream::send`] and
//! [`HarnessStream::on_frame`] move JSON-RPC messages. Any failure ends the stream: the caller
//! sends [`HarnessStream::reset_frame`] (unless the peer reset it) and drops it.

use crate::frame::{Frame, FrameBody, StreamId};
use crate::noise::{prologue, Initiator, NoiseError, PublicKey, StaticIdentity};
use crate::stream::{SecureStream, StreamError};
use crate::PROTOCOL_ERROR_RESET_REASON;

/// What the harness needs from the registry `connect` response (spec §10.7).
#[derive(Clone)]
pub struct ConnectInfo {
    /// `environment_id` (must equal the requested one; checked by the caller).
    pub environment_id: String,
    /// `executor_registration_id`.
    pub executor_registration_id: String,
    /// `executor_public_key`: the key pinned for this handshake.
    pub executor_public_key: PublicKey,
    /// `harness_key_authorization`: opaque, sent in msg1; redacted in Debug output.
    pub harness_key_authorization: String,
}

impl std::fmt::Debug for ConnectInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectInfo")
            .field("environment_id", &self.environment_id)
            .field("executor_registration_id", &self.executor_registration_id)
            .field("executor_public_key", &self.executor_public_key)
            .field("harness_key_authorization", &"<redacted>")
            .finish()
    }
}

/// A fresh stream id: a UUID v4 string, as upstream harnesses pick.
pub fn new_stream_id() -> StreamId {
    // A hyphenated UUID is 36 ASCII characters without whitespace: always a valid id.
    StreamId::from_trusted(uuid::Uuid::new_v4().to_string())
}

/// Why a harness stream ended.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The handshake failed (wrong executor key, tampering, payload in msg2...).
    #[error(transparent)]
    Handshake(#[from] NoiseError),
    /// The established stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The executor (or rendezvous) reset the stream.
    #[error("relay stream reset by peer: {reason}")]
    Reset {
        /// `RelayReset.reason`.
        reason: String,
    },
    /// A frame arrived that the stream's state does not allow.
    #[error("unexpected relay {kind} frame {state}")]
    Unexpected {
        /// The frame kind.
        kind: &'static str,
        /// Where the stream was.
        state: &'static str,
    },
    /// `send` before the handshake completed.
    #[error("relay stream is not established")]
    NotEstablished,
}

enum State {
    AwaitingResponse(Box<Initiator>),
    Established(Box<SecureStream>),
    Closed,
}

/// One harness relay stream.
pub struct HarnessStream {
    stream_id: StreamId,
    state: State,
}

impl HarnessStream {
    /// Starts the stream: returns it and the frames to send first, `resume{next_seq:0}` then
    /// `handshake{msg1}` (spec §10.4 item 1).
    pub fn start(
        identity: &StaticIdentity,
        connect: &ConnectInfo,
        stream_id: StreamId,
    ) -> Result<(Self, Vec<Frame>), NoiseError> {
        let prologue = prologue(
            &connect.environment_id,
            &connect.executor_registration_id,
            stream_id.as_str(),
        );
        let (initiator, msg1) = Initiator::start(
            identity,
            &connect.executor_public_key,
            &prologue,
            &connect.harness_key_authorization,
        )?;
        let frames = vec![
            Frame::new(stream_id.clone(), FrameBody::Resume { next_seq: 0 }),
            Frame::new(stream_id.clone(), FrameBody::Handshake { payload: msg1 }),
        ];
        Ok((
            Self {
                stream_id,
                state: State::AwaitingResponse(Box::new(initiator)),
            },
            frames,
        ))
    }

    /// The stream id.
    pub fn stream_id(&self) -> &StreamId {
        &self.stream_id
    }

    /// True once msg2 was accepted.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// Handles one checked inbound frame for this stream and returns the JSON-RPC messages it
    /// completed. After an error the stream is closed.
    pub fn on_frame(&mut self, body: FrameBody) -> Result<Vec<Vec<u8>>, HarnessError> {
        let kind = body.kind();
        // Take the state; every error path leaves `Closed` behind.
        match (body, std::mem::replace(&mut self.state, State::Closed)) {
            (_, State::Closed) => Err(HarnessError::Unexpected {
                kind,
                state: "after the stream closed",
            }),
            (FrameBody::Reset { reason }, _) => Err(HarnessError::Reset { reason }),
            (FrameBody::Resume { .. } | FrameBody::Ack | FrameBody::Heartbeat, state) => {
                self.state = state;
                Ok(Vec::new())
            }
            (FrameBody::Handshake { payload }, State::AwaitingResponse(initiator)) => {
                let transport = initiator.finish(&payload)?;
                self.state = State::Established(Box::new(SecureStream::new(transport)));
                Ok(Vec::new())
            }
            (FrameBody::Handshake { .. }, State::Established(_)) => Err(HarnessError::Unexpected {
                kind,
                state: "after the handshake completed",
            }),
            (FrameBody::Data { .. }, State::AwaitingResponse(_)) => Err(HarnessError::Unexpected {
                kind,
                state: "before the handshake completed",
            }),
            (FrameBody::Data { seq, payload }, State::Established(mut stream)) => {
                let messages = stream.open(seq, payload)?;
                self.state = State::Established(stream);
                Ok(messages)
            }
        }
    }

    /// Seals one JSON-RPC message into data frames. After an error the stream is closed.
    pub fn send(&mut self, message: &[u8]) -> Result<Vec<Frame>, HarnessError> {
        let State::Established(stream) = &mut self.state else {
            return Err(HarnessError::NotEstablished);
        };
        match stream.seal(message) {
            Ok(bodies) => Ok(bodies
                .into_iter()
                .map(|b| Frame::new(self.stream_id.clone(), b))
                .collect()),
            Err(e) => {
                self.state = State::Closed;
                Err(e.into())
            }
        }
    }

    /// The reset frame to send when ending the stream from this side.
    pub fn reset_frame(&self) -> Frame {
        Frame::new(
            self.stream_id.clone(),
            FrameBody::Reset {
                reason: PROTOCOL_ERROR_RESET_REASON.to_string(),
            },
        )
    }
}

impl std::fmt::Debug for HarnessStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::AwaitingResponse(_) => "awaiting-response",
            State::Established(_) => "established",
            State::Closed => "closed",
        };
        f.debug_struct("HarnessStream")
            .field("stream_id", &self.stream_id)
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{read_request, MSG1_OVERHEAD};

    fn setup() -> (StaticIdentity, StaticIdentity, ConnectInfo) {
        let executor = StaticIdentity::generate().unwrap();
        let connect = ConnectInfo {
            environment_id: "env".into(),
            executor_registration_id: "reg".into(),
            executor_public_key: executor.public_key().clone(),
            harness_key_authorization: "secret-auth".into(),
        };
        (executor, StaticIdentity::generate().unwrap(), connect)
    }

    #[test]
    fn start_sends_resume_zero_then_msg1() {
        let (executor, harness, connect) = setup();
        let id = new_stream_id();
        assert_eq!(id.as_str().len(), 36);
        let (h, frames) = HarnessStream::start(&harness, &connect, id.clone()).unwrap();
        assert!(!h.is_established());
        assert_eq!(
            frames[0],
            Frame::new(id.clone(), FrameBody::Resume { next_seq: 0 })
        );
        let FrameBody::Handshake { payload } = &frames[1].body else {
            panic!("{:?}", frames[1]);
        };
        assert_eq!(payload.len(), MSG1_OVERHEAD + "secret-auth".len());
        let pending =
            read_request(&executor, &prologue("env", "reg", id.as_str()), payload).unwrap();
        assert_eq!(pending.authorization(), "secret-auth");
    }

    #[test]
    fn data_before_msg2_closes_the_stream() {
        let (_, harness, connect) = setup();
        let (mut h, _) = HarnessStream::start(&harness, &connect, new_stream_id()).unwrap();
        let err = h
            .on_frame(FrameBody::Data {
                seq: 0,
                payload: vec![0; 20],
            })
            .unwrap_err();
        assert!(matches!(err, HarnessError::Unexpected { .. }));
        assert!(matches!(h.send(b"{}"), Err(HarnessError::NotEstablished)));
        assert!(h.on_frame(FrameBody::Heartbeat).is_err());
    }

    #[test]
    fn a_bad_msg2_fails_the_handshake() {
        let (_, harness, connect) = setup();
        let (mut h, _) = HarnessStream::start(&harness, &connect, new_stream_id()).unwrap();
        let err = h
            .on_frame(FrameBody::Handshake {
                payload: vec![1; crate::noise::MSG2_LEN],
            })
            .unwrap_err();
        assert!(matches!(err, HarnessError::Handshake(_)));
        assert_eq!(
            h.reset_frame().body,
            FrameBody::Reset {
                reason: "noise_relay_protocol_error".into()
            }
        );
    }

    #[test]
    fn debug_redacts_the_authorization() {
        let (_, _, connect) = setup();
        assert!(!format!("{connect:?}").contains("secret-auth"));
    }
}
