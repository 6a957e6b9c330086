//! Over-the-wire tests: a real rendezvous on a loopback port, driven with plain HTTP/1.1 and
//! WebSocket clients. The Noise test runs the relay crate's executor and harness state machines
//! through it.

mod support;

use std::time::Duration;

use exec_server_relay::executor::{Action, ExecutorRelay};
use exec_server_relay::frame::{Frame, FrameBody};
use exec_server_relay::harness::{new_stream_id, HarnessStream};
use exec_server_relay::noise::StaticIdentity;
use exec_server_rendezvous::{
    Limits, EXECUTOR_UNAVAILABLE_RESET_REASON, PEER_GONE_RESET_REASON, STREAM_REFUSED_RESET_REASON,
};
use futures::SinkExt as _;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const MARKER: &str = "PLAINTEXT-MARKER-7f3a9c";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The executor side of the test: feeds frames to the relay crate's `ExecutorRelay`, runs the
/// registry validation it asks for, and sends what it says.
async fn executor_step(
    server: &Server,
    exec: &mut Executor,
    relay: &mut ExecutorRelay,
    seen: &mut Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let bytes = recv_bytes(&mut exec.ws)
        .await
        .expect("executor socket open");
    seen.push(bytes.clone());
    let mut delivered = Vec::new();
    let mut actions = relay.on_frame(Frame::decode(&bytes).unwrap(), std::time::Instant::now());
    while let Some(action) = (!actions.is_empty()).then(|| actions.remove(0)) {
        match action {
            Action::Validate {
                stream_id,
                harness_public_key,
                authorization,
            } => {
                let valid = validate(
                    server.addr,
                    stream_id.as_str(),
                    &exec.registration.executor_registration_id,
                    &harness_public_key,
                    &authorization,
                )
                .await;
                actions.extend(relay.validated(&stream_id, valid));
            }
            Action::Send(frame) => send(&mut exec.ws, &frame).await,
            Action::Deliver(_, messages) => delivered.extend(messages),
            Action::Opened(_) | Action::Closed(_) => {}
        }
    }
    delivered
}

