//! Executor side of the relay (spec §10.4), sans-I/O: one [`ExecutorRelay`] per rendezvous
//! socket turns inbound frames into [`Action`]s (frames to send, registry validations to run,
//! JSON-RPC messages to deliver, streams that ended) and enforces the per-socket limits.
//!
//! Per stream: `resume` is noted and ignored; the first `handshake` is read as msg1 and yields
//! [`Action::Validate`]; the caller asks the registry (spec §10.6) and reports back with
//! [`ExecutorRelay::validated`], which sends msg2 on success. Data before the handshake
//! completed, a second handshake, a bad handshake, a failed validation and any decryption or
//! framing error reset the stream with [`PROTOCOL_ERROR_RESET_REASON`]; the details are logged,
//! never sent. An inbound `reset` ends the stream; `ack` and `heartbeat` are ignored.
//!
//! Limits (spec §10.4 item 2): at most [`MAX_PENDING_VALIDATIONS`] streams waiting for the
//! registry and [`MAX_ACTIVE_STREAMS`] established streams per socket; a validation not answered
//! within [`VALIDATION_TIMEOUT`] is reset by [`ExecutorRelay::expire_validations`].
//!
//! Repeated failures (spec §10.6): after [`HANDSHAKE_FAILURES_BEFORE_PAUSE`] handshakes in a
//! row failed (undecodable or wrong-key msg1, refused or timed-out validation), handshakes are
//! paused: new ones are reset at once, without the ML-KEM decapsulation or a registry call, for
//! [`FIRST_HANDSHAKE_PAUSE`], doubled each time the failures go on up to
//! [`LONGEST_HANDSHAKE_PAUSE`]; one established stream resets both. Established streams are
//! never affected. The time is the `now` of the latest [`ExecutorRelay::on_frame`] or
//! [`ExecutorRelay::expire_validations`] call (the driver calls the latter every second). Not
//! here: the inbound queue of 128 messages, which belongs to the async driver.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameBody, StreamId};
use crate::noise::{prologue, read_request, PendingResponder, PublicKey, StaticIdentity};
use crate::stream::SecureStream;
use crate::PROTOCOL_ERROR_RESET_REASON;

/// Most streams waiting for a harness-key validation at once, per socket.
pub const MAX_PENDING_VALIDATIONS: usize = 32;
/// Most established streams at once, per socket.
pub const MAX_ACTIVE_STREAMS: usize = 128;
/// How long a harness-key validation may take before its stream is reset.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes failing in a row before handshakes are paused (upstream's constant).
pub const HANDSHAKE_FAILURES_BEFORE_PAUSE: u32 = 8;
/// The first pause of handshakes.
pub const FIRST_HANDSHAKE_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause of handshakes.
pub const LONGEST_HANDSHAKE_PAUSE: Duration = Duration::from_secs(30);

/// Something the driver must do after feeding the relay.
#[derive(Debug)]
pub enum Action {
    /// Send this frame on the rendezvous socket.
    Send(Frame),
    /// Validate the harness key with the registry (`POST …/validate`, spec §10.6), then call
    /// [`ExecutorRelay::validated`] with the outcome.
    Validate {
        /// The stream waiting for the answer (the `x-codex-noise-stream-id` header).
        stream_id: StreamId,
        /// `harness_public_key` of the request.
        harness_public_key: PublicKey,
        /// `harness_key_authorization` of the request.
        authorization: String,
    },
    /// The stream is established: start a JSON-RPC connection for it.
    Opened(StreamId),
    /// Complete JSON-RPC messages received on an established stream, in order.
    Deliver(StreamId, Vec<Vec<u8>>),
    /// The stream ended (reset by either side); drop its connection.
    Closed(StreamId),
}

/// Why [`ExecutorRelay::send`] could not send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No established stream has this id.
    #[error("relay stream {0} is not established")]
    NotEstablished(StreamId),
}

enum State {
    Validating {
        pending: Box<PendingResponder>,
        since: Instant,
    },
    Established(Box<SecureStream>),
}

