//! The two-message hybrid IK handshake: the harness [`Initiator`] and the executor side
//! ([`read_request`] then [`PendingResponder::accept`]), split so the executor can ask the
//! registry about the harness key (spec §10.6) between reading msg1 and answering it.

use std::fmt;

use clatter::bytearray::ByteArray;
use clatter::handshakepattern::noise_hybrid_ik;
use clatter::traits::Handshaker;
use clatter::HybridHandshakeParams;
use zeroize::Zeroizing;

use super::keys::{PublicKey, StaticIdentity};
use super::transport::NoiseTransport;
use super::{
    Handshake, NoiseError, MAX_AUTHORIZATION_LEN, MAX_NOISE_MESSAGE_LEN, MSG1_OVERHEAD, MSG2_LEN,
    PROLOGUE_DOMAIN,
};

/// The handshake prologue (spec §10.5): [`PROLOGUE_DOMAIN`], `environment_id`,
/// `executor_registration_id` and `stream_id`, each preceded by its byte length as a big-endian
/// `u64`. Both sides must build it from the same strings or msg1 fails to decrypt.
pub fn prologue(environment_id: &str, executor_registration_id: &str, stream_id: &str) -> Vec<u8> {
    let parts = [
        PROLOGUE_DOMAIN,
        environment_id,
        executor_registration_id,
        stream_id,
    ];
    let mut out = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The harness side after sending msg1, waiting for msg2.
pub struct Initiator {
    hs: Handshake,
}

impl Initiator {
    /// Starts a handshake towards the executor whose pinned static key is `responder`, and
    /// returns msg1 carrying `authorization` (the registry's `harness_key_authorization`, at most
    /// [`MAX_AUTHORIZATION_LEN`] bytes).
    pub fn start(
        identity: &StaticIdentity,
        responder: &PublicKey,
        prologue: &[u8],
        authorization: &str,
    ) -> Result<(Self, Vec<u8>), NoiseError> {
        if authorization.len() > MAX_AUTHORIZATION_LEN {
            return Err(NoiseError::AuthorizationTooLong {
                len: authorization.len(),
            });
        }
        let params = HybridHandshakeParams::new(noise_hybrid_ik(), true)
            .with_prologue(prologue)
            .with_s(identity.dh.clone())
            .with_s_kem(identity.kem.clone())
            .with_rs(*responder.x25519())
            .with_rs_kem(responder.kem_array());
        let mut hs = Handshake::new(params).map_err(NoiseError::Handshake)?;
        let mut msg1 = vec![0; MSG1_OVERHEAD + authorization.len()];
        let n = hs
            .write_message(authorization.as_bytes(), &mut msg1)
            .map_err(NoiseError::Handshake)?;
        msg1.truncate(n);
        Ok((Self { hs }, msg1))
    }

    /// Reads msg2 and enters transport mode. Fails if msg2 was not made by the holder of the
    /// pinned executor key for this prologue, or carries a payload.
    pub fn finish(mut self, msg2: &[u8]) -> Result<NoiseTransport, NoiseError> {
        if msg2.len() > MAX_NOISE_MESSAGE_LEN {
            return Err(NoiseError::HandshakeTooLarge { len: msg2.len() });
        }
        let mut payload = vec![0; msg2.len().saturating_sub(MSG2_LEN)];
        let n = self
            .hs
            .read_message(msg2, &mut payload)
            .map_err(NoiseError::Handshake)?;
        if n != 0 {
            return Err(NoiseError::ResponsePayloadNotEmpty);
        }
        let transport = self.hs.finalize().map_err(NoiseError::Handshake)?;
        Ok(NoiseTransport::new(transport))
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator").finish_non_exhaustive()
    }
}

/// Executor side: reads msg1 with our static identity and the stream's prologue. The result
/// holds the harness static key and its authorization for the registry check (spec §10.6);
/// nothing is sent until [`PendingResponder::accept`].
pub fn read_request(
    identity: &StaticIdentity,
    prologue: &[u8],
    msg1: &[u8],
) -> Result<PendingResponder, NoiseError> {
    if msg1.len() > MAX_NOISE_MESSAGE_LEN {
        return Err(NoiseError::HandshakeTooLarge { len: msg1.len() });
    }
    // Cheap check before any crypto: the payload cannot exceed the authorization limit.
    let payload_len = msg1.len().saturating_sub(MSG1_OVERHEAD);
    if payload_len > MAX_AUTHORIZATION_LEN {
        return Err(NoiseError::AuthorizationTooLong { len: payload_len });
    }
    let params = HybridHandshakeParams::new(noise_hybrid_ik(), false)
        .with_prologue(prologue)
        .with_s(identity.dh.clone())
        .with_s_kem(identity.kem.clone());
    let mut hs = Handshake::new(params).map_err(NoiseError::Handshake)?;
    let mut payload = vec![0; payload_len];
    let n = hs
        .read_message(msg1, &mut payload)
        .map_err(NoiseError::Handshake)?;
    payload.truncate(n);
    let remote = hs
        .get_remote_static()
        .ok_or(NoiseError::MissingRemoteStatic)?;
    let harness = PublicKey::from_parts(remote.dh(), remote.kem().as_slice())
        .map_err(|_| NoiseError::MissingRemoteStatic)?;
    let authorization =
        Zeroizing::new(String::from_utf8(payload).map_err(|_| NoiseError::AuthorizationNotUtf8)?);
    Ok(PendingResponder {
        hs,
        harness,
        authorization,
    })
}

/// The executor side after msg1, before the registry has validated the harness key.
pub struct PendingResponder {
    hs: Handshake,
    harness: PublicKey,
    /// Bearer-like: wiped when the stream is accepted, rejected or dropped.
    authorization: Zeroizing<String>,
}

impl PendingResponder {
    /// The harness static key learnt from msg1 (authenticated by the handshake).
    pub fn harness_public_key(&self) -> &PublicKey {
        &self.harness
    }

    /// The harness key authorization carried in msg1, for the registry `validate` call.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// Completes the handshake once the registry said `valid: true`: returns msg2 (empty
    /// payload, [`MSG2_LEN`] bytes) and the transport.
    pub fn accept(mut self) -> Result<(Vec<u8>, NoiseTransport), NoiseError> {
        let mut msg2 = vec![0; MSG2_LEN];
        let n = self
            .hs
            .write_message(&[], &mut msg2)
            .map_err(NoiseError::Handshake)?;
        msg2.truncate(n);
        let transport = self.hs.finalize().map_err(NoiseError::Handshake)?;
        Ok((msg2, NoiseTransport::new(transport)))
    }
}

impl fmt::Debug for PendingResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The authorization is a bearer-like secret: redacted, as upstream does (spec §10.7).
        f.debug_struct("PendingResponder")
            .field("harness", &self.harness)
            .field("authorization", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NOISE_PROTOCOL_NAME, TAG_LEN};
    use super::*;

    struct Pair {
        executor: StaticIdentity,
        harness: StaticIdentity,
        prologue: Vec<u8>,
    }

    fn pair() -> Pair {
        Pair {
            executor: StaticIdentity::generate().unwrap(),
            harness: StaticIdentity::generate().unwrap(),
            prologue: prologue("env-1", "reg-1", "stream-1"),
        }
    }

    /// A full handshake; returns (harness transport, executor transport).
    fn connect(p: &Pair) -> (NoiseTransport, NoiseTransport) {
        let (init, msg1) = Initiator::start(
            &p.harness,
            p.executor.public_key(),
            &p.prologue,
            "auth-token",
        )
        .unwrap();
        let pending = read_request(&p.executor, &p.prologue, &msg1).unwrap();
        assert_eq!(pending.authorization(), "auth-token");
        assert_eq!(pending.harness_public_key(), p.harness.public_key());
        let (msg2, executor) = pending.accept().unwrap();
        let harness = init.finish(&msg2).unwrap();
        (harness, executor)
    }

    #[test]
    fn prologue_is_length_prefixed_big_endian() {
        let p = prologue("env-1", "registration-1", "stream-1");
        let mut want = Vec::new();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 32]);
        want.extend_from_slice(b"codex-exec-server-relay-noise/v1");
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        want.extend_from_slice(b"env-1");
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 14]);
        want.extend_from_slice(b"registration-1");
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 8]);
        want.extend_from_slice(b"stream-1");
        assert_eq!(p, want);
    }

    #[test]
    fn protocol_name_is_clatters_hybrid_ik() {
        let id = StaticIdentity::generate().unwrap();
        let hs = Handshake::new(
            HybridHandshakeParams::new(noise_hybrid_ik(), false)
                .with_s(id.dh.clone())
                .with_s_kem(id.kem.clone()),
        )
        .unwrap();
        assert_eq!(hs.get_name().as_str(), NOISE_PROTOCOL_NAME);
    }

    #[test]
    fn handshake_sizes_match_the_spec() {
        let p = pair();
        for auth in ["", "123456789", &"a".repeat(MAX_AUTHORIZATION_LEN)] {
            let (init, msg1) =
                Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, auth).unwrap();
            assert_eq!(msg1.len(), MSG1_OVERHEAD + auth.len());
            let (msg2, _) = read_request(&p.executor, &p.prologue, &msg1)
                .unwrap()
                .accept()
                .unwrap();
            assert_eq!(msg2.len(), MSG2_LEN);
            init.finish(&msg2).unwrap();
        }
        // Spec §10.4: a 9-byte authorization gave a 3577-byte msg1, and msg2 was 3424 bytes.
        assert_eq!(MSG1_OVERHEAD + 9, 3577);
    }

    #[test]
    fn handshake_then_messages_both_ways() {
        let p = pair();
        let (mut harness, mut executor) = connect(&p);
        let c = harness.encrypt(b"initialize").unwrap();
        assert_eq!(c.len(), 10 + TAG_LEN);
        assert_eq!(executor.decrypt(&c).unwrap(), b"initialize");
        let c = executor.encrypt(b"result").unwrap();
        assert_eq!(harness.decrypt(&c).unwrap(), b"result");
        assert_eq!(
            harness.handshake_hash(),
            executor.handshake_hash(),
            "both sides agree on the transcript"
        );
    }

    #[test]
    fn wrong_responder_static_key_fails() {
        let p = pair();
        let impostor = StaticIdentity::generate().unwrap();
        // The harness pinned the real executor key; an impostor cannot read msg1.
        let (_init, msg1) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "a").unwrap();
        assert!(matches!(
            read_request(&impostor, &p.prologue, &msg1),
            Err(NoiseError::Handshake(_))
        ));
        // Pinning the wrong key: the real executor cannot read it either.
        let (_init, msg1) =
            Initiator::start(&p.harness, impostor.public_key(), &p.prologue, "a").unwrap();
        assert!(read_request(&p.executor, &p.prologue, &msg1).is_err());
    }

    #[test]
    fn msg2_from_another_responder_is_rejected() {
        let p = pair();
        let (init, msg1) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "a").unwrap();
        read_request(&p.executor, &p.prologue, &msg1).unwrap();
        // A second, unrelated handshake produces a well-formed but foreign msg2.
        let q = pair();
        let (_other, msg1b) =
            Initiator::start(&q.harness, q.executor.public_key(), &q.prologue, "a").unwrap();
        let (msg2b, _) = read_request(&q.executor, &q.prologue, &msg1b)
            .unwrap()
            .accept()
            .unwrap();
        assert!(matches!(init.finish(&msg2b), Err(NoiseError::Handshake(_))));
    }

    #[test]
    fn prologue_mismatch_fails() {
        let p = pair();
        let (_init, msg1) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "a").unwrap();
        let other = prologue("env-1", "reg-1", "stream-2");
        assert!(read_request(&p.executor, &other, &msg1).is_err());
    }

    #[test]
    fn tampered_or_truncated_handshakes_fail() {
        let p = pair();
        let (_init, mut msg1) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "a").unwrap();
        let last = msg1.len() - 1;
        msg1[last] ^= 1;
        assert!(read_request(&p.executor, &p.prologue, &msg1).is_err());
        assert!(read_request(&p.executor, &p.prologue, &msg1[..100]).is_err());
        assert!(read_request(&p.executor, &p.prologue, &[]).is_err());

        let (init, msg1) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "a").unwrap();
        let (mut msg2, _) = read_request(&p.executor, &p.prologue, &msg1)
            .unwrap()
            .accept()
            .unwrap();
        msg2[MSG2_LEN / 2] ^= 0x80;
        assert!(init.finish(&msg2).is_err());
    }

    #[test]
    fn oversize_handshake_messages_are_rejected_before_clatter() {
        let p = pair();
        let huge = vec![0; MAX_NOISE_MESSAGE_LEN + 1];
        assert!(matches!(
            read_request(&p.executor, &p.prologue, &huge),
            Err(NoiseError::HandshakeTooLarge { .. })
        ));
        let big = vec![0; MSG1_OVERHEAD + MAX_AUTHORIZATION_LEN + 1];
        assert!(matches!(
            read_request(&p.executor, &p.prologue, &big),
            Err(NoiseError::AuthorizationTooLong { .. })
        ));
        let long_auth = "a".repeat(MAX_AUTHORIZATION_LEN + 1);
        assert!(matches!(
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, &long_auth),
            Err(NoiseError::AuthorizationTooLong { .. })
        ));
        let (init, _) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "a").unwrap();
        assert!(matches!(
            init.finish(&huge),
            Err(NoiseError::HandshakeTooLarge { .. })
        ));
    }

    #[test]
    fn msg2_with_a_payload_is_rejected() {
        let p = pair();
        let (init, msg1) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "a").unwrap();
        let mut pending = read_request(&p.executor, &p.prologue, &msg1).unwrap();
        let mut msg2 = vec![0; MSG2_LEN + 1];
        pending.hs.write_message(b"x", &mut msg2).unwrap();
        assert!(matches!(
            init.finish(&msg2),
            Err(NoiseError::ResponsePayloadNotEmpty)
        ));
    }

    #[test]
    fn debug_redacts_the_authorization() {
        let p = pair();
        let (_init, msg1) =
            Initiator::start(&p.harness, p.executor.public_key(), &p.prologue, "s3cret").unwrap();
        let pending = read_request(&p.executor, &p.prologue, &msg1).unwrap();
        assert!(!format!("{pending:?}").contains("s3cret"));
    }
}