#[tokio::test]
async fn a_noise_session_runs_through_the_rendezvous_which_only_sees_ciphertext() {
    let server = start().await;
    let executor_identity = StaticIdentity::generate().unwrap();
    let mut exec = executor(&server, executor_identity.public_key()).await;
    assert_eq!(exec.registration.environment_id, "e2e");
    assert_eq!(exec.registration.security_profile, "noise_hybrid_ik_v1");
    assert!(
        exec.registration.url.starts_with(&format!(
            "ws://{}/rendezvous/e2e/executor?ticket=",
            server.addr
        )),
        "{}",
        exec.registration.url
    );
    let mut relay = ExecutorRelay::new(
        executor_identity.clone(),
        "e2e",
        &exec.registration.executor_registration_id,
    );

    let harness_identity = StaticIdentity::generate().unwrap();
    let (bundle, mut hws) = harness(&server, harness_identity.public_key()).await;
    assert_eq!(&bundle.executor_public_key, executor_identity.public_key());
    assert_eq!(
        bundle.executor_registration_id,
        exec.registration.executor_registration_id
    );
    let authorization = bundle.harness_key_authorization.clone();
    let info = bundle.into_connect_info("e2e").unwrap();
    let (mut stream, opening) =
        HarnessStream::start(&harness_identity, &info, new_stream_id()).unwrap();

    // Everything the rendezvous routed, as received on either socket.
    let mut seen = Vec::new();
    let mut sent_by_harness = Vec::new();
    for f in &opening {
        let bytes = f.encode().unwrap();
        sent_by_harness.push(bytes.clone());
        send_raw(&mut hws, bytes).await;
    }
    // resume, then msg1 (which triggers validate and msg2).
    executor_step(&server, &mut exec, &mut relay, &mut seen).await;
    executor_step(&server, &mut exec, &mut relay, &mut seen).await;
    assert_eq!(seen, sent_by_harness, "frames are forwarded byte for byte");
    let msg2 = recv_bytes(&mut hws).await.unwrap();
    seen.push(msg2.clone());
    stream.on_frame(Frame::decode(&msg2).unwrap().body).unwrap();
    assert!(stream.is_established());

    let request =
        format!(r#"{{"id":1,"method":"initialize","params":{{"clientName":"{MARKER}"}}}}"#);
    for f in stream.send(request.as_bytes()).unwrap() {
        send(&mut hws, &f).await;
    }
    let delivered = executor_step(&server, &mut exec, &mut relay, &mut seen).await;
    assert_eq!(delivered, vec![request.into_bytes()]);

    let reply = format!(r#"{{"id":1,"result":{{"echo":"{MARKER}"}}}}"#);
    for action in relay.send(&opening[0].stream_id, reply.as_bytes()).unwrap() {
        let Action::Send(f) = action else {
            panic!("{action:?}")
        };
        send(&mut exec.ws, &f).await;
    }
    let bytes = recv_bytes(&mut hws).await.unwrap();
    seen.push(bytes.clone());
    let got = stream
        .on_frame(Frame::decode(&bytes).unwrap().body)
        .unwrap();
    assert_eq!(got, vec![reply.into_bytes()]);

    assert_eq!(seen.len(), 5);
    for bytes in &seen {
        assert!(
            !contains(bytes, MARKER.as_bytes()),
            "plaintext crossed the rendezvous"
        );
        assert!(
            !contains(bytes, authorization.as_bytes()),
            "the authorization crossed the rendezvous in clear"
        );
    }
    // The authorization was consumed by the executor's validate call.
    assert!(
        !validate(
            server.addr,
            opening[0].stream_id.as_str(),
            &exec.registration.executor_registration_id,
            harness_identity.public_key(),
            &authorization,
        )
        .await,
        "a used authorization is refused"
    );
}

#[tokio::test]
async fn registry_calls_refuse_wrong_bearers_unknown_environments_and_bad_requests() {
    let server = start().await;
    let addr = server.addr;
    let k = key();
    // register
    let a = register_raw(addr, "e2e", None, &k).await;
    assert_eq!((a.status, a.error_code()), (401, "unauthorized"));
    assert!(a
        .headers
        .iter()
        .any(|(h, v)| h == "www-authenticate" && v == "Bearer"));
    let a = register_raw(addr, "e2e", Some("wrong"), &k).await;
    assert_eq!((a.status, a.error_code()), (401, "unauthorized"));
    let a = register_raw(addr, "e2e", Some(HARNESS_TOKEN), &k).await;
    assert_eq!(a.status, 401, "a harness token cannot register");
    let a = register_raw(addr, "other", Some(EXEC_TOKEN), &k).await;
    assert_eq!(a.status, 401, "tokens are per environment");
    let a = register_raw(addr, "nope", Some(EXEC_TOKEN), &k).await;
    assert_eq!((a.status, a.error_code()), (404, "unknown_environment"));
    let a = register_raw(addr, "bad%20id", Some(EXEC_TOKEN), &k).await;
    assert_eq!((a.status, a.error_code()), (400, "invalid_environment_id"));
    let a = register_raw(addr, &"a".repeat(300), Some(EXEC_TOKEN), &k).await;
    assert_eq!((a.status, a.error_code()), (400, "invalid_environment_id"));
    let a = register_raw(addr, "a/b", Some(EXEC_TOKEN), &k).await;
    assert_eq!((a.status, a.error_code()), (404, "not_found"));
    let a = post(
        addr,
        "/cloud/environment/e2e/register",
        Some(EXEC_TOKEN),
        &[],
        "{}",
    )
    .await;
    assert_eq!((a.status, a.error_code()), (400, "invalid_request"));
    let mut body = serde_json::json!({"security_profile": "direct_jsonrpc_v1", "executor_public_key": key_json(&k)});
    let a = post(
        addr,
        "/cloud/environment/e2e/register",
        Some(EXEC_TOKEN),
        &[],
        &body.to_string(),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code()),
        (400, "unsupported_security_profile")
    );
    body["security_profile"] = "noise_hybrid_ik_v1".into();
    body["executor_public_key"]["suite"] = "Noise_other".into();
    let a = post(
        addr,
        "/cloud/environment/e2e/register",
        Some(EXEC_TOKEN),
        &[],
        &body.to_string(),
    )
    .await;
    assert_eq!((a.status, a.error_code()), (400, "invalid_request"));
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("suite"));

    // connect
    let a = connect_raw(addr, "e2e", Some(EXEC_TOKEN), &k).await;
    assert_eq!(a.status, 401, "an executor token cannot connect");
    let a = connect_raw(addr, "nope", Some(HARNESS_TOKEN), &k).await;
    assert_eq!(a.status, 404);
    let a = connect_raw(addr, "e2e", Some(HARNESS_TOKEN), &k).await;
    assert_eq!(
        (a.status, a.error_code()),
        (503, "executor_unavailable"),
        "nothing registered yet"
    );
    let _registration = register(addr, &k).await;
    let a = connect_raw(addr, "e2e", Some(HARNESS_TOKEN), &k).await;
    assert_eq!(a.status, 503, "registered but its socket is not attached");

    // validate
    let a = validate_raw(addr, Some(HARNESS_TOKEN), Some("s"), "r", &k, "x").await;
    assert_eq!(a.status, 401, "a harness token cannot validate");
    let a = validate_raw(addr, Some(EXEC_TOKEN), None, "r", &k, "x").await;
    assert_eq!((a.status, a.error_code()), (400, "invalid_request"));
    let a = validate_raw(addr, Some(EXEC_TOKEN), Some("s"), "r", &k, "made-up").await;
    assert_eq!((a.status, a.body["valid"].as_bool()), (200, Some(false)));
}

