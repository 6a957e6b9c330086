//! The rendezvous's in-memory state and every decision made on it: registrations, connect
//! bundles, harness-key validation, socket admission and frame routing.
//!
//! The hub never touches a socket. Socket tasks (`socket.rs`) and HTTP handlers (`http.rs`)
//! call it under one short `std::sync::Mutex` section per event and act on its answer outside
//! the lock; the only I/O done inside is `try_send` of reset frames and cancelling tokens,
//! neither of which waits.
//!
//! **Invariants.** One registration per environment (a new `register` replaces the old one,
//! closing its sockets). A stream id belongs to the harness socket that first used it; frames
//! from any other harness socket naming it are refused and never reach the executor, and frames
//! from the executor go only to the owner. Payloads are never looked at: routing uses the
//! stream id and whether the frame is a reset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use exec_server_relay::frame::{Frame, FrameBody, StreamId};
use exec_server_relay::noise::PublicKey;
use subtle::ConstantTimeEq as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{sha256, Config};
use crate::limits::Limits;
use crate::secret::{digest, new_secret, RandomError};

/// Reset reason sent to the other side of a stream when a socket goes (closed, dropped,
/// replaced, or too slow to read).
pub const PEER_GONE_RESET_REASON: &str = "rendezvous_peer_disconnected";
/// Reset reason sent to a harness whose frame names a stream the rendezvous will not route:
/// one owned by another harness socket, or one over a stream limit.
pub const STREAM_REFUSED_RESET_REASON: &str = "rendezvous_stream_refused";
/// Reset reason sent to a harness whose frame arrives while no executor socket is attached.
pub const EXECUTOR_UNAVAILABLE_RESET_REASON: &str = "rendezvous_executor_unavailable";

/// Identifies one socket for the lifetime of the process.
pub(crate) type PeerId = u64;

/// A socket's outbound side: its bounded frame queue and the token that closes it.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) id: PeerId,
    pub(crate) tx: mpsc::Sender<Bytes>,
    pub(crate) cancel: CancellationToken,
}

struct HarnessPeer {
    peer: Peer,
    /// The harness key named in the `connect` call whose ticket opened this socket.
    key: PublicKey,
    streams: usize,
}

struct PendingGrant {
    harness_key: PublicKey,
    expires: Instant,
}

struct Registration {
    id: String,
    executor_key: PublicKey,
    executor_ticket: [u8; 32],
    executor: Option<Peer>,
    /// Unused harness key authorizations, by digest.
    authorizations: HashMap<[u8; 32], PendingGrant>,
    /// Unused harness socket tickets, by digest.
    tickets: HashMap<[u8; 32], PendingGrant>,
    harnesses: HashMap<PeerId, HarnessPeer>,
    streams: HashMap<StreamId, PeerId>,
}

impl Registration {
    /// Queues a reset for every routed stream towards its harness and forgets the streams.
    /// A harness whose queue is full is disconnected instead.
    fn reset_all_streams(&mut self) {
        for (stream_id, owner) in self.streams.drain() {
            if let Some(h) = self.harnesses.get(&owner) {
                let reset = reset_frame(&stream_id, PEER_GONE_RESET_REASON);
                if h.peer.tx.try_send(reset).is_err() {
                    h.peer.cancel.cancel();
                }
            }
        }
        for h in self.harnesses.values_mut() {
            h.streams = 0;
        }
    }

    /// Closes every socket of the registration, after resetting its streams.
    fn close(&mut self) {
        self.reset_all_streams();
        for h in self.harnesses.values() {
            h.peer.cancel.cancel();
        }
        if let Some(e) = &self.executor {
            e.cancel.cancel();
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        self.authorizations.retain(|_, g| g.expires > now);
        self.tickets.retain(|_, g| g.expires > now);
    }
}

/// Why a registry call could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    /// No executor registered this environment, or its socket is not attached.
    #[error("no executor is connected for this environment")]
    ExecutorUnavailable,
    /// Too many unused connect bundles for the registration.
    #[error("too many pending connections for this environment")]
    TooManyPending,
    /// No secret could be generated.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Why a harness key authorization was not accepted. Logged by the rendezvous; the executor
/// only learns `{"valid": false}` and the harness only a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    /// The environment has no registration.
    #[error("the environment has no registration")]
    NotRegistered,
    /// The authorization was never issued for this registration, or was already used.
    #[error("unknown or already used harness key authorization")]
    UnknownAuthorization,
    /// The authorization expired before use.
    #[error("expired harness key authorization")]
    Expired,
    /// The request names another registration than the one the authorization was issued for.
    #[error("the authorization belongs to another executor registration")]
    WrongRegistration,
    /// The harness key of the handshake is not the one the authorization was issued to.
    #[error("the authorization was issued to another harness key")]
    WrongHarnessKey,
    /// The stream is not routed, or its harness socket was opened for another harness key.
    #[error("the stream does not belong to a harness socket of this key")]
    WrongStream,
}