/// All virtual streams of one rendezvous socket, executor side.
pub struct ExecutorRelay {
    identity: StaticIdentity,
    environment_id: String,
    registration_id: String,
    streams: HashMap<StreamId, State>,
    /// Handshakes failed in a row since the last established stream or pause.
    failures: u32,
    /// The next pause's length.
    next_pause: Duration,
    /// Handshakes are refused until then.
    paused_until: Option<Instant>,
    /// The latest time the driver told us.
    now: Instant,
}

impl ExecutorRelay {
    /// A relay for the registration `(environment_id, registration_id)` with our static
    /// `identity`; both strings go into every stream's prologue.
    pub fn new(identity: StaticIdentity, environment_id: &str, registration_id: &str) -> Self {
        Self {
            identity,
            environment_id: environment_id.to_string(),
            registration_id: registration_id.to_string(),
            streams: HashMap::new(),
            failures: 0,
            next_pause: FIRST_HANDSHAKE_PAUSE,
            paused_until: None,
            now: Instant::now(),
        }
    }

    /// Whether new handshakes are refused because too many failed in a row.
    pub fn handshakes_paused(&self) -> bool {
        self.paused_until.is_some_and(|until| self.now < until)
    }

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Counts a failed handshake; the eighth in a row starts a pause.
    fn handshake_failed(&mut self) {
        self.failures += 1;
        if self.failures >= HANDSHAKE_FAILURES_BEFORE_PAUSE {
            tracing::warn!(
                failures = self.failures,
                pause = ?self.next_pause,
                "pausing Noise relay handshakes after repeated failures"
            );
            self.paused_until = Some(self.now + self.next_pause);
            self.next_pause = (self.next_pause * 2).min(LONGEST_HANDSHAKE_PAUSE);
            self.failures = 0;
        }
    }

    /// Streams waiting for the registry.
    pub fn pending_count(&self) -> usize {
        self.streams
            .values()
            .filter(|s| matches!(s, State::Validating { .. }))
            .count()
    }

    /// Established streams.
    pub fn active_count(&self) -> usize {
        self.streams.len() - self.pending_count()
    }