/// Opens a harness stream by sending its first frame (resume) and checks the executor got it.
async fn open_stream(hws: &mut Ws, exec: &mut Executor, stream: &str) {
    let f = frame(stream, FrameBody::Resume { next_seq: 0 });
    send(hws, &f).await;
    assert_eq!(recv(&mut exec.ws).await, f);
}

#[tokio::test]
async fn validate_refuses_reused_expired_and_misbound_authorizations() {
    let limits = Limits {
        authorization_ttl: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start_with(limits, None).await;
    let mut exec = executor(&server, &key()).await;
    let reg = exec.registration.executor_registration_id.clone();
    let alice = key();
    let (a1, mut aws) = harness(&server, &alice).await;
    open_stream(&mut aws, &mut exec, "alice-1").await;

    // Wrong harness key, then the genuine key: the failed attempt consumed it.
    assert!(
        !validate(
            server.addr,
            "alice-1",
            &reg,
            &key(),
            &a1.harness_key_authorization
        )
        .await
    );
    assert!(
        !validate(
            server.addr,
            "alice-1",
            &reg,
            &alice,
            &a1.harness_key_authorization
        )
        .await
    );

    // Another registration id.
    let a2 = connect(server.addr, &alice).await;
    assert!(
        !validate(
            server.addr,
            "alice-1",
            "reg_other",
            &alice,
            &a2.harness_key_authorization
        )
        .await
    );

    // A stream that is not routed, or routed for another key's socket.
    let a3 = connect(server.addr, &alice).await;
    assert!(
        !validate(
            server.addr,
            "nobody",
            &reg,
            &alice,
            &a3.harness_key_authorization
        )
        .await
    );
    let bob = key();
    let (_b, mut bws) = harness(&server, &bob).await;
    open_stream(&mut bws, &mut exec, "bob-1").await;
    let a4 = connect(server.addr, &alice).await;
    assert!(
        !validate(
            server.addr,
            "bob-1",
            &reg,
            &alice,
            &a4.harness_key_authorization
        )
        .await
    );

    // Good once, then reused.
    let a5 = connect(server.addr, &alice).await;
    assert!(
        validate(
            server.addr,
            "alice-1",
            &reg,
            &alice,
            &a5.harness_key_authorization
        )
        .await
    );
    assert!(
        !validate(
            server.addr,
            "alice-1",
            &reg,
            &alice,
            &a5.harness_key_authorization
        )
        .await
    );

    // Expired.
    let a6 = connect(server.addr, &alice).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !validate(
            server.addr,
            "alice-1",
            &reg,
            &alice,
            &a6.harness_key_authorization
        )
        .await
    );
    // The socket ticket of a bundle expires with it.
    let (status, reason) = ws_refused(&a6.url).await;
    assert_eq!((status, reason.as_str()), (401, "invalid_ticket"));
}

