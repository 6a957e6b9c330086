//! Rough throughput and latency of the rendezvous alone: an executor socket streams data frames
//! of 61 440 + 16 bytes (a full record) to one harness socket through an in-process rendezvous,
//! then 1000 small frames ping-pong. No Noise: the rendezvous never decrypts, so random bytes
//! cost it the same as ciphertext.
//!
//! Usage: `cargo run --release -p exec-server-rendezvous --example relay_throughput [MiB]`.

#![allow(clippy::print_stdout)] // a measurement tool reporting on stdout

use std::time::{Duration, Instant};

use exec_server_relay::frame::{Frame, FrameBody, StreamId};
use exec_server_relay::noise::StaticIdentity;
use exec_server_relay::registry::{ConnectResponse, RegisterResponse};
use exec_server_rendezvous::{Config, Options, Rendezvous};
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    bearer: &str,
    body: &str,
) -> Result<String, Error> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {bearer}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await?;
    Ok(raw
        .split_once("\r\n\r\n")
        .ok_or("bad answer")?
        .1
        .to_string())
}

fn frame(stream: &StreamId, body: FrameBody) -> Result<Message, Error> {
    Ok(Message::Binary(
        Frame::new(stream.clone(), body).encode()?.into(),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let config =
        Config::parse("[environments.e]\nexecutor_tokens = [\"x\"]\nharness_tokens = [\"h\"]\n")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Rendezvous::new(config, Options::default())?.serve(listener, std::future::pending()),
    );

    let key = serde_json::to_string(StaticIdentity::generate()?.public_key())?;
    let reg: RegisterResponse = serde_json::from_str(
        &post(
            addr,
            "/cloud/environment/e/register",
            "x",
            &format!(r#"{{"security_profile":"noise_hybrid_ik_v1","executor_public_key":{key}}}"#),
        )
        .await?,
    )?;
    let (mut exec, _) = tokio_tungstenite::connect_async(&reg.url).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let bundle: ConnectResponse = serde_json::from_str(
        &post(
            addr,
            "/cloud/environment/e/connect",
            "h",
            &format!(r#"{{"harness_public_key":{key}}}"#),
        )
        .await?,
    )?;
    let (mut harness, _) = tokio_tungstenite::connect_async(&bundle.url).await?;
    let stream = StreamId::new("bench")?;
    harness
        .send(frame(&stream, FrameBody::Resume { next_seq: 0 })?)
        .await?;
    exec.next().await.ok_or("executor socket closed")??;

    let payload = vec![0x5au8; 61_440 + 16];
    let count = mib * 1024 * 1024 / payload.len();
    let data: Vec<Message> = (0..count)
        .map(|seq| {
            frame(
                &stream,
                FrameBody::Data {
                    seq: seq as u32,
                    payload: payload.clone(),
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for m in data {
            exec.send(m).await?;
        }
        Ok::<_, Error>(exec)
    });
    let mut got = 0;
    while got < count {
        if let Some(Message::Binary(_)) = harness.next().await.transpose()? {
            got += 1;
        }
    }
    let elapsed = started.elapsed();
    let mut exec = sender.await??;
    println!(
        "stream: {} MiB in {:.3} s = {:.0} MiB/s",
        count * payload.len() / (1024 * 1024),
        elapsed.as_secs_f64(),
        (count * payload.len()) as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
    );

    let small = frame(
        &stream,
        FrameBody::Data {
            seq: 0,
            payload: vec![1; 100],
        },
    )?;
    let rounds = 1000;
    let started = Instant::now();
    for _ in 0..rounds {
        harness.send(small.clone()).await?;
        exec.next().await.ok_or("executor socket closed")??;
        exec.send(small.clone()).await?;
        harness.next().await.ok_or("harness socket closed")??;
    }
    println!(
        "round trip (harness -> executor -> harness): {:.1} µs",
        started.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    Ok(())
}