    /// Handles one checked inbound frame.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) -> Vec<Action> {
        self.tick(now);
        let Frame {
            stream_id, body, ..
        } = frame;
        match body {
            FrameBody::Resume { .. } | FrameBody::Ack | FrameBody::Heartbeat => Vec::new(),
            FrameBody::Reset { reason } => {
                if self.streams.remove(&stream_id).is_some() {
                    tracing::debug!(%stream_id, %reason, "relay stream reset by peer");
                    vec![Action::Closed(stream_id)]
                } else {
                    Vec::new()
                }
            }
            FrameBody::Handshake { payload } => self.on_handshake(stream_id, &payload, now),
            FrameBody::Data { seq, payload } => match self.streams.get_mut(&stream_id) {
                Some(State::Established(stream)) => match stream.open(seq, payload) {
                    Ok(messages) if messages.is_empty() => Vec::new(),
                    Ok(messages) => vec![Action::Deliver(stream_id, messages)],
                    Err(e) => self.fail(stream_id, &e),
                },
                _ => self.fail(stream_id, &"relay data before the handshake completed"),
            },
        }
    }

    fn on_handshake(&mut self, stream_id: StreamId, msg1: &[u8], now: Instant) -> Vec<Action> {
        if self.streams.contains_key(&stream_id) {
            return self.fail(stream_id, &"duplicate relay handshake for a known stream");
        }
        if self.pending_count() >= MAX_PENDING_VALIDATIONS {
            return self.fail(stream_id, &"too many pending relay handshake validations");
        }
        if self.active_count() >= MAX_ACTIVE_STREAMS {
            return self.fail(stream_id, &"too many active relay streams");
        }
        if self.handshakes_paused() {
            // Quietly: the pause itself was logged once.
            return reset_frame(stream_id);
        }
        let prologue = prologue(
            &self.environment_id,
            &self.registration_id,
            stream_id.as_str(),
        );
        match read_request(&self.identity, &prologue, msg1) {
            Ok(pending) => {
                let action = Action::Validate {
                    stream_id: stream_id.clone(),
                    harness_public_key: pending.harness_public_key().clone(),
                    authorization: pending.authorization().to_string(),
                };
                self.streams.insert(
                    stream_id,
                    State::Validating {
                        pending: Box::new(pending),
                        since: now,
                    },
                );
                vec![action]
            }
            Err(e) => {
                self.handshake_failed();
                self.fail(stream_id, &e)
            }
        }
    }

    /// Reports the registry's answer for a stream that asked with [`Action::Validate`]: `true`
    /// only for a 200 `{"valid": true}`. Unknown or already ended streams are ignored.
    pub fn validated(&mut self, stream_id: &StreamId, valid: bool) -> Vec<Action> {
        let Some(State::Validating { .. }) = self.streams.get(stream_id) else {
            return Vec::new();
        };
        let Some(State::Validating { pending, .. }) = self.streams.remove(stream_id) else {
            return Vec::new();
        };
        if !valid {
            self.handshake_failed();
            return self.fail(stream_id.clone(), &"harness key validation failed");
        }
        if self.active_count() >= MAX_ACTIVE_STREAMS {
            return self.fail(stream_id.clone(), &"too many active relay streams");
        }
        match pending.accept() {
            Ok((msg2, transport)) => {
                self.failures = 0;
                self.next_pause = FIRST_HANDSHAKE_PAUSE;
                self.paused_until = None;
                self.streams.insert(
                    stream_id.clone(),
                    State::Established(Box::new(SecureStream::new(transport))),
                );
                vec![
                    Action::Send(Frame::new(
                        stream_id.clone(),
                        FrameBody::Handshake { payload: msg2 },
                    )),
                    Action::Opened(stream_id.clone()),
                ]
            }
            Err(e) => {
                self.handshake_failed();
                self.fail(stream_id.clone(), &e)
            }
        }
    }

    /// Resets streams whose validation started more than [`VALIDATION_TIMEOUT`] before `now`.
    pub fn expire_validations(&mut self, now: Instant) -> Vec<Action> {
        self.tick(now);
        let expired: Vec<StreamId> = self
            .streams
            .iter()
            .filter_map(|(id, s)| match s {
                State::Validating { since, .. }
                    if now.saturating_duration_since(*since) >= VALIDATION_TIMEOUT =>
                {
                    Some(id.clone())
                }
                _ => None,
            })
            .collect();
        expired
            .into_iter()
            .flat_map(|id| {
                self.handshake_failed();
                self.fail(id, &"harness key validation timed out")
            })
            .collect()
    }

    /// Seals one outbound JSON-RPC message on an established stream. On a sealing error the
    /// stream is reset and the returned actions say so.
    pub fn send(&mut self, stream_id: &StreamId, message: &[u8]) -> Result<Vec<Action>, SendError> {
        let Some(State::Established(stream)) = self.streams.get_mut(stream_id) else {
            return Err(SendError::NotEstablished(stream_id.clone()));
        };
        match stream.seal(message) {
            Ok(bodies) => Ok(bodies
                .into_iter()
                .map(|b| Action::Send(Frame::new(stream_id.clone(), b)))
                .collect()),
            Err(e) => Ok(self.fail(stream_id.clone(), &e)),
        }
    }

    /// Ends a stream from our side (its connection closed): a reset is sent.
    pub fn close(&mut self, stream_id: &StreamId) -> Vec<Action> {
        if self.streams.contains_key(stream_id) {
            self.fail(stream_id.clone(), &"relay stream shut down")
        } else {
            Vec::new()
        }
    }

    /// Resets `stream_id` (known or not), logging `why` locally only.
    fn fail(&mut self, stream_id: StreamId, why: &dyn std::fmt::Display) -> Vec<Action> {
        tracing::warn!(%stream_id, error = %why, "resetting relay stream");
        let known = self.streams.remove(&stream_id).is_some();
        let mut actions = reset_frame(stream_id.clone());
        if known {
            actions.push(Action::Closed(stream_id));
        }
        actions
    }
}

/// The one reset frame the executor sends (spec §10.4), as actions.
fn reset_frame(stream_id: StreamId) -> Vec<Action> {
    vec![Action::Send(Frame::new(
        stream_id,
        FrameBody::Reset {
            reason: PROTOCOL_ERROR_RESET_REASON.to_string(),
        },
    ))]
}