#[tokio::test]
async fn sockets_need_their_ticket_and_harness_tickets_are_single_use() {
    let server = start().await;
    let exec = executor(&server, &key()).await;
    let url = &exec.registration.url;
    let base = url.split('?').next().unwrap();
    assert_eq!(ws_refused(base).await, (401, "invalid_ticket".to_string()));
    assert_eq!(
        ws_refused(&format!("{base}?ticket=guess")).await,
        (401, "invalid_ticket".to_string())
    );
    let bundle = connect(server.addr, &key()).await;
    let _first = ws(&bundle.url).await;
    assert_eq!(
        ws_refused(&bundle.url).await,
        (401, "invalid_ticket".to_string())
    );
    // A harness ticket does not open the executor side, nor the other way round.
    let ticket = bundle.url.split("ticket=").nth(1).unwrap();
    assert_eq!(ws_refused(&format!("{base}?ticket={ticket}")).await.0, 401);
    let exec_ticket = url.split("ticket=").nth(1).unwrap();
    assert_eq!(
        ws_refused(&bundle.url.replace(ticket, exec_ticket)).await.0,
        401
    );
}

#[tokio::test]
async fn frames_route_between_one_executor_and_two_harnesses_by_stream_id() {
    let server = start().await;
    let mut exec = executor(&server, &key()).await;
    let (_a, mut aws) = harness(&server, &key()).await;
    let (_b, mut bws) = harness(&server, &key()).await;
    open_stream(&mut aws, &mut exec, "a").await;
    open_stream(&mut bws, &mut exec, "b").await;
    for i in 0..3u32 {
        let fa = data("a", i, format!("to-a-{i}").as_bytes());
        let fb = data("b", i, format!("to-b-{i}").as_bytes());
        send(&mut exec.ws, &fb).await;
        send(&mut exec.ws, &fa).await;
        assert_eq!(recv(&mut aws).await, fa);
        assert_eq!(recv(&mut bws).await, fb);
        let ua = data("a", i, b"from-a");
        send(&mut aws, &ua).await;
        assert_eq!(recv(&mut exec.ws).await, ua);
        let ub = data("b", i, b"from-b");
        send(&mut bws, &ub).await;
        assert_eq!(recv(&mut exec.ws).await, ub);
    }
    // A frame for a stream nobody opened is dropped; invalid frames and text are dropped.
    send(&mut exec.ws, &data("nobody", 0, b"x")).await;
    send_raw(&mut aws, vec![0xff, 0x01, 0x02]).await;
    let mut v2 = data("a", 9, b"x").to_proto();
    v2.version = 2;
    send_raw(&mut aws, prost_encode(&v2)).await;
    aws.send(Message::Text("hello".into())).await.unwrap();
    silent(&mut aws, 150).await;
    silent(&mut bws, 50).await;
    silent(&mut exec.ws, 50).await;
    // The executor resetting a stream releases it; the other stream carries on.
    let reset = frame(
        "a",
        FrameBody::Reset {
            reason: "noise_relay_protocol_error".into(),
        },
    );
    send(&mut exec.ws, &reset).await;
    assert_eq!(recv(&mut aws).await, reset);
    send(&mut exec.ws, &data("a", 5, b"late")).await;
    let fb = data("b", 5, b"still here");
    send(&mut exec.ws, &fb).await;
    assert_eq!(recv(&mut bws).await, fb);
    silent(&mut aws, 100).await;
}

fn prost_encode(m: &exec_server_relay::frame::proto::RelayMessageFrame) -> Vec<u8> {
    use prost::Message as _;
    m.encode_to_vec()
}

