//! Property tests of session state transitions against a model: create, resume (attach),
//! detach and expiry, under paused tokio time. Random sequences of operations and clock
//! advances must agree with the model on every result (created or `TooMany`, resumed,
//! `Unknown`, `AlreadyAttached`) and on the registry's counts.

use std::sync::Arc;
use std::time::Duration;

use exec_server_core::session::{CreateError, ResumeError, SessionStats};
use exec_server_core::{Limits, Session, Sessions};
use proptest::prelude::*;

/// Detached sessions live this long. Clock steps are whole multiples of `STEP`, so an expiry
/// never falls on the same instant as an operation.
const TTL: Duration = Duration::from_millis(1050);
const STEP: u64 = 100;
const MAX_SESSIONS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// A new connection creates a session.
    Create { conn: u64 },
    /// A connection resumes the session at this index (wrapping).
    Resume { idx: usize, conn: u64 },
    /// A connection detaches the session at this index (only its own connection does).
    Detach { idx: usize, conn: u64 },
    /// Time passes.
    Advance { steps: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u64..4).prop_map(|conn| Op::Create { conn }),
        3 => (0usize..8, 0u64..4).prop_map(|(idx, conn)| Op::Resume { idx, conn }),
        3 => (0usize..8, 0u64..4).prop_map(|(idx, conn)| Op::Detach { idx, conn }),
        2 => (1u64..15).prop_map(|steps| Op::Advance { steps }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Attached(u64),
    /// Detached at this time (ms); expires at `t + TTL`.
    Detached(u64),
    Expired,
}

struct Model {
    now: u64,
    states: Vec<State>,
}

impl Model {
    fn expire(&mut self) {
        let ttl = TTL.as_millis() as u64;
        for s in &mut self.states {
            if let State::Detached(t) = *s {
                if self.now >= t + ttl {
                    *s = State::Expired;
                }
            }
        }
    }

    fn held(&self) -> usize {
        self.states.iter().filter(|s| **s != State::Expired).count()
    }

    fn stats(&self) -> SessionStats {
        SessionStats {
            sessions: self.held(),
            attached: self
                .states
                .iter()
                .filter(|s| matches!(s, State::Attached(_)))
                .count(),
            live_processes: 0,
        }
    }
}

fn sink() -> exec_server_core::process::EventSender {
    tokio::sync::mpsc::channel(1).0
}

async fn run(ops: Vec<Op>) {
    let sessions = Sessions::new(Limits {
        session_ttl: TTL,
        max_sessions: MAX_SESSIONS,
        ..Limits::default()
    });
    let mut real: Vec<(String, Arc<Session>)> = Vec::new();
    let mut model = Model {
        now: 0,
        states: Vec::new(),
    };
    for op in ops {
        match op {
            Op::Create { conn } => {
                let got = sessions.create(conn, sink());
                if model.held() >= MAX_SESSIONS {
                    assert_eq!(got.err(), Some(CreateError::TooMany(MAX_SESSIONS)));
                } else {
                    let s = got.expect("room for a session");
                    assert!(real.iter().all(|(id, _)| id != s.id()), "ids are unique");
                    real.push((s.id().to_string(), s));
                    model.states.push(State::Attached(conn));
                }
            }
            Op::Resume { idx, conn } => {
                if real.is_empty() {
                    continue;
                }
                let i = idx % real.len();
                let got = sessions.resume(&real[i].0, conn, sink(), None);
                match model.states[i] {
                    State::Attached(_) => assert_eq!(
                        got.err(),
                        Some(ResumeError::AlreadyAttached(real[i].0.clone()))
                    ),
                    State::Expired => {
                        assert_eq!(got.err(), Some(ResumeError::Unknown(real[i].0.clone())))
                    }
                    State::Detached(_) => {
                        let s = got.expect("a detached session resumes");
                        assert!(Arc::ptr_eq(&s, &real[i].1), "the same session");
                        model.states[i] = State::Attached(conn);
                    }
                }
            }
            Op::Detach { idx, conn } => {
                if real.is_empty() {
                    continue;
                }
                let i = idx % real.len();
                sessions.detach(&real[i].1, conn);
                if model.states[i] == State::Attached(conn) {
                    model.states[i] = State::Detached(model.now);
                }
            }
            Op::Advance { steps } => {
                // Sleeping on a paused clock runs every timer due on the way, in order.
                tokio::time::sleep(Duration::from_millis(steps * STEP)).await;
                model.now += steps * STEP;
                model.expire();
            }
        }
        // Let the expiry tasks that are due run before comparing.
        tokio::task::yield_now().await;
        assert_eq!(sessions.stats(), model.stats(), "after {op:?}");
    }
    // In the end every session detached long enough is gone.
    tokio::time::sleep(TTL * 2).await;
    model.now += (TTL * 2).as_millis() as u64;
    model.expire();
    assert_eq!(sessions.stats(), model.stats());
    for (i, (id, _)) in real.iter().enumerate() {
        if model.states[i] == State::Expired {
            assert_eq!(
                sessions.resume(id, 99, sink(), None).err(),
                Some(ResumeError::Unknown(id.clone()))
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn session_transitions_follow_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(run(ops));
    }
}

/// A detach, resume and detach again re-arms the expiry: the first timer must not expire the
/// session that was resumed in between.
#[tokio::test(start_paused = true)]
async fn a_stale_expiry_timer_does_not_expire_a_resumed_session() {
    let sessions = Sessions::new(Limits {
        session_ttl: TTL,
        ..Limits::default()
    });
    let s = sessions.create(1, sink()).expect("create");
    sessions.detach(&s, 1);
    tokio::time::sleep(TTL / 2).await;
    sessions.resume(s.id(), 2, sink(), None).expect("resume");
    sessions.detach(&s, 2);
    tokio::time::sleep(TTL / 2 + Duration::from_millis(10)).await;
    assert!(
        sessions.resume(s.id(), 3, sink(), None).is_ok(),
        "expired by a stale timer"
    );
    sessions.detach(&s, 3);
    tokio::time::sleep(TTL + Duration::from_millis(10)).await;
    assert_eq!(
        sessions.resume(s.id(), 4, sink(), None).err(),
        Some(ResumeError::Unknown(s.id().to_string()))
    );
}