impl std::fmt::Debug for ExecutorRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorRelay")
            .field("environment_id", &self.environment_id)
            .field("pending", &self.pending_count())
            .field("active", &self.active_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{new_stream_id, ConnectInfo, HarnessError, HarnessStream};

    struct World {
        relay: ExecutorRelay,
        harness_id: StaticIdentity,
        connect: ConnectInfo,
        now: Instant,
    }

    fn world() -> World {
        let executor = StaticIdentity::generate().unwrap();
        let connect = ConnectInfo {
            environment_id: "e2e".into(),
            executor_registration_id: "reg-1".into(),
            executor_public_key: executor.public_key().clone(),
            harness_key_authorization: "auth-123".into(),
        };
        World {
            relay: ExecutorRelay::new(executor, "e2e", "reg-1"),
            harness_id: StaticIdentity::generate().unwrap(),
            connect,
            now: Instant::now(),
        }
    }

    /// Sends a frame over the "wire": encode, decode, feed.
    fn feed(w: &mut World, frame: Frame) -> Vec<Action> {
        let frame = Frame::decode(&frame.encode().unwrap()).unwrap();
        w.relay.on_frame(frame, w.now)
    }

    fn sent(actions: &[Action]) -> Vec<&Frame> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn is_reset(actions: &[Action], id: &StreamId) -> bool {
        sent(actions).iter().any(|f| {
            &f.stream_id == id
                && f.body
                    == FrameBody::Reset {
                        reason: "noise_relay_protocol_error".into(),
                    }
        })
    }

    /// Runs resume + msg1 through the relay; returns the harness and the relay's actions.
    fn begin(w: &mut World) -> (HarnessStream, Vec<Action>) {
        let (h, frames) = HarnessStream::start(&w.harness_id, &w.connect, new_stream_id()).unwrap();
        let mut actions = Vec::new();
        for f in frames {
            actions.extend(feed(w, f));
        }
        (h, actions)
    }

    /// A fully established stream.
    fn open(w: &mut World) -> HarnessStream {
        let (mut h, actions) = begin(w);
        assert!(matches!(actions.as_slice(), [Action::Validate { .. }]));
        let actions = w.relay.validated(h.stream_id(), true);
        let msg2 = sent(&actions)[0].clone();
        assert!(h.on_frame(msg2.body).unwrap().is_empty());
        assert!(h.is_established());
        h
    }

    #[test]
    fn resume_handshake_validation_then_json_rpc_both_ways() {
        let mut w = world();
        let (mut h, actions) = begin(&mut w);
        match actions.as_slice() {
            [Action::Validate {
                stream_id,
                harness_public_key,
                authorization,
            }] => {
                assert_eq!(stream_id, h.stream_id());
                assert_eq!(harness_public_key, w.harness_id.public_key());
                assert_eq!(authorization, "auth-123");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.relay.pending_count(), 1);
        let actions = w.relay.validated(h.stream_id(), true);
        assert!(matches!(&actions[1], Action::Opened(id) if id == h.stream_id()));
        let msg2 = sent(&actions)[0].clone();
        match &msg2.body {
            FrameBody::Handshake { payload } => assert_eq!(payload.len(), crate::noise::MSG2_LEN),
            other => panic!("{other:?}"),
        }
        h.on_frame(msg2.body).unwrap();
        assert_eq!((w.relay.pending_count(), w.relay.active_count()), (0, 1));

        let request = br#"{"id":1,"method":"initialize","params":{}}"#;
        let mut delivered = Vec::new();
        for f in h.send(request).unwrap() {
            delivered.extend(feed(&mut w, f));
        }
        match delivered.as_slice() {
            [Action::Deliver(id, msgs)] => {
                assert_eq!(id, h.stream_id());
                assert_eq!(msgs, &[request.to_vec()]);
            }
            other => panic!("{other:?}"),
        }
        let big = vec![b'r'; 200_000];
        let mut got = Vec::new();
        for a in w.relay.send(h.stream_id(), &big).unwrap() {
            let Action::Send(f) = a else { panic!() };
            let f = Frame::decode(&f.encode().unwrap()).unwrap();
            got.extend(h.on_frame(f.body).unwrap());
        }
        assert_eq!(got, [big]);
    }

    #[test]
    fn data_before_the_handshake_completed_is_reset() {
        let mut w = world();
        let id = new_stream_id();
        let data = Frame::new(
            id.clone(),
            FrameBody::Data {
                seq: 0,
                payload: vec![0; 32],
            },
        );
        assert!(is_reset(&feed(&mut w, data.clone()), &id));
        // During validation too, and the pending stream is dropped.
        let (h, _) = begin(&mut w);
        let mut data = data;
        data.stream_id = h.stream_id().clone();
        let actions = feed(&mut w, data);
        assert!(is_reset(&actions, h.stream_id()));
        assert!(matches!(actions.last(), Some(Action::Closed(_))));
        assert_eq!(w.relay.pending_count(), 0);
    }

    #[test]
    fn undecodable_handshake_is_reset() {
        let mut w = world();
        let id = new_stream_id();
        let f = Frame::new(
            id.clone(),
            FrameBody::Handshake {
                payload: vec![7; 3577],
            },
        );
        assert!(is_reset(&feed(&mut w, f), &id));
        assert_eq!(w.relay.pending_count(), 0);
    }

    #[test]
    fn failed_validation_is_reset_and_reaches_the_harness_as_a_reset() {
        let mut w = world();
        let (mut h, _) = begin(&mut w);
        let actions = w.relay.validated(h.stream_id(), false);
        assert!(is_reset(&actions, h.stream_id()));
        let reset = sent(&actions)[0].clone();
        assert!(matches!(
            h.on_frame(reset.body),
            Err(HarnessError::Reset { reason }) if reason == "noise_relay_protocol_error"
        ));
        // A late answer for a stream that is gone is ignored.
        assert!(w.relay.validated(h.stream_id(), true).is_empty());
    }

    #[test]
    fn duplicate_handshakes_are_reset() {
        let mut w = world();
        let (h, frames) = HarnessStream::start(&w.harness_id, &w.connect, new_stream_id()).unwrap();
        let msg1 = frames[1].clone();
        feed(&mut w, msg1.clone());
        assert!(is_reset(&feed(&mut w, msg1), h.stream_id()));
        assert_eq!(w.relay.pending_count(), 0);

        let h = open(&mut w);
        let (_, again) =
            HarnessStream::start(&w.harness_id, &w.connect, h.stream_id().clone()).unwrap();
        assert!(is_reset(&feed(&mut w, again[1].clone()), h.stream_id()));
        assert_eq!(w.relay.active_count(), 0);
    }

    #[test]
    fn eight_failed_handshakes_in_a_row_pause_handshakes_then_doubling() {
        let mut w = world();
        let mut established = open(&mut w);
        let fail_one = |w: &mut World| {
            let (h, actions) = begin(w);
            assert!(matches!(actions.as_slice(), [Action::Validate { .. }]));
            assert!(is_reset(
                &w.relay.validated(h.stream_id(), false),
                h.stream_id()
            ));
        };
        for _ in 0..7 {
            fail_one(&mut w);
        }
        assert!(!w.relay.handshakes_paused());
        fail_one(&mut w);
        assert!(w.relay.handshakes_paused());
        // While paused, a good handshake is reset at once, with no validation asked for.
        let (h, actions) = begin(&mut w);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(is_reset(&actions, h.stream_id()));
        // An established stream is not affected by the pause.
        let mut delivered = Vec::new();
        for frame in established.send(b"{\"id\":1}").unwrap() {
            delivered.extend(feed(&mut w, frame));
        }
        assert!(
            matches!(delivered.as_slice(), [Action::Deliver(_, m)] if m == &vec![b"{\"id\":1}".to_vec()]),
            "{delivered:?}"
        );
        w.now += FIRST_HANDSHAKE_PAUSE;
        w.relay.expire_validations(w.now);
        assert!(!w.relay.handshakes_paused());
        // Eight more failures: a pause twice as long.
        for _ in 0..8 {
            fail_one(&mut w);
        }
        w.now += FIRST_HANDSHAKE_PAUSE;
        w.relay.expire_validations(w.now);
        assert!(w.relay.handshakes_paused(), "the second pause lasts 2 s");
        w.now += FIRST_HANDSHAKE_PAUSE;
        w.relay.expire_validations(w.now);
        assert!(!w.relay.handshakes_paused());
        // A success resets the count: seven failures after it do not pause.
        let _ok = open(&mut w);
        for _ in 0..7 {
            fail_one(&mut w);
        }
        assert!(!w.relay.handshakes_paused());
    }

    #[test]
    fn a_handshake_for_another_registration_is_reset() {
        let mut w = world();
        w.connect.executor_registration_id = "reg-old".into();
        let (_, actions) = begin(&mut w);
        assert_eq!(sent(&actions).len(), 1);
        assert_eq!(w.relay.pending_count(), 0);
    }

    #[test]
    fn a_harness_pinning_the_wrong_executor_key_is_reset() {
        let mut w = world();
        w.connect.executor_public_key = StaticIdentity::generate().unwrap().public_key().clone();
        let (mut h, actions) = begin(&mut w);
        let reset = sent(&actions)[0].clone();
        assert!(matches!(
            h.on_frame(reset.body),
            Err(HarnessError::Reset { .. })
        ));
    }

    #[test]
    fn pending_validations_are_capped_at_32() {
        let mut w = world();
        for _ in 0..MAX_PENDING_VALIDATIONS {
            let (_, actions) = begin(&mut w);
            assert!(matches!(actions.as_slice(), [Action::Validate { .. }]));
        }
        let (h, actions) = begin(&mut w);
        assert!(is_reset(&actions, h.stream_id()));
        assert_eq!(w.relay.pending_count(), MAX_PENDING_VALIDATIONS);
    }

    #[test]
    fn active_streams_are_capped_at_128() {
        let mut w = world();
        let streams: Vec<_> = (0..MAX_ACTIVE_STREAMS).map(|_| open(&mut w)).collect();
        assert_eq!(w.relay.active_count(), MAX_ACTIVE_STREAMS);
        let (h, actions) = begin(&mut w);
        assert!(is_reset(&actions, h.stream_id()));
        // Closing one makes room.
        let closed = w.relay.close(streams[0].stream_id());
        assert!(is_reset(&closed, streams[0].stream_id()));
        open(&mut w);
    }

    #[test]
    fn validations_time_out_after_10_s() {
        let mut w = world();
        let (h, _) = begin(&mut w);
        assert!(w
            .relay
            .expire_validations(w.now + Duration::from_secs(9))
            .is_empty());
        let actions = w.relay.expire_validations(w.now + VALIDATION_TIMEOUT);
        assert!(is_reset(&actions, h.stream_id()));
        assert_eq!(w.relay.pending_count(), 0);
    }

    #[test]
    fn peer_reset_closes_and_ack_heartbeat_resume_are_ignored() {
        let mut w = world();
        let h = open(&mut w);
        let id = h.stream_id().clone();
        for body in [
            FrameBody::Ack,
            FrameBody::Heartbeat,
            FrameBody::Resume { next_seq: 5 },
        ] {
            assert!(feed(&mut w, Frame::new(id.clone(), body)).is_empty());
        }
        let actions = feed(
            &mut w,
            Frame::new(
                id.clone(),
                FrameBody::Reset {
                    reason: "bye".into(),
                },
            ),
        );
        assert!(matches!(actions.as_slice(), [Action::Closed(c)] if *c == id));
        assert!(matches!(
            w.relay.send(&id, b"{}"),
            Err(SendError::NotEstablished(_))
        ));
        // A reset for an unknown stream is not answered.
        assert!(feed(
            &mut w,
            Frame::new(id, FrameBody::Reset { reason: "x".into() })
        )
        .is_empty());
    }

    #[test]
    fn a_broken_stream_does_not_affect_its_neighbours() {
        let mut w = world();
        let mut good = open(&mut w);
        let mut bad = open(&mut w);
        let mut tampered = bad.send(b"{}").unwrap().remove(0);
        if let FrameBody::Data { payload, .. } = &mut tampered.body {
            payload[0] ^= 1;
        }
        assert!(is_reset(&feed(&mut w, tampered), bad.stream_id()));
        assert_eq!(w.relay.active_count(), 1);
        let f = good.send(b"{\"ok\":1}").unwrap().remove(0);
        assert!(matches!(feed(&mut w, f).as_slice(), [Action::Deliver(..)]));
        let _ = bad.send(b"{}");
    }
}