#[tokio::test]
async fn a_harness_cannot_reach_another_harness_stream_by_guessing_its_id() {
    let server = start().await;
    let mut exec = executor(&server, &key()).await;
    let (_a, mut aws) = harness(&server, &key()).await;
    let (_b, mut bws) = harness(&server, &key()).await;
    open_stream(&mut aws, &mut exec, "victim").await;
    // Bob names Alice's stream: data, a handshake and a reset. None reaches the executor.
    for body in [
        FrameBody::Data {
            seq: 0,
            payload: b"injected".to_vec(),
        },
        FrameBody::Handshake {
            payload: b"hs".to_vec(),
        },
        FrameBody::Reset {
            reason: "bye".into(),
        },
    ] {
        send(&mut bws, &frame("victim", body)).await;
        assert_eq!(
            recv(&mut bws).await,
            frame(
                "victim",
                FrameBody::Reset {
                    reason: STREAM_REFUSED_RESET_REASON.into()
                }
            )
        );
    }
    silent(&mut exec.ws, 100).await;
    silent(&mut aws, 50).await;
    // Executor frames on the stream still go to Alice only, and Alice still reaches it.
    let f = data("victim", 0, b"for alice");
    send(&mut exec.ws, &f).await;
    assert_eq!(recv(&mut aws).await, f);
    silent(&mut bws, 100).await;
    let f = data("victim", 1, b"from alice");
    send(&mut aws, &f).await;
    assert_eq!(recv(&mut exec.ws).await, f);
}

#[tokio::test]
async fn streams_are_reset_when_a_harness_goes() {
    let server = start().await;
    let mut exec = executor(&server, &key()).await;
    let (_a, mut aws) = harness(&server, &key()).await;
    let (_b, mut bws) = harness(&server, &key()).await;
    open_stream(&mut aws, &mut exec, "a1").await;
    open_stream(&mut aws, &mut exec, "a2").await;
    open_stream(&mut bws, &mut exec, "b1").await;
    // Alice drops TCP without a close frame, as upstream harnesses do at exit.
    drop(aws);
    let mut reset = vec![recv(&mut exec.ws).await, recv(&mut exec.ws).await];
    reset.sort_by(|x, y| x.stream_id.cmp(&y.stream_id));
    let want = |s| {
        frame(
            s,
            FrameBody::Reset {
                reason: PEER_GONE_RESET_REASON.into(),
            },
        )
    };
    assert_eq!(reset, vec![want("a1"), want("a2")]);
    // Bob is untouched.
    let f = data("b1", 0, b"still");
    send(&mut exec.ws, &f).await;
    assert_eq!(recv(&mut bws).await, f);
    // A clean close does the same.
    bws.close(None).await.unwrap();
    assert_eq!(recv(&mut exec.ws).await, want("b1"));
}

#[tokio::test]
async fn streams_are_reset_when_the_executor_goes_and_it_may_redial() {
    let server = start().await;
    let k = key();
    let mut exec = executor(&server, &k).await;
    let (_a, mut aws) = harness(&server, &key()).await;
    let (_b, mut bws) = harness(&server, &key()).await;
    open_stream(&mut aws, &mut exec, "a1").await;
    open_stream(&mut bws, &mut exec, "b1").await;
    let url = exec.registration.url.clone();
    drop(exec.ws);
    let want = |s| {
        frame(
            s,
            FrameBody::Reset {
                reason: PEER_GONE_RESET_REASON.into(),
            },
        )
    };
    assert_eq!(recv(&mut aws).await, want("a1"));
    assert_eq!(recv(&mut bws).await, want("b1"));
    // Harness sockets stay; new frames are refused while no executor is attached.
    send(&mut aws, &frame("a2", FrameBody::Resume { next_seq: 0 })).await;
    assert_eq!(
        recv(&mut aws).await,
        frame(
            "a2",
            FrameBody::Reset {
                reason: EXECUTOR_UNAVAILABLE_RESET_REASON.into()
            }
        )
    );
    assert_eq!(
        connect_raw(server.addr, "e2e", Some(HARNESS_TOKEN), &k)
            .await
            .status,
        503
    );
    // The executor redials the same URL without registering again.
    let mut ews = ws(&url).await;
    wait_until_connectable(server.addr).await;
    let f = frame("a3", FrameBody::Resume { next_seq: 0 });
    send(&mut aws, &f).await;
    assert_eq!(recv(&mut ews).await, f);
}