/// Why a socket upgrade was refused; the text goes in `x-codex-rendezvous-rejection-reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Reject {
    /// The ticket is unknown, used, expired or from a replaced registration.
    #[error("invalid_ticket")]
    InvalidTicket,
    /// No executor socket is attached (harness sockets only).
    #[error("executor_unavailable")]
    ExecutorUnavailable,
    /// The registration has [`Limits::max_harness_sockets`] harness sockets.
    #[error("too_many_harness_sockets")]
    TooManySockets,
}

/// A fresh registration.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) registration_id: String,
    pub(crate) executor_ticket: String,
}

/// What a `connect` call hands out.
#[derive(Debug)]
pub(crate) struct Bundle {
    pub(crate) registration_id: String,
    pub(crate) executor_key: PublicKey,
    pub(crate) authorization: String,
    pub(crate) ticket: String,
}

/// Where a frame read from a harness socket goes.
#[derive(Debug)]
pub(crate) enum HarnessRoute {
    /// To the executor socket.
    Forward(Peer),
    /// Not routed: answer the harness with a reset of this reason.
    Refuse(&'static str),
    /// Not routed, no answer (a reset for a stream nobody routes).
    Drop,
    /// The socket is no longer attached: close it.
    Gone,
}

/// Where a frame read from the executor socket goes.
#[derive(Debug)]
pub(crate) enum ExecutorRoute {
    /// To the harness socket owning the stream.
    Forward(Peer),
    /// No harness owns the stream: drop it.
    Drop,
    /// The socket is no longer attached: close it.
    Gone,
}

/// The shared state of one rendezvous.
pub(crate) struct Hub {
    pub(crate) config: Config,
    pub(crate) limits: Limits,
    registrations: Mutex<HashMap<String, Registration>>,
    next_peer: AtomicU64,
    /// Cancelled at shutdown; every socket's token is a child.
    pub(crate) shutdown: CancellationToken,
}

/// An encoded reset frame for `stream_id`.
pub(crate) fn reset_frame(stream_id: &StreamId, reason: &'static str) -> Bytes {
    let frame = Frame::new(
        stream_id.clone(),
        FrameBody::Reset {
            reason: reason.to_string(),
        },
    );
    // A valid stream id and a short non-empty reason always encode.
    Bytes::from(frame.encode().unwrap_or_default())
}

impl Hub {
    pub(crate) fn new(config: Config, limits: Limits) -> Self {
        Self {
            config,
            limits,
            registrations: Mutex::new(HashMap::new()),
            next_peer: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        // The state stays consistent across a panic in another section (each section leaves
        // it valid before anything can panic), so a poisoned lock is still usable.
        self.registrations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new peer with a queue of `capacity` frames; returns it and the queue's receiver.
    pub(crate) fn new_peer(&self, capacity: usize) -> (Peer, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let peer = Peer {
            id: self.next_peer.fetch_add(1, Ordering::Relaxed),
            tx,
            cancel: self.shutdown.child_token(),
        };
        (peer, rx)
    }

    /// Registers an executor for `env` (already checked to be configured and authorised),
    /// replacing and closing any earlier registration.
    pub(crate) fn register(&self, env: &str, key: PublicKey) -> Result<Registered, HubError> {
        let registration_id = format!("reg_{}", new_secret()?);
        let executor_ticket = new_secret()?;
        let ticket_digest = sha256(executor_ticket.as_bytes());
        let fresh = Registration {
            id: registration_id.clone(),
            executor_key: key,
            executor_ticket: ticket_digest,
            executor: None,
            authorizations: HashMap::new(),
            tickets: HashMap::new(),
            harnesses: HashMap::new(),
            streams: HashMap::new(),
        };
        if let Some(mut old) = self.lock().insert(env.to_string(), fresh) {
            tracing::info!(environment = env, old = %old.id, "registration replaced");
            old.close();
        }
        Ok(Registered {
            registration_id,
            executor_ticket,
        })
    }

    /// Issues a connect bundle for a harness with static key `harness_key`.
    pub(crate) fn connect(
        &self,
        env: &str,
        harness_key: PublicKey,
        now: Instant,
    ) -> Result<Bundle, HubError> {
        let authorization = new_secret()?;
        let ticket = new_secret()?;
        let auth_digest = sha256(authorization.as_bytes());
        let ticket_digest = sha256(ticket.as_bytes());
        let mut regs = self.lock();
        let reg = regs.get_mut(env).ok_or(HubError::ExecutorUnavailable)?;
        if reg.executor.is_none() {
            return Err(HubError::ExecutorUnavailable);
        }
        reg.purge_expired(now);
        if reg.authorizations.len() >= self.limits.max_pending_connects
            || reg.tickets.len() >= self.limits.max_pending_connects
        {
            return Err(HubError::TooManyPending);
        }
        let expires = now + self.limits.authorization_ttl;
        reg.authorizations.insert(
            auth_digest,
            PendingGrant {
                harness_key: harness_key.clone(),
                expires,
            },
        );
        reg.tickets.insert(
            ticket_digest,
            PendingGrant {
                harness_key,
                expires,
            },
        );
        Ok(Bundle {
            registration_id: reg.id.clone(),
            executor_key: reg.executor_key.clone(),
            authorization,
            ticket,
        })
    }

    /// Checks (and consumes) a harness key authorization presented by the executor of `env`
    /// for `stream_id`. The authorization is removed as soon as it is named, whatever the
    /// outcome, so it can be tried once.
    pub(crate) fn validate(
        &self,
        env: &str,
        registration_id: &str,
        stream_id: &StreamId,
        harness_key: &PublicKey,
        authorization: &str,
        now: Instant,
    ) -> Result<(), Invalid> {
        let mut regs = self.lock();
        let reg = regs.get_mut(env).ok_or(Invalid::NotRegistered)?;
        let grant = digest(authorization)
            .and_then(|d| reg.authorizations.remove(&d))
            .ok_or(Invalid::UnknownAuthorization)?;
        if grant.expires <= now {
            return Err(Invalid::Expired);
        }
        if !bool::from(reg.id.as_bytes().ct_eq(registration_id.as_bytes())) {
            return Err(Invalid::WrongRegistration);
        }
        if &grant.harness_key != harness_key {
            return Err(Invalid::WrongHarnessKey);
        }
        let owner = reg.streams.get(stream_id).ok_or(Invalid::WrongStream)?;
        match reg.harnesses.get(owner) {
            Some(h) if &h.key == harness_key => Ok(()),
            _ => Err(Invalid::WrongStream),
        }
    }

    /// Checks an executor socket ticket; returns the registration id it opens.
    pub(crate) fn check_executor_ticket(&self, env: &str, ticket: &str) -> Result<String, Reject> {
        let presented = digest(ticket).ok_or(Reject::InvalidTicket)?;
        let regs = self.lock();
        let reg = regs.get(env).ok_or(Reject::InvalidTicket)?;
        if bool::from(reg.executor_ticket.ct_eq(&presented)) {
            Ok(reg.id.clone())
        } else {
            Err(Reject::InvalidTicket)
        }
    }

    /// Attaches an upgraded executor socket. An earlier executor socket of the registration is
    /// closed and its streams reset (the executor redialled). False when the registration was
    /// replaced meanwhile.
    pub(crate) fn attach_executor(&self, env: &str, registration_id: &str, peer: Peer) -> bool {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(env).filter(|r| r.id == registration_id) else {
            return false;
        };
        if let Some(old) = reg.executor.replace(peer) {
            tracing::info!(environment = env, "executor socket replaced by a new one");
            old.cancel.cancel();
            reg.reset_all_streams();
        }
        true
    }

    /// Detaches an executor socket that ended and resets its streams towards their harnesses.
    pub(crate) fn detach_executor(&self, env: &str, registration_id: &str, peer: PeerId) {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(env).filter(|r| r.id == registration_id) else {
            return;
        };
        if reg.executor.as_ref().is_some_and(|e| e.id == peer) {
            reg.executor = None;
            reg.reset_all_streams();
        }
    }

    /// Consumes a harness socket ticket; returns the registration id and the harness key it
    /// was issued for. Refused when no executor is attached or the socket limit is reached,
    /// so the harness learns it at upgrade time.
    pub(crate) fn take_harness_ticket(
        &self,
        env: &str,
        ticket: &str,
        now: Instant,
    ) -> Result<(String, PublicKey), Reject> {
        let presented = digest(ticket).ok_or(Reject::InvalidTicket)?;
        let mut regs = self.lock();
        let reg = regs.get_mut(env).ok_or(Reject::InvalidTicket)?;
        let grant = reg
            .tickets
            .remove(&presented)
            .filter(|g| g.expires > now)
            .ok_or(Reject::InvalidTicket)?;
        if reg.executor.is_none() {
            return Err(Reject::ExecutorUnavailable);
        }
        if reg.harnesses.len() >= self.limits.max_harness_sockets {
            return Err(Reject::TooManySockets);
        }
        Ok((reg.id.clone(), grant.harness_key))
    }

    /// Attaches an upgraded harness socket.
    pub(crate) fn attach_harness(
        &self,
        env: &str,
        registration_id: &str,
        peer: Peer,
        key: PublicKey,
    ) -> Result<(), Reject> {
        let mut regs = self.lock();
        let reg = regs
            .get_mut(env)
            .filter(|r| r.id == registration_id)
            .ok_or(Reject::InvalidTicket)?;
        if reg.harnesses.len() >= self.limits.max_harness_sockets {
            return Err(Reject::TooManySockets);
        }
        reg.harnesses.insert(
            peer.id,
            HarnessPeer {
                peer,
                key,
                streams: 0,
            },
        );
        Ok(())
    }

    /// Detaches a harness socket that ended. Returns the reset frames for the executor (one per
    /// stream the harness owned) and the executor to send them to.
    pub(crate) fn detach_harness(
        &self,
        env: &str,
        registration_id: &str,
        peer: PeerId,
    ) -> (Vec<Bytes>, Option<Peer>) {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(env).filter(|r| r.id == registration_id) else {
            return (Vec::new(), None);
        };
        if reg.harnesses.remove(&peer).is_none() {
            return (Vec::new(), None);
        }
        let mut resets = Vec::new();
        reg.streams.retain(|stream_id, owner| {
            if *owner == peer {
                resets.push(reset_frame(stream_id, PEER_GONE_RESET_REASON));
                false
            } else {
                true
            }
        });
        (resets, reg.executor.clone())
    }

    /// Routes a frame read from harness socket `peer`. The first frame naming an unknown
    /// stream id claims it for this socket; a reset (either way) releases it.
    pub(crate) fn route_from_harness(
        &self,
        env: &str,
        registration_id: &str,
        peer: PeerId,
        stream_id: &StreamId,
        is_reset: bool,
    ) -> HarnessRoute {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(env).filter(|r| r.id == registration_id) else {
            return HarnessRoute::Gone;
        };
        if !reg.harnesses.contains_key(&peer) {
            return HarnessRoute::Gone;
        }
        match reg.streams.get(stream_id) {
            Some(&owner) if owner == peer => {
                if is_reset {
                    release(reg, stream_id);
                }
                match &reg.executor {
                    Some(e) => HarnessRoute::Forward(e.clone()),
                    None => {
                        release(reg, stream_id);
                        HarnessRoute::Refuse(EXECUTOR_UNAVAILABLE_RESET_REASON)
                    }
                }
            }
            Some(_) => {
                tracing::warn!(
                    environment = env,
                    %stream_id,
                    "harness named a stream owned by another harness socket; refused"
                );
                HarnessRoute::Refuse(STREAM_REFUSED_RESET_REASON)
            }
            None if is_reset => HarnessRoute::Drop,
            None => {
                let Some(executor) = reg.executor.clone() else {
                    return HarnessRoute::Refuse(EXECUTOR_UNAVAILABLE_RESET_REASON);
                };
                let over_harness = reg
                    .harnesses
                    .get(&peer)
                    .is_some_and(|h| h.streams >= self.limits.max_streams_per_harness);
                if over_harness || reg.streams.len() >= self.limits.max_streams_per_registration {
                    tracing::warn!(environment = env, %stream_id, "stream limit reached; refused");
                    return HarnessRoute::Refuse(STREAM_REFUSED_RESET_REASON);
                }
                reg.streams.insert(stream_id.clone(), peer);
                if let Some(h) = reg.harnesses.get_mut(&peer) {
                    h.streams += 1;
                }
                HarnessRoute::Forward(executor)
            }
        }
    }

    /// Routes a frame read from executor socket `peer`. A reset releases the stream.
    pub(crate) fn route_from_executor(
        &self,
        env: &str,
        registration_id: &str,
        peer: PeerId,
        stream_id: &StreamId,
        is_reset: bool,
    ) -> ExecutorRoute {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(env).filter(|r| r.id == registration_id) else {
            return ExecutorRoute::Gone;
        };
        if reg.executor.as_ref().is_none_or(|e| e.id != peer) {
            return ExecutorRoute::Gone;
        }
        let Some(&owner) = reg.streams.get(stream_id) else {
            return ExecutorRoute::Drop;
        };
        let Some(target) = reg.harnesses.get(&owner).map(|h| h.peer.clone()) else {
            return ExecutorRoute::Drop;
        };
        if is_reset {
            release(reg, stream_id);
        }
        ExecutorRoute::Forward(target)
    }

    /// Number of routed streams of `env`'s registration.
    #[cfg(test)]
    pub(crate) fn stream_count(&self, env: &str) -> usize {
        self.lock().get(env).map_or(0, |r| r.streams.len())
    }
}

fn release(reg: &mut Registration, stream_id: &StreamId) {
    if let Some(owner) = reg.streams.remove(stream_id) {
        if let Some(h) = reg.harnesses.get_mut(&owner) {
            h.streams = h.streams.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_relay::noise::StaticIdentity;
    use std::time::Duration;

    fn hub() -> Hub {
        let config = Config::parse(
            "[environments.e2e]\nexecutor_tokens = [\"x\"]\nharness_tokens = [\"h\"]\n",
        )
        .unwrap();
        Hub::new(config, Limits::default())
    }

    fn key() -> PublicKey {
        StaticIdentity::generate().unwrap().public_key().clone()
    }

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    /// A registration with an attached executor; returns its id and the executor's queue.
    fn registered(hub: &Hub) -> (String, mpsc::Receiver<Bytes>) {
        let reg = hub.register("e2e", key()).unwrap();
        let (peer, rx) = hub.new_peer(8);
        assert!(hub.attach_executor("e2e", &reg.registration_id, peer));
        (reg.registration_id, rx)
    }

    /// Attaches a harness socket through a connect bundle; returns its peer, queue and bundle.
    fn harness(hub: &Hub, key: &PublicKey, now: Instant) -> (Peer, mpsc::Receiver<Bytes>, Bundle) {
        let bundle = hub.connect("e2e", key.clone(), now).unwrap();
        let (reg, k) = hub.take_harness_ticket("e2e", &bundle.ticket, now).unwrap();
        assert_eq!(&k, key);
        let (peer, rx) = hub.new_peer(8);
        hub.attach_harness("e2e", &reg, peer.clone(), k).unwrap();
        (peer, rx, bundle)
    }

    #[test]
    fn an_authorization_is_single_use_bound_and_expires() {
        let hub = hub();
        let (reg, _exec) = registered(&hub);
        let now = Instant::now();
        let k = key();
        let (peer, _rx, bundle) = harness(&hub, &k, now);
        let s = sid("s1");
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, peer.id, &s, false),
            HarnessRoute::Forward(_)
        ));
        let v = |reg: &str, stream: &StreamId, key: &PublicKey, auth: &str, at: Instant| {
            hub.validate("e2e", reg, stream, key, auth, at)
        };
        assert_eq!(v(&reg, &s, &k, &bundle.authorization, now), Ok(()));
        assert_eq!(
            v(&reg, &s, &k, &bundle.authorization, now),
            Err(Invalid::UnknownAuthorization),
            "reused"
        );

        let b = hub.connect("e2e", k.clone(), now).unwrap();
        assert_eq!(
            v(&reg, &s, &key(), &b.authorization, now),
            Err(Invalid::WrongHarnessKey)
        );
        // Consumed by the failed attempt.
        assert_eq!(
            v(&reg, &s, &k, &b.authorization, now),
            Err(Invalid::UnknownAuthorization)
        );

        let b = hub.connect("e2e", k.clone(), now).unwrap();
        assert_eq!(
            v("reg_other", &s, &k, &b.authorization, now),
            Err(Invalid::WrongRegistration)
        );

        let b = hub.connect("e2e", k.clone(), now).unwrap();
        let late = now + Duration::from_secs(60);
        assert_eq!(
            v(&reg, &s, &k, &b.authorization, late),
            Err(Invalid::Expired)
        );
        let b = hub.connect("e2e", k.clone(), now).unwrap();
        let just_in_time = now + Duration::from_secs(59);
        assert_eq!(v(&reg, &s, &k, &b.authorization, just_in_time), Ok(()));

        let b = hub.connect("e2e", k.clone(), now).unwrap();
        assert_eq!(
            v(&reg, &sid("unrouted"), &k, &b.authorization, now),
            Err(Invalid::WrongStream)
        );
    }

    #[test]
    fn a_stream_of_a_socket_opened_for_another_key_fails_validation() {
        let hub = hub();
        let (reg, _exec) = registered(&hub);
        let now = Instant::now();
        let (alice, bob) = (key(), key());
        let (bob_peer, _rx, _) = harness(&hub, &bob, now);
        let s = sid("bobs-stream");
        hub.route_from_harness("e2e", &reg, bob_peer.id, &s, false);
        // Alice's genuine authorization, presented for a stream on Bob's socket.
        let b = hub.connect("e2e", alice.clone(), now).unwrap();
        assert_eq!(
            hub.validate("e2e", &reg, &s, &alice, &b.authorization, now),
            Err(Invalid::WrongStream)
        );
    }

    #[test]
    fn tickets_are_single_use_and_expire() {
        let hub = hub();
        let (_reg, _exec) = registered(&hub);
        let now = Instant::now();
        let b = hub.connect("e2e", key(), now).unwrap();
        assert!(hub.take_harness_ticket("e2e", &b.ticket, now).is_ok());
        assert_eq!(
            hub.take_harness_ticket("e2e", &b.ticket, now).unwrap_err(),
            Reject::InvalidTicket
        );
        let b = hub.connect("e2e", key(), now).unwrap();
        assert_eq!(
            hub.take_harness_ticket("e2e", &b.ticket, now + Duration::from_secs(61))
                .unwrap_err(),
            Reject::InvalidTicket
        );
        assert_eq!(
            hub.take_harness_ticket("e2e", "made-up", now).unwrap_err(),
            Reject::InvalidTicket
        );
    }

    #[test]
    fn pending_connects_are_bounded_and_expired_ones_purged() {
        let mut hub = hub();
        hub.limits.max_pending_connects = 3;
        let (_reg, _exec) = registered(&hub);
        let now = Instant::now();
        for _ in 0..3 {
            hub.connect("e2e", key(), now).unwrap();
        }
        assert!(matches!(
            hub.connect("e2e", key(), now),
            Err(HubError::TooManyPending)
        ));
        assert!(hub
            .connect("e2e", key(), now + Duration::from_secs(61))
            .is_ok());
    }

    #[test]
    fn connect_needs_an_attached_executor() {
        let hub = hub();
        assert!(matches!(
            hub.connect("e2e", key(), Instant::now()),
            Err(HubError::ExecutorUnavailable)
        ));
        let reg = hub.register("e2e", key()).unwrap();
        assert!(matches!(
            hub.connect("e2e", key(), Instant::now()),
            Err(HubError::ExecutorUnavailable)
        ));
        assert_eq!(
            hub.check_executor_ticket("e2e", &reg.executor_ticket),
            Ok(reg.registration_id.clone())
        );
        assert_eq!(
            hub.check_executor_ticket("e2e", "wrong"),
            Err(Reject::InvalidTicket)
        );
    }

    #[test]
    fn streams_belong_to_their_first_harness_and_limits_hold() {
        let mut hub = hub();
        hub.limits.max_streams_per_harness = 2;
        let (reg, _exec) = registered(&hub);
        let now = Instant::now();
        let (a, _ra, _) = harness(&hub, &key(), now);
        let (b, _rb, _) = harness(&hub, &key(), now);
        let s = sid("s");
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, a.id, &s, false),
            HarnessRoute::Forward(_)
        ));
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, b.id, &s, false),
            HarnessRoute::Refuse(STREAM_REFUSED_RESET_REASON)
        ));
        // Even a reset from the guesser leaves the owner's stream routed.
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, b.id, &s, true),
            HarnessRoute::Refuse(_)
        ));
        assert_eq!(hub.stream_count("e2e"), 1);
        let exec_id = {
            let regs = hub.lock();
            regs["e2e"].executor.as_ref().unwrap().id
        };
        assert!(matches!(
            hub.route_from_executor("e2e", &reg, exec_id, &s, false),
            ExecutorRoute::Forward(p) if p.id == a.id
        ));
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, a.id, &sid("t"), false),
            HarnessRoute::Forward(_)
        ));
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, a.id, &sid("u"), false),
            HarnessRoute::Refuse(STREAM_REFUSED_RESET_REASON)
        ));
        // A reset from the executor releases the stream.
        assert!(matches!(
            hub.route_from_executor("e2e", &reg, exec_id, &s, true),
            ExecutorRoute::Forward(_)
        ));
        assert_eq!(hub.stream_count("e2e"), 1);
        assert!(matches!(
            hub.route_from_executor("e2e", &reg, exec_id, &s, false),
            ExecutorRoute::Drop
        ));
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, a.id, &sid("u"), false),
            HarnessRoute::Forward(_)
        ));
    }

    #[test]
    fn a_harness_leaving_resets_its_streams_towards_the_executor() {
        let hub = hub();
        let (reg, _exec) = registered(&hub);
        let now = Instant::now();
        let (a, _ra, _) = harness(&hub, &key(), now);
        let (b, _rb, _) = harness(&hub, &key(), now);
        hub.route_from_harness("e2e", &reg, a.id, &sid("a1"), false);
        hub.route_from_harness("e2e", &reg, a.id, &sid("a2"), false);
        hub.route_from_harness("e2e", &reg, b.id, &sid("b1"), false);
        let (resets, exec) = hub.detach_harness("e2e", &reg, a.id);
        assert!(exec.is_some());
        let mut ids: Vec<String> = resets
            .iter()
            .map(|r| {
                let f = Frame::decode(r).unwrap();
                assert_eq!(
                    f.body,
                    FrameBody::Reset {
                        reason: PEER_GONE_RESET_REASON.into()
                    }
                );
                f.stream_id.to_string()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, ["a1", "a2"]);
        assert_eq!(hub.stream_count("e2e"), 1);
        assert!(matches!(
            hub.route_from_harness("e2e", &reg, a.id, &sid("a3"), false),
            HarnessRoute::Gone
        ));
    }

    #[test]
    fn a_new_registration_closes_the_old_sockets() {
        let hub = hub();
        let (reg, _exec) = registered(&hub);
        let now = Instant::now();
        let (a, mut ra, _) = harness(&hub, &key(), now);
        hub.route_from_harness("e2e", &reg, a.id, &sid("a1"), false);
        let exec = hub.lock()["e2e"].executor.clone().unwrap();
        hub.register("e2e", key()).unwrap();
        assert!(exec.cancel.is_cancelled() && a.cancel.is_cancelled());
        let reset = Frame::decode(&ra.try_recv().unwrap()).unwrap();
        assert_eq!(reset.stream_id.as_str(), "a1");
        assert!(matches!(
            hub.route_from_executor("e2e", &reg, exec.id, &sid("a1"), false),
            ExecutorRoute::Gone
        ));
    }
}