#[tokio::test]
async fn a_new_registration_replaces_the_old_one_and_closes_its_sockets() {
    let server = start().await;
    let mut old = executor(&server, &key()).await;
    let (_a, mut aws) = harness(&server, &key()).await;
    open_stream(&mut aws, &mut old, "a1").await;
    let fresh = register(server.addr, &key()).await;
    assert_ne!(
        fresh.executor_registration_id,
        old.registration.executor_registration_id
    );
    assert_eq!(
        recv(&mut aws).await,
        frame(
            "a1",
            FrameBody::Reset {
                reason: PEER_GONE_RESET_REASON.into()
            }
        )
    );
    assert_eq!(
        recv_bytes(&mut aws).await,
        None,
        "old harness socket closed"
    );
    assert_eq!(
        recv_bytes(&mut old.ws).await,
        None,
        "old executor socket closed"
    );
    assert_eq!(ws_refused(&old.registration.url).await.0, 401);
    let _ews = ws(&fresh.url).await;
    wait_until_connectable(server.addr).await;
}

#[tokio::test]
async fn public_url_sets_the_handed_out_socket_urls() {
    let server = start_with(Limits::default(), Some("https://rv.example.com/relay/")).await;
    let r = register(server.addr, &key()).await;
    assert!(
        r.url
            .starts_with("wss://rv.example.com/relay/rendezvous/e2e/executor?ticket="),
        "{}",
        r.url
    );
}

#[tokio::test]
async fn a_slow_harness_is_disconnected_without_stalling_the_executor_for_long() {
    let limits = Limits {
        harness_queue_frames: 2,
        slow_peer_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = start_with(limits, None).await;
    let mut exec = executor(&server, &key()).await;
    let (_a, mut aws) = harness(&server, &key()).await;
    let (_b, mut bws) = harness(&server, &key()).await;
    open_stream(&mut aws, &mut exec, "slow").await;
    open_stream(&mut bws, &mut exec, "fast").await;
    // Alice never reads: fill her queue and the socket buffers with large frames.
    let big = vec![7u8; 200 * 1024];
    let started = std::time::Instant::now();
    let mut reset_seen = false;
    for i in 0..200u32 {
        send(&mut exec.ws, &data("slow", i, &big)).await;
        if i % 10 == 9 {
            // The executor learns the slow stream was reset once Alice is dropped.
            let probe = data("fast", i, b"probe");
            send(&mut exec.ws, &probe).await;
            assert_eq!(recv(&mut bws).await, probe);
        }
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    // Alice's socket was closed and her stream reset towards the executor.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        let f = recv(&mut exec.ws).await;
        if f == frame(
            "slow",
            FrameBody::Reset {
                reason: PEER_GONE_RESET_REASON.into(),
            },
        ) {
            reset_seen = true;
            break;
        }
    }
    assert!(reset_seen, "the slow harness's stream was reset");
    let f = data("fast", 999, b"after");
    send(&mut exec.ws, &f).await;
    assert_eq!(recv(&mut bws).await, f);
    drop(aws);
}

#[tokio::test]
async fn open_connections_are_bounded() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let server = start_with(limits, None).await;
    let held = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = server.addr;
    let call =
        tokio::spawn(async move { register_raw(addr, "e2e", Some(EXEC_TOKEN), &key()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !call.is_finished(),
        "a second connection was served past the limit"
    );
    drop(held);
    let answer = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed_and_frees_its_slot() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limits = Limits {
        max_connections: 1,
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start_with(limits, None).await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /cloud/environment/e2e/register HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // The trickling client is closed once the header timeout passes...
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection was held open past the header timeout"
    );
    // ...and its slot serves the next call.
    let answer = tokio::time::timeout(
        WAIT,
        register_raw(server.addr, "e2e", Some(EXEC_TOKEN), &key()),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
}
